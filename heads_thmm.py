# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""What the model computes above the encoder: the CNN document vector, and the classification heads.

* :class:`CNNDocumentEncoder`: a CNN over token states, max-pooled (``doc_representation="cnn"``).
* :class:`LevelHeads` / :class:`HierarchicalHeads`: TMM / THMM, one binary head per taxonomy node,
  the heads of one level computed together from stacked weights (one GEMM or batched matmul per
  layer per level), not as hundreds of per-node modules.
* :class:`SharedLevelHeads`: the levels below the subclass (main groups, subgroups), with hidden
  layers shared by the level and one output row per node, so that thousands of nodes cost little.
* :class:`FlatHead`: the flat baselines' leaf-only MLP; an inner node scores the max over its children.
* :func:`pool_encoder_outputs`: what each document representation reads from the encoder;
  :func:`set_output_biases`: the heads' output biases at the label priors.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .taxonomy_thmm import Taxonomy
except ImportError:  # plain import when installed as a top-level module
    from taxonomy_thmm import Taxonomy

__all__ = ["DEEP_LEVEL", "CNNDocumentEncoder", "FlatHead", "HierarchicalHeads", "LevelHeads",
           "SharedLevelHeads", "pool_encoder_outputs", "set_output_biases"]

DEEP_LEVEL = 4  # main groups and below get the deep heads; sections, classes, subclasses the paper's


