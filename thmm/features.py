# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Frozen-encoder training: the encoder runs once per split, its outputs are cached as safetensors
(keyed by everything that changes them), and each epoch trains only the heads on the cache. With
frozen lower layers (``--freeze-lower-layers N``) the cache holds the token states after layer N
instead, in fp16, and each epoch runs the top layers, the document vector and the heads on them.

The cache files are plain safetensors (``safetensors.torch.load_file`` reads them), but they are
written through numpy memory maps at the offsets their header gives, and a batch's rows are read
back with positioned reads (:mod:`thmm.positioned_reads`), so neither building nor reading a cache
holds a split's features in memory, and an epoch in random order does not leave the file resident."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mmap
import os
import struct
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from configuration_thmm import Taxonomy
from modeling_thmm import (
    THMMForHierarchicalClassification,
    encoder_layer_list,
    longest_first,
    read_safetensors_header,
)

from .data import SPLITS, TokenCollator, TokenizedSplit, label_ids, multi_hot_rows, tokenize_split, tokenizer_digest
from .positioned_reads import FileRanges, positioned_reads_available

logger = logging.getLogger("thmm.features")

CACHE_INFO = "cache_info.json"


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def encoder_digest(encoder: torch.nn.Module) -> str:
    """Identity of the encoder's weights: a different checkpoint gives a different cache key."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


SPLIT_TEXT_COLUMNS = ("patent_id", "title", "abstract")


def split_digest(split, batch_size: int = 10_000, columns=SPLIT_TEXT_COLUMNS) -> str:
    """``_digest([patent_ids, titles, abstracts])`` (or of other ``columns``), with the JSON fed to the
    hash a batch of rows at a time: the same key, without the split's columns as Python lists."""
    h = hashlib.sha256(b"[")
    for k, column in enumerate(columns):
        h.update(b", [" if k else b"[")
        if isinstance(split, datasets.Dataset):
            batches = (b[column] for b in split.select_columns([column]).iter(batch_size=batch_size))
        else:
            batches = (split[column][i : i + batch_size] for i in range(0, len(split[column]), batch_size))
        for i, values in enumerate(batches):
            h.update((", " if i and values else "").encode() + ", ".join(map(json.dumps, values)).encode())
        h.update(b"]")
    h.update(b"]")
    return h.hexdigest()


class FeatureCacheError(OSError):
    """A damaged frozen-encoder cache file; the message names it and the folder to delete."""


