# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Decision thresholds tuned on dev: the best global value on a grid, then per level, then (optionally)
per node for the nodes with enough dev positives.

Every candidate is scored exactly as :func:`thmm.evaluation.evaluate_probabilities` would score it
(decode at the thresholds, then the hierarchical metric over the evaluation taxonomy), but from
per-node count tables built in one pass over the documents (:class:`_GridCounts`), so that a
candidate costs a table lookup: 100k dev documents over 800 nodes tune in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from configuration_thmm import Taxonomy, TaxonomyError, Thresholds
from .hierarchical_metrics import label_matrix, scores_from_counts

from .evaluation import comparable_thresholds, model_columns

THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
#: the values of the band and per-node steps: THRESHOLD_GRID and the small ones below it that rare
#: deep nodes need (their probabilities seldom reach 0.05; on dronesr-groups dev the rarest main
#: groups chose 0.01, docs/benchmarks.md, "Frequency bands"). The per-level step keeps the coarse
#: grid: its count tables grow as (values + 1) ** levels.
NODE_GRID = (0.01, 0.02, 0.03, 0.04) + THRESHOLD_GRID
#: training-document counts that bound the frequency bands: below the top level, the nodes with too
#: few dev positives for a threshold of their own share one per level and band (1-2 training
#: documents, 3-5, 6-10, 11-25, 26-50, 51 and more), so that a rare node is decided like nodes as
#: rare as itself rather than at its level's threshold, which the frequent nodes choose
FREQUENCY_BANDS = (3, 6, 11, 26, 51)
#: what :func:`tune_thresholds` can maximise: the overall numbers of ``compute_hierarchical_metrics``
OBJECTIVES = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "f1_avg", "f1_mean")
# The most table cells _GridCounts allocates (each node spans 20 ** (levels at and below it) cells): a
# subgroup taxonomy (5 levels) needs about 46M for dronesr-groups' 8 sections, some 1.5 GB of counts.
_MAX_TABLE_CELLS = 1 << 26


#: how finely :func:`tune_thresholds` tunes: one global value, one per level, or per level and then
#: per node (each node with enough dev positives gets its own)
GRANULARITIES = ("global", "level", "node")
#: what training tunes (per node beat per level on dronesr dev by two-fold cross-validation, see docs/benchmarks.md, "Per-node thresholds")
DEFAULT_GRANULARITY = "node"
#: dev documents a node must be gold in before it gets a threshold of its own (fewer fit noise:
#: chosen by two-fold cross-validation on dronesr dev, see docs/benchmarks.md, "Per-node thresholds")
NODE_MIN_SUPPORT = 20
#: dev sets with fewer documents tune one global threshold, for the fusion weight's cross-validation and
#: the final thresholds alike, whatever the granularity asked: on 100-document dev sets per-node thresholds
#: overfit, on 300 they did not (docs/benchmarks.md, "Issue 33"); 0 turns the rule off
SMALL_DEV_DOCUMENTS = 200


def dev_granularity(granularity: str, dev_documents: int, small_dev_documents: int = SMALL_DEV_DOCUMENTS) -> str:
    """The granularity a dev set of ``dev_documents`` is tuned at: ``"global"`` below
    ``small_dev_documents`` (0: never), ``granularity`` otherwise."""
    return "global" if small_dev_documents and dev_documents < small_dev_documents else granularity


@dataclass(frozen=True)
class TunedThresholds:
    """The tuned thresholds and the dev scores that chose them (``per_node_score`` is ``None``
    unless per-node thresholds were tuned)."""

    thresholds: Thresholds
    global_score: float
    per_level_score: float
    per_node_score: float | None = None
    #: the dev score after the frequency bands, before the per-node step (``None`` without bands)
    per_band_score: float | None = None

    def to_dict(self) -> dict:
        node_score = None if self.per_node_score is None else float(self.per_node_score)
        band_score = None if self.per_band_score is None else float(self.per_band_score)
        return {**self.thresholds.to_dict(), "global_score": float(self.global_score),
                "per_level_score": float(self.per_level_score), "per_band_score": band_score,
                "per_node_score": node_score}


