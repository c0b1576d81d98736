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

    :meth:`from_dataset` locates, once, the file offset of each row's values from the files' Arrow
    metadata and offsets buffers (a memory map that is closed again), and keeps per row its file
    (4 bytes), and per column the byte offset of its first value and its value count (12 bytes).
    :meth:`take` then reads only the requested rows' values. It returns None for a dataset this
    cannot read exactly (held in memory, behind an indices mapping, with nulls or nested lists),
    and the caller reads it through Arrow instead."""

    def __init__(self, files: list[FileRanges], file_of_row: np.ndarray, columns: dict[str, tuple]):
        self.files = files
        self.file_of_row = file_of_row
        self.columns = columns  # name: (value type, byte start per row, value count per row)

    @classmethod
    def from_dataset(cls, dataset, columns: Sequence[str]) -> ArrowListRows | None:
        if not positioned_reads_available() or getattr(dataset, "_indices", None) is not None:
            return None
        paths = [f["filename"] for f in dataset.cache_files]
        if not paths or len(set(paths)) != len(paths):
            return None
        parts: dict[str, list] = {name: [] for name in columns}
        file_rows = []
        for path in paths:
            located = _locate(path, columns)
            if located is None:
                return None
            rows, per_column = located
            file_rows.append(rows)
            for name in columns:
                parts[name].append(per_column[name])
        if sum(file_rows) != len(dataset):
            return None
        types = {name: {t for t, _, _ in parts[name] if t is not None} for name in columns}
        if any(len(t) != 1 for t in types.values()):
            return None
        located_columns = {name: (types[name].pop(), np.concatenate([s for _, s, _ in parts[name]]),
                                  np.concatenate([c for _, _, c in parts[name]])) for name in columns}
        file_of_row = np.repeat(np.arange(len(paths), dtype=np.int32), file_rows)
        return cls([FileRanges(p) for p in paths], file_of_row, located_columns)

    def __len__(self) -> int:
        return len(self.file_of_row)

    def take(self, index: np.ndarray) -> dict[str, pa.ListArray]:
        """``{column: ListArray}`` of the rows ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        files = self.file_of_row[index]
        out = {}
        for name, (value_type, byte_starts, counts) in self.columns.items():
            width = value_type.bit_width // 8
            n = counts[index]
            sizes = n.astype(np.int64) * width
            destinations = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            buffer = np.empty(int(sizes.sum()), dtype=np.uint8)
            starts = byte_starts[index]
            for f in np.unique(files):
                rows = files == f
                self.files[f].read_into(buffer, destinations[rows], starts[rows], sizes[rows])
            offsets = np.zeros(len(index) + 1, dtype=np.int32)
            np.cumsum(n, out=offsets[1:])
            values = pa.Array.from_buffers(value_type, int(offsets[-1]), [None, pa.py_buffer(buffer)])
            out[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
        return out


def _locate(path: str, columns: Sequence[str]):
    """``(rows, {column: (value type, byte start per row, value count per row)})`` for one Arrow IPC
    stream file (the format ``datasets`` writes), or None when a column is not a list of a
    fixed-width primitive type without nulls."""
    per_column: dict[str, list] = {name: [] for name in columns}
    rows = 0
    with pa.memory_map(path) as source:
        base = source.read_buffer(1).address  # the map's first byte: buffer addresses minus it are file offsets
        source.seek(0)
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            return None
        for batch in reader:
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
                first_value = values.address - base + column.values.offset * width
                starts = first_value + offsets[:-1].astype(np.int64) * width
                per_column[name].append((kind.value_type, starts, np.diff(offsets)))
            rows += len(batch)
    out = {}
    for name, chunks in per_column.items():
        if not chunks:
            out[name] = (None, np.zeros(0, np.int64), np.zeros(0, np.int32))
            continue
        value_types = {t for t, _, _ in chunks}
        if len(value_types) != 1:
            return None
        out[name] = (value_types.pop(), np.concatenate([s for _, s, _ in chunks]),
                     np.concatenate([c for _, _, c in chunks]))
    return rows, out
