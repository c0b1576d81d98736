"""The strong simple baselines of bench/quality.py (issue 33): ``svm-tuned`` and ``knn`` are
deterministic and take every choice (k, hierarchy rule, thresholds) from dev, never from test; bad
``--knn-k`` values are refused naming the option; and a fused model whose encoder was fine-tuned
(top layers or all of it) saves and reloads with identical predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICKSTART_DATA, REPO_ROOT, force_fusion_weight, small_training_args
from configuration_thmm import Taxonomy
from test_bench import bench_module

# a word that marks each subclass (and some words that mark nothing)
MARKERS = {"A43B": "shoe sole", "A43C": "lace boot", "A47J": "coffee brewing", "B41F": "printing ink",
           "H04L": "packet protocol", "H04W": "wireless radio", "H01M": "battery electrode", "Y10T": "sandal heel"}
NOISE = "a device method system apparatus with the of for".split()


def tiny_splits(seed: int = 0, sizes=(80, 60, 60)) -> dict:
    """Train/dev/test as columns: each document names one or two subclasses by their marker words,
    among noise words, and one in five drops a marker (so that the SVMs and thresholds have work)."""
    rng = np.random.default_rng(seed)
    codes = list(MARKERS)
    splits = {}
    for name, size in zip(("train", "validation", "test"), sizes):
        titles, labels = [], []
        for _ in range(size):
            gold = list(rng.choice(codes, size=rng.integers(1, 3), replace=False))
            words = [w for code in gold for w in MARKERS[code].split()]
            if rng.random() < 0.2:
                words = words[1:]
            words += list(rng.choice(NOISE, size=4))
            rng.shuffle(words)
            titles.append(" ".join(words))
            labels.append(gold)
        splits[name] = {"title": titles, "abstract": [""] * size, "labels": labels}
    return splits


def tiny_vectors(splits: dict, seed: int = 0) -> dict:
    """A document vector per split: the sum of its codes' random directions plus noise."""
    rng = np.random.default_rng(seed)
    directions = {code: rng.normal(size=16) for code in MARKERS}
    return {name: np.stack([sum(directions[c] for c in labels) + rng.normal(scale=0.8, size=16)
                            for labels in split["labels"]]).astype(np.float32)
            for name, split in splits.items()}


@pytest.fixture(scope="module")
def baselines():
    return bench_module("baselines")


def test_svm_tuned_is_deterministic_and_chooses_on_dev(baselines):
    from thmm.evaluation import evaluation_taxonomy
    from thmm.thresholds import tune_thresholds

    splits = tiny_splits()
    taxonomy = Taxonomy.from_codes(MARKERS)
    references = baselines.references_of(splits)
    fitted = baselines.word_svm_decisions(splits, taxonomy, n_jobs=1)
    args = (references, taxonomy, "cpc", "f1_mean", "node")
    first = baselines.svm_tuned(fitted["decisions"], *args)
    again = baselines.svm_tuned(baselines.word_svm_decisions(splits, taxonomy, n_jobs=1)["decisions"], *args)
    assert json.dumps(first, sort_keys=True, default=float) == json.dumps(again, sort_keys=True, default=float)
    assert first["hierarchy"] in ("consistent", "closed") and set(first["cv_dev"]) == {"consistent", "closed"}
    assert first["cv_dev"][first["hierarchy"]] == max(first["cv_dev"].values())
    # the thresholds are the tuner's on dev, for the chosen rule's calibrated scores
    scale, shift = first["calibration"]["scale"], first["calibration"]["shift"]
    dev = fitted["decisions"]["validation"]
    dev = taxonomy.min_along_path(dev) if first["hierarchy"] == "consistent" else dev
    probs = 1 / (1 + np.exp(-(scale * dev + shift)))
    expected = tune_thresholds(probs, references["validation"], taxonomy, "f1_mean",
                               evaluation_taxonomy(taxonomy, references["validation"], "cpc"), "node")
    assert first["thresholds"]["per_level"] == list(expected.thresholds.per_level)
    # test labels play no part in any choice: other test labels, same choices
    shuffled = {**references, "test": references["test"][::-1]}
    other = baselines.svm_tuned(fitted["decisions"], shuffled, taxonomy, "cpc", "f1_mean", "node")
    assert (other["hierarchy"], other["thresholds"], other["cv_dev"]) == (first["hierarchy"], first["thresholds"],
                                                                        first["cv_dev"])
    assert other["test"]["micro_f1"] != first["test"]["micro_f1"]
    assert first["test"]["micro_f1"] > 0.5  # the markers are learnt