class _ReluDropout(torch.autograd.Function):
    """``F.dropout(F.relu(x), p, training=True)`` (the same random draws) that keeps only its output for the
    backward pass: where the output is positive the unit was kept, with gradient ``1 / (1 - p)``, and
    elsewhere it has none. Autograd's composition keeps three tensors as large instead (ReLU's output,
    dropout's float noise on a CPU or its mask on a GPU, and dropout's output). For the 508 subclass and
    118 class heads of a 64-document micro-batch that took the backward pass's peak from 403 to 309 MiB
    above the step's floor, in no more time (issue 35). On a CPU the gradient is bit for bit autograd's
    (tested)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        out = F.dropout(F.relu(x), p, training=True)
        ctx.save_for_backward(out)
        ctx.p = p
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        if grad.device.type == "cpu":  # dropout's noise there: 1 / (1 - p) in the tensor's own dtype
            scale = torch.ones((), dtype=grad.dtype).div_(1 - ctx.p)
        else:  # the fused dropout kernel's (GPUs): a float scale, applied at float precision
            scale = 1.0 / (1.0 - ctx.p)
        grad_x = torch.mul(grad, scale, out=torch.empty_like(out))  # in the input's layout, as autograd's would be
        # ReLU's own backward kernel (one pass, in place): no gradient where the output is not positive
        return torch.ops.aten.threshold_backward.grad_input(grad_x, out, 0.0, grad_input=grad_x), None


def relu_dropout(x: torch.Tensor, dropout: nn.Dropout) -> torch.Tensor:
    """``dropout(relu(x))``; when training with gradients, through :class:`_ReluDropout`, which keeps a
    third of the memory for the backward pass."""
    if dropout.training and dropout.p > 0 and torch.is_grad_enabled() and x.requires_grad:
        return _ReluDropout.apply(x, dropout.p)
    return dropout(F.relu(x))


class CNNDocumentEncoder(nn.Module):
    """Conv1d over token states (one conv per kernel size), ReLU, masked max-pool over time, concat."""

    def __init__(self, hidden_size: int, num_filters: int, kernel_sizes: Sequence[int]):
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(hidden_size, num_filters, k) for k in self.kernel_sizes)
        self.output_size = num_filters * len(self.kernel_sizes)

    def forward(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(token_states.dtype)
        x = (token_states * mask.unsqueeze(-1)).transpose(1, 2)  # [B, H, T]
        lengths = attention_mask.sum(dim=1)
        pad = max(self.kernel_sizes) - 1  # so that documents shorter than a kernel still get a window
        x = F.pad(x, (0, pad))
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            feats = F.relu(conv(x))  # [B, F, T + pad - k + 1]
            positions = torch.arange(feats.shape[-1], device=feats.device)
            # a window is valid when it lies inside the document; a document shorter than k keeps window 0
            valid = (positions[None, :] + k <= lengths[:, None]) | (positions[None, :] == 0)
            feats = feats.masked_fill(~valid[:, None, :], float("-inf"))
            pooled.append(feats.max(dim=-1).values)
        return torch.cat(pooled, dim=-1)


class LevelHeads(nn.Module):
    """All binary node heads of one taxonomy level, with stacked weights.

    For node ``j`` of the level, the head computes::

        h1 = dropout(relu(x @ W1[:, j] (+ parent_h2[j] @ P1[j]) + b1[j]))
        h2 = dropout(relu(h1 @ W2[j] + b2[j]))
        logit = h2 . w_out[j] + b_out[j]

    ``P1`` (THMM only) acts on the parent head's second hidden layer: ``[x, parent_h2] @ [W1; P1]``
    is the paper's concatenation. ``W1`` is stored ``[in, nodes, hidden]`` so that all nodes share
    one GEMM with the document vector (about 1.4x faster on CPU than an ``[nodes, in, hidden]``
    batched product, which needs a copy or a broadcast); the per-node layers use batched matmuls.
    Activations are kept ``[nodes, batch, hidden]``.
    """

    def __init__(self, num_nodes: int, in_features: int, hidden_size: int, dropout: float, parent_features: int = 0):
        super().__init__()
        self.num_nodes, self.in_features, self.hidden_size = num_nodes, in_features, hidden_size
        self.weight1 = nn.Parameter(torch.empty(in_features, num_nodes, hidden_size))
        self.parent_weight1 = (
            nn.Parameter(torch.empty(num_nodes, parent_features, hidden_size)) if parent_features else None
        )
        self.bias1 = nn.Parameter(torch.empty(num_nodes, 1, hidden_size))
        self.weight2 = nn.Parameter(torch.empty(num_nodes, hidden_size, hidden_size))
        self.bias2 = nn.Parameter(torch.empty(num_nodes, 1, hidden_size))
        self.weight_out = nn.Parameter(torch.empty(num_nodes, hidden_size, 1))
        self.bias_out = nn.Parameter(torch.empty(num_nodes, 1, 1))
        self.dropout = nn.Dropout(dropout)

    def activation_elements(self) -> int:
        """Elements per document of one ``[nodes, batch, hidden]`` activation (the backward pass keeps several)."""
        return self.num_nodes * self.hidden_size

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default init, per node: U(+-1/sqrt(fan_in)) for weights and biases."""
        fan_in1 = self.in_features + (self.parent_weight1.shape[1] if self.parent_weight1 is not None else 0)
        for params, fan_in in (
            ((self.weight1, self.parent_weight1, self.bias1), fan_in1),
            ((self.weight2, self.bias2), self.hidden_size),
            ((self.weight_out, self.bias_out), self.hidden_size),
        ):
            bound = fan_in**-0.5
            for p in params:
                if p is not None:
                    init.uniform_(p, -bound, bound)

    def forward(self, doc: torch.Tensor, parent_hidden: torch.Tensor | None = None):
        """``doc``: ``[batch, in]``; ``parent_hidden``: ``[nodes, batch, parent_features]`` (THMM).

        Returns ``(logits [batch, nodes], h2 [nodes, batch, hidden])``.
        """
        batch = doc.shape[0]
        h1 = (doc @ self.weight1.reshape(self.in_features, -1)).view(batch, self.num_nodes, -1).transpose(0, 1)
        if self.parent_weight1 is not None:
            if parent_hidden is None:
                raise ValueError("THMM level heads need their parents' hidden states")
            h1 = torch.baddbmm(h1, parent_hidden, self.parent_weight1)
        h1 = relu_dropout(h1 + self.bias1, self.dropout)
        h2 = relu_dropout(torch.baddbmm(self.bias2, h1, self.weight2), self.dropout)
        logits = torch.baddbmm(self.bias_out, h2, self.weight_out)  # [nodes, batch, 1]
        return logits.squeeze(-1).transpose(0, 1), h2


