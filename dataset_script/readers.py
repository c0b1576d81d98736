# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Strict readers for patent classification data: the USPTO-70k TSV release format, JSON Lines,
parquet (record batches) and WIPO-alpha XML.

Every format goes through one row validator, :class:`PatentRowValidator`, so a row passes the same
checks whatever file it comes from. Every problem in the input raises :class:`PatentDataError`, whose
message names the file, the line (or parquet row) and the field, so that a person can open the file
and fix it. Nothing is dropped or changed silently: the only filters are explicit options
(``empty_labels="drop"``, ``duplicate_ids="drop"``) and their counts are logged and returned through
``report``.

The hierarchy logic (code validation, ancestors, level names) comes from :mod:`taxonomy_thmm`.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from defusedxml import DefusedXmlException, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser

from taxonomy_thmm import (LEVEL_NAMES, TaxonomyError, cpc_ancestors, cpc_level, level_name, normalize_symbol,
                           unique_json_object)
from tokenization_thmm import has_text

__all__ = [
    "COLUMNS",
    "MAX_FIELD_CHARS",
    "PatentDataError",
    "PatentRowValidator",
    "hierarchy_fields",
    "ipc_subclass",
    "iter_patent_batches",
    "iter_patent_jsonl",
    "iter_patent_parquet",
    "iter_patent_tsv",
    "parse_label_list",
    "read_patent_jsonl",
    "read_patent_tsv",
    "read_wipo_alpha",
]

logger = logging.getLogger(__name__)

COLUMNS = ("patent_id", "title", "abstract", "labels")
_LABEL_LEVEL = max(LEVEL_NAMES)  # labels are codes of the deepest named level: CPC/IPC subclasses
# The fields derived from the labels (``sections``, ``classes``); an export may carry them.
DERIVED_COLUMNS = tuple(level_name(level, plural=True) for level in range(1, _LABEL_LEVEL))
_POLICIES = ("error", "keep", "drop")

MAX_FIELD_CHARS = 1_000_000
"""The longest value, in characters, that any field of a patent (``patent_id``, ``title``, ``abstract``,
``labels``) may have in any input format; a longer one is refused naming the file, the line and the
field. Abstracts are about a thousand characters; the limit leaves room for whole descriptions while
keeping a broken quote from swallowing a file. (Python's ``csv`` module alone stops at 131,072.)"""

# Python's csv module refuses fields over a process-wide limit (131,072 by default) with a message
# that names no field, so csv's limit is raised past any field and MAX_FIELD_CHARS is checked per
# field, with the field's name.
_CSV_FIELD_LIMIT = 2**31 - 1
_LABEL_CACHE_SIZE = 100_000  # label sets whose checks PatentRowValidator remembers (a few MB at most)


class PatentDataError(ValueError):
    """Malformed input data; ``path``, ``line`` (1-based position, ``None`` when unknown) and ``field``
    say where. ``unit`` names what ``line`` counts: ``"line"`` (text files) or ``"row"`` (parquet rows,
    rows of a loaded dataset)."""

    def __init__(self, path, line: int | None, field: str | None, problem: str, *, unit: str = "line"):
        self.path, self.line, self.field, self.problem, self.unit = str(path), line, field, problem, unit
        where = str(path)
        if line is not None:
            where += f", {unit} {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------

# Only plain spaces around items: other white space (tabs, form feeds, non-breaking spaces) in the
# notation is refused rather than skipped.
_QUOTED_ITEM = re.compile(r" *'([^'\"\\\[\],]*)' *")


def parse_label_list(text: str) -> list[str]:
    """Parse a Python-style list of quoted codes, ``"['A43B', 'Y10T']"``, without ``eval``.

    Only single-quoted items separated by commas are accepted (the release's format); the codes
    themselves are validated by the caller. Raises ``ValueError`` describing what is wrong.
    """
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"expected a list of quoted codes like ['A43B', 'Y10T'], got {text!r}")
    inner = text[1:-1]
    if not inner.strip(" "):
        return []
    codes = []
    for item in inner.split(","):
        match = _QUOTED_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"item {item.strip()!r} of {text!r} is not a single-quoted code; expected a list like ['A43B', 'Y10T']"
            )
        codes.append(match.group(1))
    return codes


def hierarchy_fields(labels: list[str], scheme: str = "cpc") -> dict[str, list[str]]:
    """The derived fields: sorted unique ancestors of the subclass labels at each level above
    theirs, named after the level (``sections``, ``classes``)."""
    ancestors = [cpc_ancestors(code, scheme, depth=5) for code in labels]  # subclass or group codes
    return {
        level_name(level, plural=True): sorted({chain[level - 1] for chain in ancestors})
        for level in range(1, _LABEL_LEVEL)
    }


