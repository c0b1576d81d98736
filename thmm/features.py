# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Frozen-encoder training: the encoder runs once per split, its outputs are cached as safetensors
(keyed by everything that changes them), and each epoch trains only the heads on the cache."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from modeling_thmm import THMMForHierarchicalClassification, longest_first

from .data import SPLITS, TokenCollator, TokenizedSplit, tokenize_split

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


def split_digest(split) -> str:
    return _digest([split["patent_id"], split["title"], split["abstract"]])


class FeatureSplit(Dataset):
    """Cached encoder outputs: ``[docs, hidden]`` vectors, or variable-length token states for CNN."""

    def __init__(self, tensors: dict, targets: np.ndarray):
        self.targets = targets
        self.vectors = tensors.get("features")
        self.tokens = tensors.get("token_states")
        self.lengths = [1] * len(targets)
        if self.tokens is not None:
            self.lengths = tensors["lengths"].tolist()
            self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).tolist()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.tokens is not None:
            features = self.tokens[self.offsets[i] : self.offsets[i + 1]]
        else:
            features = self.vectors[i]
        return {"encoder_features": features, "labels": self.targets[i], "index": i}


def feature_collate(items):
    feats = [it["encoder_features"] for it in items]
    batch = {"labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
             "index": torch.tensor([it["index"] for it in items])}
    if feats[0].ndim == 1:
        batch["encoder_features"] = torch.stack(feats).float()
    else:
        longest = max(f.shape[0] for f in feats)
        padded = feats[0].new_zeros(len(feats), longest, feats[0].shape[1])
        mask = torch.zeros(len(feats), longest, dtype=torch.long)
        for j, f in enumerate(feats):
            padded[j, : f.shape[0]] = f
            mask[j, : f.shape[0]] = 1
        batch["encoder_features"] = padded.float()
        batch["attention_mask"] = mask
    return batch


@torch.no_grad()
def encode_features(model: THMMForHierarchicalClassification, tokenizer, split, max_length: int, batch_size: int,
                    device, name: str) -> dict:
    """Run the encoder once over a split. Documents are encoded in order of length, so that a batch
    pads to similar lengths (titles vary from 5 to 60+ word-pieces), and stored in split order."""
    enc = tokenize_split(split, tokenizer, max_length, name)
    model.eval()
    n = len(enc["input_ids"])
    order = longest_first([len(ids) for ids in enc["input_ids"]])
    vectors, tokens = None, [None] * n
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        chunk = {k: [v[i] for i in rows] for k, v in enc.items()}
        batch = tokenizer.pad(chunk, return_tensors="pt").to(device)
        feats = model.encoder_features(**batch)
        if feats.ndim == 3:  # CNN input: keep each document's real tokens only, in half precision
            for i, row, mask in zip(rows, feats, batch["attention_mask"]):
                tokens[i] = row[: int(mask.sum())].to(torch.float16).cpu()
        else:
            if vectors is None:
                vectors = torch.empty(n, feats.shape[1])
            vectors[torch.from_numpy(rows)] = feats.float().cpu()
    if feats.ndim == 3:
        return {"token_states": torch.cat(tokens), "lengths": torch.tensor([t.shape[0] for t in tokens])}
    return {"features": vectors}


def cached_features(accelerator, model, tokenizer, splits, max_length: int, batch_size: int,
                    cache_root: Path) -> tuple[dict, Path, bool]:
    """Encoder outputs per split, from ``cache_root/<key>/`` when present; built (by the main process) otherwise.

    The key covers the encoder weights, the document representation, the max length, the tokenizer
    and the split contents, so a change to any of them builds a new cache."""
    from safetensors.torch import load_file, save_file

    unwrapped = accelerator.unwrap_model(model)
    cfg = unwrapped.config
    key_parts = {
        "encoder": cfg.encoder_name_or_path,
        "encoder_weights": encoder_digest(unwrapped.encoder),
        "doc_representation": cfg.doc_representation,
        "cnn_num_summed_layers": cfg.cnn_num_summed_layers if cfg.doc_representation == "cnn" else None,
        "max_length": max_length,
        "tokenizer": _digest(sorted(tokenizer.get_vocab().items())),
        "splits": {name: split_digest(splits[name]) for name in SPLITS},
    }
    key = _digest(key_parts)[:20]
    directory = cache_root / key
    meta_path = directory / CACHE_INFO
    hit = meta_path.exists()
    if not hit:
        if accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            for name in SPLITS:
                tensors = encode_features(unwrapped, tokenizer, splits[name], max_length, batch_size,
                                          accelerator.device, name)
                save_file(tensors, str(directory / f"{name}.safetensors"))
            info = {**key_parts, "key": key, "encode_seconds": round(time.perf_counter() - t0, 2),
                    "documents": {n: len(splits[n]) for n in SPLITS}}
            meta_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
        accelerator.wait_for_everyone()
    features = {name: load_file(str(directory / f"{name}.safetensors")) for name in SPLITS}
    return features, directory, hit


def split_datasets(accelerator, model, tokenizer, splits, targets: dict, *, freeze_encoder: bool, max_length: int,
                   batch_size: int, cache_root: Path):
    """A dataset for each split in ``targets`` and their collate function: the cached encoder outputs
    with ``freeze_encoder``, token ids otherwise. Also the cache directory and whether it was
    reused (both None without a cache)."""
    if not freeze_encoder:
        datasets_ = {name: TokenizedSplit(tokenize_split(splits[name], tokenizer, max_length, name), targets[name])
                     for name in targets}
        return datasets_, TokenCollator(tokenizer), None, None
    features, cache_dir, hit = cached_features(accelerator, model, tokenizer, splits, max_length, batch_size,
                                               cache_root)
    logger.info("frozen encoder: %s cached features in %s", "reusing" if hit else "built", cache_dir)
    return {name: FeatureSplit(features[name], targets[name]) for name in targets}, feature_collate, cache_dir, hit
