"""Positioned reads: byte ranges of a file, a batch's token ids from the Arrow cache files and a batch's
rows of a feature cache, equal to what the memory maps give, while a random-order epoch leaves the
files' pages out of the process's resident memory."""

import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

from thmm import data, features
from thmm.positioned_reads import ArrowListRows, FileRanges

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and fork workers")
MIB = 2**20


def resident_bytes_of(path) -> int:
    """This process's resident bytes in its mappings of ``path``."""
    total, inside, wanted = 0, False, os.path.realpath(path)
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == wanted
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def test_file_ranges_read_any_order_and_merge_neighbours(tmp_path):
    path = tmp_path / "bytes.bin"
    content = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8)
    content.tofile(path)
    ranges = FileRanges(path)
    starts, sizes = np.array([500, 10, 20, 99_990, 0]), np.array([7, 10, 30, 10, 0])  # 10+10 joins 20
    expected = np.concatenate([content[s : s + n] for s, n in zip(starts, sizes)])
    assert np.array_equal(ranges.read(starts, sizes), expected)
    out = np.zeros(20, dtype=np.uint8)
    ranges.read_into(out, np.array([10, 0]), np.array([0, 50]), np.array([10, 10]))  # out of order in the buffer
    assert np.array_equal(out, np.concatenate([content[50:60], content[0:10]]))
    with pytest.raises(OSError, match=r"bytes\.bin: the file ends before byte 100,010"):
        ranges.read(np.array([99_995]), np.array([15]))


def test_file_ranges_pickle_without_their_descriptor(tmp_path):
    import pickle

    path = tmp_path / "bytes.bin"
    path.write_bytes(b"0123456789")
    ranges = FileRanges(path)
    assert bytes(ranges.read(np.array([2]), np.array([3]))) == b"234"
    copy = pickle.loads(pickle.dumps(ranges))
    assert copy._fd is None and bytes(copy.read(np.array([7]), np.array([3]))) == b"789"