def _check_labels(codes: list[str], scheme: str) -> list[str]:
    """Subclass codes or group symbols (main groups, subgroups in any notation :func:`normalize_symbol`
    reads), each once; returns them in canonical form (``G05D1/02`` -> ``G05D 1/02``); raises
    ``ValueError``/``TaxonomyError`` naming the code."""
    seen, canonical = set(), []
    for code in codes:
        if not isinstance(code, str):
            raise ValueError(f"label {code!r} is a {_json_type(code)}; labels are strings like 'A43B'")
        if not code.isascii():  # the code pattern's \d would take other scripts' digits, e.g. 'A٤3B'
            odd = next(ch for ch in code if not ch.isascii())
            raise ValueError(
                f"code {code!r} has the non-ASCII character {_describe_char(odd)}; codes are ASCII like 'A43B'"
            )
        if len(code) > 4 and code[4:5] in "0123456789 ":  # a group symbol: its notation is checked here
            written, code = code, normalize_symbol(code, scheme)
            if code in seen:
                raise ValueError(f"code {written!r} is listed twice (as {code!r})")
        else:
            level = cpc_level(code, scheme)
            if level != _LABEL_LEVEL:
                raise TaxonomyError(
                    f"{code!r} is a {level_name(level)}; labels must be {level_name(_LABEL_LEVEL)} codes like 'A43B'"
                    " (or group symbols like 'G05D1/02')"
                )
        if code in seen:
            raise ValueError(f"code {code!r} is listed twice")
        seen.add(code)
        canonical.append(code)
    return canonical


def _check_policy(name: str, value: str) -> None:
    if value not in _POLICIES:
        raise ValueError(f"{name} must be one of {_POLICIES}, got {value!r}")


