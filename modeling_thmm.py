# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""PyTorch TMM / THMM / flat models for hierarchical multi-label patent classification.

Pujari, Friedrich and Strötgen, "A Multi-Task Approach to Neural Multi-Label Hierarchical Patent
Classification using Transformers", ECIR 2021.

    text --encoder--> document vector --heads--> one logit per taxonomy node

* The document vector is the encoder's pooler output ("cls"), the masked mean of its last layer
  ("mean"), or a CNN over the sum of its last four layers ("cnn").
* TMM: one binary head per node, Dense(256, ReLU) - Dropout - Dense(256, ReLU) - Dropout - logit.
  The paper's 2-way softmax output equals this single sigmoid logit.
* THMM: as TMM, but each head's first layer also takes its parent head's second hidden layer
  (concatenated to the document vector; Eq. 1 of the paper).
* flat: one leaf-only sigmoid MLP; an inner node scores the max over its children.

The heads of one level are computed together from stacked weights (one GEMM or batched matmul per
layer per level), not as hundreds of per-node modules.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

try:  # relative import when loaded as remote code next to a saved model (trust_remote_code=True)
    from .configuration_thmm import (
        UNFINISHED_MARKER,
        ConfigFieldError,
        THMMConfig,
        Taxonomy,
        ThresholdError,
        Thresholds,
        UnfinishedModelError,
        check_max_length,
        config_file_name,
        looks_like_local_path,
        refuse_unfinished,
    )
except ImportError:  # plain import when installed as a top-level module
    from configuration_thmm import (
        UNFINISHED_MARKER,
        ConfigFieldError,
        THMMConfig,
        Taxonomy,
        ThresholdError,
        Thresholds,
        UnfinishedModelError,
        check_max_length,
        config_file_name,
        looks_like_local_path,
        refuse_unfinished,
    )

__all__ = [
    "HierarchicalClassifierOutput",
    "LevelHeads",
    "HierarchicalHeads",
    "FlatHead",
    "CNNDocumentEncoder",
    "THMMPreTrainedModel",
    "THMMForHierarchicalClassification",
    "TaxonomyMismatchError",
    "UNFINISHED_MARKER",
    "UnfinishedModelError",
    "WeightsError",
    "check_documents",
    "encode_documents",
    "encoder_layer_list",
]


class TaxonomyMismatchError(ValueError):
    """Weights were trained for a different taxonomy than the one they are being loaded into."""


class WeightsError(ValueError):
    """A saved model's weights cannot be used: they are not the tensors its config describes (other
    shapes, tensors the model has no place for, or missing ones), or not finite."""