def uses_frequency_bands(granularity: str, frequency_bands: bool) -> bool:
    """Whether tuning at ``granularity`` uses the frequency bands when asked to (``frequency_bands``):
    they are a step of the per-node granularity only."""
    return bool(frequency_bands) and granularity == "node"


def tune_thresholds(probs, references, taxonomy: Taxonomy, objective: str, eval_taxonomy: Taxonomy,
                    granularity: str = DEFAULT_GRANULARITY, node_min_support: int = NODE_MIN_SUPPORT,
                    node_frequency=None) -> TunedThresholds:
    """Best global threshold on the grid, then per-level coordinate ascent (two passes) from it, then
    (``granularity="node"``) one threshold per frequency band of each level for the nodes with fewer
    than ``node_min_support`` dev positives (when ``node_frequency``, each node's training-document
    count, is given; :func:`_tune_band_thresholds`), then per-node coordinate ascent for the others
    (:func:`_tune_node_thresholds`); these two steps choose from :data:`NODE_GRID`.

    ``objective`` is one of :data:`OBJECTIVES`; each candidate scores what
    ``evaluate_probabilities(probs, references, taxonomy, candidate, eval_taxonomy)[objective]`` gives.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if isinstance(node_min_support, bool) or not isinstance(node_min_support, int) or node_min_support < 1:
        raise ValueError(f"node_min_support must be a positive integer, got {node_min_support!r}")
    if node_frequency is not None:
        node_frequency = np.asarray(node_frequency)
        if node_frequency.shape != (len(taxonomy),) or not np.issubdtype(node_frequency.dtype, np.number) \
                or (node_frequency < 0).any():
            raise ValueError(f"node_frequency must hold one count >= 0 per node ({len(taxonomy)}), "
                             f"got shape {list(node_frequency.shape)}")
    counts = _GridCounts(probs, references, taxonomy, eval_taxonomy)

    def score(grid_index):  # one THRESHOLD_GRID index per level
        value = counts.scores(grid_index)[objective]
        if value is None:
            raise ValueError(f"cannot tune thresholds for {objective}: the dev references have no gold label")
        return value

    grid = range(len(THRESHOLD_GRID))
    global_scores = {k: score([k] * taxonomy.num_levels) for k in grid}
    best_global = max(global_scores, key=lambda k: (global_scores[k], -abs(THRESHOLD_GRID[k] - 0.5)))
    levels = [best_global] * taxonomy.num_levels
    best = global_scores[best_global]
    if granularity == "global":
        return TunedThresholds(Thresholds(THRESHOLD_GRID[best_global], None, objective), best, best)
    for _ in range(2):
        for lvl in range(taxonomy.num_levels):
            for k in grid:
                trial = list(levels)
                trial[lvl] = k
                value = score(trial)
                if value > best + 1e-12:
                    best, levels = value, trial
    thresholds = Thresholds(THRESHOLD_GRID[best_global], tuple(THRESHOLD_GRID[k] for k in levels), objective)
    if granularity == "level":
        return TunedThresholds(thresholds, global_scores[best_global], best)
    below = len(NODE_GRID) - len(THRESHOLD_GRID)  # THRESHOLD_GRID[k] is NODE_GRID[k + below]
    start = np.asarray(levels)[taxonomy.levels - 1] + below
    positions = _grid_positions(probs, NODE_GRID)  # [nodes, documents]; selected at NODE_GRID[k] when > k
    gold = np.ascontiguousarray(counts.gold[:, counts.columns].T)  # closed, [nodes, documents]
    support = np.count_nonzero(gold, axis=1)
    node_k, band_best = start, None
    if node_frequency is not None:
        bands = frequency_bands(taxonomy, node_frequency, support < node_min_support)
        node_k, band_best = _tune_band_thresholds(positions, gold, counts, taxonomy, objective, start, bands)
    node_k, node_best = _tune_node_thresholds(positions, gold, counts, taxonomy, objective, node_k, node_min_support)
    per_node = {taxonomy.nodes[n]: NODE_GRID[node_k[n]] for n in np.flatnonzero(node_k != start)}
    thresholds = Thresholds(thresholds.global_threshold, thresholds.per_level, objective, per_node=per_node)
    return TunedThresholds(thresholds, global_scores[best_global], best, node_best, band_best)


def describe_frequency_bands() -> str:
    """The bands in words: ``"1-2, 3-5, 6-10, 11-25, 26-50, 51+"`` (training documents)."""
    bounds = (1, *FREQUENCY_BANDS)
    return ", ".join([*(f"{low}-{high - 1}" for low, high in zip(bounds, bounds[1:])), f"{bounds[-1]}+"])


def frequency_bands(taxonomy: Taxonomy, node_frequency, eligible) -> list[np.ndarray]:
    """The node ids of each non-empty band: per level below the top, the ``eligible`` nodes whose
    training-document count (``node_frequency``) falls between two :data:`FREQUENCY_BANDS` bounds."""
    band = np.searchsorted(np.asarray(FREQUENCY_BANDS), np.asarray(node_frequency), side="right")
    bands = []
    for level in range(2, taxonomy.num_levels + 1):
        for b in range(len(FREQUENCY_BANDS) + 1):
            members = np.flatnonzero(eligible & (taxonomy.levels == level) & (band == b))
            if members.size:
                bands.append(members)
    return bands


def _tune_band_thresholds(positions, gold, counts: _GridCounts, taxonomy: Taxonomy, objective: str,
                          start: np.ndarray, bands: list[np.ndarray], passes: int = 2) -> tuple[np.ndarray, float]:
    """Coordinate ascent of the dev ``objective`` over groups of nodes: each band of ``bands`` (node
    ids of one level, all at one :data:`NODE_GRID` index in ``start``) tries every value of the grid
    together, ``passes`` times top-down. Returns every node's grid index and the objective at them.

    Scored exactly, from counts: per node and document, how many nodes of its subtree (itself
    included) are selected; a node is predicted (closed upwards) where that count is positive. A
    candidate changes the selection of its band's nodes only where their grid position lies between
    the two values, and those changes, summed per ancestor and document, say where an ancestor's
    prediction flips.
    """
    parents, num_docs = taxonomy.parent_index, positions.shape[1]
    k = np.array(start, dtype=np.intp)
    selected_below = (positions > k[:, None]).astype(np.int32)
    for nodes in reversed(taxonomy.level_slices[1:]):
        for n in range(nodes.start, nodes.stop):
            selected_below[parents[n]] += selected_below[n]
    predicted = selected_below > 0
    tp = np.zeros(counts.num_eval_nodes, np.int64)
    n_pred = np.zeros(counts.num_eval_nodes, np.int64)
    tp[counts.columns] = np.count_nonzero(predicted & gold, axis=1)
    n_pred[counts.columns] = np.count_nonzero(predicted, axis=1)
    del predicted
    best = scores_from_counts(tp, n_pred, counts.n_gold)[objective]

    def changes(band, band_positions, old, new):
        """``(nodes, documents, deltas)`` of the subtree counts on every level from the band's up."""
        low, high = min(old, new), max(old, new)
        rows, docs = np.nonzero((band_positions > low) & (band_positions <= high))
        nodes, deltas = band[rows], np.full(rows.size, 1 if new < old else -1, np.int32)
        steps = []
        while nodes.size:
            keys, inverse = np.unique(nodes.astype(np.int64) * num_docs + docs, return_inverse=True)
            deltas = np.bincount(inverse, weights=deltas).astype(np.int32)
            nodes, docs = keys // num_docs, keys % num_docs
            keep = deltas != 0
            nodes, docs, deltas = nodes[keep], docs[keep], deltas[keep]
            steps.append((nodes, docs, deltas))
            up = parents[nodes] >= 0
            nodes, docs, deltas = parents[nodes[up]], docs[up], deltas[up]
        return steps

    def counted(steps):
        """``tp`` and ``n_pred`` after ``steps``."""
        new_tp, new_pred = tp.copy(), n_pred.copy()
        for nodes, docs, deltas in steps:
            before = selected_below[nodes, docs] > 0
            flip = before != (selected_below[nodes, docs] + deltas > 0)
            sign = np.where(before[flip], -1, 1)
            columns = counts.columns[nodes[flip]]
            np.add.at(new_pred, columns, sign)
            np.add.at(new_tp, columns, sign * gold[nodes[flip], docs[flip]])
        return new_tp, new_pred

    for _ in range(passes):
        for band in bands:
            band_positions = positions[band]
            current = choice = int(k[band[0]])
            for candidate in range(len(NODE_GRID)):
                if candidate == current:
                    continue
                steps = changes(band, band_positions, current, candidate)
                if not steps:
                    continue
                value = scores_from_counts(*counted(steps), counts.n_gold)[objective]
                if value > best + 1e-12:
                    best, choice = value, candidate
            if choice != current:
                steps = changes(band, band_positions, current, choice)
                tp, n_pred = counted(steps)
                for nodes, docs, deltas in steps:
                    selected_below[nodes, docs] += deltas
                k[band] = choice
    return k, best