def test_knn_is_deterministic_and_chooses_k_on_dev(baselines):
    splits = tiny_splits(1)
    vectors = tiny_vectors(splits)
    taxonomy = Taxonomy.from_codes(MARKERS)
    references = baselines.references_of(splits)
    first = baselines.knn(vectors, references, taxonomy, "cpc", "f1_mean", "node", ks=(1, 3, 10, 40))
    again = baselines.knn({k: v.copy() for k, v in vectors.items()}, references, taxonomy, "cpc", "f1_mean", "node",
                          ks=(40, 10, 3, 1))
    assert json.dumps(first, sort_keys=True, default=float) == json.dumps(again, sort_keys=True, default=float)
    assert set(first["cv_dev"]) == {"1", "3", "10", "40"}
    assert first["cv_dev"][str(first["k"])] == max(first["cv_dev"].values())
    # the k and thresholds follow the dev labels, and only them
    shuffled = {**references, "test": references["test"][::-1]}
    other = baselines.knn(vectors, shuffled, taxonomy, "cpc", "f1_mean", "node", ks=(1, 3, 10, 40))
    assert (other["k"], other["thresholds"]) == (first["k"], first["thresholds"])
    noisy_dev = {**references, "validation": [references["validation"][(i + 7) % len(references["validation"])]
                                              for i in range(len(references["validation"]))]}
    assert baselines.knn(vectors, noisy_dev, taxonomy, "cpc", "f1_mean", "node", ks=(1, 3, 10, 40))["cv_dev"] != \
        first["cv_dev"]
    assert first["test"]["micro_f1"] > 0.5


def test_knn_votes_and_ties(baselines):
    train = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    indices, sims = baselines.nearest_neighbours(np.array([[2.0, 0.0], [1.0, 1.0]], dtype=np.float32), train, 3)
    assert indices[0].tolist() == [0, 1, 2]  # rows 0 and 1 tie: the lower row first
    assert indices[1].tolist() == [0, 1, 2] and np.allclose(sims[1], [2 ** -0.5] * 3)
    targets = np.array([[1, 0], [1, 1], [0, 1], [1, 1]])
    scores = baselines.knn_scores(indices, sims, targets, 3)
    assert np.allclose(scores[0], [1.0, 0.5])  # weights 1, 1, 0
    assert np.allclose(scores[1], [2 / 3, 2 / 3])
    far = baselines.knn_scores(*baselines.nearest_neighbours(np.array([[-1.0, -1.0]]), train[:3], 2), targets[:3], 2)
    assert np.allclose(far, 0.0)  # no neighbour with a positive similarity: no vote


@pytest.mark.parametrize("ks, fragment", [
    ((0,), "k must be a positive integer, got 0"),
    ((5, -1), "k must be a positive integer, got -1"),
    ((2.5,), "k must be a positive integer, got 2.5"),
    ((), "give at least one k"),
    ((3, 11), "k = 11 is more than the 10 training documents"),
])
def test_bad_k_values_are_refused_naming_the_option(baselines, ks, fragment):
    with pytest.raises(ValueError, match="^--knn-k: ") as error:
        baselines.check_knn_k(ks, train_size=10)
    assert fragment in str(error.value)
    assert baselines.check_knn_k((10, 1, 10), train_size=10) == (1, 10)