@dataclass
class HierarchicalClassifierOutput(ModelOutput):
    r"""
    Output of [`THMMForHierarchicalClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Binary cross-entropy over all node heads with equal weights (flat: over the leaves).
        logits (`torch.FloatTensor` of shape `(batch_size, num_nodes)`):
            One logit per taxonomy node, in `config.id2label` order; `sigmoid` gives probabilities.
        document_embedding (`torch.FloatTensor` of shape `(batch_size, doc_dim)`):
            The document vector the heads read.
        hidden_states, attentions: the encoder's, when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    document_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Document representations
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------


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
        h1 = self.dropout(F.relu(h1 + self.bias1))
        h2 = self.dropout(F.relu(torch.baddbmm(self.bias2, h1, self.weight2)))
        logits = torch.baddbmm(self.bias_out, h2, self.weight_out)  # [nodes, batch, 1]
        return logits.squeeze(-1).transpose(0, 1), h2


class HierarchicalHeads(nn.Module):
    """TMM / THMM heads for every node, one :class:`LevelHeads` per taxonomy level."""

    def __init__(self, taxonomy: Taxonomy, in_features: int, hidden_size: int, dropout: float, parent_links: bool):
        super().__init__()
        self.parent_links = parent_links
        slices = taxonomy.level_slices
        self.levels = nn.ModuleList(
            LevelHeads(
                s.stop - s.start,
                in_features,
                hidden_size,
                dropout,
                parent_features=hidden_size if (parent_links and depth > 0) else 0,
            )
            for depth, s in enumerate(slices)
        )
        # For each level below the top, the index of each node's parent inside the level above.
        parent_index = taxonomy.parent_index
        self._parent_positions = [
            (parent_index[s] - slices[depth - 1].start).tolist() if depth else [] for depth, s in enumerate(slices)
        ]
        for depth, positions in enumerate(self._parent_positions):
            self.register_buffer(f"parent_position_{depth}", torch.tensor(positions, dtype=torch.long), persistent=False)

    def reset_buffers(self) -> None:
        for depth, positions in enumerate(self._parent_positions):
            init.copy_(getattr(self, f"parent_position_{depth}"), torch.tensor(positions, dtype=torch.long))

    def forward(self, doc: torch.Tensor) -> torch.Tensor:
        logits, parent_h2 = [], None
        for depth, level in enumerate(self.levels):
            parent_hidden = None
            if self.parent_links and depth > 0:
                parent_hidden = parent_h2.index_select(0, getattr(self, f"parent_position_{depth}"))
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


# --------------------------------------------------------------------------------------------------
# Tokenization shared by training and prediction
# --------------------------------------------------------------------------------------------------


def encode_documents(tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None, max_length: int):
    """Tokenize patents as ``[CLS] title [SEP] abstract [SEP]`` (``[CLS] title [SEP]`` when the
    abstract is empty), truncating the longest part first. Each document is encoded the same way
    whatever else is in the batch. Returns a dict of unpadded lists, plus ``truncated``: per
    document, whether it lost tokens."""
    abstracts = list(abstracts) if abstracts is not None else [""] * len(titles)
    if len(abstracts) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(abstracts)} abstracts")
    with_abstract = [i for i, a in enumerate(abstracts) if a]
    title_only = [i for i, a in enumerate(abstracts) if not a]
    encoded: dict[str, list] = {}
    truncated = [False] * len(titles)
    for group, pair in ((with_abstract, True), (title_only, False)):
        if not group:
            continue
        first = [titles[i] for i in group]
        second = [abstracts[i] for i in group] if pair else None
        enc = tokenizer(first, second, truncation="longest_first", max_length=max_length)
        full = tokenizer(first, second, truncation=False, add_special_tokens=True)
        for i, a, b in zip(group, full["input_ids"], enc["input_ids"]):
            truncated[i] = len(a) > len(b)
        for key, values in enc.items():
            column = encoded.setdefault(key, [None] * len(titles))
            for i, v in zip(group, values):
                column[i] = v
    encoded["truncated"] = truncated
    return encoded


def document_problem(title, abstract) -> str | None:
    """Why one document cannot be classified, or ``None``: its title and abstract must be strings,
    not both empty or blank (the model would score an empty text like any other)."""
    for field, value in (("title", title), ("abstract", abstract)):
        if not isinstance(value, str):
            return f"field {field!r}: expected a string, got {type(value).__name__}"
    if not title.strip() and not abstract.strip():
        return "fields 'title' and 'abstract': empty document"
    return None


def check_documents(titles: Sequence[str], abstracts: Sequence[str] | None = None) -> list[str]:
    """The abstracts (``""`` each when ``None``), once every document can be classified
    (:func:`document_problem`); a ValueError naming the first bad document's index otherwise."""
    for name, texts in (("titles", titles), ("abstracts", abstracts)):
        if texts is not None and (isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__")):
            raise ValueError(f"{name}: expected a list of strings, got {type(texts).__name__}")
    abstracts = [""] * len(titles) if abstracts is None else list(abstracts)
    if len(abstracts) != len(titles):
        raise ValueError(f"{len(titles)} titles but {len(abstracts)} abstracts")
    for i, (title, abstract) in enumerate(zip(titles, abstracts)):
        if (problem := document_problem(title, abstract)) is not None:
            raise ValueError(f"document {i}: {problem}")
    return abstracts


def longest_first(lengths) -> np.ndarray:
    """Document indices, longest first (stable): batches cut from this order pad little, and the
    largest batch comes first. Callers put results back by index."""
    return np.argsort(-np.asarray(lengths), kind="stable")


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def encoder_layer_list(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers, lowest first (BERT-family layout: ``encoder.layer``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "embeddings"):
        raise ValueError(f"{type(encoder).__name__} has no embeddings and encoder.layer list; freezing its lower "
                         "layers needs a BERT-family encoder")
    return layers


class _StatesAsEmbeddings(nn.Module):
    """Stands in for the embeddings of a top-layers view: its ``inputs_embeds`` are cached token states."""

    def forward(self, inputs_embeds=None, **kwargs):
        return inputs_embeds


def _layers_view(encoder: nn.Module, layers: slice, embeddings: nn.Module | None = None) -> nn.Module:
    """The encoder with only ``layers`` of its transformer layers (and ``embeddings`` in place of its
    own, when given), sharing every parameter with it, run through the encoder's own forward so that
    the attention mask is built exactly as for a whole-encoder run. Not registered as a submodule:
    nothing is saved twice."""
    inner = copy.copy(encoder.encoder)
    inner._modules = {**inner._modules, "layer": nn.ModuleList(list(encoder_layer_list(encoder))[layers])}
    view = copy.copy(encoder)
    view._modules = {**encoder._modules, "encoder": inner}
    if embeddings is not None:
        view._modules["embeddings"] = embeddings
    return view


def _top_layers_view(encoder: nn.Module, num_lower_layers: int) -> nn.Module:
    """``view(inputs_embeds=states)`` runs the layers above ``num_lower_layers`` (and the pooler) on
    the output states of layer ``num_lower_layers``."""
    return _layers_view(encoder, slice(num_lower_layers, None), embeddings=_StatesAsEmbeddings())


def _sync_training(view: nn.Module, encoder: nn.Module) -> None:
    """A view's shallow copies keep the mode they were made in: give them the encoder's."""
    view.training = view.encoder.training = encoder.training


class THMMPreTrainedModel(PreTrainedModel):
    config: THMMConfig
    config_class = THMMConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, LevelHeads):
            module.reset_parameters()
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            fan_in = module.weight[0].numel()
            bound = fan_in**-0.5
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (HierarchicalHeads, FlatHead)):
            module.reset_buffers()
        elif isinstance(module, LexicalScorer):  # fitted, not trained: zero until loaded or set
            for buffer in (module.idf, module.weight, module.bias):
                init.zeros_(buffer)
        elif isinstance(module, THMMForHierarchicalClassification):
            init.copy_(module.taxonomy_fingerprint, _fingerprint_tensor(module.config.get_taxonomy()))


