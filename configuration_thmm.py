# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the (T)HMM hierarchical patent classifiers, and the model choices declared once.

The label hierarchy (:class:`Taxonomy`, the CPC/IPC prefix rule, decision :class:`Thresholds`)
lives in ``taxonomy_thmm.py``; its names are re-exported here for existing callers.

It is copied next to ``modeling_thmm.py`` (with ``taxonomy_thmm.py``, a relative import) when a
model is saved, so that ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works without
this package installed; it therefore imports nothing but the standard library, huggingface_hub,
transformers (torch) and ``taxonomy_thmm`` (numpy).

Every field is validated when a config is built (and again when it is saved): the first bad one
raises a :class:`ConfigFieldError`, one line naming the config.json it was read from, the field,
the rule and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import re
import types
import typing
from typing import Literal

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, PretrainedConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .calibration_thmm import MAX_TEMPERATURE, MIN_TEMPERATURE
    from .taxonomy_thmm import (
        Taxonomy,
        TaxonomyError,
        ThresholdError,
        Thresholds,
        cpc_ancestors,
        cpc_level,
        read_label_titles,
        DEPTHS,
    )
except ImportError:  # plain import when installed as a top-level module
    from calibration_thmm import MAX_TEMPERATURE, MIN_TEMPERATURE
    from taxonomy_thmm import (
        Taxonomy,
        TaxonomyError,
        ThresholdError,
        Thresholds,
        cpc_ancestors,
        cpc_level,
        read_label_titles,
        DEPTHS,
    )

__all__ = [
    "ConfigFieldError",
    "DEEP_HEADS",
    "DEPTHS",
    "DOC_REPRESENTATIONS",
    "HEAD_TYPES",
    "LOSS_TYPES",
    "MIN_MAX_LENGTH",
    "Taxonomy",
    "TaxonomyError",
    "THMMConfig",
    "Thresholds",
    "UNFINISHED_MARKER",
    "UnfinishedModelError",
    "check_max_length",
    "cpc_ancestors",
    "hub_snapshot_id",
    "looks_like_local_path",
    "portable_model_name",
    "refuse_unfinished",
    "cpc_level",
    "read_label_titles",
]

# --------------------------------------------------------------------------------------------------
# Choices, declared once (the config, the command lines and the docs use these)
# --------------------------------------------------------------------------------------------------

HEAD_TYPES = ("tmm", "thmm", "flat")
# The heads of the levels below the subclass (heads_thmm.HierarchicalHeads): hidden layers shared by the
# level with one output row per node (THMM: one hidden state per parent), or the paper's per-node heads.
DEEP_HEADS = ("shared", "per_node")
DOC_REPRESENTATIONS = ("cls", "cnn", "mean")
LOSS_TYPES = ("bce", "focal")
MIN_MAX_LENGTH = 8  # word-pieces per document: [CLS], [SEP]s and a few tokens of text


