# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Decision thresholds tuned on dev: the best global value on a grid, then per level.

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
from hierarchical_metrics import label_matrix, scores_from_counts

from .evaluation import comparable_thresholds, model_columns

THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
#: what :func:`tune_thresholds` can maximise: the overall numbers of ``compute_hierarchical_metrics``
OBJECTIVES = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "f1_avg")
# The most table cells _GridCounts allocates (each node spans 20 ** (levels at and below it) cells).
_MAX_TABLE_CELLS = 1 << 24


@dataclass(frozen=True)
class TunedThresholds:
    """The tuned thresholds and the dev scores that chose them."""

    thresholds: Thresholds
    global_score: float
    per_level_score: float

    def to_dict(self) -> dict:
        return {**self.thresholds.to_dict(), "global_score": float(self.global_score),
                "per_level_score": float(self.per_level_score)}


def tune_thresholds(probs, references, taxonomy: Taxonomy, objective: str, eval_taxonomy: Taxonomy) -> TunedThresholds:
    """Best global threshold on the grid, then per-level coordinate ascent (two passes) from it.

    ``objective`` is one of :data:`OBJECTIVES`; each candidate scores what
    ``evaluate_probabilities(probs, references, taxonomy, candidate, eval_taxonomy)[objective]`` gives.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
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
    for _ in range(2):
        for lvl in range(taxonomy.num_levels):
            for k in grid:
                trial = list(levels)
                trial[lvl] = k
                value = score(trial)
                if value > best + 1e-12:
                    best, levels = value, trial
    thresholds = Thresholds(THRESHOLD_GRID[best_global], tuple(THRESHOLD_GRID[k] for k in levels), objective)
    return TunedThresholds(thresholds, global_scores[best_global], best)


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
        self.columns = model_columns(taxonomy, eval_taxonomy)
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
    probs = np.asarray(probs)
    grid = comparable_thresholds(THRESHOLD_GRID, probs.dtype)
    probs = np.ascontiguousarray(probs, dtype=grid.dtype)
    # The position by the top 20 bits of each float, and exactly where those leave it open.
    bits = probs.view(np.uint32 if grid.dtype == np.float32 else np.uint64)
    position = _position_table(grid)[bits >> (8 * grid.itemsize - _TABLE_BITS)]
    open_ = np.flatnonzero(position == _OPEN)
    if open_.size:
        exact = probs.ravel()[open_]
        position.ravel()[open_] = np.where(np.isnan(exact), 0, np.searchsorted(grid, exact, side="right"))
    position = np.ascontiguousarray(position.T)  # transposing uint8 is cheaper than transposing floats
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


_TABLE_BITS, _OPEN = 20, 255
_POSITION_TABLES: dict = {}


def _position_table(grid: np.ndarray) -> np.ndarray:
    """uint8 grid position of every float whose bit pattern starts with each ``_TABLE_BITS`` prefix:
    the floats with one prefix form one interval (positive floats order like their bits; negative
    ones are all below the grid), so the position is that of both ends, or ``_OPEN`` where they
    differ (a grid value inside, or infinity and NaN)."""
    if grid.dtype not in _POSITION_TABLES:
        uint = np.uint32 if grid.dtype == np.float32 else np.uint64
        shift = uint(8 * grid.itemsize - _TABLE_BITS)
        low = np.arange(1 << _TABLE_BITS, dtype=uint) << shift
        ends = [low.view(grid.dtype), (low | ((uint(1) << shift) - uint(1))).view(grid.dtype)]
        first, last = (np.searchsorted(grid, end, side="right") for end in ends)
        same = (first == last) & ~np.isnan(ends[0]) & ~np.isnan(ends[1])
        _POSITION_TABLES[grid.dtype] = np.where(same, first, _OPEN).astype(np.uint8)
    return _POSITION_TABLES[grid.dtype]


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


def time_threshold_tuning(num_docs: int, num_nodes: int = 800, seed: int = 0, objective: str = "f1_avg") -> dict:
    """Seconds :func:`tune_thresholds` takes on ``synthetic_dev_set(num_docs, num_nodes, seed)`` (built
    before the clock starts), with the sizes and the tuned thresholds."""
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(num_docs, num_nodes, seed)
    start = time.perf_counter()
    tuned = tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy)
    seconds = time.perf_counter() - start
    return {"num_docs": num_docs, "num_nodes": len(taxonomy), "num_eval_nodes": len(eval_taxonomy),
            "seconds": seconds, **tuned.to_dict()}
