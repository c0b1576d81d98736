# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Reading a batch's rows of a large file with positioned reads (``os.preadv``) instead of a memory map.

An epoch reads the token file (and the feature caches) in random order. Through a memory map every
page read stays mapped into the process, and on this kernel each read maps a whole large folio
(2 MiB) of the page cache: one epoch left the whole token file of 1M patents resident (0.41 GiB),
so RSS grew with the corpus. Releasing the mappings after every batch bounded that but made the pass
8x slower (:mod:`thmm.mapped_pages`). A positioned read instead copies just the bytes of the batch's
rows out of the page cache into a buffer of the process: the file stays in the page cache (shared,
reclaimable and not the process's RSS) and the process holds one batch.

:class:`FileRanges` reads byte ranges of one file. :class:`ArrowListRows` reads the rows of list
columns (token ids) of a ``datasets`` Arrow dataset from its cache files, located once from the
files' Arrow metadata. Where ``os.preadv`` is missing (Windows), :func:`positioned_reads_available`
is false and the callers keep reading through the memory map.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa


def positioned_reads_available() -> bool:
    return hasattr(os, "preadv")


class FileRanges:
    """Byte ranges of one file, read with ``os.preadv`` straight into a numpy buffer. Picklable: the
    descriptor is opened lazily in each process (a DataLoader worker opens its own)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = None

    def __getstate__(self):
        return {"path": self.path, "_fd": None}

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return self._fd

    def prefetch(self) -> bool:
        """Ask the kernel to read the whole file into its page cache now (``POSIX_FADV_WILLNEED``, one
        sequential read), so that the random reads that follow are served from memory rather than by
        one small disk read each. A memory map got the same from its 2 MiB folio faults. Skipped for a
        file larger than a quarter of the machine's memory; False when skipped or unsupported."""
        advise = getattr(os, "posix_fadvise", None)
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return False
        if advise is None or os.path.getsize(self.path) > memory // 4:
            return False
        advise(self._descriptor(), 0, 0, os.POSIX_FADV_WILLNEED)
        return True

    def read_into(self, out: np.ndarray, destinations: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> None:
        """Copy ``sizes[k]`` bytes at file offset ``starts[k]`` to byte ``destinations[k]`` of ``out``
        (a contiguous uint8 array). Ranges that follow each other in the file and in ``out`` are
        read with one call."""
        if not len(starts):
            return
        starts, sizes, destinations = (np.asarray(a, dtype=np.int64) for a in (starts, sizes, destinations))
        # merge runs: range k+1 starts where range k ends, in the file and in the buffer
        joined = (starts[1:] == starts[:-1] + sizes[:-1]) & (destinations[1:] == destinations[:-1] + sizes[:-1])
        first = np.flatnonzero(np.concatenate([[True], ~joined]))
        run_sizes = np.add.reduceat(sizes, first)
        view, fd = memoryview(out).cast("B"), self._descriptor()
        for start, size, dest in zip(starts[first].tolist(), run_sizes.tolist(), destinations[first].tolist()):
            while size:
                got = os.preadv(fd, [view[dest : dest + size]], start)
                if got <= 0:
                    raise OSError(f"{self.path}: the file ends before byte {start + size:,} (truncated or "
                                  "rewritten while in use); delete it and the next run rebuilds it")
                start, size, dest = start + got, size - got, dest + got

    def read(self, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The ranges end to end, as one uint8 array."""
        sizes = np.asarray(sizes, dtype=np.int64)
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        self.read_into(out, np.concatenate([[0], np.cumsum(sizes)[:-1]]), starts, sizes)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()


class ArrowListRows:
    """The rows of ``columns`` (Arrow list columns of a primitive type, such as ``input_ids``) of a
    ``datasets.Dataset`` stored in its Arrow cache files, read with positioned reads.

    :meth:`from_dataset` locates, once, every record batch's values in the files from their Arrow
    metadata and offsets buffers (a memory map that is closed again). It keeps per record batch its
    file and the byte offset of each column's values, and per row and column the row's first value
    within its batch and its value count: 8 bytes, and 4 for the counts of a column whose counts
    equal another's (token type ids follow the ids). :meth:`take` then reads only the requested
    rows' values. :meth:`from_dataset` returns None for a dataset this cannot read exactly (held in
    memory, behind an indices mapping, with nulls or nested lists), and the caller reads it through
    Arrow instead."""

    def __init__(self, files: list[FileRanges], batch_starts: np.ndarray, batch_files: np.ndarray,
                 columns: dict[str, _Column]):
        self.files = files
        self.batch_starts = batch_starts  # [batches + 1]: the first row of each record batch, then the row count
        self.batch_files = batch_files  # [batches]: index into files
        self.columns = columns

    @classmethod
    def from_dataset(cls, dataset, columns: Sequence[str]) -> ArrowListRows | None:
        if not positioned_reads_available() or getattr(dataset, "_indices", None) is not None:
            return None
        paths = [f["filename"] for f in dataset.cache_files]
        if not paths or len(set(paths)) != len(paths) or not columns:
            return None
        batches = []  # (file, rows, {column: (value type, values' byte offset, row value offsets)})
        for file, path in enumerate(paths):
            located = _locate(path, columns)
            if located is None:
                return None
            batches += [(file, *batch) for batch in located]
        rows = np.array([0] + [n for _, n, _ in batches], dtype=np.int64).cumsum()
        if rows[-1] != len(dataset):
            return None
        located_columns = {}
        for name in columns:
            types = {b[2][name][0] for b in batches}
            if len(types) != 1:
                return None
            offsets = [b[2][name][2] for b in batches]
            starts = np.concatenate([o[:-1] for o in offsets]) if batches else np.zeros(0, np.int32)
            counts = np.concatenate([np.diff(o) for o in offsets]) if batches else np.zeros(0, np.int32)
            for other in located_columns.values():  # token type ids have the ids' counts: keep them once
                if np.array_equal(other.counts, counts):
                    counts = other.counts
                    break
            located_columns[name] = _Column(types.pop(), np.array([b[2][name][1] for b in batches], dtype=np.int64),
                                            starts.astype(np.int32), counts.astype(np.int32, copy=False))
        files = [FileRanges(p) for p in paths]
        for file in files:
            file.prefetch()
        return cls(files, rows, np.array([b[0] for b in batches], dtype=np.int32), located_columns)

    def __len__(self) -> int:
        return int(self.batch_starts[-1])

    def take(self, index: np.ndarray) -> dict[str, pa.ListArray]:
        """``{column: ListArray}`` of the rows ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        batch = np.searchsorted(self.batch_starts, index, side="right") - 1
        files = self.batch_files[batch]
        out = {}
        for name, column in self.columns.items():
            width = column.value_type.bit_width // 8
            n = column.counts[index]
            sizes = n.astype(np.int64) * width
            destinations = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            buffer = np.empty(int(sizes.sum()), dtype=np.uint8)
            starts = column.batch_bytes[batch] + column.starts[index].astype(np.int64) * width
            for f in np.unique(files):
                rows = files == f
                self.files[f].read_into(buffer, destinations[rows], starts[rows], sizes[rows])
            offsets = np.zeros(len(index) + 1, dtype=np.int32)
            np.cumsum(n, out=offsets[1:])
            values = pa.Array.from_buffers(column.value_type, int(offsets[-1]), [None, pa.py_buffer(buffer)])
            out[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
        return out


class _Column(NamedTuple):
    value_type: pa.DataType
    batch_bytes: np.ndarray  # [batches] int64: the file offset of each record batch's values
    starts: np.ndarray  # [rows] int32: each row's first value within its batch
    counts: np.ndarray  # [rows] int32: each row's number of values


def _locate(path: str, columns: Sequence[str]) -> list | None:
    """``[(rows, {column: (value type, file offset of the values, value offsets [rows + 1]))}]``, a
    tuple per record batch of one Arrow IPC stream file (the format ``datasets`` writes), or None
    when a column is missing or not a list of a fixed-width primitive type without nulls."""
    out = []
    with pa.memory_map(path) as source:
        base = source.read_buffer(1).address  # the map's first byte: buffer addresses minus it are file offsets
        source.seek(0)
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            return None
        for batch in reader:
            located = {}
            for name in columns:
                if name not in batch.schema.names:
                    return None
                column = batch.column(name)
                kind = column.type
                if not pa.types.is_list(kind) or not pa.types.is_primitive(kind.value_type) \
                        or kind.value_type.bit_width % 8 or column.null_count or column.values.null_count:
                    return None
                offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
                values = column.buffers()[3]
                width = kind.value_type.bit_width // 8
                first_value = values.address - base + column.values.offset * width if values is not None else 0
                located[name] = (kind.value_type, first_value, offsets.copy())
            out.append((len(batch), located))
    return out