@pytest.mark.parametrize("options, fragment", [
    (["--knn-k", "0"], "error: --knn-k: k must be a positive integer, got 0"),
    (["--knn-k", "5,x"], "error: --knn-k: expected comma-separated integers such as 5,10,20, got '5,x'"),
    (["--knn-k", "5,21", "--max-train-samples", "20"], "error: --knn-k: k = 21 is more than the 20 training documents"),
    (["--small-dev-documents", "-1"], "error: --small-dev-documents: must be 0 (never) or positive (got -1)"),
    (["--lexical-max-train-documents", "1"],
     "error: --lexical-max-train-documents: must be 0 (all of them) or at least 2 (got 1)"),
    (["--lexical-max-negatives", "-3"], "error: --lexical-max-negatives: must be 0 (all of them) or positive (got -3)"),
])
def test_quality_bench_refuses_bad_options_in_one_line(tmp_path, tiny_encoder_dir, options, fragment):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--data", str(QUICKSTART_DATA),
                          "--scheme", "cpc", "--encoder", str(tiny_encoder_dir), "--out", str(tmp_path / "out"),
                          "--models", "svm,knn", *options],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]  # (data-loading progress bars aside)
    assert errors == [fragment] and out.stderr.strip().endswith(fragment) and "Traceback" not in out.stderr
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_quality_bench_rows_and_gains_against_the_best_baseline(tmp_path, tiny_encoder_dir):
    from test_bench import run_quality_on_quickstart

    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "svm,svm-tuned,knn,tmm-mean",
                                    "--epochs", "1", "--n-jobs", "1", "--knn-k", "3,7", "--no-lexical-fusion")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["knn"]["settings"]["k"] in (3, 7) and set(results["knn"]["cv_dev"]) == {"3", "7"}
    assert results["svm-tuned"]["settings"]["hierarchy"] in ("consistent", "closed")
    # knn reads the frozen mean-pooled vectors the frozen tmm-mean run cached: one cache folder
    assert len([p for p in (tmp_path / "features_cache").iterdir() if p.is_dir()]) == 1
    report = (tmp_path / "results.md").read_text()
    best = {s: max(results[n]["test"][s] for n in ("svm", "svm-tuned", "knn")) for s in ("macro_f1", "micro_f1")}
    tmm = results["tmm-mean"]["test"]
    assert "Against the best baseline (test; best of svm, svm-tuned, knn per score" in report
    assert (f"- tmm-mean: macro {tmm['macro_f1'] - best['macro_f1']:+.4f}, "
            f"micro {tmm['micro_f1'] - best['micro_f1']:+.4f}") in report


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--freeze-lower-layers", "2"], []], ids=["top-layers", "full"])
def test_fused_fine_tuned_model_saves_and_reloads_with_identical_predictions(tiny_encoder_dir, tmp_path, monkeypatch,
                                                                             mode):
    """Lexical fusion on an encoder trained in the run (its top 2 of 4 layers, or all of it): the saved
    model reloads and predicts exactly the run's test predictions, scores included."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from dataset_script import read_patent_tsv
    from thmm.arguments import parse_args
    from thmm.trainer import train

    force_fusion_weight(monkeypatch, 0.4)
    out = tmp_path / "fused"
    summary = train(parse_args(small_training_args(tiny_encoder_dir, out, "--epochs", "1", *mode)))
    assert summary["lexical_fusion"]["weight"] == 0.4
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["lexical_weight"] == 0.4 and config["lexical_vocab_size"] > 0
    rows = read_patent_tsv(QUICKSTART_DATA / "test.tsv")[:13]
    titles, abstracts = [r["title"] for r in rows], [r["abstract"] for r in rows]
    predictions = []
    for _ in range(2):  # two independent loads
        model = AutoModel.from_pretrained(out / "model")
        tokenizer = AutoTokenizer.from_pretrained(out / "model")
        predictions.append(model.predict(tokenizer, titles, abstracts))
    assert predictions[0] == predictions[1]
    saved = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    for before, after in zip(saved, predictions[0], strict=True):
        assert [p["code"] for p in before["predicted"]] == [p["code"] for p in after]
        assert [p["score"] for p in before["predicted"]] == [round(p["score"], 4) for p in after]
    # the encoder was trained: its weights differ from the tiny encoder it started from
    start = AutoModel.from_pretrained(tiny_encoder_dir).state_dict()
    trained = AutoModel.from_pretrained(out / "model").encoder.state_dict()
    top = "encoder.layer.3.attention.self.query.weight"
    assert not torch.equal(start[top], trained[top])
