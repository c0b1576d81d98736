"""Lexical fusion: the word-piece TF-IDF SVMs, their in-model scorer, the fusion weight chosen on dev,
and a trained model that fuses by itself after saving."""

import json
import subprocess
import sys
import tempfile
import weakref

import numpy as np
import pytest
import torch

from conftest import QUICKSTART_DATA, REPO_ROOT, force_fusion_weight, save_model_dir, small_training_args
from configuration_thmm import THMMConfig
from thmm import lexical
from thmm.arguments import parse_args
from thmm.trainer import train as run_training


def _random_documents(rng, n, vocab, special=(0, 1, 2)):
    docs = []
    for _ in range(n):
        body = rng.integers(3, vocab, size=rng.integers(3, 12)).tolist()
        docs.append([special[1], *body, special[2]])
    return docs


def test_token_counts_skip_special_tokens_and_refuse_foreign_ids():
    counts = lexical.token_counts([[101, 5, 5, 7, 102], [101, 102], []], vocab_size=200, ignored_ids=[101, 102])
    assert counts.shape == (3, 200)
    assert counts[0, 5] == 2 and counts[0, 7] == 1 and counts[0, 101] == 0 and counts[1].nnz == 0
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\)"):
        lexical.token_counts([[3, 60]], vocab_size=50)


def test_token_counts_of_a_chunked_arrow_column_equal_counting_by_hand():
    import pyarrow as pa

    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 30, size=rng.integers(0, 15)).tolist() for _ in range(41)]
    column = pa.array([None, *docs], type=pa.list_(pa.int32()))  # a null row counts nothing
    chunked = pa.chunked_array([column.slice(0, 17), column.slice(17, 0), column.slice(17)])
    expected = np.zeros((len(docs) + 1, 30))
    for row, doc in enumerate(docs, start=1):
        for token in doc:
            expected[row, token] += token not in (0, 1)
    for given in (chunked, column, [[], *docs]):
        counts = lexical.token_counts(given, vocab_size=30, ignored_ids=[0, 1])
        assert counts.has_canonical_format and np.array_equal(counts.toarray(), expected)
    with pytest.raises(ValueError, match=r"got 0\.\.4294967301"):  # not wrapped into range by the int32 ids
        lexical.token_counts(pa.chunked_array([pa.array([[0], [2**32 + 5]], type=pa.list_(pa.int64()))]), 30)


def test_tfidf_matches_scikit_learn_vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    docs = _random_documents(rng, 60, 40)
    counts = lexical.token_counts(docs, 40, ignored_ids=[0, 1, 2])
    fit = lexical.fit_lexical_scorer(counts, rng.integers(0, 2, size=(60, 3)))
    reference = TfidfVectorizer(analyzer=lambda d: [t for t in d if t > 2], sublinear_tf=True, min_df=2)
    expected = reference.fit_transform(docs).toarray()
    ours = lexical.tfidf(counts, fit.idf).toarray()
    columns = [reference.vocabulary_[t] for t in range(40) if t in reference.vocabulary_]
    used = [t for t in range(40) if t in reference.vocabulary_]
    np.testing.assert_allclose(ours[:, used], expected[:, columns], atol=1e-6)
    assert np.all(ours[:, [t for t in range(40) if t not in reference.vocabulary_]] == 0)


def test_node_svms_separate_a_word_that_marks_the_node():
    rng = np.random.default_rng(1)
    docs = _random_documents(rng, 80, 29)  # word-pieces 3..28
    targets = np.zeros((80, 2), dtype=np.int64)
    for i in range(0, 80, 2):  # word-piece 29 marks node 0
        docs[i].insert(1, 29)
        targets[i, 0] = 1
    targets[:, 1] = 1  # a node every document carries: a constant score
    fit = lexical.fit_lexical_scorer(lexical.token_counts(docs, 30, [0, 1, 2]), targets)
    scores = fit.decisions(lexical.token_counts(docs, 30, [0, 1, 2]))
    assert ((scores[:, 0] > 0) == targets[:, 0].astype(bool)).all()
    assert np.all(scores[:, 1] == 1.0) and np.all(fit.weight[:, 1] == 0)


