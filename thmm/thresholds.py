# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Decision thresholds tuned on dev: the best global value on a grid, then per level."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configuration_thmm import Taxonomy, Thresholds

from .evaluation import evaluate_probabilities

THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))


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
    return TunedThresholds(Thresholds(best_global, tuple(levels), objective), global_scores[best_global], best)
