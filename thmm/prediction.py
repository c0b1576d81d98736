# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
r"""Streaming prediction: documents are read in chunks from ``.txt``, ``.tsv``, ``.jsonl`` or
``.parquet``, predicted, and written as they come, so memory stays constant whatever the input size.

Reading is strict, one path per format: the format comes from the suffix (:data:`FORMATS`) or is
named; ``.txt`` lines are split on ``"\n"`` only; titles and abstracts must be strings of at most
:data:`MAX_FIELD_CHARS` characters, ids strings or integers; anything else raises
:class:`InputError` naming the file, the line (or row) and the field, when the reading gets there.

Under ``accelerate launch --num_processes N`` every process reads (and checks) the whole input, but
predicts only the chunks ``i`` with ``i % N == rank``, into its own part file; the main process then
merges the parts chunk by chunk, so there is one output, in input order, with each document once.
A chunk's batches do not depend on the number of processes, so the output is the same as one
process's."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path

import numpy as np
import torch

from dataset_script import MAX_FIELD_CHARS  # the training readers' limit: one limit per field, whatever the command
from modeling_thmm import longest_first
from taxonomy_thmm import unique_json_object
from tokenization_thmm import has_text, text_problem

from .cpu_memory import return_freed_memory
from .data import Rows, TokenCollator, encode_texts
from .launch import world
from .outputs import replaceable_output_file, work_folder

CHUNK_SIZE = 1024
# Input formats by file suffix; ``--format`` names one for any other file, or for stdin (``-``, text lines by default).
FORMATS = {".txt": "txt", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
SUFFIXES = tuple(FORMATS)
# The longest line, in bytes: three fields at their limit fit, even as JSON \u escapes; it keeps a
# file without line breaks from being read into memory whole.
MAX_LINE_BYTES = 64 * 2**20


# The fields a document may have, and those of the training formats that no prediction reads: the gold
# codes of the release TSV (``labels``) and of a thmm-publish export (``sections``, ``classes`` too).
READ_FIELDS = ("title", "text", "abstract", "id", "patent_id")
KNOWN_FIELDS = (*READ_FIELDS, "labels", "sections", "classes")


class InputError(ValueError):
    """Unusable input; the message names the file, the line and the field."""


def print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class FieldNames:
    """The field names of one input file, checked as they are first met: a near miss of a field this
    command reads (``Abstract``, ``abstract ``) is an error, since the field would otherwise be lost; any
    other unknown field is reported once through ``warn``, since it is not read."""

    def __init__(self, name: str, warn: Callable[[str], None] | None):
        self.name, self.warn, self.seen = name, warn, set(KNOWN_FIELDS)

    def check(self, fields: Iterable, where: str) -> None:
        for field in fields:
            if field in self.seen:
                continue
            near = field.strip().lower() if isinstance(field, str) else None
            if near in READ_FIELDS:
                raise InputError(f"{self.name}, {where}, field {field!r}: not a field name; did you mean {near!r}? "
                                 "(names are case-sensitive)")
            self.seen.add(field)
            if self.warn is not None:
                self.warn(f"{self.name}, {where}: field {field!r} is not read (a document has 'title' or 'text', "
                          "and optionally 'abstract' and 'id' or 'patent_id')")


def field_error(name: str, where: str, field: str, problem: str) -> InputError:
    return InputError(f"{name}, {where}, field {field!r}: {problem}")


# ---- reading -------------------------------------------------------------------------------------


def input_format(path: str, named: str | None = None) -> str:
    """The format of ``path``: ``named`` (``--format``) if given, else by its suffix; ``-`` (stdin)
    holds text lines unless named. Any other suffix is refused rather than guessed."""
    if named is not None:
        if named not in FORMATS.values():
            raise InputError(f"--format: must be one of {', '.join(FORMATS.values())} (got {named!r})")
        if named == "parquet" and path == "-":
            raise InputError("--input -: parquet cannot be read from stdin (it is read by columns); give a file")
        return named
    if path == "-":
        return "txt"
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        got = f"suffix {suffix!r}" if suffix else "no suffix"
        raise InputError(f"{path}: unsupported input ({got}); the supported suffixes are {', '.join(SUFFIXES)} and - "
                         f"for stdin, or name the format with --format {{{','.join(FORMATS.values())}}}")
    return FORMATS[suffix]


def input_name(path: str) -> str:
    """``path`` as messages name it: ``<stdin>`` for ``-``."""
    return "<stdin>" if path == "-" else path


def iter_documents(path: str, named_format: str | None = None,
                   warn: Callable[[str], None] | None = print_warning) -> Iterator[dict]:
    """``{"id", "title", "abstract", "where"}`` per document of a .txt, .tsv, .jsonl or .parquet file
    (``-``: stdin), read lazily; title and abstract stripped. The format (:func:`input_format`) and
    the file are checked now; an unusable line, row or field raises :class:`InputError` naming it
    when the reading gets there. A field that is not read is reported once through ``warn``
    (:class:`FieldNames`; ``None``: not reported)."""
    name = input_name(path)
    kind = input_format(path, named_format)
    fields = FieldNames(name, warn)
    if kind == "parquet":
        docs = _parquet_documents(_open_parquet(path, name), name, fields)
    elif kind == "txt":
        docs = _txt_documents(_lines(_open_bytes(path, name), name), name)
    else:
        reader = {"tsv": _tsv_documents, "jsonl": _jsonl_documents}[kind]
        docs = reader(_lines(_open_bytes(path, name), name), name, fields)
    return _stripped_and_counted(docs, name)


def _stripped_and_counted(docs: Iterator[dict], name: str) -> Iterator[dict]:
    count = 0
    for doc in docs:
        doc["title"], doc["abstract"] = doc["title"].strip(), doc["abstract"].strip()
        if not has_text(doc["title"]) and not has_text(doc["abstract"]):
            _empty(name, doc["where"])
        count += 1
        yield doc
    if not count:
        raise InputError(f"{name}: no documents")


def _open_bytes(path: str, name: str):
    """A binary stream of the file, or stdin's, taken now: whatever replaces ``sys.stdin`` later
    (see ``thmm.cli.predict``) does not change where the documents come from."""
    if path == "-":
        if sys.stdin is None:
            raise InputError("--input -: there is no stdin to read")
        return nullcontext(sys.stdin.buffer)  # not closed: stdin is not ours
    try:
        return open(path, "rb")  # noqa: SIM115 (closed by _lines)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory") from None


def _lines(source, name: str) -> Iterator[tuple[int, str]]:
    r"""``(line number, text)`` of a UTF-8 stream, one line at a time: split on ``"\n"`` only (a form
    feed, a vertical tab or a Unicode line separator stays in its line, so the numbers are those of
    ``wc -l`` and any editor), a ``"\r"`` before it dropped (CRLF files), a leading BOM dropped. A
    line that is not UTF-8, holds a NUL byte or is longer than :data:`MAX_LINE_BYTES` is an error
    naming it."""
    with source as stream:
        for lineno in itertools.count(1):
            raw = stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"{name}, line {lineno}: longer than {MAX_LINE_BYTES:,} bytes")
            if b"\0" in raw:
                raise InputError(f"{name}, line {lineno}: a NUL byte (not a text file, or UTF-16?)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{name}, line {lineno}: not UTF-8 ({err.reason})") from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            yield lineno, text.removesuffix("\n").removesuffix("\r")


def _text(value, name: str, where: str, field: str) -> str:
    """``value`` if it is a usable title or abstract: a string, within :data:`MAX_FIELD_CHARS`, that is
    text (``tokenization_thmm.text_problem``: no NUL, no lone surrogate), the rule of ``predict`` too."""
    if not isinstance(value, str):
        raise field_error(name, where, field, f"must be a string (got {_kind(value)})")
    _check_size(value, name, where, field)
    if (problem := text_problem(value)) is not None:
        raise field_error(name, where, field, problem)
    return value


def _identifier(value, name: str, where: str, field: str) -> str | int:
    """``value`` if it is a usable id: a non-empty string (within :data:`MAX_FIELD_CHARS`) or an integer,
    kept as it is."""
    if isinstance(value, str):
        if not value.strip():
            raise field_error(name, where, field, "empty (leave the field out to number the documents)")
        return _check_size(value, name, where, field)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise field_error(name, where, field, f"must be a string or an integer (got {_kind(value)})")


def _check_size(value: str, name: str, where: str, field: str) -> str:
    if len(value) > MAX_FIELD_CHARS:
        raise field_error(name, where, field, f"{len(value):,} characters, more than the limit of {MAX_FIELD_CHARS:,}")
    return value


def _kind(value) -> str:
    """What a JSON (or parquet) value is, in JSON's words, with the value if short: ``a number: 42``."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{kinds.get(type(value), type(value).__name__)}: {shown}"