def _tune_node_thresholds(positions, gold, counts: _GridCounts, taxonomy: Taxonomy, objective: str, start: np.ndarray,
                          min_support: int) -> tuple[np.ndarray, float]:
    """Per-node coordinate ascent of the dev ``objective``, one pass from the deepest level up: each
    node that is gold in at least ``min_support`` dev documents tries every grid value (keeping its
    own unless one scores higher), the others keep theirs. Returns the grid index of every node and
    the objective at them.

    A node's decision changes its own closed prediction and its ancestors' (a predicted node implies
    them), nothing else, and only in the documents where its probability reaches the lowest grid
    value. There, each node ``x`` on that path predicts the documents it predicts anyway (``x``'s
    own score, or a closed child off the path) plus those where the tuned node's score reaches the
    candidate: counts from one histogram of grid positions. So a node costs its candidate documents.
    """
    parents, base = taxonomy.parent_index, len(NODE_GRID) + 1
    k = np.array(start, dtype=np.intp)
    own = positions > k[:, None]
    closed = own.copy()
    for nodes in reversed(taxonomy.level_slices[1:]):
        for n in range(nodes.start, nodes.stop):
            closed[parents[n]] |= closed[n]
    # per internal node, how many of its children are predicted (closed) in each document
    internal = np.unique(parents[parents >= 0])
    row = np.full(len(taxonomy), -1)
    row[internal] = np.arange(len(internal))
    firing_children = np.zeros((len(internal), counts.num_docs), np.int32)
    for child in np.flatnonzero(parents >= 0):
        firing_children[row[parents[child]]] += closed[child]
    tp = np.zeros(counts.num_eval_nodes, np.int64)
    n_pred = np.zeros(counts.num_eval_nodes, np.int64)
    tp[counts.columns] = np.count_nonzero(closed & gold, axis=1)
    n_pred[counts.columns] = np.count_nonzero(closed, axis=1)
    best = scores_from_counts(tp, n_pred, counts.n_gold)[objective]
    support = np.count_nonzero(gold, axis=1)
    for nodes in reversed(taxonomy.level_slices):
        for n in range(nodes.start, nodes.stop):
            docs = np.flatnonzero(positions[n])  # elsewhere no candidate selects n
            if support[n] < min_support or not docs.size:
                continue
            at = positions[n, docs]
            path = [n]
            while parents[path[-1]] >= 0:
                path.append(int(parents[path[-1]]))
            columns = counts.columns[path]
            anyway = firing_children[row[n], docs] > 0 if row[n] >= 0 else np.zeros(docs.size, bool)
            path_anyway = []
            cand_tp = np.empty((len(path), len(NODE_GRID)), np.int64)
            cand_pred = np.empty_like(cand_tp)
            for i, x in enumerate(path):
                if i:  # x's own score, or a closed child other than the one on the path
                    anyway = anyway | own[x, docs] | (firing_children[row[x], docs] - closed[path[i - 1], docs] > 0)
                path_anyway.append(anyway)
                is_gold, was = gold[x, docs], closed[x, docs]
                free = ~anyway
                above = np.bincount(at[free], minlength=base)[::-1].cumsum()[::-1]  # above[j]: positions >= j
                above_gold = np.bincount(at[free & is_gold], minlength=base)[::-1].cumsum()[::-1]
                # outside ``docs`` nothing changes; inside, candidate k selects positions > k
                cand_pred[i] = (n_pred[columns[i]] - np.count_nonzero(was) + np.count_nonzero(anyway) + above[1:])
                cand_tp[i] = (tp[columns[i]] - np.count_nonzero(was & is_gold)
                              + np.count_nonzero(anyway & is_gold) + above_gold[1:])
            choice = k[n]
            values = _candidate_scores(objective, tp, n_pred, counts.n_gold, columns, cand_tp, cand_pred)
            for candidate, value in enumerate(values.tolist()):
                if value > best + 1e-12:
                    best, choice = value, candidate
            if choice == k[n]:
                continue
            k[n] = choice
            own[n, docs] = at > choice
            selected, previous = own[n, docs], None
            for i, (x, anyway) in enumerate(zip(path, path_anyway)):
                new, old = anyway | selected, closed[x, docs]
                if previous is not None:  # x's firing-children count follows the path child's change
                    firing_children[row[x], docs] += previous[1].astype(np.int32) - previous[0]
                closed[x, docs] = new
                tp[columns[i]], n_pred[columns[i]] = cand_tp[i, choice], cand_pred[i, choice]
                previous = (old, new)
    return k, scores_from_counts(tp, n_pred, counts.n_gold)[objective]


