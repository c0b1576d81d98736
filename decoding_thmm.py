# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""From node probabilities to what a user reads: the decoding options, checked before any work;
label records (``{"code", "score", "level", "title"}`` per predicted code); and labelled
probabilities (:class:`NodeScores`).

The output rules, the same in ``predict``, ``label_records``, the pipeline, ``thmm-predict`` and
the run's ``test_predictions.jsonl``:

* **Which codes.** The decision is :meth:`Taxonomy.select`'s: a node is predicted when its score
  reaches its threshold (or it is one of the ``top_k`` best leaves, or the best leaf of a document
  that has none, with ``at_least_one``), and a predicted node implies its ancestors. The scores it
  thresholds are the heads' probabilities, or with ``consistent`` their minimum along the path
  from the root (:meth:`Taxonomy.min_along_path`).
* **Which scores are shown.** By default, :meth:`Taxonomy.display_scores`: each predicted code shows
  the highest score among itself and its predicted descendants. So a child is never shown above
  its parent, and an ancestor that is there because a descendant was predicted is shown with at
  least that descendant's score (never below the threshold that admitted it). This changes the
  shown scores only, never which codes are predicted, so the metrics are those of the raw
  decision. ``raw_scores=True`` shows the scores the decision read instead.
* **Order.** By level, then by decreasing shown score.
* **Precision.** Scores are rounded to :data:`DEFAULT_DECIMALS` (4) places; ``decimals=None``
  keeps full precision (``float`` of the float32 probability).

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``); it
imports nothing but the standard library, numpy and ``taxonomy_thmm``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .taxonomy_thmm import Taxonomy, ThresholdError, Thresholds
except ImportError:  # plain import when installed as a top-level module
    from taxonomy_thmm import Taxonomy, ThresholdError, Thresholds

__all__ = ["DEFAULT_DECIMALS", "NodeScores", "check_decoding_options", "check_probabilities", "check_score_matrix",
           "label_records", "rounded"]

#: decimal places of the scores in label records (``decimals=None``: full precision)
DEFAULT_DECIMALS = 4


def check_decoding_options(taxonomy: Taxonomy, threshold=None, top_k: int | None = None, at_least_one: bool = False,
                           consistent: bool | None = None, decimals: int | None = DEFAULT_DECIMALS,
                           raw_scores: bool = False) -> Thresholds | None:
    """The decoding and output options, checked before any work; ``threshold`` as :class:`Thresholds`
    (``None`` when not given). A ValueError names the option: thresholds are probabilities in [0, 1]
    (one per level of ``taxonomy`` when a list), top_k is at least 1, at_least_one, consistent and
    raw_scores are booleans (consistent may be ``None``), decimals a non-negative integer or ``None``."""
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k: must be an integer of at least 1 (got {top_k!r})")
    for option, value in (("at_least_one", at_least_one), ("consistent", consistent), ("raw_scores", raw_scores)):
        if not isinstance(value, bool) and not (option == "consistent" and value is None):
            raise ValueError(f"{option}: must be True or False (got {value!r})")
    if decimals is not None and (not isinstance(decimals, numbers.Integral) or isinstance(decimals, bool)
                                 or decimals < 0):
        raise ValueError(f"decimals: must be an integer of at least 0, or None for full precision (got {decimals!r})")
    if top_k is not None:  # top_k decides alone: a threshold or at_least_one beside it would be ignored
        for option, given in (("threshold", threshold is not None), ("at_least_one", at_least_one)):
            if given:
                raise ValueError(f"top_k and {option}: choose one (top_k predicts the best leaves whatever their "
                                 f"scores, so {option} would be ignored)")
    if threshold is None:
        return None
    if isinstance(threshold, Mapping):  # read as a sequence it would be its keys
        raise ValueError(f"threshold: expected a number, or a list of one per level, got a dict "
                         f"({type(threshold).__name__}); per-code thresholds are tuned in training")
    try:
        thresholds = Thresholds.coerce(threshold)
    except ThresholdError as err:  # Thresholds' names: global_threshold, per_level[1]
        index = err.where[err.where.find("["):] if "[" in err.where else ""
        raise ValueError(f"threshold{index}: {err.rule} (got {err.value!r})") from None
    try:
        thresholds.for_nodes(taxonomy)  # one per level, when a list
    except ValueError as err:  # a TaxonomyError, of the taxonomy's copy of this code (remote code holds two)
        raise ValueError(f"threshold: {err}") from None
    return thresholds