def _fingerprint_tensor(taxonomy: Taxonomy) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(taxonomy.fingerprint)), dtype=torch.uint8)


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def read_safetensors_header(path) -> tuple[dict, int]:
    """The header of a safetensors file (tensor name -> ``dtype``, ``shape``, ``data_offsets``) and the
    offset where its data starts, once the file is known to be complete; an ``OSError`` naming the
    file otherwise (a truncated download or an interrupted save)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
        raw = f.read(length) if 8 + length <= size else b""
    try:
        header = json.loads(raw)
        end = 8 + length + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        problem = None if end == size else f"it has {size} bytes where its header describes {end}"
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        problem = f"its header is cut off or damaged ({size} bytes)"
    if problem:
        raise OSError(f"{path}: not a complete safetensors file: {problem}; save or download it again")
    return header, 8 + length


def _safetensors_files(name_or_path, hub_kwargs: dict) -> list[str]:
    """The local paths of a saved model's safetensors files (every shard), downloading them if needed."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    def find(filename, required=False):
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=required, **hub_kwargs)

    index = find(SAFE_WEIGHTS_INDEX_NAME)
    if index:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [find(shard, required=True) for shard in shards]
    single = find(SAFE_WEIGHTS_NAME)
    return [single] if single else []


def _expected_shapes(cls, config: THMMConfig, config_source: str) -> dict[str, tuple]:
    """Every tensor the model of ``config`` saves, with its shape (built on the meta device: nothing allocated)."""
    try:
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError) as err:
        raise ValueError(f"{config_source}: describes no model that can be built ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def _check_weights_match_config(cls, name_or_path, config: THMMConfig, config_source: str,
                                hub_kwargs: dict) -> dict[str, str]:
    """Before transformers loads anything: every safetensors file of ``name_or_path`` is complete, its
    taxonomy fingerprint is the config's (else :class:`TaxonomyMismatchError`), and it holds exactly
    the tensors the config's model has, in their shapes (else :class:`WeightsError`: a
    ``head_type`` edited from thmm to tmm would silently drop the parent links). Each error names
    the file. Returns the file of every tensor."""
    files = _safetensors_files(name_or_path, hub_kwargs)
    if not files:
        return {}
    expected = _expected_shapes(cls, config, config_source)
    file_of = {}
    for file in files:
        header, data_start = read_safetensors_header(file)
        _check_fingerprint(file, header, data_start, config.get_taxonomy(), config_source)
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            file_of[key] = file
            if key in expected and tuple(tensor["shape"]) != expected[key]:
                raise WeightsError(
                    f"{file}: tensor {key!r} has shape {tuple(tensor['shape'])} but {config_source} gives it "
                    f"{expected[key]}: the weights do not match the config (head_type, head_hidden_size, "
                    "doc_representation or encoder_config differ)"
                )
    _check_same_tensors(file_of, expected, config, config_source, files)
    return file_of


def _check_fingerprint(file, header: dict, data_start: int, taxonomy: Taxonomy, config_source: str) -> None:
    entry = header.get("taxonomy_fingerprint")
    if entry is None:
        return
    start, stop = entry["data_offsets"]
    with open(file, "rb") as f:
        f.seek(data_start + start)
        saved = f.read(stop - start)
    if saved != bytes.fromhex(taxonomy.fingerprint):
        heads = [k for k in header if k.startswith("heads.") and k.endswith(("bias_out", "classifier.bias"))]
        outputs = sum(header[k]["shape"][0] for k in heads)
        raise TaxonomyMismatchError(
            f"{file}: these weights were trained for another taxonomy than the {len(taxonomy)} nodes of "
            f"{config_source} (their heads have {outputs} outputs); load them with their own config.json"
        )