def _candidate_scores(objective: str, tp, n_pred, n_gold, columns, cand_tp, cand_pred) -> np.ndarray:
    """The objective for each grid candidate of one node at once: only the counts of the nodes on its
    path (``columns``) differ between candidates, ``cand_tp`` and ``cand_pred`` ([path, candidates])."""
    tp_all = np.repeat(tp[:, None], cand_tp.shape[1], axis=1)
    pred_all = np.repeat(n_pred[:, None], cand_tp.shape[1], axis=1)
    tp_all[columns], pred_all[columns] = cand_tp, cand_pred
    return scores_from_counts(tp_all, pred_all, n_gold)[objective]


def global_grid_scores(probs, references, taxonomy: Taxonomy, eval_taxonomy: Taxonomy) -> dict[float, dict]:
    """``{threshold: scores}`` for every one-value threshold of :data:`THRESHOLD_GRID`, where
    ``scores`` holds the micro/macro P/R/F1 and ``f1_avg`` that ``evaluate_probabilities`` gives
    at that threshold (from one counting pass, as in :func:`tune_thresholds`)."""
    counts = _GridCounts(probs, references, taxonomy, eval_taxonomy)
    return {t: counts.scores([k] * taxonomy.num_levels) for k, t in enumerate(THRESHOLD_GRID)}