def test_node_svms_fitted_in_worker_processes_equal_the_fits_in_process():
    """A run fits its node SVMs in joblib's worker processes; the tests' runs fit them in process
    (conftest.node_svms_in_process). Each fit is seeded, so both give the same weights, bit for bit."""
    from joblib import parallel_config

    rng = np.random.default_rng(6)
    docs = _random_documents(rng, 60, 40)
    counts = lexical.token_counts(docs, 40, ignored_ids=[0, 1, 2])
    targets = rng.integers(0, 2, size=(60, 5))
    targets[:, 4] = 1  # a node every document carries: no SVM
    in_process = lexical.fit_lexical_scorer(counts, targets)
    with parallel_config(backend="loky"):  # what a run does
        in_workers = lexical.fit_lexical_scorer(counts, targets, n_jobs=2)
    for name in ("idf", "weight", "bias"):
        np.testing.assert_array_equal(getattr(in_workers, name), getattr(in_process, name), err_msg=name)
    assert np.abs(in_process.weight).sum() > 0


def test_svm_workers_map_file_backed_data_removed_afterwards(tmp_path, monkeypatch, caplog):
    """With worker processes, the SVMs' training matrix and targets are written once to a temporary
    folder and mapped back (joblib passes them to the workers by file name; the in-memory copies go);
    the folder is removed when the fit ends. A folder that cannot be written leaves them in memory,
    with a warning."""
    import scipy.sparse as sp
    from joblib import parallel_config
    from joblib._memmapping_reducer import has_shareable_memory

    from thmm.linear_svm import shared_with_workers

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X = sp.random(40, 30, density=0.2, format="csr", random_state=1)
    targets = np.asfortranarray(np.random.default_rng(1).random((40, 3)) < 0.5)
    in_memory, in_memory_targets = X.copy(), targets.copy(order="F")
    freed = weakref.ref(in_memory), weakref.ref(in_memory_targets)
    with parallel_config(backend="loky"), shared_with_workers(2, in_memory, in_memory_targets) as (in_memory,
                                                                                                  in_memory_targets):
        mapped, mapped_targets = in_memory, in_memory_targets
        assert [ref() for ref in freed] == [None, None]  # nothing but the caller held them
        assert [p.name for p in tmp_path.iterdir()][0].startswith("thmm-svm-")
        assert all(has_shareable_memory(getattr(mapped, name)) for name in ("data", "indices", "indptr"))
        assert mapped.format == "csr" and (mapped != X).nnz == 0
        assert has_shareable_memory(mapped_targets[:, 1]) and mapped_targets.flags.f_contiguous
        np.testing.assert_array_equal(mapped_targets, targets)
    assert list(tmp_path.iterdir()) == []
    with parallel_config(backend="sequential"), shared_with_workers(2, X) as (same,):  # no workers: nothing written
        assert same is X and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with parallel_config(backend="loky"), caplog.at_level("WARNING"), shared_with_workers(2, X, targets) as kept:
        assert kept[0] is X and kept[1] is targets
    assert "stay in memory" in caplog.text and "missing" in caplog.text


def test_svm_workers_folder_removed_when_the_run_is_killed(tmp_path):
    """A run SIGKILLed while its SVMs are fitted leaves no training matrix behind in the temporary folder:
    joblib's tracker process, to which the folder is registered, removes it."""
    import time

    script = (
        "import os, signal, tempfile\n"
        "import scipy.sparse as sp\n"
        "from joblib import parallel_config\n"
        "from thmm.linear_svm import shared_with_workers\n"
        f"tempfile.tempdir = {str(tmp_path)!r}\n"
        "with parallel_config(backend='loky'), shared_with_workers(2, sp.random(40, 30, density=0.2, format='csr')):\n"
        "    assert os.listdir(tempfile.tempdir)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    deadline = time.monotonic() + 60
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmp_path.iterdir()) == []


