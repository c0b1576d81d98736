# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Hierarchical multi-label metrics for patent classification (Pujari et al., ECIR 2021).

:func:`compute_hierarchical_metrics` is the single implementation of the metrics: the ``evaluate``
module in ``metrics/hierarchical``, ``train.py`` and the benchmarks all call it. Every label set is
first closed upwards in the taxonomy (a predicted or gold ``A43B`` also counts as ``A43`` and ``A``),
so that a wrong subclass in the right class still earns the class and the section; all numbers are
computed over these node decisions.

The report helpers (:func:`format_markdown`, :func:`plot_per_level_f1`, :func:`write_report`) turn
one results dict, or a ``{run_name: results}`` dict, into the paper's tables and its per-level F1
figure.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from taxonomy_thmm import Taxonomy, TaxonomyError, cpc_level, level_name

from .calibration import masked_calibration_error

__all__ = [
    "check_label_lists",
    "compute_hierarchical_metrics",
    "format_markdown",
    "label_matrix",
    "plot_per_level_f1",
    "scores_from_counts",
    "write_report",
]

logger = logging.getLogger(__name__)

_UNKNOWN_MODES = ("error", "ignore")


# --------------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------------


def compute_hierarchical_metrics(
    predictions: Sequence[Iterable[str]] | None,
    references: Sequence[Iterable[str]],
    scores=None,
    score_labels: Sequence[str] | None = None,
    taxonomy: Taxonomy | Mapping | None = None,
    unknown_labels: str = "error",
    error_level: int | None = None,
    predicted_matrix: np.ndarray | None = None,
) -> dict:
    """Hierarchical precision / recall / F1, AUPRC, per-level scores, coverage and error analysis.

    Args:
        predictions: one iterable of predicted label codes per document (e.g. ``[["A43B"], []]``);
            ``None`` when ``predicted_matrix`` is given instead.
        references: one iterable of gold label codes per document.
        scores: optional ``[documents, len(score_labels)]`` array of node scores (probabilities or
            decision values; any monotone score works, AUPRC only uses the ranking), for ``auprc``.
        score_labels: the codes of the score columns, in any order: all taxonomy nodes, or only some
            of them (e.g. the leaves, for flat models). A node without a column scores the max over
            its children; a node with neither (e.g. a gold subclass the model has no output for) is
            ranked below every given score, so it costs recall. Defaults, when a taxonomy is given,
            to its ``nodes`` (or its leaves, by the width of ``scores``).
        taxonomy: a :class:`Taxonomy` or its ``to_dict()`` form. Defaults to the CPC prefix rule over
            every code seen in ``predictions``, ``references`` and ``score_labels``.
        unknown_labels: what to do with a well-formed code that is not in the given taxonomy:
            ``"error"`` raises naming the code and the document; ``"ignore"`` leaves it out of
            every number but counts it in ``unknown_predictions`` / ``unknown_references`` /
            ``unknown_score_labels``. A malformed code (``"A4"``) always raises.
        error_level: taxonomy level of the false-positive analysis; defaults to the deepest level
            (3, the subclass, for CPC).
        predicted_matrix: the predictions as a bool ``[documents, nodes]`` matrix in the node order
            of ``taxonomy`` (which is then required), instead of label lists: what
            ``thmm.evaluation.decoded_matrix`` gives, without decoding 100k documents into strings.
            It is closed upwards here, like label lists.

    Returns:
        A flat dict of Python floats / ints (``None`` where undefined). All label sets include their
        ancestors; ``P`` is precision, ``R`` recall, ``F1`` their harmonic mean; a zero denominator
        gives 0 (scikit-learn's ``zero_division=0``).

        - ``micro_precision``, ``micro_recall``, ``micro_f1``: over all (document, node) decisions:
          ``P = sum|pred & gold| / sum|pred|``, ``R = sum|pred & gold| / sum|gold|``.
        - ``macro_precision``, ``macro_recall``, ``macro_f1``: the mean of the per-node P, R and F1
          over the nodes that occur in the gold references (``num_gold_labels`` of them); nodes that
          are only predicted count in micro, not here. ``None`` if there is no gold label.
        - ``f1_avg``: harmonic mean of ``micro_f1`` and ``macro_f1`` (the paper's summary score).
        - ``f1_mean``: arithmetic mean of ``micro_f1`` and ``macro_f1``. Unlike ``f1_avg`` it weighs a
          point of either equally; the harmonic mean is pulled toward the lower one (usually macro).
        - ``auprc``: micro-averaged average precision of the node scores against the gold nodes
          (what ``sklearn.metrics.average_precision_score(average="micro")`` gives, computed without
          sorting the flattened matrix with its labels); ``None`` without scores
          or without any gold label. ``unscored_gold_labels`` counts the (document, gold node)
          pairs that had no score (ranked last); ``None`` without scores.
        - ``ece``, ``level{l}_ece``: expected calibration error of the node scores, when they are
          probabilities (all in [0, 1]): over every (document, scored node) pair, and per level
          (``thmm.calibration``; 15 equal-width bins). Absent otherwise.
        - ``level{l}_micro_precision`` ... ``level{l}_macro_f1``: the same six numbers restricted to
          the nodes of level ``l`` (1 = section, 2 = class, 3 = subclass, 4 = main group, 5 = subgroup for
          CPC/IPC).
        - ``level{l}_avg_predicted``, ``level{l}_avg_gold``: mean number of predicted / gold labels
          of level ``l`` per document; ``level{l}_docs_without_prediction``: documents with no
          predicted label at level ``l``.
        - At ``error_level``: ``fp_count`` false positives (predicted, not gold) in
          ``fp_documents`` documents; for each false positive in a document that has gold labels at
          that level, the tree distance (``Taxonomy.distance``, hops through the virtual root) to
          the nearest of them: ``fp_hops_mean``, ``fp_hops_std`` (population std; ``None`` if no
          such false positive). False positives in documents without a gold label at that level have
          no nearest gold label: they are counted in ``fp_without_gold`` and left out of the hops.
        - ``num_documents``, ``num_nodes`` (taxonomy size), ``num_gold_labels``, ``error_level``,
          ``unknown_predictions``, ``unknown_references``, ``unknown_score_labels``: (document,
          code) pairs / score columns left out in ``"ignore"`` mode (always 0 in ``"error"`` mode).

    Raises:
        ValueError: no documents, length or shape mismatches, a bare string instead of a list of
            codes, or a bad ``unknown_labels`` / ``error_level``.
        TaxonomyError: a malformed or (in ``"error"`` mode) unknown code, naming the code and where
            it is (``references[3]``, ``score_labels[0]``).

    Example:
        >>> results = compute_hierarchical_metrics([["A43B", "B41F"]], [["A43C"]])
        >>> round(results["micro_precision"], 3), results["fp_count"], results["fp_hops_mean"]
        (0.333, 2, 4.0)
    """
    if unknown_labels not in _UNKNOWN_MODES:
        raise ValueError(f"unknown_labels must be one of {_UNKNOWN_MODES}, got {unknown_labels!r}")
    if predicted_matrix is None:
        pred_lists = check_label_lists(predictions, "predictions")
    else:
        pred_lists = None
        predicted_matrix = _check_predicted_matrix(predicted_matrix, predictions, taxonomy)
    gold_lists = check_label_lists(references, "references")
    num_pred = len(pred_lists) if predicted_matrix is None else len(predicted_matrix)
    if num_pred != len(gold_lists):
        raise ValueError(f"got {num_pred} predictions but {len(gold_lists)} references; one label list per document")
    if not gold_lists:
        raise ValueError("no documents to score: predictions and references are empty")
    if score_labels is not None:
        if scores is None:
            raise ValueError("score_labels was given without scores")
        score_labels = _as_code_list(score_labels, "score_labels", distinct=False)
    elif scores is not None and taxonomy is None:
        # The default taxonomy depends on the codes seen, so the column order cannot be guessed.
        raise ValueError("scores need score_labels (the code of each column) or the taxonomy they are ordered by")
    label_lists = {"predictions": pred_lists or [], "references": gold_lists}
    taxonomy = _resolve_taxonomy(taxonomy, label_lists, score_labels)
    if error_level is None:
        error_level = taxonomy.num_levels
    is_int = isinstance(error_level, (int, np.integer)) and not isinstance(error_level, bool)
    if not is_int or not 1 <= error_level <= taxonomy.num_levels:
        raise ValueError(f"error_level must be a level between 1 and {taxonomy.num_levels}, got {error_level!r}")
    label2id = taxonomy.label2id
    num_docs, num_nodes = len(gold_lists), len(taxonomy)

    if predicted_matrix is None:
        pred, unknown_pred = _closed_matrix(pred_lists, "predictions", taxonomy, label2id, unknown_labels)
    else:
        if predicted_matrix.shape[1] != num_nodes:
            raise ValueError(
                f"predicted_matrix has {predicted_matrix.shape[1]} columns but the taxonomy has {num_nodes} nodes"
            )
        pred, unknown_pred = taxonomy.close_upwards(predicted_matrix), 0
    gold, unknown_gold = _closed_matrix(gold_lists, "references", taxonomy, label2id, unknown_labels)

    # Per-node counts are all that P/R/F1 need, overall and per level.
    tp = _column_counts(pred & gold)
    n_pred = _column_counts(pred)
    n_gold = _column_counts(gold)

    results: dict = scores_from_counts(tp, n_pred, n_gold)

    results["auprc"], results["unscored_gold_labels"], unknown_scores = None, None, 0
    if scores is not None:
        node_scores, scored, unknown_scores = _node_scores(
            scores, score_labels, taxonomy, label2id, num_docs, unknown_labels
        )
        results["unscored_gold_labels"] = int(n_gold[~scored].sum())
        if n_gold.any():
            results["auprc"] = _micro_average_precision(gold, node_scores)
        if scored.any() and 0 <= node_scores[:, scored].min() and node_scores[:, scored].max() <= 1:
            # probabilities only, checked just now (finite, in [0, 1] where scored), and gold 0/1
            results.update(masked_calibration_error(node_scores, gold, taxonomy, scored))

    for level, cols in enumerate(taxonomy.level_slices, start=1):
        for key, value in _prf(tp[cols], n_pred[cols], n_gold[cols]).items():
            results[f"level{level}_{key}"] = value
    for level, cols in enumerate(taxonomy.level_slices, start=1):
        results[f"level{level}_avg_predicted"] = float(n_pred[cols].sum() / num_docs)
        results[f"level{level}_avg_gold"] = float(n_gold[cols].sum() / num_docs)
        results[f"level{level}_docs_without_prediction"] = int((~pred[:, cols].any(axis=1)).sum())

    results.update(_false_positive_hops(pred, gold, taxonomy, int(error_level)))

    results.update(
        num_documents=num_docs,
        num_nodes=num_nodes,
        num_gold_labels=int((n_gold > 0).sum()),
        error_level=int(error_level),
        unknown_predictions=unknown_pred,
        unknown_references=unknown_gold,
        unknown_score_labels=unknown_scores,
    )
    if unknown_pred or unknown_gold or unknown_scores:
        logger.warning(
            "left out codes not in the taxonomy: %d in predictions, %d in references, %d score columns",
            unknown_pred,
            unknown_gold,
            unknown_scores,
        )
    return results


