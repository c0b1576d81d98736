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

This module holds the model; each other concern has its own module, copied next to a saved model
with this one (relative imports) and re-exported here for existing callers:

* ``heads_thmm``: the CNN document vector and the heads (:class:`LevelHeads`, ...);
* ``lexical_thmm``: the lexical scorer and its fusion (:class:`LexicalScorer`);
* ``encoder_layers_thmm``: the encoder-layer views of lower-layer freezing;
* ``weights_thmm``: the checks that saved weights match their config (:class:`WeightsError`, ...);
* ``tokenization_thmm``: patent texts to word-piece ids (:func:`encode_documents`, ...);
* ``decoding_thmm``: node probabilities to label records and labelled scores (the output rules).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

try:  # relative imports when loaded as remote code next to a saved model (trust_remote_code=True)
    from .calibration_thmm import (calibrate_logits, check_review_below, document_confidence, node_shifts,
                                   node_temperatures)
    from .configuration_thmm import (
        UNFINISHED_MARKER,
        Taxonomy,
        THMMConfig,
        Thresholds,
        UnfinishedModelError,
        looks_like_local_path,
        refuse_unfinished,
    )
    from .decoding_thmm import DEFAULT_DECIMALS, NodeScores, check_decoding_options, check_probabilities, label_records
    from .encoder_layers_thmm import encoder_layer_list, freeze_lower_layers, sync_training
    from .heads_thmm import (
        CNNDocumentEncoder,
        FlatHead,
        HierarchicalHeads,
        LevelHeads,
        SharedLevelHeads,
        pool_encoder_outputs,
        set_output_biases,
    )
    from .lexical_thmm import (LexicalScorer, build_lexical_scorer, fuse_lexical_logits, max_fusion_weight,
                               node_fusion_weights, top_k_weights)
    from .tokenization_thmm import (
        check_batching,
        check_documents,
        check_tokenizer_fits,
        document_problem,
        encode_documents,
        longest_first,
    )
    from .weights_thmm import (
        TaxonomyMismatchError,
        WeightsError,
        check_finite,
        check_saved_model,
        fingerprint_tensor,
        read_safetensors_header,
    )
except ImportError:  # plain imports when installed as top-level modules
    from calibration_thmm import (calibrate_logits, check_review_below, document_confidence, node_shifts,
                                  node_temperatures)
    from configuration_thmm import (
        UNFINISHED_MARKER,
        Taxonomy,
        THMMConfig,
        Thresholds,
        UnfinishedModelError,
        looks_like_local_path,
        refuse_unfinished,
    )
    from decoding_thmm import DEFAULT_DECIMALS, NodeScores, check_decoding_options, check_probabilities, label_records
    from encoder_layers_thmm import encoder_layer_list, freeze_lower_layers, sync_training
    from heads_thmm import (
        CNNDocumentEncoder,
        FlatHead,
        HierarchicalHeads,
        LevelHeads,
        SharedLevelHeads,
        pool_encoder_outputs,
        set_output_biases,
    )
    from lexical_thmm import (LexicalScorer, build_lexical_scorer, fuse_lexical_logits, max_fusion_weight,
                              node_fusion_weights, top_k_weights)
    from tokenization_thmm import (
        check_batching,
        check_documents,
        check_tokenizer_fits,
        document_problem,
        encode_documents,
        longest_first,
    )
    from weights_thmm import (
        TaxonomyMismatchError,
        WeightsError,
        check_finite,
        check_saved_model,
        fingerprint_tensor,
        read_safetensors_header,
    )

__all__ = [
    "UNFINISHED_MARKER",
    "CNNDocumentEncoder",
    "FlatHead",
    "HierarchicalClassifierOutput",
    "HierarchicalHeads",
    "LevelHeads",
    "LexicalScorer",
    "NodeScores",
    "THMMForHierarchicalClassification",
    "THMMPreTrainedModel",
    "TaxonomyMismatchError",
    "UnfinishedModelError",
    "WeightsError",
    "check_documents",
    "check_review_below",
    "document_problem",
    "encode_documents",
    "encoder_layer_list",
    "fuse_lexical_logits",
    "node_fusion_weights",
    "top_k_weights",
    "longest_first",
    "read_safetensors_header",
]


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
        if isinstance(module, (LevelHeads, SharedLevelHeads)):
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
            init.copy_(module.taxonomy_fingerprint, fingerprint_tensor(module.config.get_taxonomy()))


