# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The lexical scorer a model may carry beside its heads: one linear TF-IDF scorer per node, fitted
outside backpropagation (``thmm.lexical``), and the rule that fuses its scores into the heads' logits.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LexicalScorer", "build_lexical_scorer", "fuse_lexical_logits"]


class LexicalScorer(nn.Module):
    """One linear scorer per node over the document's TF-IDF vector of word-pieces: sublinear term
    frequency ``1 + log(count)`` times ``idf``, L2-normalised (scikit-learn's ``TfidfVectorizer(
    sublinear_tf=True)``). Its buffers are fitted outside backpropagation (``thmm.lexical``: one
    linear SVM per node, as the TwistBytes baseline); a word-piece with ``idf`` 0 (special tokens,
    padding, pieces rare in training) does not count. It reads the ``input_ids`` the encoder reads,
    so it runs wherever the model does (``predict``, the pipeline, ``AutoModel``)."""

    def __init__(self, vocab_size: int, num_nodes: int):
        super().__init__()
        self.register_buffer("idf", torch.zeros(vocab_size))
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, nodes]`` decision values (the SVMs' scale, not logits)."""
        return self.tfidf(input_ids, attention_mask) @ self.weight + self.bias


def fuse_lexical_logits(head_logits, decisions, weight: float, scale: float, shift: float):
    """The fused node logits: ``(1 - weight) * head_logits + weight * (scale * decisions + shift)``
    (torch tensors or numpy arrays); ``THMMConfig.lexical_*`` hold the numbers."""
    return (1 - weight) * head_logits + weight * (scale * decisions + shift)


@torch.no_grad()
def build_lexical_scorer(idf, weight, bias, num_nodes: int) -> LexicalScorer:
    """A :class:`LexicalScorer` holding fitted values (``idf [vocab]``, ``weight [vocab, nodes]``,
    ``bias [nodes]``, arrays or tensors; ``thmm.lexical.fit_lexical_scorer``); a ValueError naming
    the shapes unless they fit a taxonomy of ``num_nodes`` nodes."""
    idf, weight, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (idf, weight, bias))
    if weight.ndim != 2 or weight.shape[1] != num_nodes or idf.shape != (weight.shape[0],) or bias.shape != (num_nodes,):
        raise ValueError(f"a lexical scorer needs idf [vocab], weight [vocab, {num_nodes}] and bias [{num_nodes}], "
                         f"got {tuple(idf.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
    scorer = LexicalScorer(*weight.shape)
    for name, value in (("idf", idf), ("weight", weight), ("bias", bias)):
        getattr(scorer, name).copy_(value)
    return scorer