# safetensors dtype names of the numpy arrays the cache holds
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def create_safetensors(path: Path, specs: dict[str, tuple[str, tuple]]) -> dict[str, np.memmap]:
    """A safetensors file with tensors ``{name: (dtype, shape)}``, written as zeros, and a writable
    memory map of each: callers fill them batch by batch, never holding the whole file in memory."""
    header, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        size = int(np.prod(shape)) * np.dtype(_DTYPES[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    try:
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
            with contextlib.suppress(AttributeError):  # no posix_fallocate on this system: the map's pages come later
                # reserve the blocks now: a full disk is an OSError here, not a SIGBUS while writing the map
                os.posix_fallocate(f.fileno(), 0, 8 + len(raw) + offset)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(err.errno, f"{path}: no space left for the feature cache ({offset} bytes); "
                                     "free some space or choose another --features-cache-dir") from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: go on without
            raise
    return _memory_maps(path, header, 8 + len(raw), "r+")


def _memory_maps(path, header: dict, start: int, mode: str) -> dict[str, np.ndarray]:
    return {
        name: np.memmap(path, dtype=_DTYPES[t["dtype"]], mode=mode, offset=start + t["data_offsets"][0],
                        shape=tuple(t["shape"])) if t["data_offsets"][1] > t["data_offsets"][0]
        else np.zeros(t["shape"], dtype=_DTYPES[t["dtype"]])
        for name, t in header.items() if name != "__metadata__"
    }


def load_features(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a cache file, memory-mapped read-only (pages are read as batches touch them).
    A truncated or damaged file raises :class:`FeatureCacheError` naming it and its cache folder."""
    try:
        header, start = read_safetensors_header(path)
        return _memory_maps(path, header, start, "r")
    except (OSError, KeyError, TypeError, ValueError) as err:
        problem = str(err).split("; save or download it again")[0]
        raise FeatureCacheError(f"{problem}: the frozen-encoder cache is damaged; delete {Path(path).parent} and "
                                "the next run rebuilds it") from None


class FeatureSplit(Dataset):
    """Cached encoder outputs (memory-mapped): ``[docs, hidden]`` vectors, or for CNN the token states
    of all documents end to end with their ``lengths``; and the split's label node ids. The
    DataLoader fetches a batch at once (``__getitems__``) for :class:`FeatureCollator`. A batch of a
    cache file is read with positioned reads (:class:`~thmm.positioned_reads.FileRanges`), so an
    epoch in random order keeps one batch resident, not every page of the file it has touched."""

    def __init__(self, arrays: dict, labels: pa.ListArray | None = None):
        self.labels = labels
        self.vectors = arrays.get("features")
        self.tokens = arrays.get("token_states")
        if self.tokens is not None:
            self.lengths = np.array(arrays["lengths"], dtype=np.int64)
            self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        else:
            self.lengths = np.ones(len(self.vectors), dtype=np.int64)
        stored = self.tokens if self.tokens is not None else self.vectors
        # a memory map as load_features makes it (not a slice of one, whose .offset numpy leaves stale)
        whole_map = isinstance(stored, np.memmap) and isinstance(stored.base, mmap.mmap) and stored.flags.c_contiguous
        self.file = FileRanges(stored.filename) if whole_map and positioned_reads_available() else None
        if self.file is not None:
            self.file.prefetch()

    def __len__(self):
        return len(self.lengths)

    def features(self, i: int) -> np.ndarray:
        if self.tokens is not None:
            return self.tokens[self.offsets[i] : self.offsets[i + 1]]
        return self.vectors[i]

    def _read(self, index: np.ndarray):
        """The rows ``index`` of the memory-mapped cache file, read with positioned reads."""
        stored = self.tokens if self.tokens is not None else self.vectors
        row_bytes = stored.strides[0]
        first, count = (self.offsets[index], self.lengths[index]) if self.tokens is not None else (index, np.ones_like(index))
        buffer = self.file.read(stored.offset + first * row_bytes, count * row_bytes)
        rows = buffer.view(stored.dtype).reshape(-1, *stored.shape[1:])
        if self.tokens is None:
            return rows
        return np.split(rows, np.cumsum(count)[:-1])

    def __getitems__(self, indices) -> dict:
        index = np.asarray(indices, dtype=np.int64)
        if self.file is not None:
            feats = self._read(index)
        else:
            feats = [self.features(i) for i in index] if self.tokens is not None else self.vectors[index]
        rows = {"index": index, "encoder_features": feats}
        if self.labels is not None:
            rows["label_ids"] = self.labels.take(pa.array(index))
        return rows

    def __getitem__(self, i: int) -> dict:
        return {"encoder_features": torch.from_numpy(np.array(self.features(i))), "index": i}


class FeatureCollator:
    """Stacks cached vectors (or pads token states, with an attention mask) into float32 tensors and
    builds the batch's multi-hot ``labels`` from its node ids. ``key`` names the model input they
    feed: ``encoder_features``, or ``lower_layer_states`` for the frozen-lower-layers cache."""

    def __init__(self, taxonomy: Taxonomy | None = None, key: str = "encoder_features"):
        self.taxonomy = taxonomy
        self.key = key

    def __call__(self, rows: dict) -> dict:
        feats = rows["encoder_features"]
        batch = {"index": torch.from_numpy(rows["index"])}
        if "label_ids" in rows and self.taxonomy is not None:
            batch["labels"] = multi_hot_rows(self.taxonomy, rows["label_ids"])
        if isinstance(feats, np.ndarray):
            batch[self.key] = torch.from_numpy(feats.astype(np.float32, copy=False))
            return batch
        lengths = np.array([len(f) for f in feats])
        padded = np.zeros((len(feats), lengths.max(), feats[0].shape[1]), dtype=feats[0].dtype)
        mask = np.arange(lengths.max())[None, :] < lengths[:, None]
        padded[mask] = np.concatenate(feats)
        batch[self.key] = torch.from_numpy(padded).float()
        batch["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        return batch


@torch.no_grad()
def encode_features(model: THMMForHierarchicalClassification, tokenizer, split, max_length: int, batch_size: int,
                    device, name: str, path: Path | None = None) -> dict[str, np.ndarray]:
    """Run the encoder once over a split: ``{"features"}`` (``[docs, hidden]`` float32) or, for CNN
    and after ``model.freeze_lower_layers(n)`` (the output of those frozen layers), ``{"token_states",
    "lengths"}`` (each document's real tokens, float16, end to end). With ``path``
    they are written into that safetensors file through a memory map as the batches come, in constant
    memory; otherwise returned in memory. Documents are encoded in order of length, so that a batch
    pads to similar lengths (titles vary from 5 to 60+ word-pieces), and stored in split order."""
    data = TokenizedSplit(tokenize_split(split, tokenizer, max_length, name))
    collate = TokenCollator(tokenizer)
    model.eval()
    n, lengths = len(data), data.lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    order = longest_first(lengths)
    out = None
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        batch = collate(data.__getitems__(rows))
        batch.pop("index")
        inputs = {k: v.to(device) for k, v in batch.items()}
        feats = model.lower_layer_states(**inputs) if model.frozen_lower_layers else model.encoder_features(**inputs)
        if out is None:
            hidden = feats.shape[-1]
            specs = ({"token_states": ("F16", (int(offsets[-1]), hidden)), "lengths": ("I64", (n,))}
                     if feats.ndim == 3 else {"features": ("F32", (n, hidden))})
            out = (create_safetensors(path, specs) if path is not None
                   else {k: np.zeros(shape, dtype=_DTYPES[dt]) for k, (dt, shape) in specs.items()})
            if "lengths" in out:
                out["lengths"][:] = lengths
        if feats.ndim == 3:  # CNN input: keep each document's real tokens only, in half precision
            states = feats.to(torch.float16).cpu().numpy()
            for j, i in enumerate(rows):
                out["token_states"][offsets[i] : offsets[i + 1]] = states[j, : lengths[i]]
        else:
            out["features"][rows] = feats.float().cpu().numpy()
    for array in out.values():
        if isinstance(array, np.memmap):
            array.flush()
    return out


def cached_features(accelerator, model, tokenizer, splits, max_length: int, batch_size: int,
                    cache_root: Path) -> tuple[dict, Path, bool]:
    """Encoder outputs per split (or, after ``model.freeze_lower_layers(n)``, the output states of
    its lowest n layers), memory-mapped from ``cache_root/<key>/<split>.safetensors`` when present;
    built (by the main process) otherwise.

    The key covers the encoder weights, what is cached (the document representation, or the number
    of lower layers), the max length, the tokenizer and the split contents, so a change to any of
    them builds a new cache. ``cache_info.json`` is written last: a folder without it (an
    interrupted build) is built again."""
    unwrapped = accelerator.unwrap_model(model)
    cfg = unwrapped.config
    lower = unwrapped.frozen_lower_layers
    key_parts = {
        "encoder": cfg.encoder_name_or_path,
        # the weights that make the cached values: the whole encoder, or its frozen embeddings and lower layers
        "encoder_weights": encoder_digest(unwrapped.encoder if not lower else torch.nn.ModuleList(
            [unwrapped.encoder.embeddings, *list(encoder_layer_list(unwrapped.encoder))[:lower]])),
        "doc_representation": None if lower else cfg.doc_representation,
        "cnn_num_summed_layers": cfg.cnn_num_summed_layers if cfg.doc_representation == "cnn" and not lower else None,
        **({"lower_layers": lower} if lower else {}),  # absent for whole-encoder caches: their keys stay as they were
        "max_length": max_length,
        "tokenizer": tokenizer_digest(tokenizer),
        "splits": {name: split_digest(splits[name]) for name in SPLITS},
    }
    key = _digest(key_parts)[:20]
    directory = cache_root / key
    meta_path = directory / CACHE_INFO
    hit = meta_path.exists()
    if hit and accelerator.is_main_process:
        problem = cache_problem(directory, key_parts, {name: len(splits[name]) for name in SPLITS})
        if problem:  # another run's or a damaged cache under this key: never trusted, built again
            logger.warning("the feature cache %s does not match this run (%s): building it again", directory, problem)
            meta_path.unlink()
    hit = broadcast_from_main(accelerator, meta_path.exists())
    if not hit:
        if accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            for name in SPLITS:
                encode_features(unwrapped, tokenizer, splits[name], max_length, batch_size, accelerator.device, name,
                                path=directory / f"{name}.safetensors")
            info = {**key_parts, "key": key, "encode_seconds": round(time.perf_counter() - t0, 2),
                    "documents": {n: len(splits[n]) for n in SPLITS}}
            meta_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
        accelerator.wait_for_everyone()
    features = {name: load_features(directory / f"{name}.safetensors") for name in SPLITS}
    return features, directory, hit


def cache_problem(directory: Path, key_parts: dict, documents: dict) -> str | None:
    """Why the cache in ``directory`` cannot serve a run with these ``key_parts`` and split sizes
    (its ``cache_info.json`` describes other inputs, or its files hold other row counts); ``None`` if it can."""
    try:
        info = json.loads((directory / CACHE_INFO).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{CACHE_INFO} unreadable: {err}"
    expected = json.loads(json.dumps(key_parts, default=str))
    differing = sorted(k for k in expected if info.get(k) != expected[k])
    if differing:
        return f"{CACHE_INFO} was written for other {', '.join(differing)}"
    for name, count in documents.items():
        try:
            header, _ = read_safetensors_header(directory / f"{name}.safetensors")
        except OSError as err:
            return str(err)
        rows = header.get("features", header.get("lengths", {})).get("shape", [None])[0]
        if rows != count:
            return f"{name}.safetensors holds {rows} documents, the {name} split {count}"
        if "token_states" in header and "lengths" not in header:
            return f"{name}.safetensors lacks the token lengths"
    return None


def broadcast_from_main(accelerator, obj):
    """The main process's value on every process (whether its cache is usable; the dev metrics that
    drive early stopping)."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def split_datasets(accelerator, model, tokenizer, splits, taxonomy: Taxonomy, names=SPLITS, *, freeze_encoder: bool,
                   max_length: int, batch_size: int, cache_root: Path, num_proc: int | None = None):
    """A dataset for each split in ``names`` (with its label node ids over ``taxonomy``) and their
    collate function: the cached encoder outputs with ``freeze_encoder``, the cached output of the
    frozen lower layers after ``model.freeze_lower_layers(n)``, Arrow token ids otherwise
    (tokenized by the main process first, so that the others read its cache). Also the cache
    directory and whether it was reused (both None without a feature cache)."""
    labels = {name: label_ids(splits[name], taxonomy) for name in names}
    lower = accelerator.unwrap_model(model).frozen_lower_layers
    if not freeze_encoder and not lower:
        datasets_ = {}
        for name in names:
            with accelerator.main_process_first():
                datasets_[name] = TokenizedSplit(tokenize_split(splits[name], tokenizer, max_length, name, num_proc),
                                                 labels[name])
        return datasets_, TokenCollator(tokenizer, taxonomy), None, None
    features, cache_dir, hit = cached_features(accelerator, model, tokenizer, splits, max_length, batch_size,
                                               cache_root)
    what = f"output states of the {lower} frozen lower layers" if lower else "frozen-encoder features"
    logger.info("%s %s in %s", "reusing cached" if hit else "built cached", what, cache_dir)
    collate = FeatureCollator(taxonomy, key="lower_layer_states" if lower else "encoder_features")
    return {name: FeatureSplit(features[name], labels[name]) for name in names}, collate, cache_dir, hit