def _one_of(record: dict, fields: tuple[str, str], name: str, where: str) -> str | None:
    """The one of two alternative field names that ``record`` has (``title``/``text``,
    ``id``/``patent_id``); both is an error, since one of them would be ignored."""
    present = [f for f in fields if f in record]
    if len(present) > 1:
        raise InputError(f"{name}, {where}, fields {fields[0]!r} and {fields[1]!r}: give one, not both")
    return present[0] if present else None


def _document(record: dict, default_id: int, name: str, where: str) -> dict:
    """The document of one JSON object or parquet row: ``title`` (or ``text``) a string, ``abstract``
    a string or absent/null, ``id`` (or ``patent_id``) a string or an integer, or ``default_id``."""
    title = _one_of(record, ("title", "text"), name, where)
    if title is None:
        raise field_error(name, where, "title", "missing (or give 'text')")
    ident = _one_of(record, ("id", "patent_id"), name, where)
    abstract = record.get("abstract")
    return {"id": default_id if ident is None else _identifier(record[ident], name, where, ident),
            "title": _text(record[title], name, where, title),
            "abstract": "" if abstract is None else _text(abstract, name, where, "abstract"), "where": where}


class _NotJSON(ValueError):
    pass


def _not_a_json_constant(constant: str):
    raise _NotJSON(f"{constant} is not JSON")