def check_max_length(value: int, option: str = "max_length") -> int:
    """``value`` if it is a usable number of word-pieces per document, else a ``ValueError`` naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < MIN_MAX_LENGTH:
        raise ValueError(f"{option}: must be at least {MIN_MAX_LENGTH} (got {value})")
    return value


def looks_like_local_path(name) -> bool:
    """Whether ``name`` (of a model, an encoder or a data set) was meant as a local path rather than a
    Hub id ``org/name``: it starts with ``.``, ``/`` or ``~``, has more than one ``/`` or a backslash,
    or its first part exists here (``data/missing`` when ``data`` is a folder). Where such a path does
    not exist, callers say so instead of asking the Hub."""
    name = os.fspath(name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        return True
    return "/" in name and os.path.exists(name.split("/", 1)[0])


def portable_model_name(name) -> str:
    """``name`` as a saved file may hold it: a Hub id as is; a local path as a name without its
    folders, so that no local path is published (``/home/me/encoders/scibert`` -> ``scibert``), or
    as the Hub id of a Hub cache snapshot (``.../models--allenai--scibert/snapshots/<sha>`` ->
    ``allenai/scibert``)."""
    name = os.fspath(name)
    if not (looks_like_local_path(name) or os.path.isabs(name) or os.path.exists(name)):
        return name
    parts = [part for part in re.split(r"[\\/]", os.path.expanduser(name)) if part not in ("", ".")]
    last = parts[-1] if parts and parts[-1] != ".." else os.path.basename(os.path.abspath(os.path.expanduser(name)))
    return hub_snapshot_id(name) or last or "local"


def hub_snapshot_id(path) -> str | None:
    """The Hub id a Hub cache folder holds (``.../models--org--name/snapshots/<sha>`` -> ``org/name``;
    ``datasets--org--name`` likewise), or ``None`` for any other path."""
    for part in reversed(re.split(r"[\\/]", os.fspath(path))):
        kind, _, repo = part.partition("--")
        if kind in ("models", "datasets") and repo:
            return repo.replace("--", "/", 1)
    return None


# --------------------------------------------------------------------------------------------------
# Unfinished training runs
# --------------------------------------------------------------------------------------------------

# Written by the trainer into a model folder until the run is complete (thresholds tuned, card
# written): JSON {"reason": ..., "resume": <the command that finishes the run>}.
UNFINISHED_MARKER = "thmm_unfinished.json"


class UnfinishedModelError(OSError):
    """A folder holds the model of a training run that has not finished."""


def refuse_unfinished(folder, subfolder: str = "") -> None:
    """An :class:`UnfinishedModelError` naming ``folder``, why and the command that finishes the run,
    when the (local) folder holds :data:`UNFINISHED_MARKER`."""
    if not isinstance(folder, (str, os.PathLike)):
        return
    marker = os.path.join(os.fspath(folder), subfolder or "", UNFINISHED_MARKER)
    if not os.path.isfile(marker):
        return
    try:
        with open(marker, encoding="utf-8") as f:
            info = json.load(f)
        reason, resume = str(info["reason"]), str(info["resume"])
    except (OSError, ValueError, KeyError, TypeError):
        reason, resume = f"its {UNFINISHED_MARKER} is unreadable", "the training command with --resume"
    raise UnfinishedModelError(f"{os.path.dirname(marker)}: an unfinished training run's model ({reason}); "
                               f"finish the run with: {resume}")


# --------------------------------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------------------------------


class ConfigFieldError(ValueError):
    """A config value no model can be built from, as one line: ``<source>, field '<name>': <rule>
    (got <value>)``; ``source`` is the config.json it was read from (``THMMConfig`` when built in code)."""

    def __init__(self, field: str, rule: str, value, source: str = "THMMConfig"):
        self.field, self.rule, self.value, self.source = field, rule, value, source
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        super().__init__(f"{source}, field {field!r}: {rule} (got {shown})")

    def at(self, source: str) -> ConfigFieldError:
        """The same error, naming ``source`` (the file it was read from)."""
        return ConfigFieldError(self.field, self.rule, self.value, source)


_TYPE_NAMES = {bool: ("a boolean", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings"), type(None): ("null", "nulls"), dict: ("a dict", "dicts"),
               list: ("a list", "lists")}


def _describe(annotation, plural: bool = False) -> str:
    """How a field's type reads in an error: ``float | int`` -> "a number", ``list[int] | None`` ->
    "a list of integers or null" (JSON's names)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if not (a is int and float in args)]  # an integer is a number
        return " or ".join(dict.fromkeys(_describe(a, plural) for a in options))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple, dict):
        item = f" of {_describe(args[-1 if origin is dict else 0], True)}" if args else ""
        return ("dicts" if plural else "a dict") + item if origin is dict else ("lists" if plural else "a list") + item
    name = _TYPE_NAMES.get(annotation) or (f"a {annotation.__name__}", f"{annotation.__name__}s")
    return name[plural]