class SharedLevelHeads(nn.Module):
    """The heads of one level below the subclass (main groups, subgroups: thousands of nodes), at a
    cost that grows by one output row per node: the level shares its two hidden layers, and each
    node scores the shared state with its own output row and bias::

        TMM:   h = relu(W2 relu(W1 x + b1) + b2);                    logit_j = h . w_out[j] + b_out[j]
        THMM:  h_p = relu(W2 relu(W1 x + P1 g_p + b1) + b2) per parent p; logit_j = h_{p(j)} . w_out[j] + b_out[j]

    In THMM the hidden state is computed once per parent node ``p`` from the document vector and the
    parent's own hidden state ``g_p`` (its head's second hidden layer, as in the paper's parent
    link), with weights shared across the level; every child of ``p`` reads that parent-conditioned
    state. A level that is itself a parent level (main groups under depth 5) hands each node
    ``h_{p(j)} + e_j`` to its children, ``e_j`` a learned per-node embedding, so that siblings
    differ. ``weight_out`` is stored ``[nodes, hidden, 1]`` and ``bias_out`` ``[nodes, 1, 1]``, as
    :class:`LevelHeads` stores them.
    """

    def __init__(self, num_nodes: int, in_features: int, hidden_size: int, dropout: float, parent_features: int = 0,
                 node_states: bool = False):
        super().__init__()
        self.num_nodes, self.in_features, self.hidden_size = num_nodes, in_features, hidden_size
        self.weight1 = nn.Parameter(torch.empty(in_features, hidden_size))
        self.parent_weight1 = nn.Parameter(torch.empty(parent_features, hidden_size)) if parent_features else None
        self.bias1 = nn.Parameter(torch.empty(hidden_size))
        self.weight2 = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias2 = nn.Parameter(torch.empty(hidden_size))
        self.weight_out = nn.Parameter(torch.empty(num_nodes, hidden_size, 1))
        self.bias_out = nn.Parameter(torch.empty(num_nodes, 1, 1))
        self.node_embedding = nn.Parameter(torch.empty(num_nodes, 1, hidden_size)) if node_states else None
        self.dropout = nn.Dropout(dropout)

    def activation_elements(self) -> int:
        """Elements per document of its largest activation: THMM's per-node states, or the shared layers."""
        return self.hidden_size * (self.num_nodes if self.parent_weight1 is not None else 1)

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default init: U(+-1/sqrt(fan_in)); node embeddings start at 0."""
        fan_in1 = self.in_features + (self.parent_weight1.shape[0] if self.parent_weight1 is not None else 0)
        for params, fan_in in (((self.weight1, self.parent_weight1, self.bias1), fan_in1),
                               ((self.weight2, self.bias2, self.weight_out, self.bias_out), self.hidden_size)):
            bound = fan_in**-0.5
            for p in params:
                if p is not None:
                    init.uniform_(p, -bound, bound)
        if self.node_embedding is not None:
            init.zeros_(self.node_embedding)

    def forward(self, doc: torch.Tensor, parent_hidden: torch.Tensor | None = None,
                child_slot: torch.Tensor | None = None):
        """``doc``: ``[batch, in]``; THMM: ``parent_hidden`` ``[parents, batch, parent_features]`` (one
        row per distinct parent) and ``child_slot`` ``[nodes]`` (each node's parent row).

        Returns ``(logits [batch, nodes], states [nodes, batch, hidden] or None)``: the states its
        children read (THMM with ``node_states`` only)."""
        h1 = doc @ self.weight1 + self.bias1  # [batch, hidden]
        if self.parent_weight1 is None:
            h2 = relu_dropout(relu_dropout(h1, self.dropout) @ self.weight2 + self.bias2, self.dropout)
            logits = h2 @ self.weight_out.squeeze(-1).T + self.bias_out.view(1, -1)
            return logits, None
        if parent_hidden is None or child_slot is None:
            raise ValueError("THMM level heads need their parents' hidden states")
        h1 = relu_dropout(h1.unsqueeze(0) + parent_hidden @ self.parent_weight1, self.dropout)  # [parents, batch, hidden]
        h2 = relu_dropout(h1 @ self.weight2 + self.bias2, self.dropout)
        per_node = h2.index_select(0, child_slot)  # [nodes, batch, hidden]: each node reads its parent's state
        logits = torch.baddbmm(self.bias_out, per_node, self.weight_out).squeeze(-1).transpose(0, 1)
        states = per_node + self.node_embedding if self.node_embedding is not None else None
        return logits, states


class HierarchicalHeads(nn.Module):
    """TMM / THMM heads for every node, one module per taxonomy level: :class:`LevelHeads` (the paper's
    per-node heads) for sections, classes and subclasses, and below them (main groups, subgroups)
    ``deep_heads``: ``"shared"`` (:class:`SharedLevelHeads`) or ``"per_node"`` (:class:`LevelHeads`
    of width ``deep_hidden_size``)."""

    def __init__(self, taxonomy: Taxonomy, in_features: int, hidden_size: int, dropout: float, parent_links: bool,
                 deep_heads: str = "shared", deep_hidden_size: int = 128):
        super().__init__()
        self.parent_links = parent_links
        slices = taxonomy.level_slices
        parent_index = taxonomy.parent_index
        self.shared = [depth >= DEEP_LEVEL - 1 and deep_heads == "shared" for depth in range(len(slices))]
        levels, width = [], 0
        for depth, s in enumerate(slices):
            parent_features = width if (parent_links and depth > 0) else 0
            width = hidden_size if depth < DEEP_LEVEL - 1 else deep_hidden_size
            if self.shared[depth]:
                # the next level reads per-node states of this one (THMM): e_j tells siblings apart
                states = parent_links and depth + 1 < len(slices)
                levels.append(SharedLevelHeads(s.stop - s.start, in_features, width, dropout, parent_features, states))
            else:
                levels.append(LevelHeads(s.stop - s.start, in_features, width, dropout, parent_features))
        self.levels = nn.ModuleList(levels)
        # For each level below the top, the index of each node's parent inside the level above; for a
        # shared level, the distinct parents ("parent_position") and each node's row among them ("child_slot").
        self._parent_positions, self._child_slots = [], []
        for depth, s in enumerate(slices):
            positions = (parent_index[s] - slices[depth - 1].start).tolist() if depth else []
            slots = []
            if self.shared[depth] and positions:
                distinct = sorted(set(positions))
                row = {p: i for i, p in enumerate(distinct)}
                positions, slots = distinct, [row[p] for p in (parent_index[s] - slices[depth - 1].start).tolist()]
            self._parent_positions.append(positions)
            self._child_slots.append(slots)
        for depth, (positions, slots) in enumerate(zip(self._parent_positions, self._child_slots)):
            self.register_buffer(f"parent_position_{depth}", torch.tensor(positions, dtype=torch.long), persistent=False)
            if self.shared[depth]:
                self.register_buffer(f"child_slot_{depth}", torch.tensor(slots, dtype=torch.long), persistent=False)

    def activation_elements(self) -> int:
        """Elements per document of the largest activation one level computes (see :class:`LevelHeads`)."""
        return max(level.activation_elements() for level in self.levels)

    def reset_buffers(self) -> None:
        for depth, (positions, slots) in enumerate(zip(self._parent_positions, self._child_slots)):
            init.copy_(getattr(self, f"parent_position_{depth}"), torch.tensor(positions, dtype=torch.long))
            if self.shared[depth]:
                init.copy_(getattr(self, f"child_slot_{depth}"), torch.tensor(slots, dtype=torch.long))

    def forward(self, doc: torch.Tensor) -> torch.Tensor:
        logits, parent_h2 = [], None
        for depth, level in enumerate(self.levels):
            parent_hidden = None
            if self.parent_links and depth > 0:
                parent_hidden = parent_h2.index_select(0, getattr(self, f"parent_position_{depth}"))
            if self.shared[depth]:
                slot = getattr(self, f"child_slot_{depth}") if self.parent_links else None
                level_logits, parent_h2 = level(doc, parent_hidden, slot)
            else:
                level_logits, parent_h2 = level(doc, parent_hidden)
            logits.append(level_logits)
        return torch.cat(logits, dim=1)


class FlatHead(nn.Module):
    """The flat baselines' classifier: an MLP over the leaves; inner nodes take the max of their children."""

    def __init__(self, taxonomy: Taxonomy, in_features: int, hidden_size: int, dropout: float):
        super().__init__()
        self.num_nodes = len(taxonomy)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden_size, len(taxonomy.leaf_ids))
        # The taxonomy's child index tables (Taxonomy.children_by_level), as buffers.
        self._index_buffers = {"leaf_ids": taxonomy.leaf_ids.tolist()}
        for depth, (parents, children) in enumerate(taxonomy.children_by_level()):
            self._index_buffers[f"parents_{depth}"] = parents.tolist()
            self._index_buffers[f"children_{depth}"] = children.tolist()
        self.num_parent_levels = len(taxonomy.children_by_level())
        for name, values in self._index_buffers.items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    def activation_elements(self) -> int:
        """Elements per document of its largest activation: the node logits, or the hidden layer."""
        return max(self.num_nodes, self.classifier.in_features)

    def reset_buffers(self) -> None:
        for name, values in self._index_buffers.items():
            init.copy_(getattr(self, name), torch.tensor(values, dtype=torch.long))

    def forward(self, doc: torch.Tensor):
        """Returns ``(node_logits [batch, nodes], leaf_logits [batch, leaves])``."""
        leaf_logits = self.classifier(self.mlp(doc))
        logits = leaf_logits.new_full((doc.shape[0], self.num_nodes), float("-inf"))
        logits = logits.index_copy(1, self.leaf_ids, leaf_logits)
        # Taxonomy.fill_from_children's rule: bottom-up, an inner node (-inf so far) takes the max over
        # its children's row of the child table (padded with the node itself).
        for depth in reversed(range(self.num_parent_levels)):
            parents, children = getattr(self, f"parents_{depth}"), getattr(self, f"children_{depth}")
            logits = logits.index_copy(1, parents, logits[:, children].amax(dim=-1))
        return logits, leaf_logits