def scores_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> dict:
    """The overall numbers of :func:`compute_hierarchical_metrics` (``micro_*``, ``macro_*``,
    ``f1_avg``, ``f1_mean``) from per-node counts over the nodes of one taxonomy: documents where the node is
    predicted and gold, predicted, gold (closed label sets). Threshold tuning scores candidates this way."""
    results = _prf(tp, n_pred, n_gold)
    results["f1_avg"] = _harmonic_mean(results["micro_f1"], results["macro_f1"])
    results["f1_mean"] = _arithmetic_mean(results["micro_f1"], results["macro_f1"])
    return results


def label_matrix(
    label_lists: Sequence[Iterable[str]],
    taxonomy: Taxonomy | Mapping | None,
    unknown_labels: str = "error",
    name: str = "labels",
) -> tuple[np.ndarray, int]:
    """Label lists as :func:`compute_hierarchical_metrics` reads them: the bool ``[documents, nodes]``
    matrix, closed upwards, and the number of (document, code) pairs left out as unknown (in
    ``"ignore"`` mode). Same checks and errors, naming ``name[i]``."""
    if unknown_labels not in _UNKNOWN_MODES:
        raise ValueError(f"unknown_labels must be one of {_UNKNOWN_MODES}, got {unknown_labels!r}")
    docs = check_label_lists(label_lists, name)
    taxonomy = _resolve_taxonomy(taxonomy, {name: docs}, None)
    return _closed_matrix(docs, name, taxonomy, taxonomy.label2id, unknown_labels)


