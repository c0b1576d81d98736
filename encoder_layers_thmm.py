# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Views of a BERT-family encoder's layers, for training with its lower layers frozen.

:func:`freeze_lower_layers` freezes the embeddings and the lowest layers and returns two views
sharing every parameter with the encoder: the frozen lower part (what builds the cache of token
states) and the top part (what runs on cached states). Neither is a registered submodule, so nothing
is saved twice.

It is copied next to a saved model as remote code (a relative import of ``modeling_thmm.py``).
"""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["encoder_layer_list", "freeze_lower_layers", "layers_view", "sync_training", "top_layers_view"]


def encoder_layer_list(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers, lowest first (BERT-family layout: ``encoder.layer``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "embeddings"):
        raise ValueError(f"{type(encoder).__name__} has no embeddings and encoder.layer list; freezing its lower "
                         "layers needs a BERT-family encoder")
    return layers


class StatesAsEmbeddings(nn.Module):
    """Stands in for the embeddings of a top-layers view: its ``inputs_embeds`` are cached token states."""

    def forward(self, inputs_embeds=None, **kwargs):
        return inputs_embeds


def layers_view(encoder: nn.Module, layers: slice, embeddings: nn.Module | None = None) -> nn.Module:
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


def top_layers_view(encoder: nn.Module, num_lower_layers: int) -> nn.Module:
    """``view(inputs_embeds=states)`` runs the layers above ``num_lower_layers`` (and the pooler) on
    the output states of layer ``num_lower_layers``."""
    return layers_view(encoder, slice(num_lower_layers, None), embeddings=StatesAsEmbeddings())


def sync_training(view: nn.Module, encoder: nn.Module) -> None:
    """A view's shallow copies keep the mode they were made in: give them the encoder's."""
    view.training = view.encoder.training = encoder.training


def freeze_lower_layers(encoder: nn.Module, num_layers: int, cnn_summed_layers: int | None = None):
    """Freeze ``encoder``'s embeddings and its lowest ``num_layers`` layers; returns ``(top, lower)``:
    the view that runs the layers above them on their cached output states, and the view of the
    embeddings and the frozen layers alone (which builds that cache without running the layers
    above). Raises ValueError when the encoder has no more than ``num_layers`` layers, or when a CNN
    summing its last ``cnn_summed_layers`` layers would sum one frozen below the cached one."""
    layers = encoder_layer_list(encoder)
    if not 1 <= num_layers < len(layers):
        raise ValueError(f"the encoder has {len(layers)} layers: freeze between 1 and {len(layers) - 1} "
                         f"(got {num_layers}; freezing all of them is frozen-encoder mode)")
    if cnn_summed_layers and num_layers > len(layers) - cnn_summed_layers + 1:
        raise ValueError(f"the CNN sums the last {cnn_summed_layers} of {len(layers)} layers, so at most "
                         f"{len(layers) - cnn_summed_layers + 1} can be frozen (got {num_layers})")
    for module in (encoder.embeddings, *list(layers)[:num_layers]):
        module.requires_grad_(False)
    return top_layers_view(encoder, num_layers), layers_view(encoder, slice(num_layers))