def _json_type(value) -> str:
    """What ``value`` is, in the words of the formats it comes from: ``"number 12"``, ``"null"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    return {list: "list", tuple: "list", dict: "object", str: "string", bytes: "binary value"}.get(
        type(value), type(value).__name__
    )


_CONTROL_NAMES = {"\x00": "NUL", "\x0b": "vertical tab", "\x0c": "form feed", "\x1b": "escape", "\x7f": "DEL",
                  "\x85": "next line", "\t": "tab", "\n": "line feed", "\r": "carriage return"}


def _describe_char(ch: str) -> str:
    """``U+000C (form feed)``, ``U+0664 (ARABIC-INDIC DIGIT FOUR)``."""
    name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


_CHAR_KINDS = {"Cc": "control character", "Cs": "lone surrogate (half of a UTF-16 pair, not a character)",
               "Cf": "invisible format character", "Zl": "line separator", "Zp": "paragraph separator"}
# Text may hold tab and line ends (white space to a tokenizer), but no other control character and no
# lone surrogate (which no UTF-8 file can hold: Arrow would fail on it later, naming nothing).
_TEXT_REFUSED = ("Cc", "Cs")
# An id is compared character by character: invisible characters (a BOM, a zero-width space, a line
# separator) would make two ids that look the same differ, so it may hold none.
_ID_REFUSED = ("Cc", "Cs", "Cf", "Zl", "Zp")


# The characters of _TEXT_REFUSED but tab, LF and CR, as one regular expression: titles and abstracts
# are long, and a search in C is ~50x faster than asking unicodedata about each character.
_TEXT_REFUSED_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _odd_character(text: str, refused: tuple, allowed: str = "") -> str | None:
    """``"control character U+000C (form feed) at character 7"`` for the first refused character."""
    if refused == _TEXT_REFUSED and allowed == "\t\n\r":
        match = _TEXT_REFUSED_RE.search(text)
        candidates = [(match.start(), match.group())] if match else []
    else:
        candidates = enumerate(text)
    for at, ch in candidates:
        category = unicodedata.category(ch)
        if category in refused and ch not in allowed:
            return f"{_CHAR_KINDS[category]} {_describe_char(ch)} at character {at + 1}"
    return None


# --------------------------------------------------------------------------------------------------
# The row validator every format goes through
# --------------------------------------------------------------------------------------------------


class PatentRowValidator:
    """The checks every patent row passes, whatever format it comes from (TSV, JSON Lines, parquet,
    a loaded ``datasets`` split, WIPO-alpha XML): one instance per split, fed its rows in order.

    A row is a mapping with exactly ``patent_id``, ``title``, ``abstract`` and ``labels``, and
    optionally the derived ``sections`` and ``classes`` (as an export carries them). The rules:

    - ``patent_id``, ``title``, ``abstract`` are strings (not numbers, lists or null) of at most
      :data:`MAX_FIELD_CHARS` characters; ``patent_id`` is non-empty, without surrounding white space
      or control characters, and unique in the split (``duplicate_ids``);
    - ``title`` and ``abstract`` hold no control characters other than tab, line feed and carriage
      return (a NUL, form feed or escape is refused, not dropped), and are not both empty;
    - ``labels`` is a list of distinct ASCII subclass codes of ``scheme`` (``'A43B'``; a class like
      ``'A43'``, lower case or inner spaces are refused) or group symbols (``'G05D1/02'``, ``'G05D 1/02'``,
      ``'G05D   1/02'``, ``'G05D0001020000'``; stored in canonical form ``'G05D 1/02'``), non-empty
      (``empty_labels``);
    - ``sections``/``classes``, when given, equal the labels' ancestors.

    :meth:`validate` returns the row as stored (the four fields plus ``sections`` and ``classes``),
    or ``None`` when an explicit filter option drops it, and raises :class:`PatentDataError` naming
    the file, the line or row, and the field. ``counts`` holds ``rows_read``, ``dropped_empty_labels``,
    ``dropped_duplicate_ids`` and ``rows``.
    """

    def __init__(self, scheme: str = "cpc", *, empty_labels: str = "error", duplicate_ids: str = "error"):
        _check_policy("empty_labels", empty_labels)
        _check_policy("duplicate_ids", duplicate_ids)
        cpc_level("A", scheme)  # fails early on an unknown scheme
        self.scheme, self.empty_labels, self.duplicate_ids = scheme, empty_labels, duplicate_ids
        # patent_id -> index into self.places << 40 | (position + 1, 0 for none): one int per document
        self.first_seen: dict[str, int] = {}
        self.places: list[tuple[str, str]] = []  # (path, unit) of the files seen
        # label list -> its derived fields: label sets repeat across documents, their checks need not
        self._checked_labels: dict[tuple, dict[str, list[str]]] = {}
        self.counts = {"rows_read": 0, "dropped_empty_labels": 0, "dropped_duplicate_ids": 0, "rows": 0}

    def validate(
        self, values: Mapping, path, position: int | None, unit: str = "line", *, copy: bool = False
    ) -> dict | None:
        """The checked row (see the class); ``copy``: the row is declared a copy of an earlier one (the
        up-sampled tail of an export's train split), so its ``patent_id`` must have been seen already."""
        row, late = self.check_row(values, path, position, unit)
        if row is None or not self.check_id(row["patent_id"], path, position, unit, copy=copy):
            return None
        if late is not None:
            raise late
        self.counts["rows"] += 1
        return row

    def check_row(self, values: Mapping, path, position: int | None, unit: str = "line"):
        """The checks of one row that need no other row: ``(row, late)``, ``row`` ``None`` when
        ``empty_labels="drop"`` drops it. ``late`` is the error of derived fields that contradict the
        labels, which :meth:`validate` raises after :meth:`check_id` (that order is the rule). A
        parallel reader runs this in its workers and :meth:`check_id` in file order."""

        def fail(field, problem):
            raise PatentDataError(path, position, field, problem, unit=unit)

        self.counts["rows_read"] += 1
        for field in values:
            if field not in COLUMNS and field not in DERIVED_COLUMNS:
                fail(field, f"unknown field {field!r}; a patent has {list(COLUMNS)} "
                            f"(and optionally {list(DERIVED_COLUMNS)})")
        for field in COLUMNS:
            if field not in values:
                fail(field, f"missing field {field!r}; a patent has {list(COLUMNS)}")
        for field in ("patent_id", "title", "abstract"):
            value = values[field]
            if not isinstance(value, str):
                fail(field, f"expected a string, got {_json_type(value)}")
            if len(value) > MAX_FIELD_CHARS:
                fail(field, f"{len(value):,} characters, more than the limit of {MAX_FIELD_CHARS:,} per field")

        patent_id = values["patent_id"]
        if not patent_id or patent_id != patent_id.strip():
            fail("patent_id", f"patent_id must be non-empty without surrounding spaces, got {patent_id[:80]!r}")
        odd = None if patent_id.isprintable() else _odd_character(patent_id, _ID_REFUSED)
        if odd:
            fail("patent_id", f"{odd} of {patent_id[:80]!r}; remove it")
        for field in ("title", "abstract"):
            odd = _odd_character(values[field], _TEXT_REFUSED, allowed="\t\n\r")
            if odd:
                fail(field, f"{odd}; remove it (or replace it by a space)")
        if not has_text(values["title"]) and not has_text(values["abstract"]):
            fail("title", "title and abstract are both empty; a patent needs some text")

        labels = values["labels"]
        if isinstance(labels, tuple):
            labels = list(labels)
        if not isinstance(labels, list):
            fail("labels", f"expected a list of subclass codes like ['A43B', 'Y10T'], got {_json_type(labels)} "
                           f"{str(labels)[:80]!r}")
        key = tuple(labels) if all(isinstance(code, str) for code in labels) else None
        checked = self._checked_labels.get(key)
        if checked is None:
            try:
                canonical = _check_labels(labels, self.scheme)
            except ValueError as err:  # TaxonomyError is a ValueError
                fail("labels", str(err))
            checked = (canonical, hierarchy_fields(canonical, self.scheme))
            if key is not None and len(self._checked_labels) < _LABEL_CACHE_SIZE:
                self._checked_labels[key] = checked
        labels, derived = list(checked[0]), checked[1]

        if not labels:
            if self.empty_labels == "error":
                fail("labels", "empty label list []; every patent needs at least one label "
                               "(or pass empty_labels='keep'/'drop')")
            if self.empty_labels == "drop":
                self.counts["dropped_empty_labels"] += 1
                return None, None
        row = {"patent_id": patent_id, "title": values["title"], "abstract": values["abstract"],
               "labels": labels, **{field: list(codes) for field, codes in derived.items()}}
        for field in DERIVED_COLUMNS:
            given = values.get(field, derived[field])
            if (list(given) if isinstance(given, tuple) else given) != derived[field]:
                return row, PatentDataError(path, position, field, f"{given!r} is not the labels' {field} "
                                                                   f"{derived[field]!r}", unit=unit)
        return row, None

    def check_id(self, patent_id: str, path, position: int | None, unit: str = "line", *, copy: bool = False) -> bool:
        """The ``patent_id`` of a row that passed :meth:`check_row`, against the rows before it:
        ``False`` when ``duplicate_ids="drop"`` drops it; raises for a repeat under ``"error"``."""

        def fail(field, problem):
            raise PatentDataError(path, position, field, problem, unit=unit)

        first = self.first_seen.get(patent_id)
        if copy:
            if first is None:
                fail("patent_id", f"this row is declared an up-sampling copy, but patent_id {patent_id!r} is not "
                                  "among the rows before the copies")
        elif first is not None:
            if self.duplicate_ids == "error":
                (first_path, first_unit), first_position = self.places[first >> 40], (first & (1 << 40) - 1) - 1
                first_position = None if first_position < 0 else first_position
                where = f"on {first_unit} {first_position}" if first_path == str(path) else (
                    f"in {first_path}" + (f", {first_unit} {first_position}" if first_position is not None else ""))
                fail("patent_id",
                     f"patent_id {patent_id!r} already appears {where} (or pass duplicate_ids='keep'/'drop')")
            if self.duplicate_ids == "drop":
                self.counts["dropped_duplicate_ids"] += 1
                return False
        else:
            if not self.places or self.places[-1] != (str(path), unit):
                self.places.append((str(path), unit))
            self.first_seen[patent_id] = (len(self.places) - 1) << 40 | (0 if position is None else position + 1)
        return True

    def log_filters(self, name) -> None:
        for key in ("dropped_empty_labels", "dropped_duplicate_ids"):
            if self.counts[key]:
                logger.warning("%s: %s = %d (explicit filter option)", name, key, self.counts[key])


def _read_all(path, reader: Iterator[dict | None], validator: PatentRowValidator, report: dict | None) -> list[dict]:
    rows = [row for row in reader if row is not None]
    validator.log_filters(path)
    if report is not None:
        report.update(validator.counts)
    return rows


# --------------------------------------------------------------------------------------------------
# TSV (USPTO-70k release format)
# --------------------------------------------------------------------------------------------------


READ_BUFFER_BYTES = 1 << 20
"""Bytes read from a TSV or JSONL file at a time: the readers go through a file line by line, so
their memory does not grow with the file (a record, however many lines its quoted fields span, is
the unit held)."""


class _LinePlace:
    """Where a line reader stands: ``position`` (bytes consumed), ``lineno`` (of the last line
    read), ``record_first`` (the text of the first line of the record being read)."""

    __slots__ = ("position", "lineno", "record_first")

    def __init__(self, position: int, lineno: int):
        self.position, self.lineno, self.record_first = position, lineno, None


def _column_name(header: list[str], column: int) -> str:
    return header[column] if column < len(header) else f"column {column + 1}"


def _raw_header_names(first_line: bytes) -> list[str]:
    """The column names of a TSV's first line, however broken, to name the field of an encoding
    error or a stray carriage return."""
    return re.split(r"\r\n|\n|\r", first_line.decode("utf-8", "replace"), maxsplit=1)[0].split("\t")


def _bom_error(path, first_field: str | None) -> PatentDataError:
    return PatentDataError(path, 1, first_field, "the file starts with a UTF-8 byte-order mark (BOM); "
                                                 "save it as UTF-8 without BOM")


def _decode_line(path, raw: bytes, lineno: int, header: list[str] | None) -> str:
    """One line as text; an invalid byte raises an error naming the line and (for a TSV, ``header``
    given) the field, counted by tabs from the line's start."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        field = None if header is None else _column_name(header, raw.count(b"\t", 0, err.start))
        if header is None:  # JSON Lines
            problem = (f"byte(s) {raw[err.start : err.end]!r} at byte {err.start + 1} are not valid UTF-8 "
                       f"({err.reason}); re-encode the file as UTF-8")
        else:
            problem = (f"byte(s) {raw[err.start : err.end]!r} are not valid UTF-8 ({err.reason}); "
                       "re-encode the file as UTF-8")
        raise PatentDataError(path, lineno, field, problem) from None


def _tsv_lines(f, path, place: _LinePlace, header: list[str]) -> Iterator[str]:
    """The lines of a TSV file from where ``f`` stands, decoded, ``place`` kept up to date; a line
    that is not UTF-8 or holds a carriage return that does not end it raises naming line and field.
    Lines end at ``\n`` only: a UTF-8 character never contains that byte, so a multi-byte character
    is never cut."""
    for raw in f:
        place.position += len(raw)
        place.lineno += 1
        line = _decode_line(path, raw, place.lineno, header)
        if "\r" in line and not (line.endswith("\r\n") and line.count("\r") == 1):
            at = next(i for i, ch in enumerate(line) if ch == "\r" and line[i + 1 : i + 2] != "\n")
            # csv would take it for a line end and split the row (or read an old Mac file silently)
            raise PatentDataError(path, place.lineno, _column_name(header, line.count("\t", 0, at)),
                                  "a carriage return (\\r) that is not part of a CRLF line end; line ends must "
                                  "be LF or CRLF, and values cannot hold a lone \\r")
        if place.record_first is None:
            place.record_first = line
        yield line


def _csv_records(lines: Iterator[str]):
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # see _CSV_FIELD_LIMIT: MAX_FIELD_CHARS is checked per field
    return csv.reader(lines, delimiter="\t", quotechar='"', doublequote=True, strict=True)


def _quoting_field(line: str | None, header: list[str]) -> str:
    """Best guess of the column a csv quoting error is in: the first value that opens a quote."""
    for column, value in enumerate((line or "").split("\t")):
        if value.startswith('"'):
            return _column_name(header, column)
    return header[0]


class TsvLayout:
    """What the header of a release-format TSV says: its ``columns`` (the names, in file order),
    where each of :data:`COLUMNS` is, and where the data starts (``data_start`` bytes, after
    ``header_lines`` lines)."""

    def __init__(self, path, f=None):
        own = f is None
        f = open(path, "rb", buffering=READ_BUFFER_BYTES) if own else f
        try:
            first = f.readline()
            if first.startswith(codecs.BOM_UTF8):
                raise _bom_error(path, COLUMNS[0])
            f.seek(0)
            place = _LinePlace(0, 0)
            header = next(_csv_records(_tsv_lines(f, path, place, _raw_header_names(first))), None)
        finally:
            if own:
                f.close()
        if not header:
            raise PatentDataError(path, 1, COLUMNS[0], f"no header line; expected {chr(9).join(COLUMNS)!r}")
        for column in COLUMNS:
            if column not in header:
                raise PatentDataError(
                    path, 1, column, f"missing column {column!r}; the header is {header}, expected {list(COLUMNS)}"
                )
        for column in header:
            if column not in COLUMNS or header.count(column) > 1:
                problem = "appears twice" if column in COLUMNS else f"is not one of {list(COLUMNS)}"
                raise PatentDataError(path, 1, column, f"header column {column!r} {problem}")
        self.columns, self.index = header, {column: header.index(column) for column in COLUMNS}
        self.data_start, self.header_lines = place.position, place.lineno


def iter_tsv_records(path, f, layout: TsvLayout, place: _LinePlace, stop_at: int | None = None) -> Iterator[dict]:
    """The records of a release-format TSV from where ``f`` and ``place`` stand, as the values of a
    patent (``labels`` parsed), checked for shape (fields, quoting, label notation) but not yet by
    :class:`PatentRowValidator`: ``(line, values)`` with the line the record starts on. Records
    that start at byte ``stop_at`` or later are left (a record that starts before it is read whole)."""
    header, index = layout.columns, layout.index
    reader = _csv_records(_tsv_lines(f, path, place, header))
    while stop_at is None or place.position < stop_at:
        lineno, place.record_first = place.lineno + 1, None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise PatentDataError(path, lineno, _quoting_field(place.record_first, header),
                                  f"bad CSV quoting ({err})") from None
        if len(fields) != len(header):
            if not fields:
                raise PatentDataError(path, lineno, COLUMNS[0], "empty line; remove it")
            field = header[len(fields)] if len(fields) < len(header) else f"column {len(header) + 1}"
            raise PatentDataError(path, lineno, field,
                                  f"expected {len(header)} tab-separated fields, got {len(fields)}")
        values = {column: fields[index[column]] for column in COLUMNS}
        if len(values["labels"]) > MAX_FIELD_CHARS:
            raise PatentDataError(path, lineno, "labels", f"{len(values['labels']):,} characters, more than the "
                                                          f"limit of {MAX_FIELD_CHARS:,} per field")
        try:  # the release's notation; the codes themselves are the validator's
            values["labels"] = parse_label_list(values["labels"])
        except ValueError as err:
            raise PatentDataError(path, lineno, "labels", str(err)) from None
        yield lineno, values


def iter_patent_tsv(path: str | os.PathLike, validator: PatentRowValidator) -> Iterator[dict | None]:
    """The rows of a TSV file of the release format (see :func:`read_patent_tsv`), each checked by
    ``validator``, in file order, read line by line; ``None`` for a row an explicit filter option
    drops. The errors are those of the first problem in file order."""
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        layout = TsvLayout(path, f)
        place = _LinePlace(layout.data_start, layout.header_lines)
        documents = 0
        for lineno, values in iter_tsv_records(path, f, layout, place):
            documents += 1
            yield validator.validate(values, path, lineno)
    if not documents:
        raise PatentDataError(path, None, None, "no documents (only a header)")


def read_patent_tsv(
    path: str | os.PathLike,
    scheme: str = "cpc",
    *,
    empty_labels: str = "error",
    duplicate_ids: str = "error",
    report: dict | None = None,
) -> list[dict]:
    """Read a TSV file of the USPTO-70k release format, strictly.

    The file is UTF-8 (no BOM), tab-separated, with the header ``patent_id	title	abstract	labels``
    and one patent per line; LF or CRLF line ends (a lone CR is refused); values may use CSV quoting
    (``"a ""b"" c"``). ``labels`` is a list like ``['A43B', 'Y10T']`` of subclass codes of ``scheme``
    (``"cpc"`` or ``"ipc"``), with only plain spaces around the items. Each row then passes
    :class:`PatentRowValidator` (the abstract may be empty, but not title and abstract both; no
    control characters; at most :data:`MAX_FIELD_CHARS` characters per field). A file with a header
    and no documents is refused.

    Args:
        path: the TSV file.
        scheme: ``"cpc"`` (sections A-H and Y) or ``"ipc"`` (A-H).
        empty_labels: a row with ``[]``: ``"error"`` (default; the task is multi-label with 1..N labels),
            ``"keep"`` or ``"drop"``.
        duplicate_ids: a ``patent_id`` seen before in the file: ``"error"`` (default, naming both
            lines), ``"keep"`` or ``"drop"`` (keeps the first occurrence).
        report: if given, updated with ``rows_read``, ``dropped_empty_labels``,
            ``dropped_duplicate_ids`` and ``rows``.

    Returns:
        One dict per patent, in file order: ``patent_id``, ``title``, ``abstract``, ``labels`` (as
        released, order preserved), ``sections`` and ``classes`` (sorted unique ancestors).

    Raises:
        PatentDataError: naming the file, the line and the field of the first problem.
    """
    validator = PatentRowValidator(scheme, empty_labels=empty_labels, duplicate_ids=duplicate_ids)
    return _read_all(path, iter_patent_tsv(path, validator), validator, report)


# --------------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------------


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def jsonl_values(path, raw: bytes, lineno: int, *, file_start: bool | None = None) -> dict:
    """The patent of one JSON Lines line (bytes, its line end included), parsed strictly but not
    yet checked by :class:`PatentRowValidator`; ``file_start``: the line is the file's first
    (default: ``lineno == 1``), where a BOM is refused."""
    if (lineno == 1 if file_start is None else file_start) and raw.startswith(codecs.BOM_UTF8):
        raise _bom_error(path, None)
    line = _decode_line(path, raw, lineno, None)
    if not line.strip():
        raise PatentDataError(path, lineno, None, "empty line; remove it")
    try:
        values = json.loads(line, object_pairs_hook=unique_json_object, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise PatentDataError(path, lineno, None, f"not valid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise PatentDataError(path, lineno, None, "not a patent: JSON nested too deeply") from None
    except ValueError as err:
        raise PatentDataError(path, lineno, None, f"not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise PatentDataError(path, lineno, None, f"expected a JSON object with {list(COLUMNS)}, "
                                                  f"got a {_json_type(values)}")
    return values


def iter_patent_jsonl(path: str | os.PathLike, validator: PatentRowValidator) -> Iterator[dict | None]:
    """The rows of a JSON Lines file, each checked by ``validator``, in file order (read line by
    line); ``None`` for a row an explicit filter option drops.

    One JSON object per line, UTF-8 without BOM, LF or CRLF line ends (lines are split on ``\\n``
    only, so U+2028 inside a string is text), e.g.
    ``{"patent_id": "9000001", "title": "...", "abstract": "...", "labels": ["A43B", "Y10T"]}``.
    Values must have their JSON types: strings, and ``labels`` a list of strings; nothing is
    converted. A key given twice, an empty line and a file without documents are refused."""
    documents = 0
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        for lineno, raw in enumerate(f, start=1):
            values = jsonl_values(path, raw, lineno)
            documents += 1
            yield validator.validate(values, path, lineno)
    if not documents:
        raise PatentDataError(path, None, None, "no documents (an empty file)")


def read_patent_jsonl(
    path: str | os.PathLike,
    scheme: str = "cpc",
    *,
    empty_labels: str = "error",
    duplicate_ids: str = "error",
    report: dict | None = None,
) -> list[dict]:
    """Read a JSON Lines file of patents (see :func:`iter_patent_jsonl`), strictly; arguments and
    result as for :func:`read_patent_tsv`."""
    validator = PatentRowValidator(scheme, empty_labels=empty_labels, duplicate_ids=duplicate_ids)
    return _read_all(path, iter_patent_jsonl(path, validator), validator, report)


# --------------------------------------------------------------------------------------------------
# Arrow record batches: parquet files and loaded datasets
# --------------------------------------------------------------------------------------------------


def iter_patent_batches(
    batches: Iterable, path, validator: PatentRowValidator, *, copies_from: int | None = None
) -> Iterator[dict | None]:
    """The rows of Arrow record batches (or tables), each checked by ``validator`` and named
    ``path, row N`` (1-based); ``None`` for a row an explicit filter option drops. Rows from number
    ``copies_from`` on are declared up-sampling copies (see :meth:`PatentRowValidator.validate`). One
    batch at a time is turned into Python values, so memory stays bounded."""
    row = 1
    for batch in batches:
        for values in batch.to_pylist():
            copy = copies_from is not None and row >= copies_from
            yield validator.validate(values, path, row, unit="row", copy=copy)
            row += 1


# Bytes read at a time from a parquet file's column chunks while its rows are checked (see iter_patent_parquet).
PARQUET_READ_BUFFER = 1 << 20


def iter_patent_parquet(
    path: str | os.PathLike, validator: PatentRowValidator, *, batch_rows: int = 1024, copies_from: int | None = None
) -> Iterator[dict | None]:
    """The rows of a parquet file, read in record batches of ``batch_rows``, each checked by
    ``validator`` (errors name ``path, row N``, 1-based); ``None`` for a row an explicit filter option
    drops; ``copies_from`` as for :func:`iter_patent_batches`. Columns are the validator's fields
    (``patent_id``, ``title``, ``abstract`` strings, ``labels`` a list of strings;
    ``sections``/``classes`` optional)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # streamed a page at a time: pyarrow's read-ahead (pre_buffer) held 0.6 GB to check a 1M-row export
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)
    except (pa.ArrowException, OSError) as err:
        raise PatentDataError(path, None, None, f"not a readable parquet file ({err})") from None
    with parquet:
        yield from iter_patent_batches(parquet.iter_batches(batch_size=batch_rows), path, validator,
                                       copies_from=copies_from)


