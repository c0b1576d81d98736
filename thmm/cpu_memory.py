# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Resident memory on a CPU: glibc's allocator and torch's huge pages.

glibc serves a block from its heap once the block is below its mmap threshold, and raises that threshold
(up to 32 MiB) whenever a larger mmapped block is freed. Training frees heads' gradients and activations
of 8-170 MB every step, so the threshold soon covers many of them, and the freed heap they leave behind
stays resident: 0.7 GB of a 3.1 GB epoch peak at 20k documents. A fixed threshold (glibc's starting
value) keeps large tensors mmapped, given back to the system when freed, at the cost of page faults when
they are mapped again: 1.14x the epoch time with 4 KiB pages. torch backs its large CPU tensors with
transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1`` (one fault per 2 MiB): with them the fixed
threshold ran the same epoch in 0.95x the time of glibc's default, so ``thmm-train`` asks torch for huge
pages and training fixes the threshold whenever torch uses them (bench/cpu_memory.py; docs/benchmarks.md,
issue 35).

Everything here is a no-op where the C library is not glibc or the kernel has no transparent huge pages.
:func:`memory_limit` and :func:`resident_bytes` say how much memory the process may take before it is
killed (a container's limit included) and how much it holds, so that training can keep AdamW's moments in
a file where keeping them in memory would cross that limit (``thmm.trainer.offload_moments``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

MALLOC_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
# the kernel's mode, "always [madvise] never" with the current one in brackets
TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# torch reads it once, at its first CPU allocation, and then madvises every CPU tensor of 2 MiB or more
TORCH_HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
TORCH_HUGE_PAGE_MIN_BYTES = 2 * 1024 * 1024


def glibc_function(name: str):
    """The C library's function ``name`` through ctypes, or ``None`` where it has none (musl, macOS and
    Windows lack glibc's allocator calls; TypeError: a platform with no process-wide C library handle)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None


def fix_malloc_mmap_threshold(threshold: int = MALLOC_MMAP_THRESHOLD) -> bool:
    """Stop glibc raising its mmap threshold, so that freed large tensors leave resident memory; ``False``
    (and nothing done) where the C library is not glibc. Process-wide, like any ``mallopt``."""
    mallopt = glibc_function("mallopt")
    return bool(mallopt and mallopt(_M_MMAP_THRESHOLD, threshold))


def return_freed_memory() -> None:
    """Give freed heap pages back to the operating system (glibc's ``malloc_trim``), so that resident
    memory falls once large tensors are freed; a no-op where the C library has no such call."""
    malloc_trim = glibc_function("malloc_trim")
    if malloc_trim:
        malloc_trim(0)


def transparent_huge_pages_available() -> bool:
    """Whether the kernel gives huge pages to memory that asks for them (mode ``always`` or ``madvise``)."""
    try:
        mode = TRANSPARENT_HUGE_PAGES.read_text()
    except OSError:  # not Linux, or a kernel built without them
        return False
    return "[never]" not in mode and "[" in mode


def request_torch_huge_pages() -> None:
    """Ask torch to back its large CPU tensors with huge pages, unless the user set ``THP_MEM_ALLOC_ENABLE``
    either way. It takes effect only before torch's first CPU allocation, so ``thmm-train`` calls it first."""
    if transparent_huge_pages_available():
        os.environ.setdefault(TORCH_HUGE_PAGES_ENV, "1")


def torch_uses_huge_pages() -> bool:
    """Whether torch puts this process's large CPU tensors on huge pages. The variable alone does not
    say, since torch read it at its first allocation: with huge pages on, torch aligns a large tensor to
    a page, and otherwise to 64 bytes after glibc's 16-byte chunk header, never to a page."""
    if os.environ.get(TORCH_HUGE_PAGES_ENV) != "1" or not transparent_huge_pages_available():
        return False
    import torch

    page = os.sysconf("SC_PAGE_SIZE")
    probes = [torch.empty(TORCH_HUGE_PAGE_MIN_BYTES // 4 + 1024 * k) for k in range(2)]  # float32
    return all(p.data_ptr() % page == 0 for p in probes)


MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STATM = Path("/proc/self/statm")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_LIMIT_FILES = {"v2": "memory.max", "v1": "memory.limit_in_bytes"}
# a file every cgroup folder of that hierarchy has (v2's root cgroup has no memory.max)
CGROUP_MARKER_FILES = {"v2": "cgroup.controllers", "v1": "memory.limit_in_bytes"}
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit value
NO_CGROUP_LIMIT = 1 << 60


def memory_limit() -> tuple[int, str] | None:
    """The most memory this process may take, and what sets it: the smallest of the machine's physical
    memory (``MemTotal``) and the limits of the memory cgroups that hold it (a container's, v2 or v1,
    its own or an ancestor's); ``None`` where neither can be read (not Linux). A hard limit, not what is
    free now: the memory other processes use comes and goes, and the kernel reclaims page cache."""
    limits = []
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append((int(line.split()[1]) * 1024, "this machine's memory"))
    except (OSError, ValueError, IndexError):
        pass
    for folder, version in cgroup_memory_folders():
        try:
            value = (folder / CGROUP_LIMIT_FILES[version]).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < NO_CGROUP_LIMIT:  # v2 writes "max" for none
            limits.append((int(value), f"the memory cgroup {folder}"))
    return min(limits) if limits else None


def cgroup_memory_folders() -> list[tuple[Path, str]]:
    """The memory cgroup folders that bound this process, each hierarchy's from its own (or the nearest
    one visible here, inside a cgroup namespace) up to the root, with the cgroup version (``"v2"`` or
    ``"v1"``)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    folders = []
    for line in lines:  # "hierarchy-ID:controllers:path"; v2 is "0::path"
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            roots, version = [CGROUP_ROOT, CGROUP_ROOT / "unified"], "v2"
        elif "memory" in controllers.split(","):
            roots, version = [CGROUP_ROOT / "memory"], "v1"
        else:
            continue
        for root in roots:
            if not root.is_dir():
                continue
            folder = root / path.strip("/")
            while True:  # a limit anywhere above applies too
                if (folder / CGROUP_MARKER_FILES[version]).is_file():
                    folders.append((folder, version))
                if folder == root:
                    break
                folder = folder.parent
    return folders


def resident_bytes() -> int | None:
    """This process's resident memory now (``/proc/self/statm``), or ``None`` where it cannot be read."""
    try:
        return int(PROC_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