def _check_same_tensors(file_of: dict, expected: dict, config: THMMConfig, config_source: str, files) -> None:
    """The weights hold every tensor the config's model has, and no other (the fingerprint may be
    absent from older files)."""
    unexpected = sorted(set(file_of) - set(expected))
    missing = sorted(set(expected) - set(file_of) - {"taxonomy_fingerprint"})
    if not unexpected and not missing:
        return
    found = [f"{len(unexpected)} tensors it has no place for (e.g. {', '.join(unexpected[:3])})"] if unexpected else []
    found += [f"{len(missing)} tensors it needs are missing (e.g. {', '.join(missing[:3])})"] if missing else []
    file = file_of[unexpected[0]] if unexpected else files[0]
    raise WeightsError(
        f"{file}: the weights do not match {config_source} (head_type {config.head_type!r}, doc_representation "
        f"{config.doc_representation!r}, lexical_vocab_size {config.lexical_vocab_size}): {'; '.join(found)}; "
        "head_type and the other settings must match the tensors: load them with the config.json saved with them"
    )


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite: a sum is (one pass, nothing allocated) unless one is not, or the
    sum overflows, which the element-wise check then tells apart."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_finite(model: nn.Module, file_of: dict, weights: str) -> None:
    """Every floating-point weight and buffer of a loaded model is finite; else a WeightsError
    naming the file and the tensor (NaN weights would give NaN scores and empty predictions)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not _finite(tensor):
            raise WeightsError(f"{file_of.get(name, weights)}: tensor {name!r} holds NaN or infinite values; "
                               "the weights are damaged: save or download them again")


class THMMForHierarchicalClassification(THMMPreTrainedModel):
    """A shared pre-trained encoder with one classification head per taxonomy node (TMM / THMM), or
    the flat leaf-only baseline. Build one with :meth:`from_encoder`; load a trained one with
    ``from_pretrained`` (or ``AutoModel.from_pretrained``)."""

    def __init__(self, config: THMMConfig):
        super().__init__(config)
        taxonomy = config.get_taxonomy()
        self.encoder = AutoModel.from_config(config.encoder_config)
        hidden = config.encoder_config.hidden_size
        if config.doc_representation == "cnn":
            self.cnn = CNNDocumentEncoder(hidden, config.cnn_num_filters, config.cnn_kernel_sizes)
            doc_size = self.cnn.output_size
        else:
            self.cnn = None
            doc_size = hidden
        if config.head_type == "flat":
            self.heads = FlatHead(taxonomy, doc_size, config.flat_hidden_size, config.head_dropout)
        else:
            self.heads = HierarchicalHeads(
                taxonomy, doc_size, config.head_hidden_size, config.head_dropout, parent_links=config.head_type == "thmm"
            )
        self.lexical = LexicalScorer(config.lexical_vocab_size, len(taxonomy)) if config.lexical_vocab_size else None
        # Saved with the weights, so that weights meet the taxonomy they were trained for.
        self.register_buffer("taxonomy_fingerprint", _fingerprint_tensor(taxonomy))
        self.register_load_state_dict_pre_hook(self._check_state_dict_fingerprint)
        self.frozen_lower_layers = 0  # see freeze_lower_layers (a training mode, not saved)
        self._top_layers = self._lower_layers = None
        self.post_init()

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        taxonomy: Taxonomy,
        encoder_kwargs: dict | None = None,
        **config_kwargs,
    ) -> THMMForHierarchicalClassification:
        """Pre-trained encoder weights (a Hub name or a local directory) plus freshly initialised heads.

        Example:
            >>> model = THMMForHierarchicalClassification.from_encoder(
            ...     "allenai/scibert_scivocab_uncased", Taxonomy.from_codes(codes), head_type="thmm")
        """
        encoder = AutoModel.from_pretrained(encoder_name_or_path, **(encoder_kwargs or {}))
        config = THMMConfig(
            encoder_name_or_path=str(encoder_name_or_path),
            encoder_config=encoder.config.to_dict(),
            taxonomy=taxonomy,
            **config_kwargs,
        )
        model = cls(config)
        model.encoder = encoder
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, allow_unfinished: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained` (every standard keyword works), refusing a saved model that
        is not whole before anything is loaded: a config.json field no model can be built from
        (:class:`ConfigFieldError`), weights of another taxonomy (:class:`TaxonomyMismatchError`),
        of other tensors or shapes, or not finite (:class:`WeightsError`). Each error is
        one line naming the file.

        A folder holding :data:`UNFINISHED_MARKER` (an unfinished training run's model) is refused
        with an :class:`UnfinishedModelError` saying how to finish the run; the trainer, which writes
        it, loads it with ``allow_unfinished=True``."""
        name, subfolder = pretrained_model_name_or_path, kwargs.get("subfolder", "")
        if isinstance(name, (str, os.PathLike)):
            name = os.fspath(name)
            if not os.path.exists(os.path.expanduser(name)) and looks_like_local_path(name):
                raise OSError(f"{name}: no such directory")
            if not allow_unfinished:
                refuse_unfinished(name, subfolder)
        file_of = cls._check_saved_model(name, kwargs) if name is not None and kwargs.get("state_dict") is None else {}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        if not torch.equal(model.taxonomy_fingerprint.cpu(), _fingerprint_tensor(model.config.get_taxonomy())):
            raise TaxonomyMismatchError(
                f"the weights in {name} were trained for a different taxonomy than the one in the config they are "
                "loaded with; load them with their own config.json"
            )
        _check_finite(model, file_of, f"the weights of {name}" if name else "the state dict")
        return loaded

    @classmethod
    def _check_saved_model(cls, name, kwargs: dict) -> dict[str, str]:
        """The checks ``from_pretrained`` makes before transformers loads anything: the config (the
        one passed, else config.json) can build a model, and the weights files match it. Returns
        the file of every tensor."""
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config = kwargs.get("config")
        saved_source = config_file_name(name, hub_kwargs.get("subfolder", ""))
        if isinstance(config, PretrainedConfig):  # (a THMMConfig, maybe of the folder's own code)
            saved = THMMConfig.from_pretrained(name, **hub_kwargs)
            _check_same_taxonomy(saved.get_taxonomy(), config.get_taxonomy(), str(name))
            source = saved_source if config.to_dict() == saved.to_dict() else "the config passed"
        else:  # config.json, or the folder or file given as config
            source = saved_source if config is None else config_file_name(config)
            config = THMMConfig.from_pretrained(name if config is None else config, **hub_kwargs)
        if config.taxonomy is None:
            raise ConfigFieldError("taxonomy", "must be given: the model has one head per taxonomy node", None, source)
        return _check_weights_match_config(cls, name, config, source, hub_kwargs)

    def _check_state_dict_fingerprint(self, module, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "taxonomy_fingerprint")
        if incoming is not None and not torch.equal(incoming.cpu(), self.taxonomy_fingerprint.cpu()):
            raise TaxonomyMismatchError(
                "this state dict was trained for a different taxonomy than this model's "
                f"({len(self.config.id2label)} nodes, fingerprint {self.config.get_taxonomy().fingerprint[:12]}); "
                "build the model from the checkpoint's own config"
            )

    @property
    def taxonomy(self) -> Taxonomy:
        return self.config.get_taxonomy()

    # ---- saving -----------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, with the pipeline of ``pipeline_thmm.py``: config.json
        names it in ``custom_pipelines``, and the file is copied with the other code files (it is a
        relative import of this one), so ``pipeline(model=dir, trust_remote_code=True)`` picks it."""
        try:
            from .pipeline_thmm import add_pipeline_to_config
        except ImportError:
            from pipeline_thmm import add_pipeline_to_config
        add_pipeline_to_config(self.config)
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ---- forward ----------------------------------------------------------------------------

    @property
    def needs_token_states(self) -> bool:
        return self.config.doc_representation == "cnn"

    @torch.no_grad()
    def init_output_biases(self, priors) -> None:
        """Set each head's output bias to the log-odds of its node's prior (``[nodes]`` probabilities in
        taxonomy order, e.g. training-set frequencies), so that training starts from the label
        frequencies instead of 0.5 for every node. Flat models set their leaves' biases."""
        taxonomy = self.taxonomy
        priors = torch.as_tensor(np.asarray(priors, dtype=np.float64))
        if priors.shape != (len(taxonomy),) or not bool(((priors > 0) & (priors < 1)).all()):
            raise ValueError(f"priors must be {len(taxonomy)} probabilities strictly between 0 and 1")
        log_odds = torch.log(priors / (1 - priors)).float()
        if isinstance(self.heads, FlatHead):
            self.heads.classifier.bias.copy_(log_odds[self.heads.leaf_ids.cpu()])
            return
        for level, nodes in zip(self.heads.levels, taxonomy.level_slices):
            level.bias_out.copy_(log_odds[nodes].view(-1, 1, 1))

    @torch.no_grad()
    def set_lexical_scorer(self, idf, weight, bias, fusion_weight: float, scale: float, shift: float) -> None:
        """Install a fitted lexical scorer (``idf [vocab]``, ``weight [vocab, nodes]``, ``bias [nodes]``;
        ``thmm.lexical.fit_lexical_scorer``) and its fusion settings, in the module and the config."""
        idf, weight, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (idf, weight, bias))
        vocab, nodes = weight.shape
        if nodes != len(self.taxonomy) or idf.shape != (vocab,) or bias.shape != (nodes,):
            raise ValueError(f"a lexical scorer needs idf [vocab], weight [vocab, {len(self.taxonomy)}] and bias "
                             f"[{len(self.taxonomy)}], got {tuple(idf.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
        values = {"lexical_vocab_size": int(vocab), "lexical_weight": float(fusion_weight),
                  "lexical_scale": float(scale), "lexical_shift": float(shift)}
        type(self.config)(**{**self.config.to_dict(), **values})  # validated before anything changes
        for key, value in values.items():
            setattr(self.config, key, value)
        device = self.taxonomy_fingerprint.device
        self.lexical = LexicalScorer(vocab, nodes).to(device)
        for name, value in (("idf", idf), ("weight", weight), ("bias", bias)):
            getattr(self.lexical, name).copy_(value)

    def freeze_lower_layers(self, num_layers: int) -> None:
        """Freeze the encoder's embeddings and its lowest ``num_layers`` layers, so that their output
        token states (:meth:`lower_layer_states`) can be computed once and cached; ``forward`` then
        takes them as ``lower_layer_states`` and runs only the top layers, the document vector and
        the heads. Raises ValueError when the encoder has no more than ``num_layers`` layers, or when
        the CNN would sum a layer that is frozen below the cached one."""
        layers = encoder_layer_list(self.encoder)
        if not 1 <= num_layers < len(layers):
            raise ValueError(f"the encoder has {len(layers)} layers: freeze between 1 and {len(layers) - 1} "
                             f"(got {num_layers}; freezing all of them is frozen-encoder mode)")
        summed = self.config.cnn_num_summed_layers
        if self.needs_token_states and num_layers > len(layers) - summed + 1:
            raise ValueError(f"the CNN sums the last {summed} of {len(layers)} layers, so at most "
                             f"{len(layers) - summed + 1} can be frozen (got {num_layers})")
        for module in (self.encoder.embeddings, *list(layers)[:num_layers]):
            module.requires_grad_(False)
        self.frozen_lower_layers = num_layers
        # a plain attribute, not a submodule: its parameters are the encoder's, saved once
        object.__setattr__(self, "_top_layers", _top_layers_view(self.encoder, num_layers))
        # the embeddings and the frozen layers alone: building the cache skips the layers above them
        object.__setattr__(self, "_lower_layers", _layers_view(self.encoder, slice(num_layers)))

    def lower_layer_states(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """``[batch, tokens, hidden]``: the output of the lowest ``frozen_lower_layers`` layers (what
        the lower-layer cache holds), computed by the embeddings and those layers only."""
        if not self.frozen_lower_layers:
            raise ValueError("call freeze_lower_layers(n) first")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        _sync_training(self._lower_layers, self.encoder)
        outputs = self._lower_layers(input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                     return_dict=True, **extra, **kwargs)
        return outputs.hidden_states[self.frozen_lower_layers]

    def encoder_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """What the document representation reads from the encoder: ``[batch, hidden]`` for
        ``cls``/``mean``, ``[batch, tokens, hidden]`` summed token states for ``cnn``. Frozen-encoder
        training caches exactly this."""
        return self._encode(input_ids, attention_mask, token_type_ids, **kwargs)[0]

    def _encode(self, input_ids, attention_mask, token_type_ids, lower_layer_states=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids if lower_layer_states is None else lower_layer_states[..., 0],
                                             dtype=torch.long)
        encoder_kwargs = {"attention_mask": attention_mask, "return_dict": True, **kwargs}
        if token_type_ids is not None and lower_layer_states is None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        if self.needs_token_states:
            encoder_kwargs["output_hidden_states"] = True
        if lower_layer_states is None:
            outputs = self.encoder(input_ids, **encoder_kwargs)
            hidden_states = outputs.hidden_states
        else:  # cached output of the frozen lower layers: run the top layers only
            if self._top_layers is None:
                raise ValueError("lower_layer_states needs freeze_lower_layers(n) first")
            _sync_training(self._top_layers, self.encoder)
            outputs = self._top_layers(inputs_embeds=lower_layer_states, **encoder_kwargs)
            # the view's states start at its input, layer n's output: put back the n states below it
            hidden_states = outputs.hidden_states and (None,) * self.frozen_lower_layers + outputs.hidden_states
        rep = self.config.doc_representation
        if rep == "cnn":
            features = torch.stack(hidden_states[-self.config.cnn_num_summed_layers :]).sum(0)
        elif rep == "mean":
            mask = attention_mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)
            features = (outputs.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = getattr(outputs, "pooler_output", None)
            features = pooled if pooled is not None else outputs.last_hidden_state[:, 0]
        return features, outputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_features: torch.Tensor | None = None,
        lower_layer_states: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        fuse_lexical: bool = True,
        **kwargs,
    ) -> HierarchicalClassifierOutput | tuple:
        r"""
        labels (`torch.FloatTensor` of shape `(batch_size, num_nodes)`, *optional*):
            0/1 targets per node, already expanded with ancestors (`Taxonomy.multi_hot`).
        encoder_features (`torch.FloatTensor`, *optional*):
            Precomputed output of :meth:`encoder_features` (frozen-encoder training); replaces
            `input_ids`. For `cnn`, pass the matching `attention_mask`.
        lower_layer_states (`torch.FloatTensor` of shape `(batch_size, tokens, hidden)`, *optional*):
            Cached output of the frozen lower layers (:meth:`lower_layer_states`, after
            :meth:`freeze_lower_layers`); replaces `input_ids`, with the matching `attention_mask`.
        fuse_lexical (`bool`, *optional*, defaults to `True`):
            With a lexical scorer (`config.lexical_weight > 0`), fuse its scores into `logits`
            (:func:`fuse_lexical_logits`); it reads `input_ids`, so cached `encoder_features` or
            `lower_layer_states` alone need `fuse_lexical=False` (the heads' logits alone).
        """
        fuse = fuse_lexical and self.lexical is not None and self.config.lexical_weight > 0
        if fuse and input_ids is None:
            raise ValueError("this model fuses lexical scores, which read input_ids: pass input_ids (with "
                             "attention_mask), or fuse_lexical=False for the heads' logits alone")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = None
        if encoder_features is None:
            if input_ids is None and lower_layer_states is None:
                raise ValueError("pass input_ids (or precomputed encoder_features or lower_layer_states)")
            extra = {}
            if output_hidden_states:
                extra["output_hidden_states"] = True
            if output_attentions:
                extra["output_attentions"] = True
            encoder_features, outputs = self._encode(input_ids, attention_mask, token_type_ids, lower_layer_states,
                                                     **extra, **kwargs)
        if self.cnn is not None:
            if attention_mask is None:
                attention_mask = encoder_features.new_ones(encoder_features.shape[:2], dtype=torch.long)
            doc = self.cnn(encoder_features, attention_mask)
        else:
            doc = encoder_features

        loss = None
        if self.config.head_type == "flat":
            logits, leaf_logits = self.heads(doc)
            if labels is not None:
                leaf_labels = labels.index_select(1, self.heads.leaf_ids).to(leaf_logits.dtype)
                loss = self.node_loss(leaf_logits, leaf_labels)
        else:
            logits = self.heads(doc)
            if labels is not None:
                loss = self.node_loss(logits, labels.to(logits.dtype))
        if fuse:  # after the loss: the lexical scorer is fitted outside backpropagation
            cfg = self.config
            decisions = self.lexical(input_ids, attention_mask).to(logits.dtype)
            logits = fuse_lexical_logits(logits, decisions, cfg.lexical_weight, cfg.lexical_scale, cfg.lexical_shift)

        output = HierarchicalClassifierOutput(
            loss=loss,
            logits=logits,
            document_embedding=doc,
            hidden_states=outputs.hidden_states if (outputs is not None and output_hidden_states) else None,
            attentions=outputs.attentions if (outputs is not None and output_attentions) else None,
        )
        return output if return_dict else output.to_tuple()

    def node_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over documents and heads, every head weighted equally: binary cross-entropy (the
        paper's), or focal loss ``(1 - p_t)^gamma * BCE`` with ``config.loss_type="focal"``."""
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none" if self.config.loss_type == "focal"
                                                 else "mean")
        if self.config.loss_type != "focal":
            return bce
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        return ((1 - p_t).pow(self.config.focal_gamma) * bce).mean()

    # ---- decoding ---------------------------------------------------------------------------

    def scores_for_decoding(self, probabilities, consistent: bool | None = None) -> np.ndarray:
        """Node probabilities as numpy, made consistent (no child above its parent,
        ``Taxonomy.min_along_path``) when ``consistent`` (default: ``config.consistent_scores``)."""
        if isinstance(probabilities, torch.Tensor):
            probabilities = probabilities.detach().float().cpu().numpy()
        consistent = self.config.consistent_scores if consistent is None else consistent
        return self.taxonomy.min_along_path(probabilities) if consistent else np.asarray(probabilities)

    def check_decoding(self, threshold=None, top_k: int | None = None, at_least_one: bool = False,
                       consistent: bool | None = None) -> Thresholds | None:
        """The decoding options of :meth:`decode`, :meth:`predict` and the pipeline, checked before
        any work; ``threshold`` as :class:`Thresholds` (``None``: the config's). A ValueError names
        the option: thresholds are probabilities in [0, 1] (one per taxonomy level when a list), top_k
        is at least 1, at_least_one and consistent are booleans (consistent may be ``None``)."""
        if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"top_k: must be an integer of at least 1 (got {top_k!r})")
        for option, value in (("at_least_one", at_least_one), ("consistent", consistent)):
            if not isinstance(value, bool) and not (option == "consistent" and value is None):
                raise ValueError(f"{option}: must be True or False (got {value!r})")
        if threshold is None:
            return None
        try:
            thresholds = Thresholds.coerce(threshold)
        except ThresholdError as err:  # Thresholds' names: global_threshold, per_level[1]
            index = err.where[err.where.find("["):] if "[" in err.where else ""
            raise ValueError(f"threshold{index}: {err.rule} (got {err.value!r})") from None
        thresholds.for_nodes(self.taxonomy)  # one per level, when a list
        return thresholds

    def decode(
        self,
        probabilities,
        threshold: Thresholds | float | Sequence[float] | None = None,
        top_k: int | None = None,
        at_least_one: bool = False,
        consistent: bool | None = None,
    ) -> list[list[str]]:
        """Label sets from node probabilities; see :meth:`Taxonomy.decode`. ``threshold`` defaults
        to the config's (per-level when tuned); ``consistent`` to ``config.consistent_scores``."""
        threshold = self.check_decoding(threshold, top_k, at_least_one, consistent) or self.config.thresholds
        probabilities = self.scores_for_decoding(probabilities, consistent)
        return self.taxonomy.decode(probabilities, threshold=threshold, top_k=top_k, at_least_one=at_least_one)

    def check_tokenizer(self, tokenizer, where: str | None = None) -> None:
        """A ValueError naming ``where`` (default: the tokenizer's folder) when ``tokenizer`` has more
        word-pieces than the model's tables have rows (the encoder's embeddings, the lexical scorer's
        vocabulary): its ids past them would index out of range. Use the tokenizer saved with the model."""
        if tokenizer is None:
            raise ValueError(f"{where or self.name_or_path or 'the model'}: no tokenizer; use the one saved with the "
                             "model (AutoTokenizer.from_pretrained of its folder)")
        tables = {"encoder embeddings": self.encoder.get_input_embeddings().num_embeddings}
        if self.lexical is not None:
            tables["lexical scorer"] = self.lexical.idf.shape[0]
        table, rows = min(tables.items(), key=lambda item: item[1])
        if len(tokenizer) > rows:
            where = where or getattr(tokenizer, "name_or_path", None) or "the tokenizer"
            raise ValueError(f"{where}: the tokenizer has {len(tokenizer)} word-pieces, more than the {rows} rows of "
                             f"this model's {table}: it is not the model's tokenizer (use the one saved with it)")

    @torch.no_grad()
    def predict_proba(self, tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None = None,
                      batch_size: int = 32, max_length: int | None = None, return_truncated: bool = False):
        """Node probabilities ``[documents, nodes]`` for raw patent texts; with ``return_truncated``,
        also a per-document flag telling which texts were cut to ``max_length`` word-pieces. A
        ValueError names a bad argument or the index of a bad document (not a string, or empty)."""
        abstracts = check_documents(titles, abstracts)
        self._check_batching(batch_size, max_length)
        self.check_tokenizer(tokenizer)
        if len(titles) == 0:
            empty = np.zeros((0, len(self.taxonomy)), dtype=np.float32)
            return (empty, []) if return_truncated else empty
        was_training = self.training
        self.eval()
        enc = encode_documents(tokenizer, list(titles), abstracts, max_length or self.config.max_length)
        truncated = enc.pop("truncated")
        order = longest_first([len(ids) for ids in enc["input_ids"]])
        probs = np.zeros((len(titles), len(self.taxonomy)), dtype=np.float32)
        for start in range(0, len(titles), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in enc.items()}, return_tensors="pt")
            probs[rows] = torch.sigmoid(self(**batch.to(self.device)).logits.float()).cpu().numpy()
        self.train(was_training)
        return (probs, truncated) if return_truncated else probs

    def _check_batching(self, batch_size, max_length) -> None:
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: must be an integer of at least 1 (got {batch_size!r})")
        if max_length is None:
            return
        check_max_length(max_length)
        positions = getattr(self.config.encoder_config, "max_position_embeddings", None)
        if positions and max_length > positions:
            raise ValueError(f"max_length: must be at most the encoder's {positions} positions (got {max_length})")

    def predict(self, tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None = None,
                threshold=None, top_k: int | None = None, at_least_one: bool = False, batch_size: int = 32,
                consistent: bool | None = None):
        """Predicted codes for raw patent texts: per document, a list of
        ``{"code", "score", "level", "title"}`` dicts, ordered by level then score. Bad options
        (see :meth:`check_decoding`) are refused before any work."""
        threshold = self.check_decoding(threshold, top_k, at_least_one, consistent)
        probs = self.predict_proba(tokenizer, titles, abstracts, batch_size=batch_size)
        return self.label_records(probs, threshold=threshold, top_k=top_k, at_least_one=at_least_one,
                                  consistent=consistent)

    def label_records(self, probabilities, threshold=None, top_k: int | None = None, at_least_one: bool = False,
                      consistent: bool | None = None):
        """Decode node probabilities into ``{"code", "score", "level", "title"}`` records per document
        (scores made consistent first when ``consistent``, default ``config.consistent_scores``)."""
        self.check_decoding(threshold, top_k, at_least_one, consistent)
        probabilities = self.scores_for_decoding(probabilities, consistent)
        label_sets = self.decode(probabilities, threshold=threshold, top_k=top_k, at_least_one=at_least_one,
                                 consistent=False)
        taxonomy, titles_map = self.taxonomy, self.config.label_titles or {}
        return [
            [
                {
                    "code": code,
                    "score": float(row[taxonomy.index(code)]),
                    "level": taxonomy.level(code),
                    "title": titles_map.get(code),
                }
                for code in codes
            ]
            for row, codes in zip(probabilities, label_sets)
        ]