# --------------------------------------------------------------------------------------------------
# WIPO-alpha XML
# --------------------------------------------------------------------------------------------------

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_IPC_REST = re.compile(r"\d*|\s*\d+\s*/\s*\d+")


def ipc_subclass(symbol: str, scheme: str = "ipc") -> str:
    """The subclass of a full IPC symbol: ``A01B0013080000`` or ``A01B 13/08`` -> ``A01B``."""
    symbol = symbol.strip()
    subclass, rest = symbol[:4], symbol[4:]
    if len(subclass) < 4 or cpc_level(subclass, scheme) != _LABEL_LEVEL or not _IPC_REST.fullmatch(rest):
        raise TaxonomyError(f"malformed IPC symbol {symbol!r}: expected e.g. 'A01B0013080000' or 'A01B 13/08'")
    return subclass


def _element_text(parent, tag: str, language: str) -> str:
    """Whitespace-normalised text of the ``tag`` child in ``language`` (or the first one without a language)."""
    if parent is None:
        return ""
    candidates = parent.findall(tag)
    chosen = [el for el in candidates if (el.get(_XML_LANG) or "").upper() == language.upper()]
    chosen = chosen or [el for el in candidates if el.get(_XML_LANG) is None]
    return " ".join("".join(chosen[0].itertext()).split()) if chosen else ""


