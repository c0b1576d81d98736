# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the (T)HMM hierarchical patent classifiers, and the model choices declared once.

The label hierarchy (:class:`Taxonomy`, the CPC/IPC prefix rule, decision :class:`Thresholds`)
lives in ``taxonomy_thmm.py``; its names are re-exported here for existing callers.

It is copied next to ``modeling_thmm.py`` (with ``taxonomy_thmm.py``, a relative import) when a
model is saved, so that ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works without
this package installed; it therefore imports nothing but the standard library, transformers and
``taxonomy_thmm`` (numpy).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .taxonomy_thmm import Taxonomy, TaxonomyError, Thresholds, cpc_ancestors, cpc_level, read_label_titles
except ImportError:  # plain import when installed as a top-level module
    from taxonomy_thmm import Taxonomy, TaxonomyError, Thresholds, cpc_ancestors, cpc_level, read_label_titles

__all__ = [
    "DOC_REPRESENTATIONS",
    "HEAD_TYPES",
    "LOSS_TYPES",
    "MIN_MAX_LENGTH",
    "Taxonomy",
    "TaxonomyError",
    "THMMConfig",
    "Thresholds",
    "check_max_length",
    "cpc_ancestors",
    "looks_like_local_path",
    "cpc_level",
    "read_label_titles",
]

# --------------------------------------------------------------------------------------------------
# Choices, declared once (the config, the command lines and the docs use these)
# --------------------------------------------------------------------------------------------------

HEAD_TYPES = ("tmm", "thmm", "flat")
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
        lexical_weight (`float`, *optional*, defaults to 0.0):
            How much of each node's logit the lexical scorer gives, in [0, 1]: the model outputs
            `(1 - lexical_weight) * heads + lexical_weight * (lexical_scale * svm + lexical_shift)`.
            Chosen on dev by `train.py`; 0 leaves the heads' logits as they are.
        lexical_scale (`float`, *optional*, defaults to 1.0):
            Slope of the calibration that maps SVM decision values onto logits (Platt scaling, fitted on dev).
        lexical_shift (`float`, *optional*, defaults to 0.0):
            Intercept of that calibration.

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
    head_dropout: float | int = 0.25
    flat_hidden_size: int = 512
    cnn_num_filters: int = 256
    cnn_kernel_sizes: list[int] | tuple[int, ...] = (2, 3, 4, 5)
    cnn_num_summed_layers: int = 4
    threshold: float | int = 0.5
    level_thresholds: list[float] | None = None
    node_thresholds: dict[str, float] | None = None
    label_titles: dict[str, str] | None = None
    max_length: int = 256
    consistent_scores: bool = False
    loss_type: Literal[LOSS_TYPES] = "bce"
    focal_gamma: float | int = 2.0
    lexical_vocab_size: int = 0
    lexical_weight: float | int = 0.0
    lexical_scale: float | int = 1.0
    lexical_shift: float | int = 0.0

    def __post_init__(self, **kwargs):
        if isinstance(self.taxonomy, Taxonomy):
            self.taxonomy = self.taxonomy.to_dict()
        self.cnn_kernel_sizes = [int(k) for k in self.cnn_kernel_sizes]
        if self.taxonomy is not None:
            taxonomy = Taxonomy.from_dict(self.taxonomy)
            # id2label always mirrors the taxonomy's node order, whatever a stale file said.
            kwargs.pop("num_labels", None)
            self.id2label = taxonomy.id2label
            self.label2id = taxonomy.label2id
        self.problem_type = "multi_label_classification"
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__post_init__(**kwargs)

    def validate_heads(self):
        """Part of `@strict` validation: values a model can be built from."""
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.doc_representation not in DOC_REPRESENTATIONS:
            raise ValueError(
                f"doc_representation must be one of {DOC_REPRESENTATIONS}, got {self.doc_representation!r}"
            )
        if self.head_hidden_size < 1 or self.flat_hidden_size < 1 or self.cnn_num_filters < 1:
            raise ValueError("head_hidden_size, flat_hidden_size and cnn_num_filters must be positive")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if not self.cnn_kernel_sizes or min(self.cnn_kernel_sizes) < 1:
            raise ValueError(f"cnn_kernel_sizes must be positive integers, got {self.cnn_kernel_sizes}")
        if self.cnn_num_summed_layers < 1:
            raise ValueError(f"cnn_num_summed_layers must be at least 1, got {self.cnn_num_summed_layers}")
        try:
            thresholds = self.thresholds
            if self.taxonomy is not None:
                thresholds.for_nodes(self.get_taxonomy())
        except ValueError as err:  # a TaxonomyError too
            values = f"threshold={self.threshold!r}, level_thresholds={self.level_thresholds!r}"
            if self.node_thresholds:
                values += f", node_thresholds ({len(self.node_thresholds)} nodes)"
            raise ValueError(f"{values}: {err}") from None
        check_max_length(self.max_length)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not self.focal_gamma >= 0:
            raise ValueError(f"focal_gamma must be non-negative, got {self.focal_gamma}")
        if self.lexical_vocab_size < 0:
            raise ValueError(f"lexical_vocab_size must be non-negative, got {self.lexical_vocab_size}")
        if not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(f"lexical_weight must be in [0, 1], got {self.lexical_weight}")
        if self.lexical_weight > 0 and not self.lexical_vocab_size:
            raise ValueError("lexical_weight > 0 needs a lexical scorer (lexical_vocab_size > 0)")
        if not (math.isfinite(self.lexical_scale) and math.isfinite(self.lexical_shift)):
            raise ValueError(f"lexical_scale and lexical_shift must be finite, got {self.lexical_scale}, "
                             f"{self.lexical_shift}")

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
        output = super().to_dict()
        output.pop("_taxonomy_cache", None)
        return output


THMMConfig.register_for_auto_class()
