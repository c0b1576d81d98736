# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Calibration after training, and how well calibrated a model's scores are.

* :func:`fit_temperatures`: one temperature per taxonomy level, minimising the dev negative
  log-likelihood of ``sigmoid(logit / T)`` over every (document, node) pair of the level (Guo et al.,
  2017, per level). The model applies it with ``calibration_thmm``; being monotone, it never changes
  the order of documents within a node, and the thresholds are mapped with it
  (``calibration_thmm.calibrated_thresholds``), so no decision changes.
* :func:`expected_calibration_error`: ECE of the node probabilities, per level and over all nodes,
  with equal-width bins over every (document, node) pair; the metric reports it
  (``compute_hierarchical_metrics``: ``ece``, ``level{l}_ece``).
* :func:`plot_reliability`: the reliability diagram, one curve per level.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from calibration_thmm import MAX_TEMPERATURE, MIN_TEMPERATURE
from decoding_thmm import check_score_matrix
from taxonomy_thmm import Taxonomy, level_name

__all__ = ["CALIBRATIONS", "ECE_BINS", "expected_calibration_error", "fit_platt", "fit_temperatures",
           "masked_calibration_error", "plot_reliability", "reliability_bins"]

#: ``thmm-train --calibration``: none, one temperature per level, or Platt scaling per level (a
#: temperature and a shift), fitted on dev
CALIBRATIONS = ("none", "temperature", "platt")

#: equal-width probability bins of the ECE and the reliability diagram
ECE_BINS = 15

#: documents checked at a time by expected_calibration_error (each block is copied as float64: 42 MB at 634 nodes)
CHECK_ROWS = 8192


def _level_nll(logits: np.ndarray, targets: np.ndarray, temperature: float, shift: float = 0.0) -> float:
    z = logits / temperature + shift
    # binary cross-entropy with logits, stable: max(z, 0) - z * y + log(1 + exp(-|z|))
    return float(np.mean(np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))))


def _check_logits(logits, nodes: int) -> np.ndarray:
    """``logits`` as float64 ``[documents, nodes]``, every one finite; else a ValueError naming the first
    bad document and node (a fit over a NaN would return a temperature all the same)."""
    return check_score_matrix(logits, nodes, "logits", np.isfinite, "is not finite")


def _check_targets(targets, shape, first_row: int = 0) -> np.ndarray:
    """``targets`` as float64 of ``shape``, every one 0 or 1; else a ValueError naming the first bad one
    (its document counted from ``first_row``)."""
    if np.shape(targets) != tuple(shape):
        raise ValueError(f"targets: expected shape {list(shape)} (that of the scores), got {list(np.shape(targets))}")
    return check_score_matrix(targets, shape[1], "targets", lambda v: (v == 0.0) | (v == 1.0), "is not 0 or 1",
                              first_row)


def fit_temperatures(logits: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy) -> list[float]:
    """One temperature per level of ``taxonomy``: the one in [MIN_TEMPERATURE, MAX_TEMPERATURE]
    minimising the mean binary cross-entropy of ``sigmoid(logits / T)`` against ``targets`` (0/1,
    ``[documents, nodes]``, labels closed upwards) over the level's columns. A level without any
    positive or without any negative pair keeps 1."""
    from scipy.optimize import minimize_scalar

    logits, targets = _check_logits(logits, len(taxonomy)), _check_targets(targets, logits.shape)
    temperatures = []
    for cols in taxonomy.level_slices:
        z, y = logits[:, cols], targets[:, cols]
        if not y.any() or y.all():
            temperatures.append(1.0)
            continue
        best = minimize_scalar(lambda log_t: _level_nll(z, y, math.exp(log_t)), method="bounded",
                               bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
                               options={"xatol": 1e-4})
        temperatures.append(float(min(max(math.exp(best.x), MIN_TEMPERATURE), MAX_TEMPERATURE)))
    return temperatures