def test_in_model_scorer_equals_the_fitted_svms(tiny_model, tiny_tokenizer, small_taxonomy):
    """The saved model's LexicalScorer (torch, from input_ids) gives the decision values of the fit (scipy)."""
    rng = np.random.default_rng(2)
    vocab = len(tiny_tokenizer)
    docs = _random_documents(rng, 50, vocab, special=(tiny_tokenizer.pad_token_id, tiny_tokenizer.cls_token_id,
                                                       tiny_tokenizer.sep_token_id))
    special = tiny_tokenizer.all_special_ids
    counts = lexical.token_counts(docs, vocab, special)
    fit = lexical.fit_lexical_scorer(counts, rng.integers(0, 2, size=(50, len(small_taxonomy))))
    model = tiny_model()
    model.set_lexical_scorer(fit.idf, fit.weight, fit.bias, fusion_weight=0.4, scale=3.0, shift=-0.5)
    width = max(map(len, docs))
    input_ids = torch.tensor([d + [tiny_tokenizer.pad_token_id] * (width - len(d)) for d in docs])
    mask = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in docs])
    np.testing.assert_allclose(model.lexical(input_ids, mask).numpy(), fit.decisions(counts), atol=1e-5)


def test_fused_model_saves_reloads_and_fuses_in_forward(tiny_model, tiny_tokenizer, small_taxonomy, tmp_path):
    from transformers import AutoModel

    rng = np.random.default_rng(3)
    vocab = len(tiny_tokenizer)
    fit = lexical.LexicalScorerFit(rng.random(vocab).astype(np.float32),
                                   rng.normal(size=(vocab, len(small_taxonomy))).astype(np.float32),
                                   rng.normal(size=len(small_taxonomy)).astype(np.float32), 0.0, vocab, 0)
    model = tiny_model()
    titles = ["a wireless network node", "a shoe sole with a spring"]
    heads = model.predict_proba(tiny_tokenizer, titles)
    model.set_lexical_scorer(fit.idf, fit.weight, fit.bias, fusion_weight=0.3, scale=2.0, shift=0.25)
    enc = tiny_tokenizer(titles, padding=True, return_tensors="pt")
    with torch.no_grad():
        decisions = model.lexical(enc["input_ids"], enc["attention_mask"]).numpy()
    head_logits = np.log(heads / (1 - heads))
    expected = 1 / (1 + np.exp(-(0.7 * head_logits + 0.3 * (2.0 * decisions + 0.25))))
    np.testing.assert_allclose(model.predict_proba(tiny_tokenizer, titles), expected, atol=1e-4)
    with pytest.raises(ValueError, match="fuses lexical scores, which read input_ids"):
        model(encoder_features=torch.zeros(2, model.config.encoder_config.hidden_size))
    heads_only = model(encoder_features=torch.zeros(2, model.config.encoder_config.hidden_size), fuse_lexical=False)
    assert heads_only.logits.shape == (2, len(small_taxonomy))

    save_model_dir(model, tiny_tokenizer, tmp_path / "fused")
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert (config["lexical_vocab_size"], config["lexical_weight"], config["lexical_scale"]) == (vocab, 0.3, 2.0)
    reloaded = AutoModel.from_pretrained(tmp_path / "fused")
    np.testing.assert_allclose(reloaded.predict_proba(tiny_tokenizer, titles), expected, atol=1e-4)
    np.testing.assert_array_equal(reloaded.lexical.weight.numpy(), fit.weight)


@pytest.mark.parametrize("values, fragment", [
    ({"lexical_weight": 1.5, "lexical_vocab_size": 10}, "field 'lexical_weight': must be in [0, 1]"),
    ({"lexical_weight": 0.2}, "field 'lexical_weight': must be 0 without a lexical scorer"),
    ({"lexical_vocab_size": -1}, "field 'lexical_vocab_size': must be at least 0"),
])
def test_config_refuses_bad_lexical_settings(small_taxonomy, values, fragment):
    with pytest.raises(Exception, match=fragment.replace("[", r"\[").replace("]", r"\]")):  # strict validation
        THMMConfig(taxonomy=small_taxonomy, **values)