class THMMForHierarchicalClassification(THMMPreTrainedModel):
    """A shared pre-trained encoder with one classification head per taxonomy node (TMM / THMM), or
    the flat leaf-only baseline. Build one with :meth:`from_encoder`; load a trained one with
    ``from_pretrained`` (or ``AutoModel.from_pretrained``).

    For raw patent texts: :meth:`predict` (the predicted codes as records), :meth:`predict_proba`
    (every node's probability; labelled with ``labelled=True``); for probabilities already
    computed: :meth:`label_records` and :meth:`decode`. The output rules are ``decoding_thmm``'s."""

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
                taxonomy, doc_size, config.head_hidden_size, config.head_dropout, parent_links=config.head_type == "thmm",
                deep_heads=config.deep_heads, deep_hidden_size=config.deep_head_hidden_size,
            )
        self.lexical = (LexicalScorer(config.lexical_vocab_size, len(taxonomy), config.lexical_top_k)
                        if config.lexical_vocab_size else None)
        # Saved with the weights, so that weights meet the taxonomy they were trained for.
        self.register_buffer("taxonomy_fingerprint", fingerprint_tensor(taxonomy))
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
        one line naming the file (the checks are ``weights_thmm``'s).

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
        file_of = check_saved_model(cls, name, kwargs) if name is not None and kwargs.get("state_dict") is None else {}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        if not torch.equal(model.taxonomy_fingerprint.cpu(), fingerprint_tensor(model.config.get_taxonomy())):
            raise TaxonomyMismatchError(
                f"the weights in {name} were trained for a different taxonomy than the one in the config they are "
                "loaded with; load them with their own config.json"
            )
        check_finite(model, file_of, f"the weights of {name}" if name else "the state dict")
        return loaded

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

    # ---- training set-up --------------------------------------------------------------------

    @property
    def needs_token_states(self) -> bool:
        return self.config.doc_representation == "cnn"

    @torch.no_grad()
    def init_output_biases(self, priors, from_level: int = 1) -> None:
        """Set each head's output bias to the log-odds of its node's prior (``[nodes]`` probabilities in
        taxonomy order, e.g. training-set frequencies), so that training starts from the label
        frequencies instead of 0.5 for every node; only on the levels from ``from_level`` down
        (TMM/THMM). Flat models set their leaves' biases."""
        set_output_biases(self.heads, self.taxonomy, priors, from_level)

    @torch.no_grad()
    def set_lexical_scorer(self, idf, weight, bias, fusion_weight, scale: float, shift: float,
                           top_k: int = 0) -> None:
        """Install a fitted lexical scorer (``idf [vocab]``, ``weight [vocab, nodes]``, ``bias [nodes]``;
        ``thmm.lexical.fit_lexical_scorer``; each node's ``top_k`` largest weights only when ``top_k`` > 0)
        and its fusion settings (``fusion_weight``: one number, or one per level), in the module and the config."""
        scorer = build_lexical_scorer(idf, weight, bias, len(self.taxonomy), top_k)
        values = {"lexical_vocab_size": scorer.idf.shape[0], "lexical_top_k": int(top_k),
                  "lexical_weight": ([float(w) for w in fusion_weight] if isinstance(fusion_weight, (list, tuple))
                                     else float(fusion_weight)),
                  "lexical_scale": float(scale), "lexical_shift": float(shift)}
        type(self.config)(**{**self.config.to_dict(), **values})  # validated before anything changes
        for key, value in values.items():
            setattr(self.config, key, value)
        self.lexical = scorer.to(self.taxonomy_fingerprint.device)

    def lexical_node_weights(self) -> torch.Tensor:
        """The lexical fusion weight of each node, ``[nodes]`` (``config.lexical_weight``: one, or one per level)."""
        weights = node_fusion_weights(self.config.lexical_weight, self.taxonomy.levels)
        return torch.as_tensor(np.broadcast_to(np.float32(weights), (len(self.taxonomy),)).copy())

    def freeze_lower_layers(self, num_layers: int) -> None:
        """Freeze the encoder's embeddings and its lowest ``num_layers`` layers, so that their output
        token states (:meth:`lower_layer_states`) can be computed once and cached; ``forward`` then
        takes them as ``lower_layer_states`` and runs only the top layers, the document vector and
        the heads. Raises ValueError when the encoder has no more than ``num_layers`` layers, or when
        the CNN would sum a layer that is frozen below the cached one."""
        summed = self.config.cnn_num_summed_layers if self.needs_token_states else None
        top, lower = freeze_lower_layers(self.encoder, num_layers, summed)
        self.frozen_lower_layers = num_layers
        # plain attributes, not submodules: their parameters are the encoder's, saved once
        object.__setattr__(self, "_top_layers", top)
        object.__setattr__(self, "_lower_layers", lower)

    # ---- forward ----------------------------------------------------------------------------

    def lower_layer_states(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """``[batch, tokens, hidden]``: the output of the lowest ``frozen_lower_layers`` layers (what
        the lower-layer cache holds), computed by the embeddings and those layers only."""
        if not self.frozen_lower_layers:
            raise ValueError("call freeze_lower_layers(n) first")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        sync_training(self._lower_layers, self.encoder)
        outputs = self._lower_layers(input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                     return_dict=True, **extra, **kwargs)
        return outputs.hidden_states[self.frozen_lower_layers]

    def encoder_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """What the document representation reads from the encoder: ``[batch, hidden]`` for
        ``cls``/``mean``, ``[batch, tokens, hidden]`` summed token states for ``cnn``. Frozen-encoder
        training caches exactly this."""
        return self._encode(input_ids, attention_mask, token_type_ids, **kwargs)[0]

    def _encode(self, input_ids, attention_mask, token_type_ids, lower_layer_states=None, **kwargs):
        """``(encoder features, encoder outputs)``: the whole encoder on ``input_ids``, or its top
        layers on cached ``lower_layer_states``."""
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
            sync_training(self._top_layers, self.encoder)
            outputs = self._top_layers(inputs_embeds=lower_layer_states, **encoder_kwargs)
            # the view's states start at its input, layer n's output: put back the n states below it
            hidden_states = outputs.hidden_states and (None,) * self.frozen_lower_layers + outputs.hidden_states
        cfg = self.config
        return pool_encoder_outputs(cfg.doc_representation, outputs, hidden_states, attention_mask,
                                    cfg.cnn_num_summed_layers), outputs

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
        fuse = fuse_lexical and self.lexical is not None and max_fusion_weight(self.config.lexical_weight) > 0
        if fuse and input_ids is None:
            raise ValueError("this model fuses lexical scores, which read input_ids: pass input_ids (with "
                             "attention_mask), or fuse_lexical=False for the heads' logits alone")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = None
        if encoder_features is None:
            if input_ids is None and lower_layer_states is None:
                raise ValueError("pass input_ids (or precomputed encoder_features or lower_layer_states)")
            extra = {name: True for name, wanted in (("output_hidden_states", output_hidden_states),
                                                     ("output_attentions", output_attentions)) if wanted}
            encoder_features, outputs = self._encode(input_ids, attention_mask, token_type_ids, lower_layer_states,
                                                     **extra, **kwargs)
        doc = self._document_vector(encoder_features, attention_mask)
        logits, loss = self._head_logits(doc, labels)
        if fuse:  # after the loss: the lexical scorer is fitted outside backpropagation
            cfg = self.config
            decisions = self.lexical(input_ids, attention_mask).to(logits.dtype)
            logits = fuse_lexical_logits(logits, decisions, self.lexical_node_weights().to(logits), cfg.lexical_scale,
                                         cfg.lexical_shift)
        output = HierarchicalClassifierOutput(
            loss=loss,
            logits=logits,
            document_embedding=doc,
            hidden_states=outputs.hidden_states if (outputs is not None and output_hidden_states) else None,
            attentions=outputs.attentions if (outputs is not None and output_attentions) else None,
        )
        return output if return_dict else output.to_tuple()

    def _document_vector(self, encoder_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The document vector the heads read: the CNN over the token states, or the features as they are."""
        if self.cnn is None:
            return encoder_features
        if attention_mask is None:
            attention_mask = encoder_features.new_ones(encoder_features.shape[:2], dtype=torch.long)
        return self.cnn(encoder_features, attention_mask)

    def _head_logits(self, doc: torch.Tensor, labels: torch.Tensor | None):
        """``(node logits, loss or None)``: flat models' loss is over their leaves."""
        if self.config.head_type == "flat":
            logits, leaf_logits = self.heads(doc)
            if labels is None:
                return logits, None
            leaf_labels = labels.index_select(1, self.heads.leaf_ids).to(leaf_logits.dtype)
            return logits, self.node_loss(leaf_logits, leaf_labels)
        logits = self.heads(doc)
        return logits, None if labels is None else self.node_loss(logits, labels.to(logits.dtype))

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
        probabilities = check_probabilities(probabilities, len(self.taxonomy))
        consistent = self.config.consistent_scores if consistent is None else consistent
        return self.taxonomy.min_along_path(probabilities) if consistent else probabilities

    def calibrated_logits(self, logits):
        """``logits`` (``[documents, nodes]``, torch or numpy) divided by each node's level's temperature
        (``config.calibration_temperatures``, fitted on dev; ``calibration_thmm``), plus its level's
        shift with Platt scaling (``config.calibration_shifts``); as they are without one. ``sigmoid`` of these are the probabilities :meth:`predict_proba` and the pipeline give."""
        temperatures = self.config.calibration_temperatures
        if temperatures is None:
            return logits
        return calibrate_logits(logits, node_temperatures(self.taxonomy, temperatures),
                                node_shifts(self.taxonomy, self.config.calibration_shifts))

    def document_confidence(self, probabilities, threshold=None, top_k: int | None = None,
                            at_least_one: bool = False, consistent: bool | None = None) -> np.ndarray:
        """``[documents]``: per document, the probability that its whole decision (each node predicted
        or not, as :meth:`decode` decides with these options) is right, taking the node probabilities
        as independent (``calibration_thmm.document_confidence``). Meaningful on calibrated scores."""
        thresholds = self.check_decoding(threshold, top_k, at_least_one, consistent) or self.config.thresholds
        scores = self.scores_for_decoding(probabilities, consistent)
        selected = self.taxonomy.select(scores, threshold=thresholds, top_k=top_k, at_least_one=at_least_one)
        return document_confidence(scores, selected)

    def check_decoding(self, threshold=None, top_k: int | None = None, at_least_one: bool = False,
                       consistent: bool | None = None, decimals: int | None = DEFAULT_DECIMALS,
                       raw_scores: bool = False) -> Thresholds | None:
        """The decoding and output options of :meth:`decode`, :meth:`label_records`, :meth:`predict`
        and the pipeline, checked before any work; ``threshold`` as :class:`Thresholds` (``None``: the
        config's). A ValueError names the option: thresholds are probabilities in [0, 1] (one per
        taxonomy level when a list), top_k is at least 1, at_least_one, consistent and raw_scores are
        booleans (consistent may be ``None``), decimals an integer of at least 0 or ``None``."""
        return check_decoding_options(self.taxonomy, threshold, top_k, at_least_one, consistent, decimals, raw_scores)

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

    def label_records(self, probabilities, threshold=None, top_k: int | None = None, at_least_one: bool = False,
                      consistent: bool | None = None, decimals: int | None = DEFAULT_DECIMALS,
                      raw_scores: bool = False) -> list[list[dict]]:
        """Decode node probabilities (``[documents, nodes]``) into ``{"code", "score", "level",
        "title"}`` records per document, ordered by level then score.

        The codes are :meth:`decode`'s (thresholds, ``top_k``, ``at_least_one``, and ``consistent``,
        default ``config.consistent_scores``: the decision reads scores capped by their ancestors').
        The scores shown obey the hierarchy (:meth:`Taxonomy.display_scores`): each code shows the
        highest score among itself and its predicted descendants, so a child is never shown above its
        parent, and an ancestor implied by a predicted code never below that code's score. This
        changes no decision. ``raw_scores=True`` shows the scores the decision read instead. Scores
        are rounded to ``decimals`` places (4; ``None`` for full precision)."""
        thresholds = self.check_decoding(threshold, top_k, at_least_one, consistent, decimals, raw_scores)
        return label_records(self.taxonomy, self.scores_for_decoding(probabilities, consistent),
                             thresholds or self.config.thresholds, top_k=top_k, at_least_one=at_least_one,
                             raw_scores=raw_scores, decimals=decimals, titles=self.config.label_titles)

    # ---- prediction from texts --------------------------------------------------------------

    def check_tokenizer(self, tokenizer, where: str | None = None) -> None:
        """A ValueError naming ``where`` (default: the tokenizer's folder) when ``tokenizer`` has more
        word-pieces than the model's tables have rows (the encoder's embeddings, the lexical scorer's
        vocabulary): its ids past them would index out of range. Use the tokenizer saved with the model."""
        tables = {"encoder embeddings": self.encoder.get_input_embeddings().num_embeddings}
        if self.lexical is not None:
            tables["lexical scorer"] = self.lexical.idf.shape[0]
        check_tokenizer_fits(tokenizer, tables, where, self.name_or_path or "the model")

    @torch.no_grad()
    def predict_proba(self, tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None = None,
                      batch_size: int = 32, max_length: int | None = None, return_truncated: bool = False,
                      labelled: bool = False):
        """Node probabilities ``[documents, nodes]`` (a float32 array, columns in taxonomy order) for raw
        patent texts; with ``return_truncated``, also a per-document flag telling which texts were cut
        to ``max_length`` word-pieces. With ``labelled=True``, a :class:`NodeScores` instead of the
        array: ``.array``, ``.labels`` (the node codes in column order), ``.truncated`` and
        ``.to_dicts()`` (one ``{code: probability}`` mapping per document). A ValueError names a bad
        argument or the index of a bad document (not a string, or empty)."""
        abstracts = check_documents(titles, abstracts)
        check_batching(batch_size, max_length, getattr(self.config.encoder_config, "max_position_embeddings", None))
        self.check_tokenizer(tokenizer)
        if not isinstance(labelled, bool):
            raise ValueError(f"labelled: must be True or False (got {labelled!r})")
        probs, truncated = self._probabilities(tokenizer, list(titles), abstracts, batch_size,
                                               max_length or self.config.max_length)
        if labelled:
            probs = NodeScores(probs, self.taxonomy.nodes, truncated)
        return (probs, truncated) if return_truncated else probs

    def _probabilities(self, tokenizer, titles: list[str], abstracts: list[str], batch_size: int, max_length: int):
        """``(probabilities [documents, nodes], truncated)``, in batches of similar lengths, in eval mode."""
        probs = np.zeros((len(titles), len(self.taxonomy)), dtype=np.float32)
        if not titles:
            return probs, []
        was_training = self.training
        self.eval()
        enc = encode_documents(tokenizer, titles, abstracts, max_length)
        truncated = enc.pop("truncated")
        order = longest_first([len(ids) for ids in enc["input_ids"]])
        for start in range(0, len(titles), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in enc.items()}, return_tensors="pt")
            logits = self.calibrated_logits(self(**batch.to(self.device)).logits.float())
            probs[rows] = torch.sigmoid(logits).cpu().numpy()
        self.train(was_training)
        return probs, truncated

    def predict(self, tokenizer, titles: Sequence[str], abstracts: Sequence[str] | None = None,
                threshold=None, top_k: int | None = None, at_least_one: bool = False, batch_size: int = 32,
                consistent: bool | None = None, decimals: int | None = DEFAULT_DECIMALS, raw_scores: bool = False):
        """Predicted codes for raw patent texts: per document, a list of ``{"code", "score", "level",
        "title"}`` dicts, ordered by level then score, as :meth:`label_records` gives them (scores
        that obey the hierarchy, rounded to ``decimals`` places). Bad options (see
        :meth:`check_decoding`) are refused before any work."""
        self.check_decoding(threshold, top_k, at_least_one, consistent, decimals, raw_scores)
        probs = self.predict_proba(tokenizer, titles, abstracts, batch_size=batch_size)
        return self.label_records(probs, threshold=threshold, top_k=top_k, at_least_one=at_least_one,
                                  consistent=consistent, decimals=decimals, raw_scores=raw_scores)


# After `import modeling_thmm`, the Auto classes resolve "thmm" without trust_remote_code; a saved
# model carries every *_thmm.py file and an auto_map, so that trust_remote_code=True works without this package.
AutoConfig.register("thmm", THMMConfig, exist_ok=True)
AutoModel.register(THMMConfig, THMMForHierarchicalClassification, exist_ok=True)
AutoModelForSequenceClassification.register(THMMConfig, THMMForHierarchicalClassification, exist_ok=True)
THMMForHierarchicalClassification.register_for_auto_class("AutoModel")