def check_probabilities(probabilities, nodes: int) -> np.ndarray:
    """``probabilities`` as a float ``[documents, nodes]`` array, once every value is a probability: a
    ValueError names the first document and node that is NaN, infinite or outside [0, 1] (a decision
    made on it would silently drop or keep codes)."""
    return check_score_matrix(probabilities, nodes, "probabilities", lambda v: (v >= 0.0) & (v <= 1.0),
                              "is not a probability in [0, 1]")  # NaN fails both comparisons


def check_score_matrix(values, nodes: int, name: str, valid, rule: str, first_row: int = 0) -> np.ndarray:
    """``values`` as a float64 ``[documents, nodes]`` array once ``valid(array)`` holds everywhere; else a
    ValueError naming ``name``, the first bad document (counted from ``first_row``: a block of a larger
    array) and node, and ``rule``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers, a [documents, {nodes}] array ({err})") from None
    if array.ndim != 2 or array.shape[1] != nodes:
        raise ValueError(f"{name}: expected shape [documents, {nodes}], got {list(array.shape)}")
    bad = ~valid(array)
    if bad.any():
        document, node = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: document {first_row + document}, node {node}: {float(array[document, node])!r} "
                         f"{rule}")
    return array


def rounded(value, decimals: int | None = DEFAULT_DECIMALS) -> float:
    """``value`` as a Python float, rounded to ``decimals`` places (``None``: as it is)."""
    return float(value) if decimals is None else round(float(value), int(decimals))


def label_records(taxonomy: Taxonomy, scores: np.ndarray, thresholds: Thresholds, top_k: int | None = None,
                  at_least_one: bool = False, raw_scores: bool = False, decimals: int | None = DEFAULT_DECIMALS,
                  titles: Mapping[str, str] | None = None) -> list[list[dict]]:
    """Per document, its predicted codes as ``{"code", "score", "level", "title"}`` records, by the
    rules of this module: ``scores`` (``[documents, nodes]``) are the ones the decision reads;
    records show :meth:`Taxonomy.display_scores` of them unless ``raw_scores``, rounded to
    ``decimals``, ordered by level then shown score. ``titles`` maps codes to their titles."""
    scores = np.asarray(scores)
    selected = taxonomy.select(scores, threshold=thresholds, top_k=top_k, at_least_one=at_least_one)
    shown = np.asarray(scores, dtype=np.float64) if raw_scores else taxonomy.display_scores(scores, selected)
    label_sets = taxonomy.label_lists(selected, shown, tie_scores=scores)
    titles = titles or {}
    return [
        [{"code": code, "score": rounded(row[taxonomy.index(code)], decimals), "level": taxonomy.level(code),
          "title": titles.get(code)} for code in codes]
        for row, codes in zip(shown, label_sets)
    ]


class NodeScores:
    """Node probabilities with their labels: what ``predict_proba(..., labelled=True)`` returns.

    Attributes:
        array: ``[documents, nodes]`` float32 probabilities, full precision (``np.asarray(scores)``
            gives it too).
        labels: the node codes, in column order (the taxonomy's order: by level, then code).
        truncated: per document, whether its text was cut to ``max_length`` word-pieces.

    ``to_dicts()`` gives one ``{code: score}`` mapping per document; for a table,
    ``pandas.DataFrame(scores.to_dicts())`` or ``pandas.DataFrame(scores.array, columns=scores.labels)``.
    """

    def __init__(self, array: np.ndarray, labels: Sequence[str], truncated: Sequence[bool] | None = None):
        self.array = np.asarray(array)
        self.labels = tuple(labels)
        if self.array.ndim != 2 or self.array.shape[1] != len(self.labels):
            raise ValueError(f"expected scores of shape [documents, {len(self.labels)}], got {list(self.array.shape)}")
        self.truncated = None if truncated is None else [bool(t) for t in truncated]

    def __len__(self) -> int:
        return len(self.array)

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)

    def __repr__(self) -> str:
        return f"NodeScores({len(self)} documents x {len(self.labels)} nodes)"

    def column(self, code: str) -> np.ndarray:
        """The probabilities of one node, one per document (a KeyError for an unknown code)."""
        try:
            return self.array[:, self.labels.index(code)]
        except ValueError:
            raise KeyError(f"{code!r} is not one of the {len(self.labels)} nodes") from None

    def to_dicts(self, decimals: int | None = DEFAULT_DECIMALS) -> list[dict[str, float]]:
        """One ``{code: probability}`` mapping per document, every node in column order, rounded to
        ``decimals`` places (``None``: full precision)."""
        rows = np.asarray(self.array, dtype=np.float64).tolist()
        return [{code: rounded(value, decimals) for code, value in zip(self.labels, row)} for row in rows]