def _jsonl_documents(lines, name: str, fields: FieldNames) -> Iterator[dict]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=unique_json_object, parse_constant=_not_a_json_constant)
        except json.JSONDecodeError as err:
            raise InputError(f"{name}, line {lineno}: invalid JSON ({err.msg})") from None
        except ValueError as err:  # _NotJSON, an integer of too many digits
            raise InputError(f"{name}, line {lineno}: invalid JSON ({err})") from None
        except RecursionError:
            raise InputError(f"{name}, line {lineno}: invalid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise InputError(f"{name}, line {lineno}: expected a JSON object (got {_kind(obj)})")
        fields.check(obj, f"line {lineno}")
        yield _document(obj, lineno, name, f"line {lineno}")


def _tsv_documents(lines, name: str, fields: FieldNames) -> Iterator[dict]:
    fed = {"line": 0}

    def text_lines():  # csv needs the line ends, to keep a line break inside a quoted field
        for lineno, line in lines:
            fed["line"] = lineno
            yield line + "\n"

    # The dialect of the release format (dataset_script.readers): a quote opens a quoted field only
    # at its start, and anything else about quotes is an error rather than a guess.
    rows = csv.reader(text_lines(), delimiter="\t", quotechar='"', doublequote=True, strict=True)
    header = _tsv_row(rows, fed, name)
    for column in READ_FIELDS:
        if header and header.count(column) > 1:
            raise InputError(f"{name}, line 1, field {column!r}: the header has it twice")
    fields.check(header or [], "line 1 (the header)")
    title = _one_of(dict.fromkeys(header or []), ("title", "text"), name, "line 1 (the header)")
    if title is None:
        raise InputError(f"{name}, line 1: the header needs a 'title' column (got {header or []})")
    ident = _one_of(dict.fromkeys(header), ("id", "patent_id"), name, "line 1 (the header)")
    while (row := _tsv_row(rows, fed, name)) is not None:
        lineno = row.start
        if len(row) != len(header):
            raise InputError(f"{name}, line {lineno}: {len(row)} fields, the header has {len(header)}")
        rec, where = dict(zip(header, row)), f"line {lineno}"
        yield {"id": _identifier(rec[ident], name, where, ident) if ident else lineno,
               "title": _text(rec[title], name, where, title),
               "abstract": _text(rec.get("abstract", ""), name, where, "abstract"), "where": where}


class _Row(list):
    start: int  # the line it starts on


def _tsv_row(rows, fed: dict, name: str) -> _Row | None:
    """The next row, csv's field limit raised to :data:`MAX_LINE_BYTES` meanwhile (its default,
    131072, is below :data:`MAX_FIELD_CHARS`; it is a process-wide setting, so it is put back)."""
    start = fed["line"] + 1
    limit = csv.field_size_limit(MAX_LINE_BYTES)
    try:
        row = _Row(next(rows))
    except StopIteration:
        return None
    except csv.Error as err:
        problem = "a quoted field runs past the size limit (a quote not closed?)" if "field limit" in str(err) \
            else f"bad TSV quoting ({err})"
        raise InputError(f"{name}, line {start}: {problem}") from None
    finally:
        csv.field_size_limit(limit)
    row.start = start
    return row


def _txt_documents(lines, name: str) -> Iterator[dict]:
    # Blank lines at the end of a file are not documents, but one is only known to be at the end at
    # EOF: remember the first blank line, and report it as an empty document once text follows it.
    blank = None
    for lineno, line in lines:
        if not line.strip():
            blank = blank or lineno
            continue
        if blank is not None:
            _empty(name, f"line {blank}")
        title, _, abstract = line.partition("\t")
        where = f"line {lineno}"
        yield {"id": lineno, "title": _text(title, name, where, "title"),
               "abstract": _text(abstract, name, where, "abstract"), "where": where}


def _open_parquet(path: str, name: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # pre-buffering would keep every column chunk read so far: memory would grow with the file
        return pq.ParquetFile(path, pre_buffer=False)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{name}: not a readable parquet file ({err})") from None


def _is_string(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _parquet_documents(file, name: str, fields: FieldNames) -> Iterator[dict]:
    import pyarrow as pa

    schema = file.schema_arrow
    columns = {column: schema.field(column).type for column in schema.names}
    fields.check(schema.names, "columns")
    for pair in (("title", "text"), ("id", "patent_id")):
        if all(column in columns for column in pair):
            raise InputError(f"{name}, columns {pair[0]!r} and {pair[1]!r}: give one, not both")
    title = next((c for c in ("title", "text") if c in columns), None)
    if title is None:
        raise InputError(f"{name}: the parquet file needs a 'title' column (got {schema.names})")
    ident = next((c for c in ("id", "patent_id") if c in columns), None)
    for column in (title, "abstract"):
        if column in columns and not _is_string(columns[column]):
            raise InputError(f"{name}, column {column!r}: must hold strings (got {columns[column]})")
    if ident and not (_is_string(columns[ident]) or pa.types.is_integer(columns[ident])):
        raise InputError(f"{name}, column {ident!r}: must hold strings or integers (got {columns[ident]})")
    wanted = [c for c in (title, "abstract", ident) if c and c in columns]
    row = 0
    batches = file.iter_batches(batch_size=CHUNK_SIZE, columns=wanted)
    while True:
        try:
            batch = next(batches, None)
            data = batch.to_pylist() if batch is not None else None
        except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
            raise InputError(f"{name}, after row {row}: unreadable ({err})") from None
        if data is None:
            return
        for record in data:
            row += 1
            yield _document(record, row, name, f"row {row}")


def _empty(name: str, where: str):
    raise InputError(f"{name}, {where}, fields 'title' and 'abstract': empty document")


def chunked(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ---- predicting ----------------------------------------------------------------------------------


class ChunkPredictor:
    """Node probabilities and truncation flags for a chunk of documents: one tokenizer pass
    (:func:`thmm.data.encode_texts`, the ids of ``encode_documents``), batches cut in longest-first
    order and padded by :class:`thmm.data.TokenCollator`, results put back in input order."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int):
        self.model, self.tokenizer, self.max_length, self.batch_size = model.eval(), tokenizer, max_length, batch_size
        self.collate = TokenCollator(tokenizer)

    @torch.no_grad()
    def __call__(self, docs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        # the previous chunk's: batches of ever-different shapes fragment glibc's per-thread arenas, so a long
        # run's resident memory would creep up by a few MB per chunk although nothing leaks
        return_freed_memory()
        table = encode_texts(self.tokenizer, [d["title"] for d in docs], [d["abstract"] for d in docs],
                             self.max_length)
        order = longest_first(table.column("length").to_numpy())
        probs = np.zeros((len(docs), len(self.model.taxonomy)), dtype=np.float32)
        for start in range(0, len(docs), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.collate(Rows(table.take(rows), rows))
            batch.pop("index")
            logits = self.model(**{k: v.to(self.model.device) for k, v in batch.items()}).logits.float()
            if hasattr(self.model, "calibrated_logits"):  # the calibration saved with the model
                logits = self.model.calibrated_logits(logits)
            probs[rows] = torch.sigmoid(logits).cpu().numpy()
        return probs, table.column("truncated").to_numpy()


def check_finite_scores(probabilities: np.ndarray, docs: list[dict], source: str, model: str) -> None:
    """Stop at the first document whose scores are not all finite (NaN weights give NaN scores):
    JSON has no NaN, and a NaN is below no threshold, so it would pass as "no code" without a word."""
    finite = np.isfinite(probabilities).all(axis=1)
    if not finite.all():
        doc = docs[int(np.argmin(finite))]
        raise ValueError(f"--model {model}: non-finite scores for {source}, {doc['where']} (id {doc['id']!r}); the "
                         "model's weights are damaged, so no predictions are written")


# ---- writing -------------------------------------------------------------------------------------


class OutputFile:
    """A text stream that names its output when a write fails (a full disk, a broken pipe): an
    :class:`InputError` ``--output PATH: could not be written (...)`` instead of a bare ``[Errno 28]``."""

    def __init__(self, stream, label: str):
        self.stream, self.label = stream, label

    def failed(self, err: OSError) -> InputError:
        return InputError(f"{self.label}: could not be written ({err.strerror or err})")

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as err:
            raise self.failed(err) from None

    def writelines(self, lines: Iterable[str]) -> None:
        try:
            self.stream.writelines(lines)
        except OSError as err:
            raise self.failed(err) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as err:
            raise self.failed(err) from None


def check_output_file(path: str, option: str, command: str, is_own_record: Callable[[dict], bool]) -> None:
    """Fail before any work when ``path`` cannot be :func:`open_output`'s: a folder, under a missing or
    unwritable folder, or an existing file that is not ``command``'s output (a JSON line ``is_own_record``
    does not recognise, :func:`thmm.outputs.replaceable_output_file`), which is never overwritten."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(target if target.exists() else parent, os.W_OK):
        raise InputError(f"{option} {path}: not writable")
    if target.is_file() and not replaceable_output_file(target, is_own_record):
        raise InputError(f"{option} {path}: the file exists and is not a {command} output (not every line is one of "
                         "its records); it is not overwritten: choose another file, or remove it")


@contextmanager
def open_output(path: str, option: str = "--output"):
    """The output stream (an :class:`OutputFile`): stdout for ``-``; for a file, a new file that replaces
    it only when everything was written, so an error or a kill leaves no partial output. Folders missing
    above the file are made, and removed again if nothing is written. A path that is not a regular file
    (``/dev/null``, a pipe) is written directly."""
    label = f"{option} {path}"
    if path == "-":
        out = OutputFile(sys.stdout, "stdout")
        yield out
        out.flush()
        return
    target = Path(path)
    if target.is_symlink() and target.is_file():  # a link to the output: the file it leads to is replaced
        target = target.resolve()
    with made_folders(target.parent):
        if target.exists() and not target.is_file():
            with written(open(target, "w", encoding="utf-8"), label) as out:
                yield out
        else:
            with replacing_file(target, label) as out:
                yield out


@contextmanager
def written(stream, label: str, before_close: Callable[[], None] | None = None):
    """``stream`` as an :class:`OutputFile`, flushed (then ``before_close()``) and closed when the block
    ends. On an error the stream is closed too, and an error of that closing (a full disk's, again) does
    not hide the first."""
    out = OutputFile(stream, label)
    try:
        yield out
        out.flush()
        if before_close is not None:
            before_close()
    except BaseException:
        with suppress(OSError):
            stream.close()
        raise
    try:
        stream.close()
    except OSError as err:
        raise out.failed(err) from None


@contextmanager
def made_folders(folder: Path):
    """Make ``folder`` and the folders missing above it; if the block fails, remove those it made
    (empty ones only: nothing else is ever removed)."""
    missing = []
    probe = Path(folder)
    while str(probe) not in ("", ".") and not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    try:
        yield
    except BaseException:
        for made in missing:  # deepest first
            try:
                made.rmdir()
            except OSError:  # not empty (something else wrote there meanwhile), or gone
                break
        raise


@contextmanager
def replacing_file(target: Path, label: str):
    """An :class:`OutputFile` (UTF-8) whose file replaces ``target`` when the block ends without error.
    On Linux the file has no name until then (``O_TMPFILE``), so even a killed process leaves nothing
    behind; elsewhere it is a hidden ``.NAME.PID.partial`` beside ``target``, removed on error."""
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd = os.open(parent, os.O_TMPFILE | os.O_RDWR, 0o666)
    except (AttributeError, OSError):  # no O_TMPFILE on this system or this file system
        fd = None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else None  # a replaced file keeps its mode
    try:
        if fd is None:
            with written(open(tmp, "w", encoding="utf-8"), label) as out:
                if mode is not None:
                    os.chmod(tmp, mode)
                yield out
        else:
            if mode is not None:
                os.fchmod(fd, mode)
            with written(open(fd, "w", encoding="utf-8"), label, before_close=lambda: _give_name(fd, tmp)) as out:
                yield out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _give_name(fd: int, path: Path) -> None:
    """Link the unnamed file ``fd`` at ``path``; where ``/proc`` cannot link it, copy it there (its mode too)."""
    folder = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # a directory fd makes os.link call linkat(..., AT_SYMLINK_FOLLOW): plain link() would link the
        # /proc symlink itself and fail (EXDEV)
        os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=folder)
        return
    except OSError:
        pass
    finally:
        os.close(folder)
    with open(path, "wb") as copy:
        os.fchmod(copy.fileno(), stat.S_IMODE(os.fstat(fd).st_mode))
        offset = 0
        while block := os.pread(fd, 1 << 20, offset):
            copy.write(block)
            offset += len(block)


def write_predictions(chunks: Iterable[list[dict]], predict_lines: Callable[[list[dict]], tuple[list[str], int]],
                      output: str, state=None) -> tuple[int, int]:
    """Write ``predict_lines(chunk)`` (output lines and the number of truncated documents) for every
    chunk to ``output``, in order; returns the numbers of documents and of truncated ones. With an
    Accelerate ``state`` of several processes, the chunks are dealt out round robin (see the module
    docstring)."""
    if state is None or state.num_processes == 1:
        documents = truncated = 0
        with open_output(output) as out:
            for chunk in chunks:
                lines, cut = predict_lines(chunk)
                out.writelines(lines)
                documents, truncated = documents + len(chunk), truncated + cut
        return documents, truncated
    return _write_distributed(chunks, predict_lines, output, state)


def _write_distributed(chunks, predict_lines, output: str, state) -> tuple[int, int]:
    from accelerate.utils import broadcast_object_list

    # the parts go beside a file output (the same disk); for stdout, a device or a pipe, to the temporary folder
    regular = output != "-" and (Path(output).is_file() or not Path(output).exists())
    parent = Path(output).resolve().parent if regular else None
    with made_folders(parent) if parent and state.is_main_process else nullcontext():
        parts = broadcast_object_list([str(work_folder(parent or Path(tempfile.gettempdir()), ".thmm-predict-"))
                                       if state.is_main_process else None])[0]
        return _write_parts(chunks, predict_lines, output, state, parts)


def _write_parts(chunks, predict_lines, output: str, state, parts: str) -> tuple[int, int]:
    from accelerate.utils import gather_object

    rank, processes = state.process_index, state.num_processes
    try:
        sizes, truncated = [], 0
        with open(Path(parts) / f"part-{rank:05d}.jsonl", "w", encoding="utf-8") as stream:
            part = OutputFile(stream, f"--output {output} (its part in {parts})")
            for i, chunk in enumerate(chunks):
                sizes.append(len(chunk))
                if i % processes == rank:
                    lines, cut = predict_lines(chunk)
                    part.writelines(lines)
                    truncated += cut
        truncated = sum(gather_object([truncated]))
        state.wait_for_everyone()
        if state.is_main_process:
            _merge_parts(Path(parts), processes, sizes, output)
        state.wait_for_everyone()
    finally:
        if state.is_main_process:
            shutil.rmtree(parts, ignore_errors=True)
    return sum(sizes), truncated


def _merge_parts(parts: Path, processes: int, sizes: list[int], output: str) -> None:
    """Chunk ``i`` is the next ``sizes[i]`` lines of part ``i % processes``; every part must be used up."""
    with ExitStack() as stack:
        files = [stack.enter_context(open(parts / f"part-{r:05d}.jsonl", encoding="utf-8")) for r in range(processes)]
        with open_output(output) as out:
            for i, size in enumerate(sizes):
                lines = list(itertools.islice(files[i % processes], size))
                if len(lines) != size:
                    raise RuntimeError(f"process {i % processes} wrote {len(lines)} of the {size} lines of chunk {i}")
                out.writelines(lines)
            if any(f.readline() for f in files):
                raise RuntimeError("a process wrote more predictions than its chunks hold")
