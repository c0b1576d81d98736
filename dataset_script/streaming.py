# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""TSV and JSON Lines files into Arrow tables, a byte range at a time, by several processes.

The file is cut into ranges of ``chunk_bytes``. A worker process reads a range: it starts at the
first line that begins in it, reads the records that begin in it (the last one whole, past the
range's end if it runs on), checks each with :meth:`PatentRowValidator.check_row` and returns an
Arrow record batch, the line of each row and where it stopped. The main process takes the ranges in
file order and does what needs every earlier row: the ``patent_id`` check
(:meth:`PatentRowValidator.check_id`) and the line numbers. So the rows and the errors are those of
the line-by-line readers of :mod:`dataset_script.readers` (the first problem in file order, its
file, line and field), and memory holds a few ranges, not the file.

A TSV value may hold line breaks inside quotes, so a range may begin inside a record. The main
process checks each range against the one before it: a range is right when it began where the
previous one stopped; otherwise it is read again from there (in the main process; a quoted value
across a range's start is rare).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .readers import (
    COLUMNS,
    DERIVED_COLUMNS,
    READ_BUFFER_BYTES,
    PatentDataError,
    PatentRowValidator,
    TsvLayout,
    _LinePlace,
    iter_tsv_records,
    jsonl_values,
)

__all__ = ["CHUNK_BYTES", "ROW_SCHEMA", "iter_patent_tables", "reader_processes"]

CHUNK_BYTES = 8 << 20
"""Bytes per range: a worker's batch (about 8,000 patents of a kilobyte) and the memory it holds."""
PARALLEL_MIN_BYTES = 4 * CHUNK_BYTES  # smaller files are read in this process: starting workers costs more
MAX_READER_PROCESSES = 8

ROW_SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS[:3]]
                       + [(name, pa.list_(pa.string())) for name in (COLUMNS[3], *DERIVED_COLUMNS)])