def token_split(tmp_path, rows: int, num_proc=None) -> datasets.Dataset:
    """A file-backed split of token-like rows (uint16 ids, int8 types, lengths 0 to 90) written by
    datasets.map, in ``num_proc`` cache files."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 91, rows)
    datasets.Dataset.from_dict({"n": lengths.tolist()}).save_to_disk(str(tmp_path / "split"))
    split = datasets.load_from_disk(str(tmp_path / "split"))

    def encode(n):
        ids = [[(7 * i + j) % 60_000 for j in range(k)] for i, k in enumerate(n)]
        return pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.uint16())),
                         "token_type_ids": pa.array([[j % 2 for j in range(k)] for k in n], type=pa.list_(pa.int8())),
                         "length": pa.array(n, type=pa.int32())})

    return split.map(encode, batched=True, batch_size=333, input_columns=["n"], remove_columns=["n"],
                     num_proc=num_proc)


@pytest.mark.parametrize("num_proc", [None, 3])
def test_arrow_list_rows_equal_an_arrow_take(tmp_path, num_proc):
    tokens = token_split(tmp_path, 2_000, num_proc)
    assert len(tokens.cache_files) == (num_proc or 1)
    reader = ArrowListRows.from_dataset(tokens, ["input_ids", "token_type_ids"])
    assert reader is not None and len(reader) == len(tokens)
    assert reader.columns["token_type_ids"].counts is reader.columns["input_ids"].counts  # kept once
    index = np.random.default_rng(2).permutation(len(tokens))[:700]
    got = reader.take(index)
    expected = tokens.with_format("arrow")[index.tolist()]
    for name in ("input_ids", "token_type_ids"):
        assert got[name].type == expected.schema.field(name).type
        assert got[name].to_pylist() == expected.column(name).to_pylist()
    assert [len(v) for v in reader.take(np.array([], dtype=np.int64)).values()] == [0, 0]


def test_arrow_list_rows_decline_what_they_cannot_place(tmp_path):
    tokens = token_split(tmp_path, 300)
    assert ArrowListRows.from_dataset(tokens.select([5, 1, 2]), ["input_ids"]) is None  # an indices mapping
    assert ArrowListRows.from_dataset(datasets.Dataset.from_dict({"input_ids": [[1, 2]]}), ["input_ids"]) is None
    assert ArrowListRows.from_dataset(tokens, ["length"]) is None  # not a list column
    assert ArrowListRows.from_dataset(tokens, ["missing"]) is None


def test_tokenized_split_reads_the_same_rows_either_way(tmp_path, tiny_tokenizer):
    tokens = token_split(tmp_path, 500, 2)
    positioned, through_arrow = data.TokenizedSplit(tokens), data.TokenizedSplit(tokens)
    through_arrow.reader = None
    assert positioned.reader is not None
    collate = data.TokenCollator(tiny_tokenizer)
    for rows in ([4, 499, 0, 250, 251], [17], list(range(0, 500, 7))):
        a, b = collate(positioned.__getitems__(rows)), collate(through_arrow.__getitems__(rows))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    in_memory = data.TokenizedSplit(datasets.Dataset.from_dict(tokens.to_dict()))
    assert in_memory.reader is None
    assert torch.equal(collate(in_memory.__getitems__([3, 9]))["input_ids"],
                       collate(positioned.__getitems__([3, 9]))["input_ids"])


@linux_only
def test_tokenized_split_reads_in_loader_workers(tmp_path, tiny_tokenizer):
    import pickle

    from torch.utils.data import DataLoader

    tokens = token_split(tmp_path, 400, 2)
    split = pickle.loads(pickle.dumps(data.TokenizedSplit(tokens)))  # as a spawned worker receives it
    assert split.reader is not None and all(f._fd is None for f in split.reader.files)
    collate, reference = data.TokenCollator(tiny_tokenizer), data.TokenizedSplit(tokens)
    reference.reader = None
    loader = DataLoader(split, batch_size=32, shuffle=True, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0), multiprocessing_context="fork")
    seen = []
    for batch in loader:
        expected = collate(reference.__getitems__(batch["index"].numpy()))
        assert all(torch.equal(batch[k], expected[k]) for k in expected)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(400))


@linux_only
def test_a_random_epoch_leaves_the_token_file_out_of_resident_memory(tmp_path, tiny_tokenizer):
    tokens = token_split(tmp_path, 60_000)  # a 5 MiB token file
    path = tokens.cache_files[0]["filename"]
    assert os.path.getsize(path) > 4 * MIB
    collate, order = data.TokenCollator(tiny_tokenizer), np.random.default_rng(3).permutation(len(tokens))
    resident = {}
    for name in ("positioned", "arrow"):
        split = data.TokenizedSplit(tokens)
        if name == "arrow":
            split.reader = None
        before = resident_bytes_of(path)
        for start in range(0, len(order), 64):
            collate(split.__getitems__(order[start : start + 64]))
        resident[name] = resident_bytes_of(path) - before
    assert resident["arrow"] > 2 * MIB  # the memory-mapped pass maps the file in: the test can fail
    assert resident["positioned"] < MIB / 4


@pytest.mark.parametrize("rep", ["mean", "cnn"])
def test_feature_split_reads_cache_rows_with_positioned_reads(tmp_path, tiny_model, tiny_tokenizer, rep):
    model = tiny_model(doc_representation=rep)
    split = {"title": [f"shoe sole {'radio ' * (i % 9)}" for i in range(40)], "abstract": ["ink sheet"] * 40}
    path = tmp_path / "train.safetensors"
    features.encode_features(model, tiny_tokenizer, split, 32, 8, "cpu", "train", path=path)
    mapped = features.load_features(path)
    positioned = features.FeatureSplit(mapped)
    assert positioned.file is not None
    in_memory = features.FeatureSplit({k: np.array(v) for k, v in mapped.items()})
    assert in_memory.file is None
    collate = features.FeatureCollator()
    for rows in ([39, 0, 5, 6, 7], [12]):
        a, b = collate(positioned.__getitems__(rows)), collate(in_memory.__getitems__(rows))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    stored = mapped["token_states" if rep == "cnn" else "features"]
    assert features.FeatureSplit({**mapped, "features" if rep != "cnn" else "token_states": stored[1:]}).file is None
