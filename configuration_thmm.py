# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Taxonomy and configuration for the (T)HMM hierarchical patent classifiers.

This file is the one place where hierarchy logic lives: code -> ancestors, node levels, parent
indices, tree distances and the decoding of node scores into hierarchy-consistent label sets. The
model, the dataset builder, the metric and the training script all use :class:`Taxonomy`.

It is copied next to ``modeling_thmm.py`` when a model is saved, so that
``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works without this package installed;
it therefore imports nothing but the standard library, numpy and transformers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = [
    "Taxonomy",
    "TaxonomyError",
    "THMMConfig",
    "cpc_ancestors",
    "cpc_level",
    "read_label_titles",
]

# --------------------------------------------------------------------------------------------------
# The CPC / IPC prefix rule
# --------------------------------------------------------------------------------------------------

# Section letter, two-digit class, subclass letter: "A", "A43", "A43B". CPC adds section Y.
_CPC_PATTERNS = {
    "cpc": re.compile(r"[A-HY](?:\d\d(?:[A-Z])?)?"),
    "ipc": re.compile(r"[A-H](?:\d\d(?:[A-Z])?)?"),
}
_LEVEL_BY_LENGTH = {1: 1, 3: 2, 4: 3}
_PREFIX_BY_LEVEL = {1: 1, 2: 3}  # level -> prefix length of the ancestor at that level


class TaxonomyError(ValueError):
    """A label code or a hierarchy that cannot be used; the message names the offending code."""


def cpc_level(code: str, scheme: str = "cpc") -> int:
    """Level of a CPC/IPC code: 1 = section (``A``), 2 = class (``A43``), 3 = subclass (``A43B``).

    Raises :class:`TaxonomyError` naming the code when it is not a well-formed section, class or
    subclass symbol of ``scheme`` (``"cpc"`` allows section ``Y``, ``"ipc"`` does not).
    """
    if scheme not in _CPC_PATTERNS:
        raise TaxonomyError(f"unknown code scheme {scheme!r}; expected 'cpc' or 'ipc'")
    if not isinstance(code, str):
        raise TaxonomyError(f"label code must be a string, got {type(code).__name__} {code!r}")
    if not _CPC_PATTERNS[scheme].fullmatch(code):
        hint = ""
        if code != code.strip():
            hint = " (it has surrounding whitespace)"
        elif code.upper() != code and _CPC_PATTERNS[scheme].fullmatch(code.upper()):
            hint = f" (codes are upper case: {code.upper()!r})"
        elif len(code) > 4 and _CPC_PATTERNS[scheme].fullmatch(code[:4]):
            hint = f" (only section, class and subclass are supported; the subclass is {code[:4]!r})"
        expected = "A-H or Y" if scheme == "cpc" else "A-H"
        raise TaxonomyError(
            f"malformed {scheme.upper()} code {code!r}{hint}: expected a section ({expected}), "
            f"a class like 'A43' or a subclass like 'A43B'"
        )
    return _LEVEL_BY_LENGTH[len(code)]


def cpc_ancestors(code: str, scheme: str = "cpc") -> list[str]:
    """Ancestors of a CPC/IPC code by the prefix rule, root first: ``A43B`` -> ``["A", "A43"]``."""
    level = cpc_level(code, scheme)
    return [code[: _PREFIX_BY_LEVEL[lvl]] for lvl in range(1, level)]


# --------------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------------