def test_fusion_weight_is_chosen_by_cross_validation_on_dev(small_taxonomy):
    """Heads that know nothing and SVM scores that know the labels: the weight goes to the SVMs; the
    other way round, it stays 0."""
    rng = np.random.default_rng(4)
    leaves = [c for c in small_taxonomy.nodes if small_taxonomy.level(c) == 3]
    references = [[leaves[i % len(leaves)]] for i in range(80)]
    targets = small_taxonomy.multi_hot(references).astype(np.float64)
    informative, noise = 4 * targets - 2, rng.normal(size=targets.shape)
    kwargs = dict(references=references, taxonomy=small_taxonomy, scheme="cpc", objective="f1_mean",
                  granularity="level", min_support=20, scale=1.0, shift=0.0, weights=(0.0, 0.5, 0.7))
    to_svm = lexical.choose_fusion_weight(noise, informative, **kwargs)
    assert to_svm.largest > 0 and to_svm.cv_score > to_svm.cv_dev[0.0]
    to_heads = lexical.choose_fusion_weight(informative, noise, **kwargs)
    assert to_heads.weight == 0.0
    assert set(to_heads.to_dict()["cv_dev"]) == {"0", "0.5", "0.7"}


def test_each_level_gets_its_own_fusion_weight_when_dev_prefers_it(small_taxonomy):
    """Heads that know the sections and classes but not the subclasses, SVM scores the other way
    round: one weight per level (heads above, SVM below) beats any single weight by two-fold CV on
    dev; where every level prefers the same weight, a single weight stays."""
    tax, rng = small_taxonomy, np.random.default_rng(5)
    leaves = [c for c in tax.nodes if tax.level(c) == 3]
    references = [[leaves[i % len(leaves)]] for i in range(120)]
    targets = tax.multi_hot(references).astype(np.float64)
    deep = tax.levels == 3
    informative, noise = 4 * targets - 2, rng.normal(size=targets.shape)
    heads = np.where(deep, noise, informative)
    svm = np.where(deep, informative, noise)
    kwargs = dict(references=references, taxonomy=tax, scheme="cpc", objective="f1_mean", granularity="level",
                  min_support=20, scale=1.0, shift=0.0, weights=(0.0, 0.5, 1.0))
    choice = lexical.choose_fusion_weight(heads, svm, **kwargs)
    assert isinstance(choice.weight, tuple) and len(choice.weight) == tax.num_levels
    assert choice.weight[1] < choice.weight[2]  # the classes read the heads, the subclasses the SVMs
    assert choice.cv_score > max(choice.cv_dev.values())
    assert choice.to_dict()["weight"] == list(choice.weight) and set(choice.to_dict()["cv_dev_per_level"]) == {"1", "2", "3"}
    single = lexical.choose_fusion_weight(heads, svm, **kwargs, per_level=False)
    assert isinstance(single.weight, float) and single.cv_score == max(single.cv_dev.values())
    same_everywhere = lexical.choose_fusion_weight(noise, informative, **kwargs)  # every level wants the SVMs
    assert not isinstance(same_everywhere.weight, tuple)


def test_a_model_fuses_with_one_weight_per_level(tiny_model, tiny_tokenizer, small_taxonomy, tmp_path):
    from transformers import AutoModel

    rng = np.random.default_rng(6)
    vocab, tax = len(tiny_tokenizer), small_taxonomy
    fit = lexical.LexicalScorerFit(rng.random(vocab).astype(np.float32),
                                   rng.normal(size=(vocab, len(tax))).astype(np.float32),
                                   rng.normal(size=len(tax)).astype(np.float32), 0.0, vocab, 0)
    model = tiny_model()
    titles = ["a wireless network node", "a shoe sole with a spring"]
    head_logits = np.log(1 / model.predict_proba(tiny_tokenizer, titles) - 1) * -1
    model.set_lexical_scorer(fit.idf, fit.weight, fit.bias, fusion_weight=[0.0, 0.2, 0.9], scale=2.0, shift=0.25)
    enc = tiny_tokenizer(titles, padding=True, return_tensors="pt")
    with torch.no_grad():
        decisions = model.lexical(enc["input_ids"], enc["attention_mask"]).numpy()
    w = np.array([0.0, 0.2, 0.9])[tax.levels - 1]
    expected = 1 / (1 + np.exp(-((1 - w) * head_logits + w * (2.0 * decisions + 0.25))))
    np.testing.assert_allclose(model.predict_proba(tiny_tokenizer, titles), expected, atol=1e-4)
    save_model_dir(model, tiny_tokenizer, tmp_path / "per-level")
    assert json.loads((tmp_path / "per-level" / "config.json").read_text())["lexical_weight"] == [0.0, 0.2, 0.9]
    reloaded = AutoModel.from_pretrained(tmp_path / "per-level")
    np.testing.assert_allclose(reloaded.predict_proba(tiny_tokenizer, titles), expected, atol=1e-4)
    with pytest.raises(Exception, match="one weight per taxonomy level"):
        model.set_lexical_scorer(fit.idf, fit.weight, fit.bias, fusion_weight=[0.1, 0.2], scale=2.0, shift=0.25)


