# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The lexical scorer a model may carry beside its heads: one linear TF-IDF scorer per node, fitted
outside backpropagation (``thmm.lexical``), and the rule that fuses its scores into the heads' logits.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LexicalScorer", "build_lexical_scorer", "fuse_lexical_logits", "top_k_weights"]


class LexicalScorer(nn.Module):
    """One linear scorer per node over the document's TF-IDF vector of word-pieces: sublinear term
    frequency ``1 + log(count)`` times ``idf``, L2-normalised (scikit-learn's ``TfidfVectorizer(
    sublinear_tf=True)``). Its buffers are fitted outside backpropagation (``thmm.lexical``: one
    linear SVM per node, as the TwistBytes baseline); a word-piece with ``idf`` 0 (special tokens,
    padding, pieces rare in training) does not count. It reads the ``input_ids`` the encoder reads,
    so it runs wherever the model does (``predict``, the pipeline, ``AutoModel``).

    With ``top_k`` > 0 each node keeps only its ``top_k`` word-pieces of largest absolute weight
    (``top_indices``/``top_values``, ``[nodes, top_k]``) instead of a dense ``weight [vocab, nodes]``:
    at thousands of nodes (main groups, subgroups) the dense matrix would outweigh the model."""

    def __init__(self, vocab_size: int, num_nodes: int, top_k: int = 0):
        super().__init__()
        self.top_k = top_k
        self.register_buffer("idf", torch.zeros(vocab_size))
        if top_k:
            self.register_buffer("top_indices", torch.zeros(num_nodes, top_k, dtype=torch.long))
            self.register_buffer("top_values", torch.zeros(num_nodes, top_k))
        else:
            self.register_buffer("weight", torch.zeros(vocab_size, num_nodes))
        self.register_buffer("bias", torch.zeros(num_nodes))

    def tfidf(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, vocab]`` TF-IDF vectors of ``input_ids`` (positions where ``attention_mask`` is 0 skipped)."""
        present = torch.ones_like(input_ids, dtype=self.idf.dtype) if attention_mask is None else attention_mask.to(
            self.idf.dtype)
        counts = torch.zeros(input_ids.shape[0], self.idf.shape[0], dtype=self.idf.dtype, device=input_ids.device)
        counts.scatter_add_(1, input_ids, present)
        tf = torch.where(counts > 0, 1 + torch.log(counts.clamp(min=1)), torch.zeros_like(counts))
        return F.normalize(tf * self.idf, dim=1)

    def piece_weights(self, piece_ids: torch.Tensor, node_ids: list[int]) -> torch.Tensor:
        """``[pieces, len(node_ids)]``: each node's SVM weight for each word-piece (0 for a piece outside a
        top-k node's kept weights), dense or top-k alike (the explanations read it)."""
        if not self.top_k:
            return self.weight[piece_ids][:, node_ids]
        nodes = torch.as_tensor(node_ids, dtype=torch.long, device=piece_ids.device)
        match = self.top_indices[nodes][None, :, :] == piece_ids[:, None, None]  # [pieces, codes, top_k]
        return (match * self.top_values[nodes][None, :, :]).sum(dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, nodes]`` decision values (the SVMs' scale, not logits)."""
        features = self.tfidf(input_ids, attention_mask)
        if not self.top_k:
            return features @ self.weight + self.bias
        # the top-k weights as a sparse CSR [nodes, vocab] matrix (its rows' indices ascending, zero padding left
        # out): one sparse-dense product, faster on a CPU than the dense [vocab, nodes] one, and no dense copy
        kept = self.top_values != 0
        crow = torch.zeros(kept.shape[0] + 1, dtype=torch.long, device=features.device)
        crow[1:] = kept.sum(dim=1).cumsum(0)
        with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice, once per process
            warnings.simplefilter("ignore", UserWarning)
            sparse = torch.sparse_csr_tensor(crow, self.top_indices[kept], self.top_values[kept],
                                             (kept.shape[0], features.shape[1]), check_invariants=True)  # in range
        return (sparse @ features.T).T + self.bias


def fuse_lexical_logits(head_logits, decisions, weight, scale: float, shift: float):
    """The fused node logits: ``(1 - weight) * head_logits + weight * (scale * decisions + shift)``
    (torch tensors or numpy arrays); ``weight`` is one number or one per node (:func:`node_fusion_weights`);
    ``THMMConfig.lexical_*`` hold the numbers."""
    return (1 - weight) * head_logits + weight * (scale * decisions + shift)


def node_fusion_weights(weight, levels) -> float | np.ndarray:
    """The fusion weight of each node: ``weight`` itself when it is one number, else ``[nodes]`` from its
    one weight per level (``levels``: each node's level, 1-based, as ``Taxonomy.levels``)."""
    if isinstance(weight, (list, tuple, np.ndarray)):
        return np.asarray(weight, dtype=np.float32)[np.asarray(levels) - 1]
    return float(weight)


def max_fusion_weight(weight) -> float:
    """The largest weight of a config's ``lexical_weight`` (one number or one per level): 0 means no fusion."""
    return float(max(weight)) if isinstance(weight, (list, tuple)) else float(weight)


def top_k_weights(weight, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each node's ``top_k`` weights of largest absolute value from ``weight [vocab, nodes]`` (a dense
    array, or a scipy sparse matrix): ``(indices, values)``, both ``[nodes, top_k]``, each row by
    ascending word-piece index (a CSR matrix's order); a node with fewer non-zero weights is padded
    with index 0 and value 0, first."""
    indices, values = _largest_weights(weight, top_k)
    values[values == 0] = 0.0
    indices[values == 0] = 0  # padding, whatever index it had
    order = np.argsort(indices, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(values, order, axis=1)


def _largest_weights(weight, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_weights` before its rows are put in index order (largest absolute value first)."""
    if hasattr(weight, "tocsc"):  # scipy sparse: only the stored entries of each column
        weight = weight.tocsc()
        indices = np.zeros((weight.shape[1], top_k), dtype=np.int64)
        values = np.zeros((weight.shape[1], top_k), dtype=np.float32)
        for j in range(weight.shape[1]):
            rows, data = weight.indices[weight.indptr[j]:weight.indptr[j + 1]], weight.data[weight.indptr[j]:weight.indptr[j + 1]]
            keep = np.argsort(-np.abs(data), kind="stable")[:top_k]
            indices[j, :keep.size], values[j, :keep.size] = rows[keep], data[keep]
        return indices, values
    weight = np.asarray(weight, dtype=np.float32)
    k = min(top_k, weight.shape[0])
    best = np.argpartition(-np.abs(weight), k - 1, axis=0)[:k].T  # [nodes, k], unordered
    vals = np.take_along_axis(weight.T, best, axis=1)
    order = np.argsort(-np.abs(vals), axis=1, kind="stable")
    indices = np.zeros((weight.shape[1], top_k), dtype=np.int64)
    values = np.zeros((weight.shape[1], top_k), dtype=np.float32)
    indices[:, :k], values[:, :k] = np.take_along_axis(best, order, axis=1), np.take_along_axis(vals, order, axis=1)
    return indices, values


@torch.no_grad()
def build_lexical_scorer(idf, weight, bias, num_nodes: int, top_k: int = 0) -> LexicalScorer:
    """A :class:`LexicalScorer` holding fitted values (``idf [vocab]``, ``weight [vocab, nodes]`` dense
    or scipy sparse, ``bias [nodes]``, arrays or tensors; ``thmm.lexical.fit_lexical_scorer``), keeping
    each node's ``top_k`` largest weights when ``top_k`` > 0; a ValueError naming the shapes unless they
    fit a taxonomy of ``num_nodes`` nodes."""
    idf, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (idf, bias))
    shape = tuple(weight.shape)
    if len(shape) != 2 or shape[1] != num_nodes or tuple(idf.shape) != (shape[0],) or tuple(bias.shape) != (num_nodes,):
        raise ValueError(f"a lexical scorer needs idf [vocab], weight [vocab, {num_nodes}] and bias [{num_nodes}], "
                         f"got {tuple(idf.shape)}, {shape}, {tuple(bias.shape)}")
    scorer = LexicalScorer(shape[0], num_nodes, top_k)
    if top_k:
        indices, values = top_k_weights(weight, top_k)
        tensors = {"top_indices": torch.from_numpy(indices), "top_values": torch.from_numpy(values)}
    else:
        tensors = {"weight": torch.as_tensor(np.asarray(weight), dtype=torch.float32)}
    for name, value in (("idf", idf), *tensors.items(), ("bias", bias)):
        getattr(scorer, name).copy_(value)
    return scorer
