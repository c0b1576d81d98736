# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Strict readers for patent classification data: the USPTO-70k TSV release format and WIPO-alpha XML.

Every problem in the input raises :class:`PatentDataError`, whose message names the file, the line and
the field, so that a person can open the file and fix it. Nothing is dropped silently: the only
filters are explicit options (``empty_labels="drop"``, ``duplicate_ids="drop"``) and their counts are
logged and returned through ``report``.

The hierarchy logic (code validation, ancestors, level names) comes from :mod:`taxonomy_thmm`.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from defusedxml import DefusedXmlException, EntitiesForbidden
from defusedxml.ElementTree import DefusedXMLParser

from taxonomy_thmm import LEVEL_NAMES, TaxonomyError, cpc_ancestors, cpc_level, level_name

__all__ = [
    "COLUMNS",
    "PatentDataError",
    "hierarchy_fields",
    "ipc_subclass",
    "parse_label_list",
    "read_patent_tsv",
    "read_wipo_alpha",
]

logger = logging.getLogger(__name__)

COLUMNS = ("patent_id", "title", "abstract", "labels")
_LABEL_LEVEL = max(LEVEL_NAMES)  # labels are codes of the deepest named level: CPC/IPC subclasses
_POLICIES = ("error", "keep", "drop")


class PatentDataError(ValueError):
    """Malformed input data; ``path``, ``line`` (1-based, ``None`` when unknown) and ``field`` say where."""

    def __init__(self, path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------

_QUOTED_ITEM = re.compile(r"\s*'([^'\"\\\[\],]*)'\s*")


def parse_label_list(text: str) -> list[str]:
    """Parse a Python-style list of quoted codes, ``"['A43B', 'Y10T']"``, without ``eval``.

    Only single-quoted items separated by commas are accepted (the release's format); the codes
    themselves are validated by the caller. Raises ``ValueError`` describing what is wrong.
    """
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"expected a list of quoted codes like ['A43B', 'Y10T'], got {text!r}")
    inner = text[1:-1]
    if not inner.strip():
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
    ancestors = [cpc_ancestors(code, scheme) for code in labels]
    return {
        level_name(level, plural=True): sorted({chain[level - 1] for chain in ancestors})
        for level in range(1, _LABEL_LEVEL)
    }


def _check_labels(codes: list[str], scheme: str) -> None:
    """Subclass codes only, each once; raises ``ValueError``/``TaxonomyError`` naming the code."""
    seen = set()
    for code in codes:
        level = cpc_level(code, scheme)
        if level != _LABEL_LEVEL:
            raise TaxonomyError(
                f"{code!r} is a {level_name(level)}; labels must be {level_name(_LABEL_LEVEL)} codes like 'A43B'"
            )
        if code in seen:
            raise ValueError(f"code {code!r} is listed twice")
        seen.add(code)


