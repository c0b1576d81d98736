"""The output schema users read: label records (``predict``, ``label_records``, the pipeline,
``thmm-predict``, ``test_predictions.jsonl``) and labelled probabilities (``predict_proba``).

* scores rounded to 4 places by default, full precision with ``decimals=None``;
* one id key, ``id``, of the input's type;
* shown scores obey the hierarchy (a child never above its parent, an implied ancestor never below
  the predicted code that implies it), without changing which codes are predicted;
* ``predict_proba(..., labelled=True)``: the array with its node codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from decoding_thmm import DEFAULT_DECIMALS, NodeScores
from taxonomy_thmm import Taxonomy, Thresholds

TITLES = ["shoe sole with heel", "wireless packet radio network", "lithium battery cell", "ink", "coffee brewing"]
PER_LEVEL = (0.55, 0.35, 0.3)  # tuned-looking: lower thresholds further down, as the quickstart's


def random_scores(taxonomy, seed, documents=64):
    """Probabilities of every kind: raw heads' (a child often above its parent), spread over [0, 1]."""
    return np.random.default_rng(seed).random((documents, len(taxonomy))).astype(np.float32)


def naive_display(taxonomy, scores, codes):
    """The display rule by its definition: the max over the code and its predicted descendants."""
    return {code: max(float(scores[taxonomy.index(c)]) for c in codes if c == code or code in taxonomy.ancestors(c))
            for code in codes}


def assert_obeys_the_hierarchy(taxonomy, records):
    for doc in records:
        shown = {r["code"]: r["score"] for r in doc}
        for code, score in shown.items():
            parent = taxonomy.parent(code)
            assert parent is None or score <= shown[parent], (code, score, parent, shown)
        levels = [r["level"] for r in doc]
        assert levels == sorted(levels)
        for level in set(levels):  # by level, then by decreasing shown score
            scores = [r["score"] for r in doc if r["level"] == level]
            assert scores == sorted(scores, reverse=True)


# ---- the display rule: one Taxonomy method ------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_display_scores_are_the_max_over_the_predicted_subtree(small_taxonomy, seed):
    tax = small_taxonomy
    scores = random_scores(tax, seed)
    selected = tax.select(scores, threshold=Thresholds(per_level=PER_LEVEL))
    shown = tax.display_scores(scores, selected)
    for row, (chosen, doc_scores) in enumerate(zip(selected, scores)):
        codes = [tax.nodes[i] for i in np.flatnonzero(chosen)]
        expected = naive_display(tax, doc_scores, codes)
        for code in codes:
            assert shown[row, tax.index(code)] == pytest.approx(expected[code], abs=1e-7)
    np.testing.assert_array_equal(shown[~selected], scores[~selected])  # unselected nodes keep their own
    assert (shown >= scores - 1e-7).all()
    with pytest.raises(ValueError, match="shape"):
        tax.display_scores(scores, selected[:, :-1])


def test_select_is_the_decision_of_decode(small_taxonomy):
    tax = small_taxonomy
    scores = random_scores(tax, 7)
    for options in ({"threshold": 0.5}, {"threshold": Thresholds(per_level=PER_LEVEL)}, {"top_k": 2},
                    {"threshold": 0.95, "at_least_one": True}):
        selected = tax.select(scores, **options)
        assert [sorted(tax.nodes[i] for i in np.flatnonzero(row)) for row in selected] == \
            [sorted(codes) for codes in tax.decode(scores, **options)]


# ---- label records ------------------------------------------------------------------------------


@pytest.mark.parametrize("head_type", ["tmm", "thmm", "flat"])
def test_shown_scores_obey_the_hierarchy_on_random_models(tiny_model, tiny_tokenizer, head_type):
    for seed in range(2):
        model = tiny_model(seed=seed, head_type=head_type, max_length=32)
        probs = model.predict_proba(tiny_tokenizer, TITLES)
        # the tiny models score near 0.5: thresholds there make label sets of every size
        for threshold in (0.5, [0.5, 0.49, 0.48], [0.48, 0.5, 0.52]):
            records = model.label_records(probs, threshold=threshold)
            assert_obeys_the_hierarchy(model.taxonomy, records)
            assert [sorted(r["code"] for r in doc) for doc in records] == \
                [sorted(codes) for codes in model.decode(probs, threshold=threshold)]  # decisions unchanged