def _line_of(raw: bytes, needle: str) -> int | None:
    """Line of the first occurrence of ``needle`` (ElementTree keeps no line numbers), if any, in the
    document's byte encoding (UTF-16 documents included)."""
    codec = "utf-8"
    if raw.startswith((codecs.BOM_UTF16_LE, b"<\x00")):
        codec = "utf-16-le"
    elif raw.startswith((codecs.BOM_UTF16_BE, b"\x00<")):
        codec = "utf-16-be"
    at = raw.find(needle.encode(codec))
    return None if at < 0 else raw.count("\n".encode(codec), 0, at) + 1


def _parse_xml(path: Path, raw: bytes):
    """The root element, parsed by defusedxml in whatever encoding the document declares: entity
    declarations (external or "billion laughs") and external references are refused, and expat never
    fetches the external DTD a DOCTYPE names."""
    parser = DefusedXMLParser(target=ET.TreeBuilder())
    try:
        parser.feed(raw)
        return parser.close()
    except DefusedXmlException as err:
        kind = "entity declarations" if isinstance(err, EntitiesForbidden) else "external references"
        raise PatentDataError(path, parser.parser.CurrentLineNumber, "DOCTYPE",
                              f"{kind} are not allowed ({err})") from None
    except ET.ParseError as err:
        raise PatentDataError(path, err.position[0], "xml", f"not well-formed XML ({err})") from None


