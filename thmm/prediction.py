# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Streaming prediction: documents are read in chunks from ``.txt``, ``.tsv``, ``.jsonl`` or
``.parquet``, predicted, and written as they come, so memory stays constant whatever the input size.

Under ``accelerate launch --num_processes N`` every process reads (and checks) the whole input, but
predicts only the chunks ``i`` with ``i % N == rank``, into its own part file; the main process then
merges the parts chunk by chunk, so there is one output, in input order, with each document once.
A chunk's batches do not depend on the number of processes, so the output is the same as one
process's."""

from __future__ import annotations

import csv
import ctypes
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch

from modeling_thmm import longest_first

from .data import Rows, TokenCollator, encode_texts

CHUNK_SIZE = 1024
SUFFIXES = (".txt", ".tsv", ".jsonl", ".parquet")


class InputError(ValueError):
    """Unusable input; the message names the file, the line and the field."""


# ---- reading -------------------------------------------------------------------------------------


def _lines(path: str, name: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file (or stdin), one line at a time: lines split as
    ``str.splitlines`` splits them, a leading BOM dropped, bytes that are not UTF-8 an error naming
    the line."""
    if path == "-":
        yield from _decoded_lines(sys.stdin.buffer, name)
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below; the error is about opening it)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    with stream:
        yield from _decoded_lines(stream, name)


def _decoded_lines(stream, name: str) -> Iterator[tuple[int, str]]:
    lineno = 0
    for physical, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{name}, line {physical}: not UTF-8 ({err.reason})") from None
        if physical == 1:
            text = text.removeprefix("\ufeff")
        for line in text.splitlines():
            lineno += 1
            yield lineno, line


def _jsonl_documents(lines, name: str) -> Iterator[dict]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{name}, line {lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{name}, line {lineno}: expected a JSON object")
        title = obj.get("title", obj.get("text"))
        if title is None:
            raise InputError(f"{name}, line {lineno}, field 'title': missing (or give 'text')")
        yield {"id": obj.get("id", obj.get("patent_id", lineno)), "title": str(title),
               "abstract": str(obj.get("abstract") or ""), "where": f"line {lineno}"}


def _tsv_documents(lines, name: str) -> Iterator[dict]:
    rows = csv.reader((line for _, line in lines), delimiter="\t")
    header = next(rows, None)
    if not header or "title" not in header:
        raise InputError(f"{name}, line 1: the header needs a 'title' column (got {header or []})")
    for lineno, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{name}, line {lineno}: {len(row)} fields, the header has {len(header)}")
        rec = dict(zip(header, row))
        yield {"id": rec.get("patent_id", lineno), "title": rec["title"], "abstract": rec.get("abstract", ""),
               "where": f"line {lineno}"}


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
        yield {"id": lineno, "title": title, "abstract": abstract, "where": f"line {lineno}"}


def _parquet_documents(path: str, name: str) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # pre-buffering would keep every column chunk read so far: memory would grow with the file
        file = pq.ParquetFile(path, pre_buffer=False)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{name}: not a readable parquet file ({err})") from None
    columns = file.schema_arrow.names
    title = next((c for c in ("title", "text") if c in columns), None)
    if title is None:
        raise InputError(f"{name}: the parquet file needs a 'title' column (got {columns})")
    ident = next((c for c in ("id", "patent_id") if c in columns), None)
    wanted = [c for c in (title, "abstract", ident) if c and c in columns]
    row = 0
    for batch in file.iter_batches(batch_size=CHUNK_SIZE, columns=wanted):
        data = batch.to_pydict()
        for j in range(batch.num_rows):
            row += 1
            abstract = data["abstract"][j] if "abstract" in data else None
            yield {"id": data[ident][j] if ident else row, "title": str(data[title][j] or ""),
                   "abstract": str(abstract or ""), "where": f"row {row}"}


def _empty(name: str, where: str):
    raise InputError(f"{name}, {where}, fields 'title' and 'abstract': empty document")


def iter_documents(path: str) -> Iterator[dict]:
    """``{"id", "title", "abstract", "where"}`` per document of a .txt, .tsv, .jsonl or .parquet file
    (``-``: text lines from stdin), read lazily; title and abstract stripped. An unusable line, row
    or field raises :class:`InputError` naming it when the reading gets there."""
    name = "<stdin>" if path == "-" else path
    suffix = Path(path).suffix.lower() if path != "-" else ".txt"
    if suffix == ".parquet":
        docs = _parquet_documents(path, name)
    else:
        reader = {".jsonl": _jsonl_documents, ".tsv": _tsv_documents}.get(suffix, _txt_documents)
        docs = reader(_lines(path, name), name)
    count = 0
    for doc in docs:
        doc["title"], doc["abstract"] = doc["title"].strip(), doc["abstract"].strip()
        if not doc["title"] and not doc["abstract"]:
            _empty(name, doc["where"])
        count += 1
        yield doc
    if not count:
        raise InputError(f"{name}: no documents")


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
        release_freed_memory()  # the previous chunk's
        table = encode_texts(self.tokenizer, [d["title"] for d in docs], [d["abstract"] for d in docs],
                             self.max_length)
        order = longest_first(table.column("length").to_numpy())
        probs = np.zeros((len(docs), len(self.model.taxonomy)), dtype=np.float32)
        for start in range(0, len(docs), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.collate(Rows(table.take(rows), rows))
            batch.pop("index")
            logits = self.model(**{k: v.to(self.model.device) for k, v in batch.items()}).logits
            probs[rows] = torch.sigmoid(logits.float()).cpu().numpy()
        return probs, table.column("truncated").to_numpy()


def release_freed_memory() -> None:
    """Give the heap memory freed so far back to the system. glibc keeps it in per-thread arenas,
    and batches of ever-different shapes (torch's and the tokenizer's threads) fragment them, so a
    long run's resident memory would creep up by a few MB per chunk although nothing leaks; trimming
    after each chunk keeps it flat. A no-op without glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


# ---- writing -------------------------------------------------------------------------------------


@contextmanager
def open_output(path: str):
    """The output stream: stdout for ``-``; for a file, a hidden temporary file beside it that
    replaces it only when everything was written (an error leaves no partial output). A path that
    is not a regular file (``/dev/null``, a pipe) is written directly."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as out:
            yield out
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            yield out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` of an ``accelerate launch`` / torchrun launch; ``(0, 1)`` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


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
    from accelerate.utils import broadcast_object_list, gather_object

    rank, processes = state.process_index, state.num_processes
    parent = None if output == "-" else str(Path(output).resolve().parent)
    parts = broadcast_object_list([tempfile.mkdtemp(prefix=".thmm-predict-", dir=parent)
                                   if state.is_main_process else None])[0]
    try:
        sizes, truncated = [], 0
        with open(Path(parts) / f"part-{rank:05d}.jsonl", "w", encoding="utf-8") as part:
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