def test_implied_ancestors_are_never_shown_below_the_code_that_implies_them(tiny_model):
    model = tiny_model()
    tax, thresholds = model.taxonomy, Thresholds(per_level=PER_LEVEL)
    node_thresholds = thresholds.for_nodes(tax)
    probs = random_scores(tax, 11, documents=200)
    records = model.label_records(probs, threshold=thresholds, decimals=None)
    assert_obeys_the_hierarchy(tax, records)
    below_own = 0
    for doc, row in zip(records, probs):
        codes = [r["code"] for r in doc]
        for record in doc:
            # the codes that put this one in the label set: itself or a predicted descendant, each
            # having reached its own threshold
            admitting = [c for c in codes if (c == record["code"] or record["code"] in tax.ancestors(c))
                         and row[tax.index(c)] >= node_thresholds[tax.index(c)]]
            assert admitting, record
            assert record["score"] >= max(row[tax.index(c)] for c in admitting) - 1e-7
            assert record["score"] >= min(node_thresholds[tax.index(c)] for c in admitting) - 1e-7
            below_own += row[tax.index(record["code"])] < node_thresholds[tax.index(record["code"])]
    assert below_own  # the raw scores of some implied ancestors are below their threshold: shown above it
    global_records = model.label_records(probs, threshold=0.4)
    assert all(r["score"] >= 0.4 for doc in global_records for r in doc)  # one threshold: none shown below it


def test_the_quickstart_case_and_raw_scores(tiny_model):
    """A child above its parent (A43 0.55 < A43B 0.61) and an ancestor below its threshold (A47 0.22
    with a predicted A47J): shown coherent by default, as the heads scored them with raw_scores."""
    model = tiny_model()
    tax = model.taxonomy
    probs = np.full((1, len(tax)), 0.01, dtype=np.float32)
    for code, value in {"A": 0.9, "A43": 0.55, "A43B": 0.61, "A47": 0.22, "A47J": 0.41}.items():
        probs[0, tax.index(code)] = value
    records = model.label_records(probs, threshold=list(PER_LEVEL))
    assert [(r["code"], r["score"]) for r in records[0]] == [
        ("A", 0.9), ("A43", 0.61), ("A47", 0.41), ("A43B", 0.61), ("A47J", 0.41)]
    raw = model.label_records(probs, threshold=list(PER_LEVEL), raw_scores=True)
    assert [(r["code"], r["score"]) for r in raw[0]] == [
        ("A", 0.9), ("A43", 0.55), ("A47", 0.22), ("A43B", 0.61), ("A47J", 0.41)]
    # consistent decoding caps a child by its parent first (and drops A47J, 0.22 < 0.3): display changes nothing
    consistent = model.label_records(probs, threshold=list(PER_LEVEL), consistent=True)
    assert [(r["code"], r["score"]) for r in consistent[0]] == [("A", 0.9), ("A43", 0.55), ("A43B", 0.55)]
    # a leaf forced by at_least_one is shown with its own score, its ancestors with at least it
    forced = model.label_records(probs, threshold=0.95, at_least_one=True)
    assert [(r["code"], r["score"]) for r in forced[0]] == [("A", 0.9), ("A43", 0.61), ("A43B", 0.61)]