def _check_predicted_matrix(matrix, predictions, taxonomy) -> np.ndarray:
    if predictions is not None:
        raise ValueError("pass predictions (label lists) or predicted_matrix (a node matrix), not both")
    if taxonomy is None:
        raise ValueError("predicted_matrix needs taxonomy=, the node order of its columns")
    matrix = np.asarray(matrix)
    if matrix.dtype != bool or matrix.ndim != 2:
        raise ValueError(
            f"predicted_matrix must be a bool [documents, nodes] array, got {matrix.dtype} of shape {list(matrix.shape)}"
        )
    return matrix


def _as_code_list(labels, where: str, distinct: bool = True) -> list[str]:
    """One document's labels (or ``score_labels``) as a list of codes; ``distinct`` drops repeats."""
    if type(labels) is not list and type(labels) is not tuple:  # skip the slow checks in the usual case
        if isinstance(labels, (str, bytes)):
            raise ValueError(
                f"{where} is the string {labels!r}, not a list of label codes; write [{labels!r}] "
                f"(a string would be read as one code per character)"
            )
        if labels is None or isinstance(labels, Mapping) or not isinstance(labels, Iterable):
            raise ValueError(f"{where} must be a list of label codes, got {type(labels).__name__} {labels!r:.80}")
    labels = list(labels)
    for code in labels:
        if not isinstance(code, str):
            raise TaxonomyError(f"{where}: label codes must be strings, got {type(code).__name__} {code!r:.80}")
    return list(dict.fromkeys(labels)) if distinct else labels