class _GridCounts:
    """Per-node document counts for every choice of one :data:`THRESHOLD_GRID` value per level.

    Decoded and closed upwards, node ``n`` of level ``j`` is predicted when, for some level
    ``l >= j``, the best probability among its level-``l`` descendants (``n`` itself for ``l = j``)
    reaches the threshold of level ``l``. So it depends only on the grid positions of those maxima:
    the table of ``n`` counts the documents per combination of them (``20 ** (levels - j + 1)``
    cells), cumulated along every axis, and one cell, the candidate's grid positions, holds the
    documents where ``n`` is not predicted; a second table counts the gold documents.
    """

    def __init__(self, probs, references, taxonomy: Taxonomy, eval_taxonomy: Taxonomy, block_size: int = 4096):
        if np.ndim(probs) != 2 or np.shape(probs)[1] != len(taxonomy):
            raise TaxonomyError(f"expected scores of shape [documents, {len(taxonomy)}], got {list(np.shape(probs))}")
        gold, _ = label_matrix(references, eval_taxonomy, name="references")
        if len(gold) != len(probs):
            raise ValueError(f"got {len(probs)} rows of probabilities but {len(gold)} references")
        if not len(gold):
            raise ValueError("no documents to tune thresholds on: the probabilities and references are empty")
        self.gold, self.columns = gold, model_columns(taxonomy, eval_taxonomy)
        self.n_gold = np.count_nonzero(gold, axis=0).astype(np.int64, copy=False)
        self.num_docs, self.num_eval_nodes = len(gold), len(eval_taxonomy)
        self.levels = taxonomy.level_slices
        num_levels, base = len(self.levels), len(THRESHOLD_GRID) + 1  # grid positions 0..19
        shapes = [(s.stop - s.start,) + (base,) * (num_levels - j) for j, s in enumerate(self.levels)]
        sizes = [int(np.prod(shape)) for shape in shapes]
        if sum(sizes) > _MAX_TABLE_CELLS:
            raise ValueError(f"threshold tuning supports taxonomies of up to {_MAX_TABLE_CELLS} table cells "
                             f"(20 ** levels per top node); this one of {num_levels} levels needs {sum(sizes)}")
        bounds = np.cumsum([0, *sizes])
        offsets = [bounds[j] + np.arange(shape[0]) * size // shape[0]
                   for j, (shape, size) in enumerate(zip(shapes, sizes))]
        children = _children_by_parent(taxonomy)
        all_docs, gold_docs = np.zeros(bounds[-1], np.int64), np.zeros(bounds[-1], np.int64)
        for start in range(0, self.num_docs, block_size):  # node-major blocks: [nodes, documents]
            best = _descendant_grid_positions(probs[start : start + block_size], self.levels, children)
            block_gold = gold[start : start + block_size, self.columns].T
            for j, nodes in enumerate(self.levels):
                cell = best[j][nodes].astype(np.intp)
                for level_best in best[j + 1 :]:  # the axes of level j's tables, in level order
                    cell = cell * base + level_best[nodes]
                cell += offsets[j][:, None]
                all_docs += np.bincount(cell.ravel(), minlength=bounds[-1])
                gold_docs += np.bincount(cell[block_gold[nodes]], minlength=bounds[-1])
        self.not_predicted, self.gold_not_predicted = [], []
        for j, shape in enumerate(shapes):
            for counts, tables in ((all_docs, self.not_predicted), (gold_docs, self.gold_not_predicted)):
                table = counts[bounds[j] : bounds[j + 1]].reshape(shape)
                for axis in range(1, len(shape)):
                    table = table.cumsum(axis=axis)
                tables.append(table)

    def scores(self, grid_index) -> dict:
        """``scores_from_counts`` at one THRESHOLD_GRID index per level (top first)."""
        tp = np.zeros(self.num_eval_nodes, np.int64)
        n_pred = np.zeros(self.num_eval_nodes, np.int64)
        for j, nodes in enumerate(self.levels):
            cell = (slice(None), *grid_index[j:])
            columns = self.columns[nodes]
            n_pred[columns] = self.num_docs - self.not_predicted[j][cell]
            tp[columns] = self.n_gold[columns] - self.gold_not_predicted[j][cell]
        return scores_from_counts(tp, n_pred, self.n_gold)


