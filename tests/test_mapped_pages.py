"""Bounded resident memory while reading memory-mapped files: released pages leave RSS and read back
unchanged, written copy-on-write pages are kept, and tokenizing a split releases the split's files."""

import sys
from pathlib import Path

import numpy as np
import pytest

from thmm import data, mapped_pages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self are Linux's")
MIB = 2**20


def resident_file_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


@linux_only
def test_released_pages_leave_rss_and_read_back_unchanged(tmp_path):
    path = tmp_path / "ints.bin"
    np.arange(8 * MIB, dtype=np.int32).tofile(path)  # 32 MiB
    mapped = np.memmap(path, dtype=np.int32, mode="r")
    before = resident_file_bytes()
    total = int(mapped.sum(dtype=np.int64))
    assert resident_file_bytes() - before > 24 * MIB  # reading mapped the pages in
    assert mapped_pages.release_mapped_pages([path]) == 32 * MIB
    assert resident_file_bytes() - before < 4 * MIB
    assert int(mapped.sum(dtype=np.int64)) == total == 8 * MIB * (8 * MIB - 1) // 2


@linux_only
def test_written_copy_on_write_pages_are_never_dropped(tmp_path):
    path = tmp_path / "ints.bin"
    np.zeros(MIB, dtype=np.int32).tofile(path)
    private = np.memmap(path, dtype=np.int32, mode="c")  # MAP_PRIVATE, writable: the write lives only here
    private[123] = -5
    shared = np.memmap(path, dtype=np.int32, mode="r+")  # MAP_SHARED: the write is in the file's page cache
    shared[7] = 9
    assert mapped_pages.release_mapped_pages([path]) == 4 * MIB  # the shared map only
    assert private[123] == -5 and shared[7] == 9
    assert np.fromfile(path, dtype=np.int32)[7] == 9
    assert mapped_pages.release_mapped_pages([tmp_path / "not-mapped.bin"]) == 0


def test_releaser_counts_rows_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(mapped_pages, "release_mapped_pages", lambda paths: calls.append(list(paths)))
    release = mapped_pages.PageReleaser(["b", "a", "a"], every=10)
    for rows in (4, 4, 4, 9, 1):  # 12 rows, then 10
        release(rows)
    assert calls == [["a", "b"], ["a", "b"]]
    nothing = mapped_pages.PageReleaser([], every=1)
    nothing(5)
    assert len(calls) == 2


def test_tokenizing_a_split_releases_its_files(tmp_path, tiny_tokenizer, monkeypatch):
    import datasets

    titles = [f"shoe sole {i}" for i in range(300)]
    split = datasets.Dataset.from_dict({"title": titles, "abstract": ["ink sheet radio"] * 300})
    split.save_to_disk(str(tmp_path / "split"))
    split = datasets.load_from_disk(str(tmp_path / "split"))
    calls = []
    real = mapped_pages.release_mapped_pages
    monkeypatch.setattr(mapped_pages, "release_mapped_pages", lambda paths: calls.append(set(paths)) or real(paths))
    monkeypatch.setattr(mapped_pages, "RELEASE_EVERY_ROWS", 1)
    tokens = data.tokenize_split(split, tiny_tokenizer, 16, "train")
    assert {f["filename"] for f in split.cache_files} in calls  # the split, while tokenizing it
    assert tokens["input_ids"] == data.encode_texts(tiny_tokenizer, titles, split["abstract"], 16).column(
        "input_ids").to_pylist()
