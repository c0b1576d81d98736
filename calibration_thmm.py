# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Calibrated scores and document confidence, as a saved model applies them.

* **Temperature per level.** ``config.calibration_temperatures`` holds one temperature ``T`` per
  taxonomy level, fitted on dev after training (``thmm.calibration.fit_temperatures``). A node's
  calibrated probability is ``sigmoid(logit / T)`` with its level's ``T``: a monotone map, so it never
  changes the order of the documents within a node. The decision thresholds are mapped the same
  way (:func:`calibrated_thresholds`), so a model decides exactly as before calibration; only the
  scores it shows (and what a user-given ``threshold`` means) change. Platt scaling per level adds
  one shift per level (``config.calibration_shifts``): ``sigmoid(logit / T + b)``, as monotone.
* **Document confidence.** The probability, under the calibrated scores taken as independent, that
  the whole predicted code set is right: the product over every node of ``p`` where it is predicted
  and ``1 - p`` where it is not (:func:`document_confidence`). Low values mark the documents to
  send to a person (``review_below``).

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``); it
imports nothing but numpy, torch and ``taxonomy_thmm``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .taxonomy_thmm import Taxonomy, Thresholds
except ImportError:  # plain import when installed as a top-level module
    from taxonomy_thmm import Taxonomy, Thresholds

__all__ = ["calibrate_logits", "calibrated_thresholds", "check_review_below", "document_confidence",
           "node_shifts", "node_temperatures"]

# Temperatures are kept in this range: below it a level's scores would all be 0 or 1.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def _per_level(taxonomy: Taxonomy, values, name: str, low: float = -math.inf, high: float = math.inf) -> np.ndarray:
    """``values`` as float64, one per level of ``taxonomy``, each finite and in [low, high]; else a
    ValueError naming ``name`` (the config's field would name it too)."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = None
    if out is None or out.shape != (taxonomy.num_levels,):
        raise ValueError(f"{name}: expected one number per taxonomy level ({taxonomy.num_levels}), got {values!r}")
    if not np.all(np.isfinite(out) & (out >= low) & (out <= high)):
        within = f" in [{low}, {high}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise ValueError(f"{name}: each must be a finite number{within} (got {values!r})")
    return out


def node_temperatures(taxonomy: Taxonomy, temperatures) -> np.ndarray:
    """``[nodes]`` float64: each node's level's temperature (all 1 when ``temperatures`` is ``None``)."""
    if temperatures is None:
        return np.ones(len(taxonomy))
    return _per_level(taxonomy, temperatures, "temperatures", MIN_TEMPERATURE, MAX_TEMPERATURE)[taxonomy.levels - 1]


def node_shifts(taxonomy: Taxonomy, shifts) -> np.ndarray | None:
    """``[nodes]`` float64: each node's level's shift (``config.calibration_shifts``), or ``None``."""
    return None if shifts is None else _per_level(taxonomy, shifts, "shifts")[taxonomy.levels - 1]


def calibrate_logits(logits, node_temps: np.ndarray | None, node_bias: np.ndarray | None = None):
    """``logits / T + b`` per node column (torch tensor or numpy array ``[documents, nodes]``; ``b``
    only with ``node_bias``, Platt scaling); as is when ``node_temps`` is ``None``."""
    if node_temps is None:
        return logits
    if isinstance(logits, torch.Tensor):
        out = logits / torch.as_tensor(node_temps, dtype=logits.dtype, device=logits.device)
        return out if node_bias is None else out + torch.as_tensor(node_bias, dtype=logits.dtype, device=logits.device)
    dtype = np.asarray(logits).dtype
    out = np.asarray(logits) / np.asarray(node_temps, dtype=dtype)
    return out if node_bias is None else out + np.asarray(node_bias, dtype=dtype)


def _map_probability(p: float, temperature: float, shift: float = 0.0) -> float:
    """``sigmoid(logit(p) / T + b)``; 0 and 1 stay."""
    if p <= 0.0 or p >= 1.0:
        return float(p)
    z = (math.log(p) - math.log1p(-p)) / temperature + shift
    return 1.0 / (1.0 + math.exp(-z))


def calibrated_thresholds(thresholds: Thresholds, taxonomy: Taxonomy, temperatures, shifts=None) -> Thresholds:
    """The thresholds on calibrated scores that take the decisions ``thresholds`` took on raw ones:
    each level's (or the global) threshold and each node's own mapped by its level's temperature
    (and shift). The result always has one threshold per level (they differ when the levels' maps do)."""
    shifts = shifts if shifts is not None else [0.0] * len(temperatures)
    per_level = thresholds.per_level or (thresholds.global_threshold,) * taxonomy.num_levels
    mapped_levels = [_map_probability(t, temperatures[level], shifts[level]) for level, t in enumerate(per_level)]
    per_node = {code: _map_probability(t, temperatures[taxonomy.level(code) - 1], shifts[taxonomy.level(code) - 1])
                for code, t in (thresholds.per_node or {}).items()}
    return Thresholds(thresholds.global_threshold, tuple(mapped_levels), thresholds.objective, per_node or None)


def document_confidence(scores: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """``[documents]``: the product over the nodes of ``p`` where ``selected`` and ``1 - p`` where not,
    the probability of the whole decision under independent node scores (computed in log space)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.exp(np.where(selected, np.log(p), np.log1p(-p)).sum(axis=1))


def check_review_below(value, option: str = "review_below") -> float | None:
    """``value`` (a confidence in [0, 1], or ``None``) as a float, else a ValueError naming ``option``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{option}: must be a confidence between 0 and 1 (got {value!r})")
    return float(value)
