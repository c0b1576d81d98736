# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Which unlabelled patents to label next (active learning; ``thmm-suggest``).

A document is worth labelling when the model is unsure of it where it decides, and when that
uncertainty is about nodes few documents stand for. For document ``d`` and node ``j``, with the
model's (calibrated) probability ``p`` and the node's decision threshold ``t``:

* **uncertainty near the threshold**: ``u = exp(-|logit(p) - logit(t)|)``, 1 at the threshold and
  falling with the distance in log-odds;
* **rare-node coverage**: each node weighs ``w_j = 1 / sqrt(1 + e_j + s_j)``, where ``e_j`` is the
  node's expected number of documents in the pool (the sum of its probabilities: a rare node's is
  small) and ``s_j`` the expected number among the documents chosen so far.

Documents are chosen greedily: each step takes the one with the largest ``sum_j w_j * (u_dj +
p_dj)``, then adds its probabilities to ``s``, so that the next choices turn to nodes not covered
yet. Ties are broken by a random order drawn from ``seed``: the same inputs and seed give the same
list.
"""

from __future__ import annotations

import numbers

import numpy as np

from decoding_thmm import check_probabilities

__all__ = ["check_count", "suggest"]


def check_count(n, option: str = "n") -> int:
    """``n`` when it is an integer of at least 1, else a ValueError naming ``option``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{option}: must be an integer of at least 1 (got {n!r})")
    return int(n)


def _check_node_thresholds(node_thresholds) -> np.ndarray:
    """``node_thresholds`` as a float array ``[nodes]`` of probabilities, else a ValueError naming it."""
    try:
        values = np.asarray(node_thresholds, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"node_thresholds: expected one probability per node ({err})") from None
    if values.ndim != 1:
        raise ValueError(f"node_thresholds: expected one probability per node, a [nodes] array, "
                         f"got shape {list(values.shape)}")
    bad = ~((values >= 0.0) & (values <= 1.0))  # NaN fails both
    if bad.any():
        node = int(np.flatnonzero(bad)[0])
        raise ValueError(f"node_thresholds: node {node}: {float(values[node])!r} is not a probability in [0, 1]")
    return values


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def suggest(probabilities: np.ndarray, node_thresholds: np.ndarray, n: int, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, scores)``: the ``n`` documents of ``probabilities`` (``[documents, nodes]``) to
    label first, in the order chosen, and each one's score when it was chosen. ``node_thresholds``
    is ``[nodes]`` (``Taxonomy.node_thresholds``). ``n`` above the number of documents is an error."""
    n = check_count(n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: must be an integer of at least 0 (got {seed!r})")
    thresholds = _check_node_thresholds(node_thresholds)
    probs = check_probabilities(probabilities, len(thresholds)).astype(np.float32)
    if n > len(probs):
        raise ValueError(f"n: {n} documents asked for, but there are only {len(probs)}")
    order = np.random.default_rng(seed).permutation(len(probs))  # ties: the first in this order
    probs = probs[order]
    distance = np.abs(_logit(probs) - _logit(thresholds.astype(np.float32))[None, :])
    value = np.exp(-distance) + probs  # [documents, nodes]
    expected = probs.sum(axis=0, dtype=np.float64)
    chosen_mass = np.zeros_like(expected)
    available = np.ones(len(probs), dtype=bool)
    picked, scores = [], []
    for _ in range(n):
        weights = (1.0 / np.sqrt(1.0 + expected + chosen_mass)).astype(np.float32)
        score = value @ weights
        score[~available] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        scores.append(float(score[best]))
        available[best] = False
        chosen_mass += probs[best]
    return order[np.asarray(picked, dtype=np.int64)], np.asarray(scores)