def _matches(value, annotation) -> bool:
    """Whether ``value`` has the type ``annotation`` declares (a bool is no number; JSON has no tuples)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    if annotation in (int, float):
        return isinstance(value, annotation) and not isinstance(value, bool)
    return annotation is typing.Any or isinstance(value, annotation)


@functools.lru_cache(maxsize=None)
def _field_types(config_class) -> dict:
    """``{field: type}`` of a config dataclass (this module's annotations are strings, which
    ``@strict`` cannot check, so :meth:`THMMConfig.validate_fields` does); ``{}`` if they do not resolve."""
    import torch  # named by PretrainedConfig's ``dtype`` annotation

    try:
        hints = typing.get_type_hints(config_class, localns={"torch": torch})
    except (NameError, TypeError, AttributeError):
        return {}
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class) if f.name in hints}


def _check_types(values, config_class, prefix: str = "") -> None:
    """A :class:`ConfigFieldError` for the first of ``values`` (a config, or a dict of its fields)
    whose type is not the one ``config_class`` declares."""
    get = values.get if isinstance(values, dict) else lambda name, default: getattr(values, name, default)
    for name, annotation in _field_types(config_class).items():
        value = get(name, _MISSING)
        if value is not _MISSING and not _matches(value, annotation):
            raise ConfigFieldError(prefix + name, f"must be {_describe(annotation)}", value)


_MISSING = object()


def _is_dtype_name(value) -> bool:
    import torch

    return not isinstance(value, str) or isinstance(getattr(torch, value, None), torch.dtype)


# Rules on the values of fields whose type is right, one per field: (rule, check).
_VALUE_RULES = {
    "head_hidden_size": ("must be at least 1", lambda v: v >= 1),
    "deep_head_hidden_size": ("must be at least 1", lambda v: v >= 1),
    "flat_hidden_size": ("must be at least 1", lambda v: v >= 1),
    "cnn_num_filters": ("must be at least 1", lambda v: v >= 1),
    "cnn_num_summed_layers": ("must be at least 1", lambda v: v >= 1),
    "cnn_kernel_sizes": ("must be a non-empty list of sizes of at least 1", lambda v: len(v) > 0 and min(v) >= 1),
    "head_dropout": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "max_length": (f"must be at least {MIN_MAX_LENGTH}", lambda v: v >= MIN_MAX_LENGTH),
    "focal_gamma": ("must be finite and at least 0", lambda v: 0 <= v < math.inf),
    "lexical_vocab_size": ("must be at least 0", lambda v: v >= 0),
    "lexical_top_k": ("must be at least 0", lambda v: v >= 0),
    "lexical_weight": ("must be in [0, 1], or a non-empty list of such weights (one per level)",
                       lambda v: (len(v) > 0 and all(0 <= w <= 1 for w in v)) if isinstance(v, list) else 0 <= v <= 1),
    "lexical_scale": ("must be finite", math.isfinite),
    "lexical_shift": ("must be finite", math.isfinite),
    "dtype": ("must name a torch dtype, such as 'float32'", _is_dtype_name),
}
# The encoder's sizes that must be at least 1, where its config has them.
_ENCODER_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size")
# Names of the fields that Thresholds calls global_threshold, per_level and per_node.
_THRESHOLD_FIELDS = {"global_threshold": "threshold", "per_level": "level_thresholds", "per_node": "node_thresholds"}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

# The paper's encoder: SciBERT (BERT-base shape, 31,090-token scientific vocabulary).
SCIBERT_NAME = "allenai/scibert_scivocab_uncased"
_SCIBERT_CONFIG = {"vocab_size": 31090}

_AUTO_MAP = {
    "AutoConfig": "configuration_thmm.THMMConfig",
    "AutoModel": "modeling_thmm.THMMForHierarchicalClassification",
    "AutoModelForSequenceClassification": "modeling_thmm.THMMForHierarchicalClassification",
}


@strict
class THMMConfig(PretrainedConfig):
    r"""
    Configuration of a [`THMMForHierarchicalClassification`] model: the encoder, the label taxonomy
    and the layout of the classification heads (Pujari et al., ECIR 2021).

    Args:
        encoder_name_or_path (`str`, *optional*, defaults to `"allenai/scibert_scivocab_uncased"`):
            Where the pre-trained encoder (and its tokenizer) come from; informational once the model
            is saved, since `encoder_config` rebuilds the encoder without the Hub.
        encoder_config (`dict` or `PretrainedConfig`, *optional*):
            Full configuration of the encoder (any `AutoModel` text encoder). Defaults to a BERT-base
            config with SciBERT's vocabulary.
        taxonomy (`dict` or [`Taxonomy`], *optional*):
            The label hierarchy; one head per node. Stored as plain JSON (see `Taxonomy.to_dict`).
        head_type (`str`, *optional*, defaults to `"thmm"`, one of `HEAD_TYPES`):
            `"tmm"`: one binary head per node on the shared document vector; `"thmm"`: TMM where each
            head's first layer also sees its parent head's second hidden layer; `"flat"`: one
            leaf-only multi-label MLP, an inner node scoring the max over its children.
        doc_representation (`str`, *optional*, defaults to `"cls"`, one of `DOC_REPRESENTATIONS`):
            `"cls"`: the encoder's pooler output (the `[CLS]` state when there is no pooler);
            `"cnn"`: a CNN over the sum of the last `cnn_num_summed_layers` hidden layers;
            `"mean"`: masked mean of the last hidden layer (suits sentence encoders such as MiniLM).
        head_hidden_size (`int`, *optional*, defaults to 256):
            Width of both hidden layers of every node head.
        depth (`int`, *optional*):
            How deep the CPC/IPC codes go: 3 (subclass, the paper's), 4 (main group) or 5 (subgroup).
            Set from the taxonomy when left out; a value that differs from the taxonomy's is refused.
        deep_heads (`str`, *optional*, defaults to `"shared"`, one of `DEEP_HEADS`):
            The heads of main groups and subgroups: `"shared"`, two hidden layers shared by the level and
            one output row per node (THMM: the hidden state computed once per parent node, from the
            document vector and the parent's hidden state); `"per_node"`: the paper's per-node heads of
            width `deep_head_hidden_size`.
        deep_head_hidden_size (`int`, *optional*, defaults to 128):
            Width of the hidden layers of the main-group and subgroup heads.
        head_dropout (`float`, *optional*, defaults to 0.25):
            Dropout after each hidden layer of the heads (TMM, THMM and flat).
        flat_hidden_size (`int`, *optional*, defaults to 512):
            Width of the two hidden layers of the flat baseline's MLP.
        cnn_num_filters (`int`, *optional*, defaults to 256):
            Filters per kernel size of the CNN document encoder.
        cnn_kernel_sizes (`list[int]`, *optional*, defaults to `[2, 3, 4, 5]`):
            Kernel sizes of the CNN document encoder.
        cnn_num_summed_layers (`int`, *optional*, defaults to 4):
            How many of the encoder's last hidden layers are summed as the CNN's input.
        threshold (`float`, *optional*, defaults to 0.5):
            Global decision threshold on node probabilities.
        level_thresholds (`list[float]`, *optional*):
            One threshold per level; overrides `threshold` when set (tuned on dev by `train.py`).
        node_thresholds (`dict[str, float]`, *optional*):
            A threshold of its own for some nodes, by code; overrides `level_thresholds` and `threshold`
            for those nodes. `train.py` tunes them on dev for the nodes with enough dev positives
            (`--threshold-granularity node`).
        label_titles (`dict[str, str]`, *optional*):
            Human-readable titles of the codes, e.g. from the CPC title list.
        max_length (`int`, *optional*, defaults to 256):
            Word-pieces per document (title and abstract) used in training; at least `MIN_MAX_LENGTH` (8).
        consistent_scores (`bool`, *optional*, defaults to `False`):
            Decode (predictions, top-k, records) from consistent scores: each node's probability capped
            by its ancestors' (`Taxonomy.min_along_path`), so that no child scores above its parent.
            `False` keeps the paper's raw per-head scores.
        loss_type (`str`, *optional*, defaults to `"bce"`, one of `LOSS_TYPES`):
            `"bce"`: binary cross-entropy over all heads, weighted equally (the paper's); `"focal"`:
            focal loss (Lin et al., 2017) with `focal_gamma`, which down-weights easy negatives, so that
            rare labels weigh more.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focusing parameter of the focal loss.
        lexical_vocab_size (`int`, *optional*, defaults to 0):
            Word-pieces of the lexical scorer: a linear scorer per node over the document's TF-IDF
            vector of word-pieces (one linear SVM per node, fitted by `train.py` after the heads;
            `thmm.lexical`). 0: no lexical scorer, the paper's model. Otherwise the tokenizer's
            vocabulary size.
        lexical_top_k (`int`, *optional*, defaults to 0):
            0: the lexical scorer holds a dense `[vocab, nodes]` weight matrix; k > 0: each node keeps its
            k word-pieces of largest absolute weight (what `train.py` stores for main groups and subgroups).
        lexical_weight (`float` or `list[float]`, *optional*, defaults to 0.0):
            How much of each node's logit the lexical scorer gives, in [0, 1]: the model outputs
            `(1 - lexical_weight) * heads + lexical_weight * (lexical_scale * svm + lexical_shift)`.
            One weight, or one per taxonomy level (the words weigh more at the main groups than at the
            sections). Chosen on dev by `train.py`; 0 leaves the heads' logits as they are.
        lexical_scale (`float`, *optional*, defaults to 1.0):
            Slope of the calibration that maps SVM decision values onto logits (Platt scaling, fitted on dev).
        lexical_shift (`float`, *optional*, defaults to 0.0):
            Intercept of that calibration.
        calibration_temperatures (`list[float]`, *optional*):
            One temperature per taxonomy level, fitted on dev after training (`thmm-train --calibration
            temperature`): a node's probability is `sigmoid(logit / T)` with its level's `T`
            (`calibration_thmm`), which never changes the order of documents within a node. The saved
            thresholds are on these calibrated scores. `None`: the raw sigmoid scores.
        calibration_shifts (`list[float]`, *optional*):
            Platt scaling (`thmm-train --calibration platt`): one shift per level, added after the
            temperature, `sigmoid(logit / T + b)`; needs `calibration_temperatures`.

    Example:

    ```python
    >>> from configuration_thmm import THMMConfig, Taxonomy
    >>> config = THMMConfig(taxonomy=Taxonomy.from_codes(["A43B", "B41F"]), head_type="tmm")
    >>> config.num_labels
    7
    ```"""

    model_type = "thmm"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", init_kwargs=_SCIBERT_CONFIG)
    }

    encoder_name_or_path: str = SCIBERT_NAME
    encoder_config: dict | PretrainedConfig | None = None
    taxonomy: dict | Taxonomy | None = None
    head_type: Literal[HEAD_TYPES] = "thmm"
    doc_representation: Literal[DOC_REPRESENTATIONS] = "cls"
    head_hidden_size: int = 256
    depth: int | None = None
    deep_heads: Literal[DEEP_HEADS] = "shared"
    deep_head_hidden_size: int = 128
    head_dropout: float | int = 0.25
    flat_hidden_size: int = 512
    cnn_num_filters: int = 256
    cnn_kernel_sizes: list[int] | tuple[int, ...] = (2, 3, 4, 5)
    cnn_num_summed_layers: int = 4
    threshold: float | int = 0.5
    level_thresholds: list[float | int] | None = None
    node_thresholds: dict[str, float | int] | None = None
    label_titles: dict[str, str] | None = None
    max_length: int = 256
    consistent_scores: bool = False
    loss_type: Literal[LOSS_TYPES] = "bce"
    focal_gamma: float | int = 2.0
    lexical_vocab_size: int = 0
    lexical_top_k: int = 0
    lexical_weight: float | int | list[float | int] = 0.0
    lexical_scale: float | int = 1.0
    lexical_shift: float | int = 0.0
    calibration_temperatures: list[float | int] | None = None
    calibration_shifts: list[float | int] | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.taxonomy, Taxonomy):
            self.taxonomy = self.taxonomy.to_dict()
        self.validate_fields()  # before anything here or in transformers reads the values
        self.cnn_kernel_sizes = list(self.cnn_kernel_sizes)
        if self.taxonomy is not None:
            taxonomy = self.get_taxonomy()
            kwargs.pop("num_labels", None)  # the taxonomy gives it
            self.id2label = taxonomy.id2label
            self.label2id = taxonomy.label2id
            if self.depth is None:
                self.depth = taxonomy.depth
        self.problem_type = "multi_label_classification"
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_fields(self):
        """Part of `@strict` validation (run by `__post_init__` first, and again at save): values a
        model can be built from. The first bad field raises a :class:`ConfigFieldError`."""
        _check_types(self, type(self))
        for name, (rule, check) in _VALUE_RULES.items():
            if not check(getattr(self, name)):
                raise ConfigFieldError(name, rule, getattr(self, name))
        self._check_encoder_config()
        self._check_taxonomy()
        self._check_depth()
        self._check_thresholds()
        self._check_limits()

    def _encoder_setting(self, name: str):
        """A setting of the encoder's config (a config, a dict, or ``None`` for the default one), or
        its config class's default when the dict leaves it out."""
        encoder = self.encoder_config
        if isinstance(encoder, PretrainedConfig):
            return getattr(encoder, name, None)
        encoder = encoder if encoder is not None else _SCIBERT_CONFIG
        if name in encoder:
            return encoder[name]
        return getattr(CONFIG_MAPPING.get(encoder.get("model_type", "bert")), name, None)

    def _check_encoder_config(self) -> None:
        encoder = self.encoder_config
        if isinstance(encoder, dict):
            model_type = encoder.get("model_type", "bert")
            if model_type not in CONFIG_MAPPING:
                raise ConfigFieldError("encoder_config.model_type", "must be a transformers model type such as "
                                       "'bert'", model_type)
            _check_types(encoder, CONFIG_MAPPING[model_type], "encoder_config.")
        self._check_encoder_values(encoder.to_dict() if isinstance(encoder, PretrainedConfig) else encoder or {})

    def _check_encoder_values(self, settings: dict) -> None:
        """The encoder's sizes, dropouts and activation, where it sets them (its config class's defaults otherwise)."""
        for name in _ENCODER_SIZES:
            value = self._encoder_setting(name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigFieldError(f"encoder_config.{name}", "must be an integer of at least 1", value)
        heads, hidden = self._encoder_setting("num_attention_heads"), self._encoder_setting("hidden_size")
        if heads and hidden and hidden % heads:
            raise ConfigFieldError("encoder_config.hidden_size", f"must be a multiple of num_attention_heads "
                                   f"({heads})", hidden)
        for name, value in settings.items():
            if name.endswith(("dropout", "dropout_prob")) and isinstance(value, (int, float)) and not 0 <= value <= 1:
                raise ConfigFieldError(f"encoder_config.{name}", "must be a probability in [0, 1]", value)
        activation = self._encoder_setting("hidden_act")
        if isinstance(activation, str) and activation not in ACT2FN:
            raise ConfigFieldError("encoder_config.hidden_act", "must name one of transformers' activations, such as "
                                   "'gelu'", activation)

    def _check_taxonomy(self) -> None:
        if self.taxonomy is None:
            return
        try:
            taxonomy = self.get_taxonomy()
        except TaxonomyError as err:
            raise ConfigFieldError("taxonomy", str(err), self.taxonomy) from None
        for field, derived in (("id2label", taxonomy.id2label), ("label2id", taxonomy.label2id)):
            given = getattr(self, field)  # JSON keys are strings: compare them as such
            if given is not None and {str(k): v for k, v in given.items()} != {str(k): v for k, v in derived.items()}:
                raise ConfigFieldError(field, "must follow the taxonomy's node order, or be left out (the taxonomy "
                                       "gives it)", given)

    def _check_depth(self) -> None:
        """``depth`` is the taxonomy's (a CPC/IPC one): the heads were built for its levels."""
        if self.depth is None:
            return
        if isinstance(self.depth, bool) or self.depth not in DEPTHS:
            raise ConfigFieldError("depth", f"must be one of {', '.join(map(str, DEPTHS))} (subclass, main group, "
                                   "subgroup)", self.depth)
        taxonomy = self.get_taxonomy() if self.taxonomy is not None else None
        if taxonomy is not None and taxonomy.depth != self.depth:
            have = "a parent-map taxonomy, which has no depth" if taxonomy.depth is None else \
                f"the taxonomy's depth {taxonomy.depth}"
            raise ConfigFieldError("depth", f"must equal {have}", self.depth)

    def _check_thresholds(self) -> None:
        try:
            thresholds = self.thresholds
        except ThresholdError as err:  # named like Thresholds' own fields: per_level[1], per_node['A43B']
            name, bracket, rest = err.where.partition("[")
            raise ConfigFieldError(_THRESHOLD_FIELDS.get(name, name) + bracket + rest, err.rule, err.value) from None
        if self.taxonomy is None:
            return
        taxonomy = self.get_taxonomy()
        if thresholds.per_level is not None and len(thresholds.per_level) != taxonomy.num_levels:
            raise ConfigFieldError("level_thresholds", f"must hold one threshold per taxonomy level "
                                   f"({taxonomy.num_levels})", self.level_thresholds)
        unknown = [code for code in thresholds.per_node or {} if code not in taxonomy]
        if unknown:
            raise ConfigFieldError("node_thresholds", f"must name taxonomy nodes ({len(unknown)} do not, e.g. "
                                   f"{unknown[0]!r})", self.node_thresholds)

    def _check_limits(self) -> None:
        """Rules between fields: what the encoder can take, and what the lexical scorer needs."""
        positions = self._encoder_setting("max_position_embeddings")
        if positions and self.max_length > positions:
            raise ConfigFieldError("max_length", f"must be at most the encoder's {positions} positions "
                                   "(encoder_config.max_position_embeddings)", self.max_length)
        layers = self._encoder_setting("num_hidden_layers")
        if self.doc_representation == "cnn" and layers and self.cnn_num_summed_layers > layers + 1:
            raise ConfigFieldError("cnn_num_summed_layers", f"must be at most the encoder's {layers + 1} hidden "
                                   "states (its layers and embeddings)", self.cnn_num_summed_layers)
        temperatures = self.calibration_temperatures
        if temperatures is not None:
            if not all(MIN_TEMPERATURE <= t <= MAX_TEMPERATURE for t in temperatures):
                raise ConfigFieldError("calibration_temperatures", f"must hold temperatures in [{MIN_TEMPERATURE}, "
                                       f"{MAX_TEMPERATURE}]", temperatures)
            if self.taxonomy is not None and len(temperatures) != self.get_taxonomy().num_levels:
                raise ConfigFieldError("calibration_temperatures", "must hold one temperature per taxonomy level "
                                       f"({self.get_taxonomy().num_levels})", temperatures)
        shifts = self.calibration_shifts
        if shifts is not None:
            if temperatures is None or len(shifts) != len(temperatures):
                raise ConfigFieldError("calibration_shifts", "must hold one shift per calibration temperature "
                                       f"({len(temperatures) if temperatures else 'none set'})", shifts)
            if not all(math.isfinite(b) for b in shifts):
                raise ConfigFieldError("calibration_shifts", "must hold finite numbers", shifts)
        weights = self.lexical_weight if isinstance(self.lexical_weight, list) else [self.lexical_weight]
        if max(weights) > 0 and not self.lexical_vocab_size:
            raise ConfigFieldError("lexical_weight", "must be 0 without a lexical scorer (lexical_vocab_size 0)",
                                   self.lexical_weight)
        if isinstance(self.lexical_weight, list) and self.taxonomy is not None \
                and len(weights) != self.get_taxonomy().num_levels:
            raise ConfigFieldError("lexical_weight", "must hold one weight per taxonomy level "
                                   f"({self.get_taxonomy().num_levels}), or be one number", self.lexical_weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PretrainedConfig.from_pretrained`, naming config.json in a bad field's error: ``<folder>/config.json,
        field '<name>': <rule> (got <value>)`` (a :class:`ConfigFieldError`)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (ConfigFieldError, StrictDataclassError) as err:
            source = config_file_name(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
            raise _named(err, source) from None

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PretrainedConfig.from_dict`; a bad field's error names config.json when ``name_or_path``
        says where it was read, as `AutoConfig.from_pretrained` does. That is also how the Auto
        classes and pipeline() read a folder first (and pipeline() hides the model's loading errors
        behind its own), so an unfinished training run's folder is refused here too, unless
        ``allow_unfinished=True`` (left in the kwargs, for the model's ``from_pretrained``)."""
        name = kwargs.get("name_or_path")
        if name and not kwargs.get("allow_unfinished"):
            refuse_unfinished(name)
        try:
            return super().from_dict(config_dict, **kwargs)
        except (ConfigFieldError, StrictDataclassError) as err:
            raise _named(err, config_file_name(name) if name else "THMMConfig") from None

    def get_taxonomy(self) -> Taxonomy:
        """The :class:`Taxonomy` object (built once from the JSON form and cached)."""
        if self.taxonomy is None:
            raise TaxonomyError("this THMMConfig has no taxonomy; pass taxonomy=Taxonomy.from_codes(...)")
        cached = self.__dict__.get("_taxonomy_cache")
        if cached is None or cached[0] is not self.taxonomy:
            cached = (self.taxonomy, Taxonomy.from_dict(self.taxonomy))
            self.__dict__["_taxonomy_cache"] = cached
        return cached[1]

    @property
    def thresholds(self) -> Thresholds:
        """``threshold``, ``level_thresholds`` and ``node_thresholds`` as a (validated) :class:`Thresholds`."""
        return Thresholds(self.threshold, self.level_thresholds, per_node=self.node_thresholds)

    @property
    def decision_thresholds(self) -> float | list[float]:
        """The per-level thresholds when tuned, else the global one (``node_thresholds`` override
        these for their nodes; ``thresholds.for_nodes`` gives what decoding uses for every node)."""
        decision = self.thresholds.decision
        return list(decision) if isinstance(decision, tuple) else decision

    def to_dict(self):
        """`PretrainedConfig.to_dict`, holding no local path (the encoder's is kept as a name only:
        :func:`portable_model_name`), so that a saved or published config.json leaks none."""
        output = super().to_dict()
        output.pop("_taxonomy_cache", None)
        output["encoder_name_or_path"] = portable_model_name(output["encoder_name_or_path"])
        for names in (output, output.get("encoder_config") or {}):
            if names.get("_name_or_path"):
                names["_name_or_path"] = portable_model_name(names["_name_or_path"])
        return output


def _named(err: Exception, source: str) -> ValueError:
    """A config's validation error (ours, or one that ``@strict`` wraps) as one line naming ``source``."""
    cause = err if isinstance(err, ConfigFieldError) else err.__cause__
    if isinstance(cause, ConfigFieldError):
        return cause.at(source)
    return ValueError(f"{source}: {cause or err}")


def config_file_name(name_or_path, subfolder: str = "") -> str:
    """What a model's config.json is called in messages: its path in a local folder, ``repo/config.json``
    for a Hub id."""
    name = os.fspath(name_or_path)
    if os.path.isfile(name):
        return name
    return os.path.join(name, subfolder or "", "config.json")


THMMConfig.register_for_auto_class()
