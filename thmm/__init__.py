# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""thmm-patents: TMM / THMM hierarchical multi-label patent classification (Pujari et al., ECIR 2021).

The model files stay top-level modules, because a saved model carries them as remote code:
``configuration_thmm`` (config), ``taxonomy_thmm`` (the hierarchy), ``modeling_thmm`` (models),
``pipeline_thmm`` (the pipeline). This package holds the training library and the commands:

- :mod:`thmm.arguments` — :class:`TrainingArguments` (``HfArgumentParser``, JSON/YAML configs)
- :mod:`thmm.data` — splits, taxonomy, label ids, token datasets in Arrow, batching, length-grouped batches
- :mod:`thmm.features` — the frozen-encoder feature cache (memory-mapped)
- :mod:`thmm.mapped_pages` — bounded resident memory while reading memory-mapped files
- :mod:`thmm.cpu_memory` — glibc's allocator and torch's huge pages: an epoch's resident memory on a CPU
- :mod:`thmm.prediction` — streaming prediction, across processes under ``accelerate launch``
- :mod:`thmm.trainer` — :class:`Trainer`: build, fit (Accelerate), tune, save
- :mod:`thmm.evaluation`, :mod:`thmm.thresholds` — dev/test scoring and threshold tuning
- :mod:`thmm.checkpoints` — resume checkpoints
- :mod:`thmm.reports`, :mod:`thmm.model_card`, :mod:`thmm.hub` — run outputs, model card, Hub upload
- :mod:`thmm.cli` — ``thmm-train``, ``thmm-predict``, ``thmm-publish``, ``thmm-stats``
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def metric_path() -> str:
    """The folder of the hierarchical ``evaluate`` metric, for ``evaluate.load(thmm.metric_path())``."""
    return str(Path(__file__).resolve().parent / "metrics" / "hierarchical")


def __getattr__(name):  # light import: ``import thmm`` does not load torch
    if name == "TrainingArguments":
        from .arguments import TrainingArguments

        return TrainingArguments
    if name in ("Trainer", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'thmm' has no attribute {name!r}")


__all__ = ["Trainer", "TrainingArguments", "metric_path", "train"]