def check_label_lists(docs, name: str) -> list[list[str]]:
    """``docs`` (one list of codes per document) as lists of distinct codes; a ValueError names ``name``
    and the document where a list is a string or not a list, a TaxonomyError a code that is not a string."""
    if isinstance(docs, (str, bytes, Mapping)) or not isinstance(docs, Iterable):
        raise ValueError(f"{name} must be a list with one list of label codes per document, got {type(docs).__name__}")
    return [_as_code_list(labels, f"{name}[{i}]") for i, labels in enumerate(docs)]


def _resolve_taxonomy(taxonomy, label_lists: dict[str, list[list[str]]], score_labels) -> Taxonomy:
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if isinstance(taxonomy, Mapping):
        return Taxonomy.from_dict(taxonomy)
    if taxonomy is not None:
        raise TypeError(f"taxonomy must be a Taxonomy or its dict form, got {type(taxonomy).__name__}")
    codes = set(score_labels or ())
    for docs in label_lists.values():
        codes.update(*docs)
    if not codes:
        raise TaxonomyError(
            "no label code in predictions or references; pass taxonomy= to score documents without labels"
        )
    depth = 5 if any("/" in code for code in codes if isinstance(code, str)) else 3  # group symbols: G05D 1/02
    try:
        return Taxonomy.from_codes(sorted(codes), scheme="cpc", depth=depth)
    except TaxonomyError:
        # Find where the malformed code is, so that the message names the document.
        for name, docs in label_lists.items():
            for i, labels in enumerate(docs):
                for code in labels:
                    _check_code(code, "cpc", f"{name}[{i}]", depth)
        for k, code in enumerate(score_labels or ()):
            _check_code(code, "cpc", f"score_labels[{k}]", depth)
        raise


def _check_code(code: str, scheme: str, where: str, depth: int = 3) -> None:
    try:
        cpc_level(code, scheme, depth)
    except TaxonomyError as err:
        raise TaxonomyError(f"{where}: {err}") from None


def _lookup(code: str, taxonomy: Taxonomy, label2id: dict, mode: str, where: str) -> int | None:
    """Node index of ``code``, or ``None`` for an unknown code in ``"ignore"`` mode."""
    node = label2id.get(code)
    if node is not None:
        return node
    if taxonomy.scheme is not None:
        _check_code(code, taxonomy.scheme, where, taxonomy.depth)  # malformed codes raise in both modes
    if mode == "error":
        raise TaxonomyError(
            f"{where}: label code {code!r} is not in the taxonomy ({len(taxonomy)} nodes); "
            f"pass unknown_labels='ignore' to leave such codes out (they are counted)"
        )
    return None