def _check_policy(name: str, value: str) -> None:
    if value not in _POLICIES:
        raise ValueError(f"{name} must be one of {_POLICIES}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# TSV (USPTO-70k release format)
# --------------------------------------------------------------------------------------------------


def _decode_utf8(path, raw: bytes) -> str:
    """UTF-8 text of ``raw``; a BOM or an invalid byte raises an error naming line and column."""
    if raw.startswith(codecs.BOM_UTF8):
        raise PatentDataError(
            path, 1, COLUMNS[0], "the file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split("\t")
        column = raw.count(b"\t", line_start, err.start)
        field = header[column] if column < len(header) else f"column {column + 1}"
        raise PatentDataError(
            path,
            raw.count(b"\n", 0, err.start) + 1,
            field,
            f"byte(s) {raw[err.start : err.end]!r} are not valid UTF-8 ({err.reason}); re-encode the file as UTF-8",
        ) from None


def _quoting_field(text: str, lineno: int, header: list[str]) -> str:
    """Best guess of the column a csv quoting error is in: the first value that opens a quote."""
    lines = text.split("\n")
    line = lines[lineno - 1] if lineno <= len(lines) else ""
    for column, value in enumerate(line.split("\t")):
        if value.startswith('"'):
            return header[column] if column < len(header) else f"column {column + 1}"
    return header[0]


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
    and one patent per line; LF or CRLF line ends; values may use CSV quoting (``"a ""b"" c"``).
    ``labels`` is a list like ``['A43B', 'Y10T']`` of subclass codes of ``scheme`` (``"cpc"`` or
    ``"ipc"``). The abstract may be empty, but not title and abstract both.

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
    _check_policy("empty_labels", empty_labels)
    _check_policy("duplicate_ids", duplicate_ids)
    cpc_level("A", scheme)  # fails early on an unknown scheme
    text = _decode_utf8(path, Path(path).read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"', doublequote=True, strict=True)

    header = next(reader, None)
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
    index = {column: header.index(column) for column in COLUMNS}

    rows, first_line_of_id = [], {}
    counts = {"rows_read": 0, "dropped_empty_labels": 0, "dropped_duplicate_ids": 0}
    while True:
        lineno = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise PatentDataError(
                path, lineno, _quoting_field(text, lineno, header), f"bad CSV quoting ({err})"
            ) from None
        if len(fields) != len(header):
            if not fields:
                raise PatentDataError(path, lineno, COLUMNS[0], "empty line; remove it")
            field = header[len(fields)] if len(fields) < len(header) else f"column {len(header) + 1}"
            raise PatentDataError(
                path, lineno, field, f"expected {len(header)} tab-separated fields, got {len(fields)}"
            )
        counts["rows_read"] += 1
        row = {column: fields[index[column]] for column in COLUMNS}

        patent_id = row["patent_id"]
        if not patent_id or patent_id != patent_id.strip():
            raise PatentDataError(
                path, lineno, "patent_id", f"patent_id must be non-empty without surrounding spaces, got {patent_id!r}"
            )
        if not row["title"].strip() and not row["abstract"].strip():
            raise PatentDataError(path, lineno, "title", "title and abstract are both empty; a patent needs some text")
        try:
            row["labels"] = parse_label_list(row["labels"])
            _check_labels(row["labels"], scheme)
        except ValueError as err:  # TaxonomyError is a ValueError
            raise PatentDataError(path, lineno, "labels", str(err)) from None

        if not row["labels"]:
            if empty_labels == "error":
                raise PatentDataError(
                    path,
                    lineno,
                    "labels",
                    "empty label list []; every patent needs at least one label (or pass empty_labels='keep'/'drop')",
                )
            if empty_labels == "drop":
                counts["dropped_empty_labels"] += 1
                continue
        if patent_id in first_line_of_id:
            if duplicate_ids == "error":
                raise PatentDataError(
                    path,
                    lineno,
                    "patent_id",
                    f"patent_id {patent_id!r} already appears on line {first_line_of_id[patent_id]} "
                    "(or pass duplicate_ids='keep'/'drop')",
                )
            if duplicate_ids == "drop":
                counts["dropped_duplicate_ids"] += 1
                continue
        else:
            first_line_of_id[patent_id] = lineno
        row.update(hierarchy_fields(row["labels"], scheme))
        rows.append(row)

    counts["rows"] = len(rows)
    for key in ("dropped_empty_labels", "dropped_duplicate_ids"):
        if counts[key]:
            logger.warning("%s: %s = %d (explicit filter option)", path, key, counts[key])
    if report is not None:
        report.update(counts)
    return rows


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
    for path in files:
        row = _read_wipo_document(path, scheme, language)
        if row["patent_id"] in first_file:
            raise PatentDataError(
                path, None, "record/@pn", f"patent_id {row['patent_id']!r} also in {first_file[row['patent_id']]}"
            )
        first_file[row["patent_id"]] = path
        rows.append(row)
    return rows