@pytest.mark.slow
def test_training_fuses_and_the_saved_model_predicts_the_reported_scores(tiny_encoder_dir, tmp_path, monkeypatch):
    """A run whose fusion weight is forced above 0: the saved model fuses by itself, and its predictions
    are the run's test predictions; the report has the heads-only scores beside the fused ones."""
    from transformers import AutoModel, AutoTokenizer

    from dataset_script import read_patent_tsv

    force_fusion_weight(monkeypatch, 0.5)
    out = tmp_path / "fused"
    summary = run_training(parse_args(small_training_args(tiny_encoder_dir, out, "--epochs", "1")))
    assert summary["lexical_fusion"]["weight"] == 0.5 and summary["lexical_fusion"]["word_pieces"] > 0
    assert summary["test_heads_only"]["num_documents"] == summary["test"]["num_documents"] == 13
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["lexical_weight"] == 0.5 and config["lexical_vocab_size"] > 0
    card = (out / "model" / "README.md").read_text()
    assert "**Lexical scores:** each node's logit is 0.5 x the head's plus 0.5 x a calibrated TF-IDF" in card
    model = AutoModel.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    rows = read_patent_tsv(QUICKSTART_DATA / "test.tsv")[:13]
    predicted = model.predict(tokenizer, [r["title"] for r in rows], [r["abstract"] for r in rows])
    saved = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    for before, after in zip(saved, predicted):
        assert [p["code"] for p in before["predicted"]] == [p["code"] for p in after]
        for p, q in zip(before["predicted"], after):
            assert abs(p["score"] - q["score"]) <= 1e-4 + 1e-9  # rounded to 4 places


@pytest.mark.slow
def test_no_lexical_fusion_keeps_the_heads(tiny_encoder_dir, tmp_path):
    out = tmp_path / "heads"
    summary = run_training(parse_args([
        "--dataset", str(QUICKSTART_DATA), "--max-train-samples", "40", "--max-eval-samples", "13",
        "--batch-size", "8", "--eval-batch-size", "8", "--max-length", "48", "--epochs", "1",
        "--report-to", "none", "--head-hidden-size", "16", "--encoder", str(tiny_encoder_dir),
        "--output-dir", str(out), "--no-lexical-fusion"]))
    assert "lexical_fusion" not in summary and "test_heads_only" not in summary
    assert json.loads((out / "model" / "config.json").read_text())["lexical_vocab_size"] == 0
    assert "**Lexical scores:** none" in (out / "model" / "README.md").read_text()


def test_pipeline_of_a_saved_fused_model_gives_the_fused_scores(tiny_model, tiny_tokenizer, small_taxonomy, tmp_path):
    # the pipeline class in process: trust_remote_code would register the saved copy's classes for
    # every later test (tests/test_pipeline.py runs the remote-code route in a subprocess)
    from modeling_thmm import THMMForHierarchicalClassification
    from pipeline_thmm import HierarchicalPatentClassificationPipeline

    rng = np.random.default_rng(5)
    vocab = len(tiny_tokenizer)
    model = tiny_model()
    model.set_lexical_scorer(rng.random(vocab), rng.normal(size=(vocab, len(small_taxonomy))),
                             rng.normal(size=len(small_taxonomy)), fusion_weight=0.6, scale=1.5, shift=0.0)
    save_model_dir(model, tiny_tokenizer, tmp_path / "fused")
    pipe = HierarchicalPatentClassificationPipeline(
        model=THMMForHierarchicalClassification.from_pretrained(tmp_path / "fused"), tokenizer=tiny_tokenizer)
    titles = ["wireless packet radio network", "shoe sole with heel"]
    got = pipe([{"title": t} for t in titles], top_k=3)
    expected = model.label_records(model.predict_proba(tiny_tokenizer, titles), top_k=3)
    for g, e in zip(got, expected):
        assert [r["code"] for r in g] == [r["code"] for r in e]
        assert all(abs(r["score"] - q["score"]) <= 1e-4 + 1e-9 for r, q in zip(g, e))  # rounded to 4 places
    # the fusion matters here: the heads alone score otherwise
    enc = tiny_tokenizer(titles, padding=True, return_tensors="pt")
    with torch.no_grad():
        fused, heads = model(**enc).logits, model(**enc, fuse_lexical=False).logits
    assert not torch.allclose(fused, heads)


