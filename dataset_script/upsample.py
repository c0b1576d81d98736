# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The paper's up-sampling of infrequent labels in the training split.

Pujari et al. (2021) add copies of training patents that carry infrequent labels until every label
occurs at least 10 times in train. Only train is touched; dev and test stay as released.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

__all__ = ["upsample_indices", "upsample_dataset"]


def upsample_indices(label_lists: Sequence[Sequence[str]], min_count: int = 10, seed: int = 42) -> list[int]:
    """Indices of the rows to duplicate so that every label occurs at least ``min_count`` times.

    Labels are handled rarest first. For a label short of ``min_count``, its carriers are copied in
    a fixed order: first those with the fewest co-labels that already reach ``min_count`` (so
    frequent labels grow as little as possible and rare co-labels profit too), ties broken by a
    ``seed``-ed shuffle; the carriers are cycled if a label needs more copies than it has carriers.
    Counts are updated after every copy, so a label that was lifted by earlier copies needs fewer.

    The result is deterministic for the same rows, ``min_count`` and ``seed``.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = Counter(code for labels in label_lists for code in set(labels))
    carriers: dict[str, list[int]] = {}
    for i, labels in enumerate(label_lists):
        for code in set(labels):
            carriers.setdefault(code, []).append(i)
    rng = random.Random(seed)
    added: list[int] = []
    for code in sorted(counts, key=lambda c: (counts[c], c)):
        deficit = min_count - counts[code]
        if deficit <= 0:
            continue
        tiebreak = {i: rng.random() for i in carriers[code]}
        order = sorted(
            carriers[code],
            key=lambda i: (sum(counts[c] >= min_count for c in set(label_lists[i])), tiebreak[i]),
        )
        for k in range(deficit):
            row = order[k % len(order)]
            added.append(row)
            counts.update(set(label_lists[row]))
    return added


def upsample_dataset(dataset, min_count: int = 10, seed: int = 42):
    """Return ``(dataset + duplicated rows, number of rows added)`` for a ``datasets.Dataset`` with ``labels``.

    Idempotent in effect: on a split that is already up-sampled it adds nothing.
    """
    added = upsample_indices(dataset["labels"], min_count=min_count, seed=seed)
    if not added:
        return dataset, 0
    return dataset.select(list(range(len(dataset))) + added), len(added)