def _children_by_parent(taxonomy: Taxonomy) -> list[tuple[slice | np.ndarray, list[tuple[int, int, int]]]]:
    """Per level below the top: its nodes grouped by parent (a slice when they already are, as in
    CPC order), and per parent the range of its children in that order."""
    groups, parent_index = [], taxonomy.parent_index
    for nodes in taxonomy.level_slices[1:]:
        child = np.arange(nodes.start, nodes.stop)
        order = np.argsort(parent_index[child], kind="stable")
        parents, starts = np.unique(parent_index[child[order]], return_index=True)
        ranges = list(zip(parents.tolist(), starts.tolist(), [*starts[1:].tolist(), len(child)]))
        groups.append((nodes if (np.diff(order) == 1).all() else child[order], ranges))
    return groups


def _descendant_grid_positions(probs, levels: list[slice], children) -> list[np.ndarray]:
    """Per level ``l``: uint8 ``[nodes, documents]`` (node-major, for fast row reductions), for each
    node of level ``l`` or above the grid position of the best probability among its level-``l``
    descendants (0 for none), from ``[documents, nodes]`` probabilities.

    The grid position of ``p`` is the number of :data:`THRESHOLD_GRID` values it reaches, so that a
    node is selected at ``THRESHOLD_GRID[k]`` exactly when its position exceeds ``k``; ``p >= t`` is
    decided in float64 as ``Taxonomy.decode`` does (for float32 probabilities, against each grid
    value rounded up to float32, which decides the same). NaN reaches nothing.
    """
    position = _grid_positions(probs)
    best = []
    for level, nodes in enumerate(levels):
        level_best = np.zeros_like(position)
        level_best[nodes] = position[nodes]
        for child, ranges in reversed(children[:level]):
            rows = level_best[child]
            for parent, start, stop in ranges:  # faster than np.maximum.reduceat, which is slow on rows
                np.maximum.reduce(rows[start:stop], axis=0, out=level_best[parent])
        best.append(level_best)
    return best