def _read_wipo_document(path: Path, scheme: str, language: str) -> dict:
    raw = path.read_bytes()
    root = _parse_xml(path, raw)
    if root.tag != "record":
        raise PatentDataError(
            path, _line_of(raw, f"<{root.tag}"), "record", f"expected a <record> root element, got <{root.tag}>"
        )

    ipcs = root.find("ipcs")
    if ipcs is None or not ipcs.get("mc"):
        raise PatentDataError(path, _line_of(raw, "<ipcs"), "ipcs/@mc", 'no main IPC code (<ipcs mc="...">)')
    symbols = [("ipcs/@mc", ipcs.get("mc"))] + [("ipcs/ipc/@ic", ipc.get("ic") or "") for ipc in ipcs.findall("ipc")]
    labels = []
    for field, symbol in symbols:
        try:
            code = ipc_subclass(symbol, scheme)
        except TaxonomyError as err:
            raise PatentDataError(path, _line_of(raw, symbol), field, str(err)) from None
        if code not in labels:  # several groups of one subclass give one subclass label
            labels.append(code)

    title = _element_text(root.find("tis"), "ti", language)
    abstract = _element_text(root.find("abs"), "ab", language)
    if not title and not abstract:
        raise PatentDataError(
            path, _line_of(raw, "<tis") or _line_of(raw, "<record"), "tis/ti", f"no {language} title or abstract text"
        )
    patent_id = root.get("pn") or path.stem
    return {
        "patent_id": patent_id,
        "title": title,
        "abstract": abstract,
        "labels": labels,
        **hierarchy_fields(labels, scheme),
    }