def test_fit_fusion_falls_back_to_the_heads_when_dev_cannot_calibrate(tiny_tokenizer, small_taxonomy, caplog):
    """Dev documents whose codes are all outside the taxonomy: no calibration is possible, so the
    weight is 0 (the heads alone), with a warning, instead of a failure at the end of a run."""
    leaves = [c for c in small_taxonomy.nodes if small_taxonomy.level(c) == 3]
    titles = ["wireless packet radio network", "shoe sole with heel", "printing press ink", "battery cell"] * 5
    splits = {"train": {"title": titles, "abstract": [""] * 20}, "validation": {"title": titles[:6], "abstract": [""] * 6}}
    references = {"train": [[leaves[i % len(leaves)]] for i in range(20)], "validation": [["Z99Z"]] * 6}
    head_logits = {"validation": np.zeros((6, len(small_taxonomy)))}
    with caplog.at_level("WARNING", logger="thmm.lexical"):
        fusion = lexical.fit_fusion(splits, tiny_tokenizer, 16, small_taxonomy, references, head_logits, scheme="cpc",
                                    objective="f1_mean", granularity="level", min_support=20,
                                    max_train_documents=0)
    assert fusion.choice.weight == 0.0 and fusion.logits["validation"] is head_logits["validation"]
    assert "lexical fusion: weight 0 (the heads alone)" in caplog.text
    assert fusion.fit.documents == 20


def test_fit_fusion_samples_the_training_documents_beyond_the_cap(tiny_tokenizer, small_taxonomy, caplog):
    leaves = [c for c in small_taxonomy.nodes if small_taxonomy.level(c) == 3]
    titles = [f"{w} device number {i}" for i, w in enumerate(["radio", "shoe", "ink", "battery"] * 10)]
    splits = {"train": {"title": titles, "abstract": [""] * 40}, "validation": {"title": titles[:12], "abstract": [""] * 12}}
    references = {"train": [[leaves[i % 4]] for i in range(40)], "validation": [[leaves[i % 4]] for i in range(12)]}
    head_logits = {"validation": np.zeros((12, len(small_taxonomy)))}
    kwargs = dict(scheme="cpc", objective="f1_mean", granularity="level", min_support=20, seed=3)
    with caplog.at_level("INFO", logger="thmm.lexical"):
        capped = lexical.fit_fusion(splits, tiny_tokenizer, 16, small_taxonomy, references, head_logits,
                                    max_train_documents=25, **kwargs)
    assert capped.fit.documents == 25 and capped.to_dict()["train_documents"] == 25
    assert "fitted on a random 25 of the 40 training documents" in caplog.text
    whole = lexical.fit_fusion(splits, tiny_tokenizer, 16, small_taxonomy, references, head_logits,
                               max_train_documents=0, **kwargs)
    assert whole.fit.documents == 40
    with caplog.at_level("INFO", logger="thmm.lexical"):
        negatives = lexical.fit_fusion(splits, tiny_tokenizer, 16, small_taxonomy, references, head_logits,
                                       max_train_documents=0, max_negatives=12, **kwargs)
    assert negatives.fit.documents == 40 and negatives.to_dict()["max_negatives"] == 12
    assert "at most 12 of its negatives (--lexical-max-negatives)" in caplog.text