def _grid_positions(probs, grid=THRESHOLD_GRID) -> np.ndarray:
    """uint8 ``[nodes, documents]``: the position in ``grid`` of each probability of ``[documents,
    nodes]`` ``probs`` (see :func:`_descendant_grid_positions`)."""
    probs = np.asarray(probs)
    grid = comparable_thresholds(grid, probs.dtype)
    probs = np.ascontiguousarray(probs, dtype=grid.dtype)
    # The position by the top 20 bits of each float, and exactly where those leave it open.
    bits = probs.view(np.uint32 if grid.dtype == np.float32 else np.uint64)
    position = _position_table(grid)[bits >> (8 * grid.itemsize - _TABLE_BITS)]
    open_ = np.flatnonzero(position == _OPEN)
    if open_.size:
        exact = probs.ravel()[open_]
        position.ravel()[open_] = np.where(np.isnan(exact), 0, np.searchsorted(grid, exact, side="right"))
    position = np.ascontiguousarray(position.T)  # transposing uint8 is cheaper than transposing floats
    return position


_TABLE_BITS, _OPEN = 20, 255
_POSITION_TABLES: dict = {}


def _position_table(grid: np.ndarray) -> np.ndarray:
    """uint8 grid position of every float whose bit pattern starts with each ``_TABLE_BITS`` prefix:
    the floats with one prefix form one interval (positive floats order like their bits; negative
    ones are all below the grid), so the position is that of both ends, or ``_OPEN`` where they
    differ (a grid value inside, or infinity and NaN)."""
    key = (grid.dtype, grid.tobytes())
    if key not in _POSITION_TABLES:
        uint = np.uint32 if grid.dtype == np.float32 else np.uint64
        shift = uint(8 * grid.itemsize - _TABLE_BITS)
        low = np.arange(1 << _TABLE_BITS, dtype=uint) << shift
        ends = [low.view(grid.dtype), (low | ((uint(1) << shift) - uint(1))).view(grid.dtype)]
        first, last = (np.searchsorted(grid, end, side="right") for end in ends)
        same = (first == last) & ~np.isnan(ends[0]) & ~np.isnan(ends[1])
        _POSITION_TABLES[key] = np.where(same, first, _OPEN).astype(np.uint8)
    return _POSITION_TABLES[key]