def fit_platt(logits: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy) -> tuple[list[float], list[float]]:
    """Platt scaling per level: ``(temperatures, shifts)``, the ``T`` in [MIN_TEMPERATURE,
    MAX_TEMPERATURE] and ``b`` minimising the mean binary cross-entropy of ``sigmoid(logits / T + b)``
    over each level's columns (started from :func:`fit_temperatures`' ``T`` and ``b = 0``). A level
    without any positive or without any negative pair keeps ``T = 1, b = 0``."""
    from scipy.optimize import minimize

    logits = _check_logits(logits, len(taxonomy))
    targets = _check_targets(targets, logits.shape)
    start = fit_temperatures(logits, targets, taxonomy)
    temperatures, shifts = [], []
    bounds = [(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)), (-20.0, 20.0)]
    for cols, t0 in zip(taxonomy.level_slices, start):
        z, y = logits[:, cols], targets[:, cols]
        if not y.any() or y.all():
            temperatures.append(1.0)
            shifts.append(0.0)
            continue
        best = minimize(lambda v: _level_nll(z, y, math.exp(v[0]), v[1]), x0=[math.log(t0), 0.0], method="L-BFGS-B",
                        bounds=bounds)
        temperatures.append(float(min(max(math.exp(best.x[0]), MIN_TEMPERATURE), MAX_TEMPERATURE)))
        shifts.append(float(best.x[1]))
    return temperatures, shifts


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS):
    """``(mean probability, positive rate, count)`` per equal-width bin of the pooled pairs (empty
    bins: ``nan``, ``nan``, 0)."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=p, minlength=bins) / count
        accuracy = np.bincount(which, weights=y, minlength=bins) / count
    return confidence, accuracy, count


def _ece(probabilities, targets, bins: int) -> float | None:
    confidence, accuracy, count = reliability_bins(probabilities, targets, bins)
    total = count.sum()
    if not total:
        return None
    used = count > 0
    return float(np.sum(count[used] / total * np.abs(confidence[used] - accuracy[used])))


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy,
                               columns: np.ndarray | None = None, bins: int = ECE_BINS) -> dict:
    """``{"ece": ..., "level1_ece": ..., ...}``: expected calibration error of ``probabilities``
    (``[documents, nodes]`` in ``taxonomy`` order, in [0, 1]) against the 0/1 ``targets``, pooled over
    every (document, node) pair of all nodes and of each level; only the nodes in ``columns`` (a bool
    mask, e.g. those that have a score) count. ``None`` where no pair counts."""
    mask = np.ones(len(taxonomy), dtype=bool) if columns is None else np.asarray(columns, dtype=bool)
    if mask.shape != (len(taxonomy),):
        raise ValueError(f"columns: expected a mask of {len(taxonomy)} nodes, got shape {list(mask.shape)}")
    probabilities, targets = np.asarray(probabilities), np.asarray(targets)  # as they are: not copied whole here
    if probabilities.ndim != 2 or probabilities.shape[1] != len(taxonomy):
        raise ValueError(f"probabilities: expected shape [documents, {len(taxonomy)}], got {list(probabilities.shape)}")
    if targets.shape != probabilities.shape:
        raise ValueError(f"targets: expected shape {list(probabilities.shape)} (that of the scores), "
                         f"got {list(targets.shape)}")
    for start in range(0, len(probabilities), CHECK_ROWS):  # in blocks: each is copied as float64 to be checked
        rows = slice(start, start + CHECK_ROWS)
        # the columns outside the mask may hold anything (the metric's floor for unscored nodes); NaN fails both
        check_score_matrix(probabilities[rows], len(taxonomy), "probabilities",
                           lambda v: ((v >= 0.0) & (v <= 1.0)) | ~mask, "is not a probability in [0, 1]", start)
        if targets.dtype != bool:
            _check_targets(targets[rows], targets[rows].shape, start)
    return masked_calibration_error(probabilities, targets, taxonomy, mask, bins)


def masked_calibration_error(probabilities: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy, mask: np.ndarray,
                             bins: int = ECE_BINS) -> dict:
    """:func:`expected_calibration_error` without its checks, for a caller that has made them (the metric)."""
    results = {"ece": _ece(probabilities[:, mask], targets[:, mask], bins)}
    for level, cols in enumerate(taxonomy.level_slices, start=1):
        keep = np.flatnonzero(mask[cols]) + cols.start
        results[f"level{level}_ece"] = _ece(probabilities[:, keep], targets[:, keep], bins) if len(keep) else None
    return results


def plot_reliability(runs: dict, taxonomy: Taxonomy, path, bins: int = ECE_BINS) -> Path:
    """Reliability diagram (PNG): one panel per run (``{name: (probabilities, targets)}``), one curve
    per level, the mean probability of each bin against its positive rate (the diagonal is perfect
    calibration); each level's ECE in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(runs), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(runs)))
    for ax, (name, (probabilities, targets)) in zip(axes, runs.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        for level, cols in enumerate(taxonomy.level_slices, start=1):
            confidence, accuracy, count = reliability_bins(probabilities[:, cols], targets[:, cols], bins)
            used = count > 0
            ece = _ece(probabilities[:, cols], targets[:, cols], bins)
            ax.plot(confidence[used], accuracy[used], marker="o", ms=3,
                    label=f"{level_name(level)} (ECE {ece:.4f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability (bin)")
        ax.set_ylabel("fraction of gold pairs")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