def _check_same_taxonomy(saved: Taxonomy, wanted: Taxonomy, where: str) -> None:
    if saved.fingerprint == wanted.fingerprint:  # (their classes may come from two copies of this code)
        return
    missing = sorted(set(saved.nodes) - set(wanted.nodes))
    extra = sorted(set(wanted.nodes) - set(saved.nodes))
    detail = []
    if missing:
        detail.append(f"{len(missing)} checkpoint nodes absent from the config (e.g. {missing[:5]})")
    if extra:
        detail.append(f"{len(extra)} config nodes unknown to the checkpoint (e.g. {extra[:5]})")
    if not detail:
        detail.append("the same codes with different parent links")
    raise TaxonomyMismatchError(
        f"cannot load {where}: its heads were trained for a taxonomy of {len(saved)} nodes, but the config "
        f"passed has {len(wanted)} nodes: " + "; ".join(detail) + ". Load it with its own config, "
        "or start new heads with THMMForHierarchicalClassification.from_encoder(...)."
    )


# After `import modeling_thmm`, the Auto classes resolve "thmm" without trust_remote_code; a saved
# model carries both files and an auto_map, so that trust_remote_code=True works without this package.
AutoConfig.register("thmm", THMMConfig, exist_ok=True)
AutoModel.register(THMMConfig, THMMForHierarchicalClassification, exist_ok=True)
AutoModelForSequenceClassification.register(THMMConfig, THMMForHierarchicalClassification, exist_ok=True)
THMMForHierarchicalClassification.register_for_auto_class("AutoModel")
