# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Model selection: which dev number chooses the best epoch, and when a run stops.

Early in training almost no rare label reaches a fixed 0.5 threshold, so dev macro-hF1 at 0.5 stays
near zero and says nothing about whether the model is learning. The default therefore tunes the
threshold on dev every epoch (global, on the 0.05 grid) before scoring, and a run never stops while
its threshold-free dev ranking (AUPRC) still improves, unless asked to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name -> (what it is, higher is better)
SELECTION_METRICS = {
    "macro_f1_tuned": ("dev macro-hF1 at the best global threshold (0.05 grid, tuned each epoch)", True),
    "f1_avg_tuned": ("dev f1_avg (harmonic mean of micro and macro hF1) at its best global threshold", True),
    "auprc": ("dev AUPRC (threshold-free)", True),
    "loss": ("dev binary cross-entropy", False),
    "macro_f1": ("dev macro-hF1 at --threshold (the paper's)", True),
}
DEFAULT_SELECTION_METRIC = "macro_f1_tuned"
RANKING_METRIC = "auprc"  # the threshold-free number patience also watches


def dev_loss(probs: np.ndarray, targets: np.ndarray, columns: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy of node probabilities against 0/1 targets (over ``columns`` only,
    e.g. the leaves of a flat model), probabilities clipped to [1e-7, 1 - 1e-7]."""
    if columns is not None:
        probs, targets = probs[:, columns], targets[:, columns]
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log1p(-p)))


def _better(value, best, higher: bool, tol: float = 1e-12) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value > best + tol if higher else value < best - tol


@dataclass
class EarlyStopping:
    """Best-epoch choice on ``metric`` and patience that also watches the threshold-free ranking.

    ``update`` takes one epoch's dev numbers (a dict with ``metric`` and ``auprc``) and returns
    whether this epoch is the new best. ``stop`` turns True after ``patience`` epochs in which
    neither the selection metric nor (unless ``selection_only``) dev AUPRC improved."""

    metric: str = DEFAULT_SELECTION_METRIC
    patience: int = 3
    selection_only: bool = False
    best: float | None = None
    best_epoch: int | None = None
    best_ranking: float | None = None
    epochs_without_improvement: int = 0
    stop: bool = False

    def __post_init__(self):
        if self.metric not in SELECTION_METRICS:
            raise ValueError(f"--selection-metric: must be one of {', '.join(SELECTION_METRICS)} (got {self.metric!r})")

    def update(self, epoch: int, scores: dict) -> bool:
        higher = SELECTION_METRICS[self.metric][1]
        improved = _better(scores.get(self.metric), self.best, higher)
        if improved or self.best is None:
            self.best, self.best_epoch = scores.get(self.metric), epoch
        ranking_improved = _better(scores.get(RANKING_METRIC), self.best_ranking, True)
        if ranking_improved:
            self.best_ranking = scores[RANKING_METRIC]
        if improved or (ranking_improved and not self.selection_only):
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        self.stop = self.epochs_without_improvement >= self.patience
        return improved or self.best_epoch == epoch

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "best_epoch", "best_ranking", "epochs_without_improvement",
                                                "stop")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def dev_epoch_scores(probs: np.ndarray, references, taxonomy, eval_taxonomy, threshold: float,
                     targets: np.ndarray, loss_columns: np.ndarray | None = None) -> dict:
    """Every candidate selection number for one epoch's dev probabilities (the run's history keeps
    them all, so that the choice of metric can be compared afterwards): the metric at ``threshold``,
    AUPRC, the loss, and macro-hF1 / f1_avg at their best global threshold on the grid."""
    from .evaluation import evaluate_probabilities
    from .thresholds import global_grid_scores

    at_threshold = evaluate_probabilities(probs, references, taxonomy, threshold, eval_taxonomy)
    scores = {k: at_threshold[k] for k in ("macro_f1", "micro_f1", "f1_avg", "auprc")}
    scores["loss"] = dev_loss(probs, targets, loss_columns)
    grid = global_grid_scores(probs, references, taxonomy, eval_taxonomy)
    for name in ("macro_f1", "f1_avg"):
        best = max(grid, key=lambda t: (grid[t][name] or 0.0, -abs(t - 0.5)))
        scores[f"{name}_tuned"], scores[f"{name}_tuned_threshold"] = grid[best][name], best
    return scores
