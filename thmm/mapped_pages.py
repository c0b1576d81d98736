# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Bounded resident memory while reading a memory-mapped file from start to end.

Every page of a memory-mapped file that a process reads stays mapped into it. Tokenizing a split
read from its Arrow file therefore left the whole file resident, and RSS grew with the corpus: about
0.9 GB of the 1.9 GB peak of a 1M-patent preparation. Those pages are clean page cache that the
kernel may drop, but container memory limits and RSS-based monitors count them all the same.

:class:`PageReleaser` tells the kernel, every few thousand rows, that this process no longer needs
its mappings of the files it reads (``madvise(MADV_DONTNEED)``). The page-table entries go and the
data stays in the page cache, so a page read again faults back in from memory, without disk I/O.
Only shared mappings and read-only private ones are advised: a written private (copy-on-write)
page exists nowhere else and would be lost. Off Linux this does nothing.

It suits a sequential pass, which reads each page once. A pass in random order (an epoch over the
tokens) is not released: the kernel maps a large folio (2 MiB here) around each page read, so only
a release after every batch bounds it, and the faults that follow made such a pass 8x slower here.
Such a pass reads with positioned reads instead (:mod:`thmm.positioned_reads`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

MADV_DONTNEED = 4  # <sys/mman.h> on Linux

# Rows read between two releases: in a sequential pass, a few MB of pages left mapped, for one read of
# /proc/self/maps (2.4 ms measured, on a loaded machine) per 4,096 rows.
RELEASE_EVERY_ROWS = 4096


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _libc_madvise()


def release_mapped_pages(paths: Iterable[str | os.PathLike]) -> int:
    """Drop this process's resident pages of its memory maps of ``paths`` (the files stay mapped and
    readable). Returns the bytes of the mappings advised: 0 off Linux or when none is mapped."""
    wanted = {os.path.realpath(p) for p in paths}
    if _MADVISE is None or not wanted:
        return 0
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[5].rstrip("\n") not in wanted:
                continue
            if "w" in fields[1] and "s" not in fields[1]:  # private and writable: may hold written pages
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
                advised += end - start
    return advised


class PageReleaser:
    """Counts the rows a reader takes from memory-mapped ``paths`` and calls
    :func:`release_mapped_pages` on them once every ``every`` rows. Picklable, so ``datasets.map``
    workers each count and release their own mappings."""

    def __init__(self, paths: Iterable[str | os.PathLike], every: int | None = None):
        self.paths = sorted({str(p) for p in paths})
        self.every = RELEASE_EVERY_ROWS if every is None else every
        self.rows = 0

    def __call__(self, rows: int) -> None:
        self.rows += rows
        if self.paths and self.rows >= self.every:
            self.rows = 0
            release_mapped_pages(self.paths)
