# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Evaluation: node probabilities for a split (every document exactly once, across processes) and
the hierarchical metric at given thresholds."""

from __future__ import annotations

import numpy as np
import torch

from configuration_thmm import Taxonomy, Thresholds
from hierarchical_metrics import compute_hierarchical_metrics


@torch.no_grad()
def predict_probabilities(accelerator, model, dataloader, num_docs: int) -> np.ndarray:
    """Node probabilities for a split, gathered from every process, each document exactly once."""
    model.eval()
    probs, indices = [], []
    for batch in dataloader:
        index = batch.pop("index")
        batch.pop("labels", None)
        logits = model(**batch).logits
        logits, index = accelerator.gather_for_metrics((logits.float(), index))
        probs.append(torch.sigmoid(logits).cpu().numpy())
        indices.append(index.cpu().numpy())
    probs, indices = np.concatenate(probs), np.concatenate(indices)
    if sorted(indices.tolist()) != list(range(num_docs)):
        raise RuntimeError(f"evaluation covered {len(indices)} rows, not each of the {num_docs} documents exactly once")
    ordered = np.empty_like(probs)
    ordered[indices] = probs
    return ordered


def evaluation_taxonomy(taxonomy: Taxonomy, references, scheme: str) -> Taxonomy:
    """The model's nodes plus every reference code: gold codes the model has no head for stay in the
    evaluation and count as misses (built once per split, not once per metric call)."""
    codes = set(taxonomy.nodes) | {c for labels in references for c in labels}
    return Taxonomy.from_codes(codes, scheme=scheme)


def evaluate_probabilities(probs, references, taxonomy: Taxonomy, thresholds: Thresholds | float,
                           eval_taxonomy: Taxonomy, with_scores: bool = True) -> dict:
    """The hierarchical metric of the label sets decoded at ``thresholds`` (and AUPRC of the scores)."""
    predictions = taxonomy.decode(probs, threshold=thresholds)
    return compute_hierarchical_metrics(
        predictions,
        references,
        scores=probs if with_scores else None,
        score_labels=list(taxonomy.nodes) if with_scores else None,
        taxonomy=eval_taxonomy,
    )