def pool_encoder_outputs(doc_representation: str, outputs, hidden_states, attention_mask: torch.Tensor,
                         num_summed_layers: int) -> torch.Tensor:
    """What a document representation reads from the encoder's ``outputs``: ``cnn``, the sum of the
    last ``num_summed_layers`` token states (``[batch, tokens, hidden]``, for :class:`CNNDocumentEncoder`);
    ``mean``, the masked mean of the last layer; ``cls``, the pooler output (else the first token's state)."""
    if doc_representation == "cnn":
        return torch.stack(hidden_states[-num_summed_layers:]).sum(0)
    if doc_representation == "mean":
        mask = attention_mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)
        return (outputs.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    pooled = getattr(outputs, "pooler_output", None)
    return pooled if pooled is not None else outputs.last_hidden_state[:, 0]


@torch.no_grad()
def set_output_biases(heads: nn.Module, taxonomy: Taxonomy, priors, from_level: int = 1) -> None:
    """Set each head's output bias to the log-odds of its node's prior (``[nodes]`` probabilities in
    taxonomy order), on the levels from ``from_level`` down; :class:`FlatHead` sets its leaves'. A
    ValueError unless every prior is strictly between 0 and 1."""
    priors = torch.as_tensor(np.asarray(priors, dtype=np.float64))
    if priors.shape != (len(taxonomy),) or not bool(((priors > 0) & (priors < 1)).all()):
        raise ValueError(f"priors must be {len(taxonomy)} probabilities strictly between 0 and 1")
    log_odds = torch.log(priors / (1 - priors)).float()
    if isinstance(heads, FlatHead):
        heads.classifier.bias.copy_(log_odds[heads.leaf_ids.cpu()])
        return
    for depth, (level, nodes) in enumerate(zip(heads.levels, taxonomy.level_slices), start=1):
        if depth >= from_level:
            level.bias_out.copy_(log_odds[nodes].view(-1, 1, 1))