def read_wipo_alpha(directory: str | os.PathLike, scheme: str = "ipc", *, language: str = "EN") -> list[dict]:
    """Read every WIPO-alpha document (``*.xml``, searched recursively, in sorted path order) under ``directory``.

    Assumed layout (the WIPO-alpha distribution, documented by WIPO, 2002): one XML file per patent
    document under the ``train`` and ``test`` folders (any sub-folder structure below them), each
    with a ``<record>`` root like::

        <record cy="EP" pn="EP0123456" kind="A1">
          <ipcs ed="7" mc="A01B0013080000"><ipc ic="A01B0033140000"/></ipcs>
          <tis><ti xml:lang="EN">Soil cultivation device</ti></tis>
          <abs><ab xml:lang="EN">A device ...</ab></abs>
        </record>

    ``mc`` is the main IPC code and each ``<ipc ic=...>`` a secondary one; both are cut to the
    4-character subclass, main first, repeated subclasses listed once. The title and abstract are
    the ``ti``/``ab`` elements in ``language`` (or without ``xml:lang``), whitespace-normalised. The
    ``patent_id`` is the record's ``pn`` attribute, else the file name without ``.xml``. Entity
    declarations are refused and external DTDs are never fetched.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"WIPO-alpha folder {directory} does not exist")
    files = sorted(directory.rglob("*.xml"))
    if not files:
        raise FileNotFoundError(f"no *.xml documents under {directory}")
    rows, first_file = [], {}
    validator = PatentRowValidator(scheme, duplicate_ids="keep")  # the same content checks as every format
    for path in files:
        row = _read_wipo_document(path, scheme, language)
        if row["patent_id"] in first_file:
            raise PatentDataError(
                path, None, "record/@pn", f"patent_id {row['patent_id']!r} also in {first_file[row['patent_id']]}"
            )
        first_file[row["patent_id"]] = path
        rows.append(validator.validate(row, path, None))
    return rows