def test_node_training_rows_keep_every_positive_and_sample_the_negatives():
    from thmm.linear_svm import node_training_rows

    y = np.zeros(100, dtype=bool)
    y[[3, 50, 97]] = True
    rows = node_training_rows(y, 10, seed=0, node=4)
    assert rows.size == 13 and set(np.flatnonzero(y)) <= set(rows.tolist()) and np.all(np.diff(rows) > 0)
    assert np.count_nonzero(~y[rows]) == 10
    assert np.array_equal(rows, node_training_rows(y, 10, seed=0, node=4))  # a rerun fits the same documents
    assert not np.array_equal(rows, node_training_rows(y, 10, seed=0, node=5))  # nodes draw apart
    assert not np.array_equal(rows, node_training_rows(y, 10, seed=1, node=4))
    assert node_training_rows(y, 0, seed=0, node=4) is None  # 0: all
    assert node_training_rows(y, 97, seed=0, node=4) is None  # no more negatives than the cap
    assert node_training_rows(np.ones(100, dtype=bool), 10, seed=0, node=4) is None


def test_sampled_negatives_are_weighted_so_the_scores_stay_where_the_whole_fit_puts_them():
    """Fitted on a sample of its negatives, an SVM sees fewer of them and scores everything higher;
    weighting each sampled negative for those left out keeps its decision values near the whole fit's."""
    import scipy.sparse as sp
    from sklearn.svm import LinearSVC

    from thmm.linear_svm import SVM_SOLVER, fit_node_svm, node_training_rows

    rng = np.random.default_rng(0)
    X = sp.random(3000, 60, density=0.1, random_state=0, format="csr")
    y = (X @ rng.normal(size=60) + rng.normal(scale=0.5, size=3000)) > 1.2
    rows = node_training_rows(y, 600, seed=0, node=0)
    whole_coef, whole_intercept = fit_node_svm(X, y)
    whole = X @ whole_coef + whole_intercept
    coef, intercept = fit_node_svm(X, y, max_negatives=600, seed=0, node=0)
    weighted_shift = abs(np.mean(X @ coef + intercept - whole))
    unweighted = LinearSVC(C=1.0, random_state=0, **SVM_SOLVER).fit(X[rows], y[rows])
    unweighted_shift = abs(np.mean(unweighted.decision_function(X) - whole))
    assert weighted_shift < 0.3 * unweighted_shift


def test_negatives_cap_changes_only_the_nodes_beyond_it_and_repeats_in_workers():
    """Each node's SVM sees all its positives and at most max_negatives negatives: a node with fewer
    negatives is fitted exactly as without the cap; the others change. The draw is seeded per node,
    so joblib's workers repeat the in-process fit bit for bit."""
    from joblib import parallel_config

    rng = np.random.default_rng(7)
    docs = _random_documents(rng, 80, 40)
    counts = lexical.token_counts(docs, 40, ignored_ids=[0, 1, 2])
    targets = np.zeros((80, 3), dtype=bool)
    targets[:, 0] = rng.random(80) < 0.1  # about 72 negatives: sampled down to 30
    targets[:, 1] = rng.random(80) < 0.7  # about 24 negatives: under the cap, fitted on everything
    targets[:, 2] = rng.random(80) < 0.3
    whole = lexical.fit_lexical_scorer(counts, targets)
    capped = lexical.fit_lexical_scorer(counts, targets, max_negatives=30, seed=5)
    assert np.count_nonzero(~targets[:, 1]) <= 30 < np.count_nonzero(~targets[:, 0])
    np.testing.assert_array_equal(capped.weight[:, 1], whole.weight[:, 1])
    assert not np.allclose(capped.weight[:, 0], whole.weight[:, 0])
    assert capped.max_negatives == 30
    with parallel_config(backend="loky"):
        in_workers = lexical.fit_lexical_scorer(counts, targets, n_jobs=2, max_negatives=30, seed=5)
    np.testing.assert_array_equal(in_workers.weight, capped.weight)
    np.testing.assert_array_equal(in_workers.bias, capped.bias)


def test_the_svm_workers_module_imports_neither_torch_nor_transformers():
    # joblib's worker processes import thmm.linear_svm to fit the SVMs: each would otherwise hold torch
    code = "import sys, thmm.linear_svm; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