def test_scores_are_rounded_to_four_places_unless_asked(tiny_model, tiny_tokenizer):
    model = tiny_model(max_length=32)
    model.config.level_thresholds = [0.0, 0.0, 0.0]  # every node predicted
    probs = model.predict_proba(tiny_tokenizer, TITLES)
    assert DEFAULT_DECIMALS == 4
    rounded = model.label_records(probs)
    full = model.label_records(probs, decimals=None)
    assert [[r["code"] for r in doc] for doc in rounded] == [[r["code"] for r in doc] for doc in full]
    shown = [r["score"] for doc in rounded for r in doc]
    assert all(type(s) is float and s == round(s, 4) for s in shown)
    assert all(len(repr(s).partition(".")[2]) <= 4 for s in shown)
    exact = [r["score"] for doc in full for r in doc]
    assert any(s != round(s, 4) for s in exact)
    assert all(abs(a - b) <= 0.5e-4 + 1e-12 for a, b in zip(shown, exact))
    assert model.label_records(probs, decimals=2)[0][0]["score"] == round(full[0][0]["score"], 2)
    assert model.predict(tiny_tokenizer, TITLES) == rounded
    assert model.predict(tiny_tokenizer, TITLES, decimals=None) == full


def test_the_pipeline_rounds_and_passes_the_output_options(tiny_model, tiny_tokenizer):
    from pipeline_thmm import HierarchicalPatentClassificationPipeline

    model = tiny_model(max_length=32)
    pipe = HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer)
    probs = model.predict_proba(tiny_tokenizer, TITLES[:1])
    for options in ({}, {"decimals": None}, {"raw_scores": True, "threshold": 0.45}, {"decimals": 2, "top_k": 2}):
        got = pipe(TITLES[0], **options)
        expected = model.label_records(probs, **options)[0]
        assert [r["code"] for r in got] == [r["code"] for r in expected]
        decimals = options.get("decimals", 4)
        tolerance = 1e-6 if decimals is None else 10**-decimals + 1e-6  # (two roundings may differ by one step)
        assert all(abs(g["score"] - e["score"]) <= tolerance for g, e in zip(got, expected))
    assert all(r["score"] == round(r["score"], 4) for r in pipe(TITLES[1]))
    full = HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer, decimals=None)
    assert any(r["score"] != round(r["score"], 4) for r in full(TITLES[1], threshold=0.0))


@pytest.mark.parametrize("options, match", [
    ({"decimals": -1}, r"^decimals: must be an integer of at least 0, or None for full precision \(got -1\)"),
    ({"decimals": 2.5}, r"^decimals: .*\(got 2.5\)"),
    ({"decimals": True}, r"^decimals: .*\(got True\)"),
    ({"decimals": "4"}, r"^decimals: .*\(got '4'\)"),
    ({"raw_scores": "yes"}, r"^raw_scores: must be True or False \(got 'yes'\)"),
])
def test_bad_output_options_are_refused_before_any_work(tiny_model, tiny_tokenizer, options, match):
    from pipeline_thmm import HierarchicalPatentClassificationPipeline

    model = tiny_model()
    probs = random_scores(model.taxonomy, 0, documents=2)
    with pytest.raises(ValueError, match=match):
        model.label_records(probs, **options)
    with pytest.raises(ValueError, match=match):
        model.predict(None, TITLES, **options)  # refused before the (missing) tokenizer is looked at
    pipe = HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match=match):
        pipe(TITLES[0], **options)


# ---- labelled probabilities ---------------------------------------------------------------------


