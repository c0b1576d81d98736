# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Evaluation: node probabilities for a split (every document exactly once, across processes) and
the hierarchical metric at given thresholds (decoded into a node matrix, not into label strings)."""

from __future__ import annotations

import numpy as np
import torch

from configuration_thmm import Taxonomy, TaxonomyError, Thresholds
from .hierarchical_metrics import compute_hierarchical_metrics


@torch.no_grad()
def predict_probabilities(accelerator, model, dataloader, num_docs: int, logits: bool = False,
                          **forward_kwargs) -> np.ndarray:
    """Node probabilities (or, with ``logits``, logits) for a split, gathered from every process, each
    document exactly once; ``forward_kwargs`` go to the model (e.g. ``fuse_lexical=False``)."""
    model.eval()
    probs, indices = [], []
    for batch in dataloader:
        index = batch.pop("index")
        batch.pop("labels", None)
        out = model(**batch, **forward_kwargs).logits
        out, index = accelerator.gather_for_metrics((out.float(), index))
        probs.append((out if logits else torch.sigmoid(out)).cpu().numpy())
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
    return Taxonomy.from_codes(codes, scheme=scheme, depth=taxonomy.depth or 3)


def model_columns(taxonomy: Taxonomy, eval_taxonomy: Taxonomy) -> np.ndarray:
    """The ``eval_taxonomy`` column of each model node. Raises a :class:`TaxonomyError` unless the
    evaluation taxonomy holds every model node under the same parent (as :func:`evaluation_taxonomy`
    builds it), so that closing a label set upwards means the same in both."""
    label2id = eval_taxonomy.label2id
    missing = [code for code in taxonomy.nodes if code not in label2id]
    if missing:
        raise TaxonomyError(f"the evaluation taxonomy lacks the model node {missing[0]!r} ({len(missing)} missing)")
    columns = np.array([label2id[code] for code in taxonomy.nodes], dtype=np.int64)
    parents = taxonomy.parent_index
    moved = eval_taxonomy.parent_index[columns] != np.where(parents >= 0, columns[parents], -1)
    if moved.any():
        code = taxonomy.nodes[int(np.flatnonzero(moved)[0])]
        raise TaxonomyError(f"the evaluation taxonomy gives the model node {code!r} another parent")
    return columns


def decoded_matrix(probs, taxonomy: Taxonomy, thresholds: Thresholds | float, eval_taxonomy: Taxonomy,
                   block_size: int = 4096, at_least_one: bool = False) -> np.ndarray:
    """The label sets ``taxonomy.decode(probs, thresholds, at_least_one=at_least_one)`` gives (a node
    is predicted when its probability reaches its level's threshold, and implies its ancestors; with
    ``at_least_one``, a document where no leaf does gets its best-scoring leaf), as a bool
    ``[documents, eval_taxonomy nodes]`` matrix for ``compute_hierarchical_metrics(predicted_matrix=)``."""
    if np.ndim(probs) != 2 or np.shape(probs)[1] != len(taxonomy):
        raise TaxonomyError(f"expected scores of shape [documents, {len(taxonomy)}], got {list(np.shape(probs))}")
    probs = np.asarray(probs)
    node_thresholds = comparable_thresholds(taxonomy.node_thresholds(thresholds), probs.dtype)
    # Each evaluation node reads its model column; the extra last column (never selected) for the others.
    source = np.full(len(eval_taxonomy), len(taxonomy))
    source[model_columns(taxonomy, eval_taxonomy)] = np.arange(len(taxonomy))
    selected = np.empty((len(probs), len(eval_taxonomy)), dtype=bool)
    for start in range(0, len(probs), block_size):  # np.take, not a column scatter: much faster
        block = probs[start : start + block_size].astype(node_thresholds.dtype, copy=False)
        padded = np.zeros((len(block), len(taxonomy) + 1), dtype=bool)
        np.greater_equal(block, node_thresholds, out=padded[:, :-1])
        if at_least_one:
            taxonomy.select_best_leaf_where_empty(padded[:, :-1], block)
        np.take(padded, source, axis=1, out=selected[start : start + block_size], mode="clip")
    return eval_taxonomy.close_upwards(selected)


def comparable_thresholds(thresholds, dtype) -> np.ndarray:
    """Thresholds to compare probabilities of ``dtype`` with, deciding ``p >= t`` as in float64 (as
    ``Taxonomy.decode`` does) without converting them: for float16/float32 probabilities, each
    threshold rounded up to float32 (a float32 ``p`` reaches ``t`` exactly when it reaches that)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if dtype not in (np.float16, np.float32):
        return thresholds
    rounded = thresholds.astype(np.float32)
    low = rounded.astype(np.float64) < thresholds
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return rounded


def evaluate_probabilities(probs, references, taxonomy: Taxonomy, thresholds: Thresholds | float,
                           eval_taxonomy: Taxonomy, with_scores: bool = True, at_least_one: bool = False) -> dict:
    """The hierarchical metric of the label sets decoded at ``thresholds`` (with ``at_least_one``:
    a document with no leaf above its threshold gets its best leaf), and AUPRC of the scores."""
    return compute_hierarchical_metrics(
        None,
        references,
        predicted_matrix=decoded_matrix(probs, taxonomy, thresholds, eval_taxonomy, at_least_one=at_least_one),
        scores=probs if with_scores else None,
        score_labels=list(taxonomy.nodes) if with_scores else None,
        taxonomy=eval_taxonomy,
    )
