# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Training data: the splits, the taxonomy they imply, label targets, token datasets and batching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler as _TransformersLengthGroupedSampler

from configuration_thmm import Taxonomy, read_label_titles
from modeling_thmm import encode_documents

from .arguments import ConfigError, TrainingArguments

logger = logging.getLogger("thmm.data")

SPLITS = ("train", "validation", "test")


def load_splits(args: TrainingArguments):
    from dataset_script import load_patent_splits

    splits = load_patent_splits(args.dataset, scheme=args.scheme, upsample=args.upsample)
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ConfigError(f"--dataset {args.dataset}: missing split(s) {sorted(missing)}")
    if args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    if args.max_eval_samples:
        for name in ("validation", "test"):
            splits[name] = splits[name].select(range(min(args.max_eval_samples, len(splits[name]))))
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise ConfigError(f"--dataset {args.dataset}: the {name} split is empty")
    return splits


def build_taxonomy(args: TrainingArguments, train_labels) -> Taxonomy:
    if args.taxonomy:
        path = Path(args.taxonomy)
        if path.suffix == ".json":
            return Taxonomy.from_json(path)
        return Taxonomy.from_codes(read_label_titles(path), scheme=args.scheme)
    return Taxonomy.from_codes({code for labels in train_labels for code in labels}, scheme=args.scheme)


def label_titles_for(args: TrainingArguments, taxonomy: Taxonomy) -> dict[str, str] | None:
    """The titles of the taxonomy's codes from ``--label-titles`` (stored in the model's config)."""
    if not args.label_titles:
        return None
    titles = read_label_titles(args.label_titles)
    return {c: titles[c] for c in taxonomy.nodes if c in titles}


def report_unknown_labels(taxonomy: Taxonomy, split: str, label_lists) -> None:
    """Codes outside the model's taxonomy stay in the references (they count as misses); say so."""
    unknown = [(i, c) for i, labels in enumerate(label_lists) for c in labels if c not in taxonomy]
    if unknown:
        docs = len({i for i, _ in unknown})
        codes = sorted({c for _, c in unknown})
        logger.warning(
            "%s: %d label occurrences in %d documents use %d codes absent from the model's taxonomy (e.g. %s); "
            "they stay in the references and count as misses", split, len(unknown), docs, len(codes), codes[:5]
        )


def label_targets(taxonomy: Taxonomy, label_lists) -> np.ndarray:
    """``[documents, nodes]`` 0/1 targets, ancestors included; codes outside the taxonomy have no head."""
    return taxonomy.multi_hot([[c for c in labels if c in taxonomy] for labels in label_lists])


def tokenize_split(split, tokenizer, max_length: int, name: str) -> dict:
    enc = encode_documents(tokenizer, split["title"], split["abstract"], max_length)
    truncated = enc.pop("truncated")
    if any(truncated):
        logger.info("%s: %d of %d documents truncated to %d word-pieces", name, sum(truncated), len(truncated),
                    max_length)
    return enc


class TokenizedSplit(Dataset):
    """Token ids, label targets over the taxonomy, and the row index (for exactly-once evaluation)."""

    def __init__(self, encoded: dict, targets: np.ndarray):
        self.encoded, self.targets = encoded, targets
        self.lengths = [len(ids) for ids in encoded["input_ids"]]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.encoded.items()}
        item["labels"] = self.targets[i]
        item["index"] = i
        return item


class TokenCollator:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items):
        extra = {k: [it.pop(k) for it in items] for k in ("labels", "index")}
        batch = self.tokenizer.pad(items, return_tensors="pt")
        batch["labels"] = torch.from_numpy(np.stack(extra["labels"]))
        batch["index"] = torch.tensor(extra["index"])
        return batch


class LengthGroupedSampler(_TransformersLengthGroupedSampler):
    """transformers' length-grouped order (shuffle, sort mega-batches of 50 batches by length, longest
    batch first), drawn from a generator seeded with ``(seed, epoch)`` at each pass: each epoch's
    order is a function of the seed alone, so a resumed run (mid-epoch included) sees exactly the
    batches of an uninterrupted one without saving the generator's state."""

    def __init__(self, lengths, batch_size: int, seed: int):
        super().__init__(batch_size, lengths=[int(n) for n in lengths], generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()