def _node_ids(docs: list[list[str]], name: str, taxonomy: Taxonomy, label2id: dict, mode: str):
    """The node ids of each document's known codes, and the number of unknown (document, code) pairs."""
    id_lists, unknown = [], 0
    for i, labels in enumerate(docs):
        ids = []
        for code in labels:
            node = label2id.get(code)
            if node is None:
                node = _lookup(code, taxonomy, label2id, mode, f"{name}[{i}]")
            if node is None:
                unknown += 1
            else:
                ids.append(node)
        id_lists.append(ids)
    return id_lists, unknown


def _closed_matrix(docs: list[list[str]], name: str, taxonomy: Taxonomy, label2id: dict, mode: str):
    """The closed bool matrix of checked label lists, and the number of unknown (document, code) pairs."""
    ids, unknown = _node_ids(docs, name, taxonomy, label2id, mode)
    return taxonomy.multi_hot_ids(ids), unknown


def _column_counts(matrix: np.ndarray) -> np.ndarray:
    """``True`` entries per column of a bool matrix (int64); faster than ``matrix.sum(axis=0)``."""
    return np.count_nonzero(matrix, axis=0).astype(np.int64, copy=False)


def _prf(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> dict:
    """Micro and macro (over gold nodes) P/R/F1 from per-node counts, with ``zero_division=0``.

    ``tp`` and ``n_pred`` are ``[nodes]`` (floats out) or ``[nodes, candidates]`` (arrays over the
    candidates out: threshold tuning scores a node's every grid value at once); ``n_gold`` is ``[nodes]``."""
    tp, n_pred, n_gold = np.asarray(tp), np.asarray(n_pred), np.asarray(n_gold)
    scalar = tp.ndim == 1
    gold = n_gold.reshape(n_gold.shape + (1,) * (tp.ndim - 1))
    total_tp, total_pred, total_gold = tp.sum(axis=0), n_pred.sum(axis=0), n_gold.sum()
    out = {
        "micro_precision": _ratio(total_tp, total_pred),
        "micro_recall": _ratio(total_tp, total_gold),
        "micro_f1": _ratio(2 * total_tp, total_pred + total_gold),
    }
    in_gold = n_gold > 0
    if not in_gold.any():  # no gold node here (a level no split's document reaches): no macro score
        out.update({"macro_precision": None, "macro_recall": None, "macro_f1": None})
    else:
        tp, n_pred, gold = tp[in_gold].astype(np.float64), n_pred[in_gold], gold[in_gold]
        out.update({
            "macro_precision": _ratio(tp, n_pred).mean(axis=0),
            "macro_recall": (tp / gold).mean(axis=0),
            "macro_f1": (2 * tp / (n_pred + gold)).mean(axis=0),
        })
    return {key: None if value is None else float(value) for key, value in out.items()} if scalar else out


def _ratio(num, den):
    """``num / den`` elementwise, 0 where ``den`` is 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, np.broadcast_to(den, num.shape), out=np.zeros(num.shape), where=den > 0)


def _harmonic_mean(a, b):
    """Of two scores (floats, or arrays over candidates); ``None`` when either is."""
    if a is None or b is None:
        return None
    if np.ndim(a) == 0:
        return 2 * a * b / (a + b) if a + b else 0.0
    return np.divide(2 * a * b, a + b, out=np.zeros(np.shape(a)), where=(a + b) > 0)


def _arithmetic_mean(a, b):
    """Of two scores (floats, or arrays over candidates); ``None`` when either is."""
    if a is None or b is None:
        return None
    return (a + b) / 2


def _node_scores(scores, score_labels, taxonomy: Taxonomy, label2id: dict, num_docs: int, mode: str,
                 block_size: int = 4096):
    """``[documents, nodes]`` scores in node order, which nodes got a real score, unknown columns.

    float32 when the scores are (and the floor for unscored nodes stays below them in float32):
    they then rank exactly as in float64, and AUPRC only uses the ranking.
    """
    scores = np.asarray(scores)
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)
            or scores.dtype == bool):
        raise ValueError(f"scores must be real numbers, got {scores.dtype}")  # complex: the imaginary part dropped
    if scores.dtype != np.float32:
        scores = scores.astype(np.float64, copy=False)
    if scores.ndim != 2 or scores.shape[0] != num_docs or not scores.shape[1]:
        raise ValueError(f"scores must have shape [documents={num_docs}, score columns], got {list(scores.shape)}")
    if score_labels is None:
        leaves = [taxonomy.nodes[i] for i in taxonomy.leaf_ids]
        by_width = {len(taxonomy): list(taxonomy.nodes), len(leaves): leaves}
        if scores.shape[1] not in by_width:
            raise ValueError(
                f"scores have {scores.shape[1]} columns but the taxonomy has {len(taxonomy)} nodes and "
                f"{len(leaves)} leaves; pass score_labels to say which code each column scores"
            )
        score_labels = by_width[scores.shape[1]]
    if len(score_labels) != scores.shape[1]:
        raise ValueError(f"scores have {scores.shape[1]} columns but score_labels has {len(score_labels)} codes")
    if len(set(score_labels)) != len(score_labels):
        raise ValueError("score_labels lists a code twice")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")

    columns, nodes, unknown = [], [], 0
    for k, code in enumerate(score_labels):
        node = _lookup(code, taxonomy, label2id, mode, f"score_labels[{k}]")
        if node is None:
            unknown += 1
        else:
            columns.append(k)
            nodes.append(node)
    given = np.zeros((1, len(taxonomy)), dtype=bool)
    given[:, nodes] = True
    # An unscored inner node gets the max over its scored children, as in Taxonomy.max_from_leaves.
    scored = taxonomy.fill_from_children(given)[0]
    fill = bool((scored != given[0]).any())
    # Nodes with no score at all rank strictly below every real score.
    lowest = (scores if len(columns) == scores.shape[1] else scores[:, columns]).min() if columns and num_docs else 0.0
    # (below it by 1, or by one float step where 1 is lost in the rounding of a score as large as 1e17)
    floor = min(float(lowest) - 1.0, float(np.nextafter(float(lowest), -np.inf))) if columns and num_docs else 0.0
    dtype = np.float32 if scores.dtype == np.float32 and np.float32(floor) < lowest else np.float64
    # Each node reads its score column; the extra last column is -inf (to fill) or the floor.
    source = np.full(len(taxonomy), scores.shape[1])
    source[nodes] = columns
    node_scores = np.empty((num_docs, len(taxonomy)), dtype=dtype)
    for start in range(0, num_docs, block_size):  # column gathers by np.take, in cache-sized blocks
        rows = scores[start : start + block_size]
        padded = np.empty((len(rows), scores.shape[1] + 1), dtype=dtype)
        padded[:, :-1] = rows
        padded[:, -1] = -np.inf if fill else floor
        block = node_scores[start : start + block_size]
        np.take(padded, source, axis=1, out=block, mode="clip")
        if fill:
            block[:] = taxonomy.fill_from_children(block)
            np.copyto(block, dtype(floor), where=~scored)
    return node_scores, scored, unknown


def _micro_average_precision(gold: np.ndarray, node_scores: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score(gold, node_scores, average="micro")`` (to rounding):
    the sum over the distinct scores of gold pairs of (gold pairs at that score / all gold pairs) x
    (precision of the pairs scoring at least that). Sorts the gold and the other scores apart
    instead of argsorting the flattened matrix with its labels."""
    positives = np.sort(node_scores[gold])
    everything = np.sort(node_scores, axis=None)
    first = np.flatnonzero(np.r_[True, positives[1:] != positives[:-1]])  # first of each distinct score
    values, count = positives[first], np.diff(np.r_[first, positives.size])
    tp_at_least = positives.size - first
    at_least = everything.size - np.searchsorted(everything, values, side="left")
    return float(np.sum(count / positives.size * (tp_at_least / at_least)))


def _level_paths(taxonomy: Taxonomy, cols: slice) -> np.ndarray:
    """``[nodes of one level, level]``: each node's ancestors, top first, then the node itself."""
    parent_index = taxonomy.parent_index
    paths = [np.arange(cols.start, cols.stop)]
    while len(paths) < taxonomy.levels[cols.start]:
        paths.insert(0, parent_index[paths[0]])
    return np.stack(paths, axis=1)


def _false_positive_hops(pred: np.ndarray, gold: np.ndarray, taxonomy: Taxonomy, level: int) -> dict:
    """False positives at ``level`` and their distance to the nearest gold node of that level."""
    cols = taxonomy.level_slices[level - 1]
    false_pos, gold_at_level = pred[:, cols] & ~gold[:, cols], gold[:, cols]
    fp_doc, fp_node = np.nonzero(false_pos)  # row-major, so grouped by document
    gold_doc, gold_node = np.nonzero(gold_at_level)
    gold_start = np.searchsorted(gold_doc, np.arange(len(gold)))
    num_gold = np.bincount(gold_doc, minlength=len(gold))[fp_doc]
    measured = num_gold > 0
    fp_doc, fp_node, num_gold = fp_doc[measured], fp_node[measured], num_gold[measured]

    hops = np.zeros(0, dtype=np.int64)
    if fp_node.size:
        # Pair every false positive with every gold node of its document, then take the minimum.
        first = np.cumsum(num_gold) - num_gold
        owner = np.repeat(np.arange(fp_node.size), num_gold)
        partner = gold_node[np.repeat(gold_start[fp_doc] - first, num_gold) + np.arange(num_gold.sum())]
        # Taxonomy.distance of two nodes of this level: twice the levels below their last common ancestor.
        paths = _level_paths(taxonomy, cols)
        common = (paths[fp_node[owner]] == paths[partner]).sum(axis=1)
        hops = np.minimum.reduceat(2 * (level - common), first)
    return {
        "fp_documents": int(false_pos.any(axis=1).sum()),
        "fp_count": int(false_pos.sum()),
        "fp_hops_mean": float(hops.mean()) if hops.size else None,
        "fp_hops_std": float(hops.std()) if hops.size else None,
        "fp_without_gold": int((~measured).sum()),
    }


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _as_runs(results: Mapping) -> dict[str, Mapping]:
    """One results dict -> ``{"run": results}``; a ``{run_name: results}`` dict is returned as is."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("expected a results dict or a non-empty {run_name: results} dict")
    if "micro_f1" in results and not isinstance(results["micro_f1"], Mapping):
        return {"run": results}
    for name, run in results.items():
        if not isinstance(run, Mapping) or "micro_f1" not in run:
            raise ValueError(f"run {name!r} is not a results dict of compute_hierarchical_metrics")
    return {str(name): run for name, run in results.items()}


def _levels(runs: Mapping[str, Mapping]) -> list[int]:
    pattern = re.compile(r"level(\d+)_macro_f1")
    return sorted({int(m.group(1)) for run in runs.values() for key in run if (m := pattern.fullmatch(key))})


def _cell(value, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


_PRF_KEYS = ["macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1"]
_PRF_HEADER = ["Macro P", "Macro R", "Macro F1", "Micro P", "Micro R", "Micro F1"]
# (title, column headers, result keys, per level?) of each markdown table.
_TABLES = [
    (
        "Overall (labels closed upwards in the taxonomy)",
        [*_PRF_HEADER, "F1 avg", "AUPRC"],
        [*_PRF_KEYS, "f1_avg", "auprc"],
        False,
    ),
    ("Per level (1 = section, 2 = class, 3 = subclass, 4 = main group, 5 = subgroup for CPC/IPC)", _PRF_HEADER,
     _PRF_KEYS, True),
    (
        "Coverage per level",
        ["Avg. predicted / doc", "Avg. gold / doc", "Docs without prediction"],
        ["avg_predicted", "avg_gold", "docs_without_prediction"],
        True,
    ),
    ("Calibration (expected calibration error of the node probabilities, 15 bins)", ["ECE"], ["ece"], True),
    (
        "False positives (hops to the nearest gold label of the same level)",
        ["Level", "FP documents", "FPs", "Hops mean", "Hops std", "FPs in docs without gold at level"],
        ["error_level", "fp_documents", "fp_count", "fp_hops_mean", "fp_hops_std", "fp_without_gold"],
        False,
    ),
    (
        "Data",
        ["Documents", "Gold labels", "Unknown predictions", "Unknown references", "Unknown score labels"],
        ["num_documents", "num_gold_labels", "unknown_predictions", "unknown_references", "unknown_score_labels"],
        False,
    ),
]


def format_markdown(results: Mapping, digits: int = 4) -> str:
    """Markdown tables of one results dict or of ``{run_name: results}``, one row per run (and level).

    The overall table follows the paper's Table 1 (macro and micro P/R/F1, F1 avg, AUPRC); then
    P/R/F1 per level (Fig. 4), coverage per level and the false-positive analysis (Table 3).
    Undefined numbers are shown as "–".
    """
    runs = _as_runs(results)
    levels = _levels(runs)
    sections = []
    for title, header, keys, per_level in _TABLES:
        if keys == ["ece"] and not any(run.get(f"level{level}_ece") is not None for run in runs.values()
                                       for level in levels):
            continue  # no run had probabilities to calibrate
        lines = [f"### {title}", ""]
        header = ["Run", "Level", *header] if per_level else ["Run", *header]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for name, run in runs.items():
            name = name.replace("|", "\\|")
            for level in levels if per_level else [None]:
                prefix = [name, str(level)] if per_level else [name]
                values = [run.get(f"level{level}_{key}" if per_level else key) for key in keys]
                lines.append("| " + " | ".join(prefix + [_cell(v, digits) for v in values]) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def plot_per_level_f1(runs: Mapping, path, metric: str = "macro_f1") -> Path:
    """Bar chart (PNG) of ``metric`` per level: one bar group per level, one bar per run (Fig. 4).

    ``runs`` is one results dict or ``{run_name: results}``; undefined values get no bar.
    """
    from matplotlib.figure import Figure  # lazy: slow to import; a bare Figure needs no pyplot backend state

    runs = _as_runs(runs)
    levels = _levels(runs)
    width = 0.8 / len(runs)
    fig = Figure(figsize=(2.5 + len(levels) * (0.6 + 0.5 * len(runs)), 3.6), layout="constrained")
    ax = fig.subplots()
    for k, (name, run) in enumerate(runs.items()):
        values = [run.get(f"level{lvl}_{metric}") for lvl in levels]
        heights = [np.nan if value is None else value for value in values]
        bars = ax.bar(np.arange(len(levels)) + (k - (len(runs) - 1) / 2) * width, heights, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(levels)), [f"level {lvl}: {level_name(lvl)}" for lvl in levels])
    label = metric.replace("_", " ").replace("f1", "F1")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"Per-level {label} (labels closed upwards in the taxonomy)", fontsize=9)
    fig.legend(loc="outside lower center", ncols=min(len(runs), 4), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


# A report's name: a file name stem, never a path (it must not lead out of the report's folder).
REPORT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def write_report(results: Mapping, out_dir, name: str = "metrics") -> dict[str, Path]:
    """Write ``{name}.json``, ``{name}.md`` and ``{name}_per_level_f1.png`` to ``out_dir``.

    ``results`` is one results dict or ``{run_name: results}``; the JSON file holds it unchanged.
    Returns the paths, keyed ``"json"``, ``"markdown"``, ``"plot"``. The three appear together or not at
    all (each is written beside its place, then moved in), and only a report replaces a report: a file
    of these names that ``write_report`` did not write is refused, as is a ``name`` that is a path.
    """
    _as_runs(results)  # validate before writing anything
    if not isinstance(name, str) or not REPORT_NAME.fullmatch(name):
        raise ValueError(f"name: a file name stem such as 'dev_metrics', not a path (got {name!r})")
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"  # a NaN refused before any file or folder
    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / f"{name}.json",
        "markdown": out_dir / f"{name}.md",
        "plot": out_dir / f"{name}_per_level_f1.png",
    }
    ours = _is_report(paths["json"])  # a report's markdown and plot go with its JSON
    for path in paths.values():
        if path.exists() and not (path.is_file() and ours):
            raise ValueError(f"{path}: exists and is not a report of write_report; it is not overwritten: choose "
                             "another folder or name")
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = {key: path.with_name(f".{path.stem}.partial{path.suffix}") for key, path in paths.items()}
    try:
        staged["json"].write_text(text, encoding="utf-8")
        staged["markdown"].write_text(format_markdown(results), encoding="utf-8")
        plot_per_level_f1(results, staged["plot"])
        for key, path in paths.items():
            staged[key].replace(path)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return paths


def _is_report(path: Path) -> bool:
    """Whether ``path`` holds a report's JSON (what :func:`write_report` writes)."""
    try:
        _as_runs(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False
    return True