def test_predict_proba_labelled(tiny_model, tiny_tokenizer):
    model = tiny_model(max_length=8)
    plain = model.predict_proba(tiny_tokenizer, TITLES)
    assert isinstance(plain, np.ndarray) and plain.shape == (len(TITLES), len(model.taxonomy))  # the default
    scores = model.predict_proba(tiny_tokenizer, TITLES, labelled=True)
    assert isinstance(scores, NodeScores) and len(scores) == len(TITLES)
    np.testing.assert_array_equal(scores.array, plain)
    np.testing.assert_array_equal(np.asarray(scores), plain)
    assert scores.labels == model.taxonomy.nodes == tuple(model.config.id2label[i] for i in range(len(plain[0])))
    assert scores.truncated == [False, False, False, False, False]
    np.testing.assert_array_equal(scores.column("A43B"), plain[:, model.taxonomy.index("A43B")])
    dicts = scores.to_dicts()
    assert [list(d) for d in dicts] == [list(model.taxonomy.nodes)] * len(TITLES)
    assert all(v == round(float(plain[i, model.taxonomy.index(c)]), 4) for i, d in enumerate(dicts) for c, v in d.items())
    assert scores.to_dicts(decimals=None)[0]["A"] == float(plain[0, model.taxonomy.index("A")])
    assert json.loads(json.dumps(dicts)) == dicts
    assert model.label_records(scores) == model.label_records(plain)  # works wherever the array does
    with pytest.raises(KeyError, match="'Z99Z'"):
        scores.column("Z99Z")
    long_title = "wireless packet radio network terminal base station channel protocol"
    scores, truncated = model.predict_proba(tiny_tokenizer, [long_title, "ink"], labelled=True,
                                            return_truncated=True)
    assert truncated == scores.truncated == [True, False]
    empty = model.predict_proba(tiny_tokenizer, [], labelled=True)
    assert empty.array.shape == (0, len(model.taxonomy)) and empty.to_dicts() == []
    with pytest.raises(ValueError, match=r"^labelled: must be True or False \(got 'yes'\)"):
        model.predict_proba(tiny_tokenizer, TITLES, labelled="yes")


# ---- one id key -------------------------------------------------------------------------------


def test_test_predictions_and_thmm_predict_share_one_schema(saved_model_dir, tmp_path):
    from modeling_thmm import THMMForHierarchicalClassification
    from thmm.cli import predict
    from thmm.reports import write_test_predictions

    model = THMMForHierarchicalClassification.from_pretrained(saved_model_dir)
    (tmp_path / "in.tsv").write_text("patent_id\ttitle\nP1\tshoe sole\nP2\tradio network\n")
    (tmp_path / "in.txt").write_text("shoe sole\nradio network\n")
    outputs = {}
    for name in ("in.tsv", "in.txt"):
        out = tmp_path / f"{name}.jsonl"
        assert predict.cli(["--model", str(saved_model_dir), "--input", str(tmp_path / name), "--output", str(out),
                            "--threshold", "0"]) == 0
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in outputs["in.tsv"]] == ["P1", "P2"]  # ids keep their input type
    assert [r["id"] for r in outputs["in.txt"]] == [1, 2]
    probs = random_scores(model.taxonomy, 3, documents=2)
    path = tmp_path / "test_predictions.jsonl"
    write_test_predictions(path, ["P1", "P2"], [["A43B"], ["H04W"]], model.label_records(probs))
    saved = [json.loads(line) for line in path.read_text().splitlines()]
    assert [sorted(r) for r in saved] == [["id", "labels", "predicted"]] * 2
    assert [r["id"] for r in saved] == ["P1", "P2"] and saved[0]["labels"] == ["A43B"]
    for records in (outputs["in.tsv"], saved):
        assert all(set(r) - {"truncated", "labels", "confidence"} == {"id", "predicted"} for r in records)
        for r in records:
            assert r["predicted"] and all(set(p) == {"code", "score", "level", "title"} for p in r["predicted"])
            assert all(p["score"] == round(p["score"], 4) for p in r["predicted"])
        assert_obeys_the_hierarchy(model.taxonomy, [r["predicted"] for r in records])
    with pytest.raises(ValueError):
        write_test_predictions(tmp_path / "short.jsonl", ["P1"], [["A43B"], ["H04W"]], model.label_records(probs))


# ---- remote code: the split modules travel with a saved model ----------------------------------

MODEL_MODULES = ("configuration_thmm", "taxonomy_thmm", "modeling_thmm", "heads_thmm", "lexical_thmm",
                 "encoder_layers_thmm", "weights_thmm", "tokenization_thmm", "decoding_thmm", "pipeline_thmm")