def reader_processes() -> int:
    """The worker processes a large file is read with: the cores this process may use, at most
    :data:`MAX_READER_PROCESSES`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_READER_PROCESSES))


@dataclass
class _Range:
    """What a worker made of one byte range (see the module docstring). Lines are counted from the
    line the range began on: ``row_lines`` (0-based) of each row kept, ``lines`` read in all.
    ``error``: ``(line, field, problem)`` of the first row that failed, after the rows of ``batch``;
    ``late``: per row of ``batch``, the ``(field, problem)`` of derived fields that contradict the
    labels (raised only if the row's patent_id check keeps it)."""

    began_at: int
    end_at: int
    lines: int
    batch: pa.RecordBatch
    row_lines: np.ndarray
    rows_read: int = 0
    dropped_empty_labels: int = 0
    error: tuple | None = None
    late: dict = field(default_factory=dict)


def _read_range(kind: str, path: str, start: int, end: int, exact: bool, layout: TsvLayout | None,
                scheme: str, empty_labels: str) -> _Range:
    """The records that begin in ``[start, end)`` (from ``start`` itself when ``exact``, else from
    the first line that begins there), checked by :meth:`PatentRowValidator.check_row`."""
    checker = PatentRowValidator(scheme, empty_labels=empty_labels)
    columns = {name: [] for name in ROW_SCHEMA.names}
    row_lines, late, error = [], {}, None
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        f.seek(start - 1 if not exact else start)
        if not exact:
            f.readline()  # to the first line that begins at start or later
        began_at = f.tell()
        place = _LinePlace(began_at, 0)
        records = iter_tsv_records(path, f, layout, place, stop_at=end) if kind == "tsv" else \
            _jsonl_records(path, f, place, end)
        try:
            for lineno, values in records:
                row, problem = checker.check_row(values, path, lineno)
                if row is None:
                    continue
                if problem is not None:
                    late[len(row_lines)] = (problem.field, problem.problem)
                row_lines.append(lineno - 1)
                for name in ROW_SCHEMA.names:
                    columns[name].append(row[name])
        except PatentDataError as err:
            error = (err.line - 1 if err.line is not None else None, err.field, err.problem)
    batch = pa.RecordBatch.from_pydict(columns, schema=ROW_SCHEMA)
    return _Range(began_at, place.position, place.lineno, batch, np.asarray(row_lines, dtype=np.int64),
                  checker.counts["rows_read"], checker.counts["dropped_empty_labels"], error, late)


def _jsonl_records(path, f, place: _LinePlace, stop_at: int) -> Iterator[tuple[int, dict]]:
    """``(line, values)`` of the JSON Lines records that begin before byte ``stop_at``; lines are
    counted from 1 where ``f`` stands, unless it stands at the file's start (where a BOM is refused)."""
    at_start = place.position == 0
    while place.position < stop_at:
        raw = f.readline()
        if not raw:
            return
        place.position += len(raw)
        place.lineno += 1
        yield place.lineno, jsonl_values(path, raw, place.lineno, file_start=at_start and place.lineno == 1)


class _InProcess:
    """The executor interface, run here and lazily: a small file, or one worker process."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def iter_patent_tables(path, kind: str, validator: PatentRowValidator, *, processes: int | None = None,
                       chunk_bytes: int = CHUNK_BYTES) -> Iterator[pa.Table]:
    """The rows of a TSV (release format, ``kind="tsv"``) or JSON Lines (``"jsonl"``) file as Arrow
    tables of :data:`ROW_SCHEMA`, in file order, each row checked by ``validator`` as
    :func:`~dataset_script.readers.iter_patent_tsv` / ``iter_patent_jsonl`` check them (the same rows,
    the same errors; the filter options' counts in ``validator.counts``). ``processes``: worker
    processes (default :func:`reader_processes`; files under :data:`PARALLEL_MIN_BYTES` are read in
    this process); ``chunk_bytes``: the bytes of a range."""
    path = os.fspath(path)
    if kind not in ("tsv", "jsonl"):
        raise ValueError(f"kind must be 'tsv' or 'jsonl', got {kind!r}")
    if processes is not None and processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    layout = TsvLayout(path) if kind == "tsv" else None
    data_start = layout.data_start if layout else 0
    size = os.path.getsize(path)
    ranges = [(start, min(start + chunk_bytes, size)) for start in range(data_start, size, chunk_bytes)]
    if processes is None:
        processes = reader_processes() if size - data_start >= PARALLEL_MIN_BYTES else 1
    processes = min(processes, len(ranges))
    options = (layout, validator.scheme, validator.empty_labels)

    def task(start, end, exact):
        return (kind, path, start, end, exact, *options)

    executor = _InProcess() if processes <= 1 else ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("fork"))
    pending, queued = [], iter(enumerate(ranges))
    expected, line_base, documents = data_start, (layout.header_lines if layout else 0), 0
    try:
        while True:
            while len(pending) < 2 * max(1, processes):  # a few ranges in flight: memory stays bounded
                index, (start, end) = next(queued, (None, (None, None)))
                if index is None:
                    break
                pending.append((start, end, executor.submit(_read_range, *task(start, end, index == 0))))
            if not pending:
                break
            start, end, future = pending.pop(0)
            part = future.result()
            if part.began_at != expected:  # the range began inside a record: read it from the record's start
                part = _read_range(*task(expected, end, True))
            documents += part.rows_read
            validator.counts["rows_read"] += part.rows_read
            validator.counts["dropped_empty_labels"] += part.dropped_empty_labels
            kept = _check_ids(path, part, line_base, validator)
            if kept is not None and kept.num_rows:
                yield pa.Table.from_batches([kept])
            if part.error is not None:
                line, field_name, problem = part.error
                raise PatentDataError(path, None if line is None else line_base + line + 1, field_name, problem)
            expected, line_base = part.end_at, line_base + part.lines
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if not documents:
        raise PatentDataError(path, None, None, "no documents (only a header)" if layout else
                              "no documents (an empty file)")


def _check_ids(path, part: _Range, line_base: int, validator: PatentRowValidator) -> pa.RecordBatch | None:
    """The rows of ``part`` whose ``patent_id`` :meth:`PatentRowValidator.check_id` keeps (in file
    order, so a repeat names the line of the first occurrence), then a late error if a kept row has one."""
    ids = part.batch.column("patent_id").to_pylist()
    lines = part.row_lines + line_base + 1
    keep = np.ones(len(ids), dtype=bool)
    check_id = validator.check_id
    for i, patent_id in enumerate(ids):
        lineno = int(lines[i])
        if not check_id(patent_id, path, lineno):
            keep[i] = False
        elif i in part.late:
            field_name, problem = part.late[i]
            raise PatentDataError(path, lineno, field_name, problem)
    validator.counts["rows"] += int(keep.sum())
    return part.batch if keep.all() else part.batch.filter(pa.array(keep))