# --------------------------------------------------------------------------------------------------
# Synthetic dev sets, for the scale benchmark and the tests
# --------------------------------------------------------------------------------------------------


def synthetic_dev_set(num_docs: int, num_nodes: int = 800, seed: int = 0, outside_rate: float = 0.02):
    """A random CPC-like dev set: ``(probs, references, taxonomy, eval_taxonomy)``.

    The taxonomy has about ``num_nodes`` nodes (9 sections, 16% classes, the rest subclasses); each
    document has 1-4 gold codes, mostly subclasses drawn with Zipf-like frequencies, some classes,
    and a share ``outside_rate`` of codes outside the model taxonomy (misses that the evaluation
    taxonomy adds). ``probs`` are float32, like the model's: small noise, gold nodes well above it.
    """
    rng = np.random.default_rng(seed)
    sections, letters = "ABCDEFGHY", [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    num_classes = max(len(sections), round(num_nodes * 0.16))
    num_subclasses = max(num_classes, num_nodes - len(sections) - num_classes)
    class_pool = [f"{s}{c:02d}" for s in sections for c in range(1, 100)]
    classes = [class_pool[i] for i in rng.choice(len(class_pool), num_classes, replace=False)]
    first = [code + letters[i] for code, i in zip(classes, rng.integers(0, 26, num_classes))]
    rest = sorted({code + letter for code in classes for letter in letters} - set(first))
    extra = [rest[i] for i in rng.choice(len(rest), num_subclasses - num_classes + 20, replace=False)]
    subclasses = first + extra[: num_subclasses - num_classes]
    outside = extra[num_subclasses - num_classes :] + [c + "A" for c in sorted(set(class_pool) - set(classes))[:5]]
    taxonomy = Taxonomy.from_codes(subclasses)

    weights = 1.0 / np.arange(1, len(subclasses) + 1) ** 0.8
    counts = 1 + np.minimum(rng.poisson(0.6, num_docs), 3)
    draws = rng.choice(len(subclasses), int(counts.sum()), p=weights / weights.sum())
    kind = rng.random(len(draws))
    codes = [outside[d % len(outside)] if k < outside_rate else subclasses[d][:3] if k < outside_rate + 0.03
             else subclasses[d] for d, k in zip(draws.tolist(), kind.tolist())]
    ends = np.cumsum(counts).tolist()
    references = [list(dict.fromkeys(codes[end - n : end])) for n, end in zip(counts.tolist(), ends)]

    label2id = taxonomy.label2id
    ids = [[label2id[p] for code in doc for p in (code[:1], code[:3], code) if p in label2id] for doc in references]
    gold = taxonomy.multi_hot_ids(ids, expand=False)
    probs = rng.random((num_docs, len(taxonomy)), dtype=np.float32)
    probs **= 40
    probs *= 0.6
    hit = np.nonzero(gold)
    probs[hit] = 0.2 + 0.8 * rng.random(len(hit[0]), dtype=np.float32) ** 0.7
    eval_taxonomy = Taxonomy.from_codes(set(taxonomy.nodes) | set(codes), scheme="cpc")
    return probs, references, taxonomy, eval_taxonomy


def time_threshold_tuning(num_docs: int, num_nodes: int = 800, seed: int = 0, objective: str = "f1_avg",
                          granularity: str = DEFAULT_GRANULARITY) -> dict:
    """Seconds :func:`tune_thresholds` takes on ``synthetic_dev_set(num_docs, num_nodes, seed)`` (built
    before the clock starts), with the sizes and the tuned thresholds."""
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(num_docs, num_nodes, seed)
    start = time.perf_counter()
    tuned = tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy, granularity)
    seconds = time.perf_counter() - start
    return {"num_docs": num_docs, "num_nodes": len(taxonomy), "num_eval_nodes": len(eval_taxonomy),
            "seconds": seconds, "granularity": granularity, **tuned.to_dict()}