def test_modeling_thmm_re_exports_the_moved_names():
    import decoding_thmm
    import encoder_layers_thmm
    import heads_thmm
    import lexical_thmm
    import modeling_thmm
    import tokenization_thmm
    import weights_thmm

    for module in (heads_thmm, lexical_thmm, encoder_layers_thmm, weights_thmm, tokenization_thmm):
        for name in module.__all__:
            if hasattr(modeling_thmm, name):
                assert getattr(modeling_thmm, name) is getattr(module, name), name
    for name in modeling_thmm.__all__:
        assert hasattr(modeling_thmm, name), name
    for name in ("LexicalScorer", "fuse_lexical_logits", "encode_documents", "document_problem", "check_documents",
                 "longest_first", "encoder_layer_list", "read_safetensors_header", "WeightsError",
                 "TaxonomyMismatchError", "UNFINISHED_MARKER", "FlatHead", "HierarchicalHeads", "LevelHeads",
                 "CNNDocumentEncoder"):
        assert name in modeling_thmm.__all__, name
    assert modeling_thmm.NodeScores is decoding_thmm.NodeScores


def test_saved_folder_carries_every_module_and_loads_without_the_package(tiny_model, tiny_tokenizer, tmp_path):
    model = tiny_model(max_length=16, label_titles={"A43B": "Footwear parts"})
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    for name in MODEL_MODULES:
        assert (folder / f"{name}.py").is_file(), name
    expected = model.predict(tiny_tokenizer, TITLES, threshold=0.3, decimals=None)
    script = textwrap.dedent(
        f"""
        import json, sys
        for name in {MODEL_MODULES!r}:
            sys.modules[name] = None  # the installed package must not be used
        from transformers import AutoModel, AutoTokenizer, pipeline
        model = AutoModel.from_pretrained("model", trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        tokenizer = AutoTokenizer.from_pretrained("model")
        titles = {TITLES!r}
        scores = model.predict_proba(tokenizer, titles, labelled=True)
        pipe = pipeline(model="model", trust_remote_code=True)
        json.dump({{"records": model.predict(tokenizer, titles, threshold=0.3, decimals=None),
                    "rounded": model.label_records(scores, threshold=[0.3, 0.3, 0.3]),
                    "labels": list(scores.labels), "dicts": scores.to_dicts(),
                    "pipe": pipe(titles[0], threshold=0.3, raw_scores=True)}}, open("out.json", "w"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["labels"] == list(model.taxonomy.nodes) and len(out["dicts"]) == len(TITLES)
    for got, want in zip(out["records"], expected):
        assert [r["code"] for r in got] == [r["code"] for r in want]
        assert all(abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want))
    assert all(r["score"] == round(r["score"], 4) for doc in out["rounded"] for r in doc)
    raw = model.label_records(model.predict_proba(tiny_tokenizer, TITLES[:1]), threshold=0.3, raw_scores=True)[0]
    assert [r["code"] for r in out["pipe"]] == [r["code"] for r in raw]


def test_thresholds_of_another_copy_of_the_code_are_accepted(small_taxonomy, monkeypatch):
    """A model loaded as remote code may hold its config's classes from one copy of taxonomy_thmm and
    its own from another: a Thresholds of either copy decodes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("other_taxonomy_copy", sys.modules[Taxonomy.__module__].__file__)
    other = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, other)  # (dataclasses look their module up)
    spec.loader.exec_module(other)
    foreign = other.Thresholds(per_level=PER_LEVEL, per_node={"A43B": 0.2})
    assert not isinstance(foreign, Thresholds)
    assert Thresholds.coerce(foreign) == Thresholds(per_level=PER_LEVEL, per_node={"A43B": 0.2})
    np.testing.assert_array_equal(small_taxonomy.node_thresholds(foreign),
                                  small_taxonomy.node_thresholds(Thresholds.coerce(foreign)))
    scores = random_scores(small_taxonomy, 1)
    assert small_taxonomy.decode(scores, foreign) == small_taxonomy.decode(scores, Thresholds.coerce(foreign))