class Taxonomy:
    """A label hierarchy: a forest of codes, each node with one parent (or none, for a root).

    Nodes are ordered by level, then by code, so that every level occupies one contiguous block of
    node indices (``level_slices``); the model's per-level heads and the logits use this order.

    Build it from label codes with the CPC/IPC prefix rule (:meth:`from_codes`), or from an explicit
    child -> parent map for any other hierarchy (:meth:`from_parent_map`).

    Example:
        >>> tax = Taxonomy.from_codes(["A43B", "A43C", "B41F"])
        >>> tax.nodes
        ('A', 'B', 'A43', 'B41', 'A43B', 'A43C', 'B41F')
        >>> tax.ancestors("A43B")
        ['A', 'A43']
        >>> sorted(tax.expand(["A43B"]))
        ['A', 'A43', 'A43B']
        >>> tax.distance("B41F", "A43B"), tax.distance("A43C", "A43B")
        (6, 2)
    """

    def __init__(self, parent_map: Mapping[str, str | None], scheme: str | None = None):
        parents: dict[str, str | None] = {}
        for child, parent in parent_map.items():
            self._check_name(child)
            if parent is not None:
                self._check_name(parent)
                if parent == child:
                    raise TaxonomyError(f"node {child!r} is its own parent")
            parents[child] = parent
        for parent in list(parents.values()):
            if parent is not None and parent not in parents:
                parents[parent] = None  # a parent that is nobody's child is a root
        if not parents:
            raise TaxonomyError("a taxonomy needs at least one node")

        depth: dict[str, int] = {}
        for start in parents:
            path = []
            node = start
            while node is not None and node not in depth:
                if node in path:
                    cycle = " -> ".join(path[path.index(node) :] + [node])
                    raise TaxonomyError(f"the parent map has a cycle: {cycle}")
                path.append(node)
                node = parents[node]
            base = 0 if node is None else depth[node]
            for offset, visited in enumerate(reversed(path), start=1):
                depth[visited] = base + offset

        self.scheme = scheme
        self._nodes: tuple[str, ...] = tuple(sorted(parents, key=lambda c: (depth[c], c)))
        self._label2id = {code: i for i, code in enumerate(self._nodes)}
        self._levels = np.array([depth[c] for c in self._nodes], dtype=np.int64)
        self._parent_index = np.array(
            [-1 if parents[c] is None else self._label2id[parents[c]] for c in self._nodes], dtype=np.int64
        )
        children: list[list[int]] = [[] for _ in self._nodes]
        for i, p in enumerate(self._parent_index):
            if p >= 0:
                children[p].append(i)
        self._children = tuple(tuple(c) for c in children)
        self._ancestor_ids = []
        for i in range(len(self._nodes)):
            chain, p = [], self._parent_index[i]
            while p >= 0:
                chain.append(int(p))
                p = self._parent_index[p]
            self._ancestor_ids.append(tuple(reversed(chain)))
        self._ancestor_matrix = None

    @staticmethod
    def _check_name(code) -> None:
        if not isinstance(code, str) or not code or code != code.strip():
            raise TaxonomyError(f"node names must be non-empty strings without surrounding spaces, got {code!r}")

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_codes(cls, codes: Iterable[str], scheme: str = "cpc") -> Taxonomy:
        """All given CPC/IPC codes plus their ancestors by the prefix rule (``A43B`` -> ``A43`` -> ``A``).

        Raises :class:`TaxonomyError` naming the first malformed code.
        """
        parent_map: dict[str, str | None] = {}
        for code in codes:
            chain = cpc_ancestors(code, scheme) + [code]
            for i, node in enumerate(chain):
                parent_map[node] = chain[i - 1] if i else None
        if not parent_map:
            raise TaxonomyError("cannot build a taxonomy from an empty list of codes")
        return cls(parent_map, scheme=scheme)

    @classmethod
    def from_parent_map(cls, parent_map: Mapping[str, str | None]) -> Taxonomy:
        """Any hierarchy, from a ``child -> parent`` map (``None`` for roots; unseen parents become roots)."""
        return cls(parent_map, scheme=None)

    @classmethod
    def from_dict(cls, data: Mapping) -> Taxonomy:
        """Inverse of :meth:`to_dict`; validates that the stored node order is the canonical one."""
        try:
            nodes, parents, scheme = list(data["nodes"]), list(data["parents"]), data.get("scheme")
        except (KeyError, TypeError) as err:
            raise TaxonomyError(f"a serialized taxonomy needs 'nodes' and 'parents' lists, got {data!r:.200}") from err
        if len(nodes) != len(parents):
            raise TaxonomyError(f"serialized taxonomy has {len(nodes)} nodes but {len(parents)} parents")
        if len(set(nodes)) != len(nodes):
            raise TaxonomyError("serialized taxonomy lists a node twice")
        taxonomy = cls(dict(zip(nodes, parents)), scheme=scheme)
        if list(taxonomy.nodes) != nodes:
            raise TaxonomyError("serialized taxonomy nodes are not in canonical (level, code) order")
        return taxonomy

    def to_dict(self) -> dict:
        """Plain-JSON form, stored in ``THMMConfig.taxonomy``."""
        parents = [None if p < 0 else self._nodes[p] for p in self._parent_index]
        return {"scheme": self.scheme, "nodes": list(self._nodes), "parents": parents}

    @classmethod
    def from_json(cls, path) -> Taxonomy:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    # ---- structure --------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """All codes, ordered by level, then code."""
        return self._nodes

    @property
    def label2id(self) -> dict[str, int]:
        return dict(self._label2id)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self._nodes))

    @property
    def levels(self) -> np.ndarray:
        """Level of each node (1 for roots), in node order."""
        return self._levels.copy()

    @property
    def parent_index(self) -> np.ndarray:
        """Index of each node's parent, ``-1`` for roots."""
        return self._parent_index.copy()

    @property
    def num_levels(self) -> int:
        return int(self._levels.max())

    @property
    def level_slices(self) -> list[slice]:
        """``level_slices[l - 1]`` is the contiguous node-index range of level ``l``."""
        bounds = np.searchsorted(self._levels, np.arange(1, self.num_levels + 2))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def leaf_ids(self) -> np.ndarray:
        """Indices of the nodes without children (the flat baselines' output space)."""
        return np.array([i for i, c in enumerate(self._children) if not c], dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the node list and parent links: equal fingerprints mean the same head layout."""
        payload = json.dumps([list(self._nodes), self._parent_index.tolist()], separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def __contains__(self, code) -> bool:
        return code in self._label2id

    def __eq__(self, other) -> bool:
        return isinstance(other, Taxonomy) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        counts = ", ".join(str(s.stop - s.start) for s in self.level_slices)
        return f"Taxonomy({len(self)} nodes; per level: {counts}; scheme={self.scheme})"

    def index(self, code: str) -> int:
        """Node index of ``code``; a :class:`TaxonomyError` names an unknown code."""
        try:
            return self._label2id[code]
        except (KeyError, TypeError):
            raise TaxonomyError(self._unknown_message(code)) from None

    def _unknown_message(self, code) -> str:
        if self.scheme is not None:
            cpc_level(code, self.scheme)  # a malformed code gets the format error
        return f"label code {code!r} is not in this taxonomy of {len(self)} nodes"

    def level(self, code: str) -> int:
        return int(self._levels[self.index(code)])

    def parent(self, code: str) -> str | None:
        p = self._parent_index[self.index(code)]
        return None if p < 0 else self._nodes[p]

    def children(self, code: str) -> list[str]:
        return [self._nodes[i] for i in self._children[self.index(code)]]

    def children_ids(self, node_id: int) -> tuple[int, ...]:
        return self._children[node_id]

    def ancestors(self, code: str) -> list[str]:
        """Ancestors of ``code``, root first, without the code itself."""
        return [self._nodes[i] for i in self._ancestor_ids[self.index(code)]]

    def ancestor_ids(self, node_id: int) -> tuple[int, ...]:
        return self._ancestor_ids[node_id]

    def expand(self, codes: Iterable[str]) -> set[str]:
        """The codes together with all their ancestors."""
        out: set[str] = set()
        for code in codes:
            out.add(code)
            out.update(self.ancestors(code))
        return out

    def distance(self, a: str, b: str) -> int:
        """Number of edges between two nodes, through a virtual root above the top level."""
        ia, ib = self.index(a), self.index(b)
        path_a = self._ancestor_ids[ia] + (ia,)
        path_b = self._ancestor_ids[ib] + (ib,)
        common = 0
        for x, y in zip(path_a, path_b):
            if x != y:
                break
            common += 1
        return len(path_a) + len(path_b) - 2 * common

    # ---- label matrices and decoding --------------------------------------------------------

    def multi_hot(self, label_lists: Sequence[Iterable[str]], expand: bool = True) -> np.ndarray:
        """``[documents, nodes]`` 0/1 float32 targets; ``expand`` adds every label's ancestors."""
        out = np.zeros((len(label_lists), len(self)), dtype=np.float32)
        for row, labels in enumerate(label_lists):
            for code in labels:
                i = self.index(code)
                out[row, i] = 1.0
                if expand:
                    out[row, list(self._ancestor_ids[i])] = 1.0
        return out

    def ancestor_matrix(self) -> np.ndarray:
        """``A[i, j] = 1`` when ``j`` is ``i`` or an ancestor of ``i`` (float32, ``[nodes, nodes]``)."""
        if self._ancestor_matrix is None:
            mat = np.eye(len(self), dtype=np.float32)
            for i, anc in enumerate(self._ancestor_ids):
                mat[i, list(anc)] = 1.0
            self._ancestor_matrix = mat
        return self._ancestor_matrix

    def close_upwards(self, selected: np.ndarray) -> np.ndarray:
        """Add every selected node's ancestors: ``[documents, nodes]`` bool -> bool."""
        return (selected.astype(np.float32) @ self.ancestor_matrix()) > 0

    def max_from_leaves(self, leaf_scores: np.ndarray) -> np.ndarray:
        """Node scores from leaf-only scores (``[documents, leaves]``, in ``leaf_ids`` order):
        each inner node gets the max over its children, as in the flat baselines."""
        scores = np.full((leaf_scores.shape[0], len(self)), -np.inf, dtype=np.float64)
        scores[:, self.leaf_ids] = leaf_scores
        for i in range(len(self) - 1, -1, -1):  # deeper levels have larger indices
            if self._children[i]:
                scores[:, i] = scores[:, list(self._children[i])].max(axis=1)
        return scores

    def node_thresholds(self, threshold: float | Sequence[float]) -> np.ndarray:
        """Per-node thresholds from one global value or one value per level."""
        if np.isscalar(threshold):
            return np.full(len(self), float(threshold))
        values = np.asarray(threshold, dtype=np.float64)
        if values.shape != (self.num_levels,):
            raise TaxonomyError(f"expected one threshold per level ({self.num_levels}), got {list(values)}")
        return values[self._levels - 1]

    def decode(
        self,
        scores: np.ndarray,
        threshold: float | Sequence[float] = 0.5,
        top_k: int | None = None,
        at_least_one: bool = False,
    ) -> list[list[str]]:
        """Label sets from node scores (probabilities), consistent with the hierarchy.

        Args:
            scores: ``[documents, nodes]`` scores in node order.
            threshold: a node is predicted when its score reaches the threshold of its level
                (one value, or one per level).
            top_k: if given, predict the ``top_k`` best-scoring leaves per document instead of
                thresholding.
            at_least_one: if no leaf reaches its threshold, predict the best-scoring leaf.

        Every predicted node implies its ancestors. Each label list is ordered by level, then by
        decreasing score.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != len(self):
            raise TaxonomyError(f"expected scores of shape [documents, {len(self)}], got {list(scores.shape)}")
        leaves = self.leaf_ids
        if top_k is not None:
            if top_k < 1:
                raise TaxonomyError(f"top_k must be at least 1, got {top_k}")
            k = min(top_k, len(leaves))
            best = np.argpartition(-scores[:, leaves], k - 1, axis=1)[:, :k]
            selected = np.zeros(scores.shape, dtype=bool)
            np.put_along_axis(selected, leaves[best], True, axis=1)
        else:
            selected = scores >= self.node_thresholds(threshold)[None, :]
            if at_least_one:
                empty = ~selected[:, leaves].any(axis=1)
                best_leaf = leaves[np.argmax(scores[:, leaves], axis=1)]
                selected[np.flatnonzero(empty), best_leaf[empty]] = True
        selected = self.close_upwards(selected)
        order = np.lexsort((-scores, np.broadcast_to(self._levels, scores.shape)), axis=1)
        return [[self._nodes[i] for i in row_order if row_sel[i]] for row_order, row_sel in zip(order, selected)]


def read_label_titles(path) -> dict[str, str]:
    """Read a ``code<TAB>title`` file (no header), such as the official CPC title list.

    Errors name the file and the line.
    """
    titles: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for lineno, line in enumerate(lines, start=1):
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        code, sep, title = line.partition("\t")
        if not sep or not code or not title.strip():
            raise ValueError(f"{path}, line {lineno}: expected 'code<TAB>title', got {line[:80]!r}")
        if code in titles:
            raise ValueError(f"{path}, line {lineno}: code {code!r} appears twice")
        titles[code] = title.strip()
    return titles


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
        head_type (`str`, *optional*, defaults to `"thmm"`):
            `"tmm"`: one binary head per node on the shared document vector; `"thmm"`: TMM where each
            head's first layer also sees its parent head's second hidden layer; `"flat"`: one
            leaf-only multi-label MLP, an inner node scoring the max over its children.
        doc_representation (`str`, *optional*, defaults to `"cls"`):
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
        label_titles (`dict[str, str]`, *optional*):
            Human-readable titles of the codes, e.g. from the CPC title list.
        max_length (`int`, *optional*, defaults to 256):
            Word-pieces per document (title and abstract) used in training.

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
    head_type: Literal["tmm", "thmm", "flat"] = "thmm"
    doc_representation: Literal["cls", "cnn", "mean"] = "cls"
    head_hidden_size: int = 256
    head_dropout: float | int = 0.25
    flat_hidden_size: int = 512
    cnn_num_filters: int = 256
    cnn_kernel_sizes: list[int] | tuple[int, ...] = (2, 3, 4, 5)
    cnn_num_summed_layers: int = 4
    threshold: float | int = 0.5
    level_thresholds: list[float] | None = None
    label_titles: dict[str, str] | None = None
    max_length: int = 256

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
        if self.head_type not in ("tmm", "thmm", "flat"):
            raise ValueError(f"head_type must be 'tmm', 'thmm' or 'flat', got {self.head_type!r}")
        if self.doc_representation not in ("cls", "cnn", "mean"):
            raise ValueError(f"doc_representation must be 'cls', 'cnn' or 'mean', got {self.doc_representation!r}")
        if self.head_hidden_size < 1 or self.flat_hidden_size < 1 or self.cnn_num_filters < 1:
            raise ValueError("head_hidden_size, flat_hidden_size and cnn_num_filters must be positive")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if not self.cnn_kernel_sizes or min(self.cnn_kernel_sizes) < 1:
            raise ValueError(f"cnn_kernel_sizes must be positive integers, got {self.cnn_kernel_sizes}")
        if self.cnn_num_summed_layers < 1:
            raise ValueError(f"cnn_num_summed_layers must be at least 1, got {self.cnn_num_summed_layers}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")
        if self.level_thresholds is not None:
            if any(not 0.0 <= t <= 1.0 for t in self.level_thresholds):
                raise ValueError(f"level_thresholds must be probabilities, got {self.level_thresholds}")
            if self.taxonomy is not None:
                levels = self.get_taxonomy().num_levels
                if len(self.level_thresholds) != levels:
                    raise ValueError(
                        f"level_thresholds has {len(self.level_thresholds)} values; the taxonomy has {levels} levels"
                    )
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")

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
    def decision_thresholds(self) -> float | list[float]:
        """What decoding uses: the per-level thresholds when tuned, else the global one."""
        return list(self.level_thresholds) if self.level_thresholds is not None else float(self.threshold)

    def to_dict(self):
        output = super().to_dict()
        output.pop("_taxonomy_cache", None)
        return output


THMMConfig.register_for_auto_class()
