"""Issue 34: calibration (temperature per level), document confidence and review flags, explanations,
thmm-suggest and --resume-from-model. Tiny random models built in code; no training run except one
small one shared by the module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from calibration_thmm import (calibrate_logits, calibrated_thresholds, document_confidence, node_shifts,
                              node_temperatures)
from configuration_thmm import ConfigFieldError, Taxonomy, THMMConfig, Thresholds
from conftest import QUICKSTART_DATA, SMALL_RUN_ARGS, bench_module, save_model_dir, train_in_process
from thmm.calibration import expected_calibration_error, fit_platt, fit_temperatures, plot_reliability

TEXTS = [("Shoe sole with a heel", "An insole for a boot with a lace."),
         ("wireless packet radio network", "A base station sends packets to a terminal over a radio channel."),
         ("lithium battery cell", "An electrode of a battery cell for an electric vehicle."),
         ("printing press", "A cylinder presses ink onto a sheet of paper."),
         ("coffee brewing", "Water heating in a kitchen device for coffee.")]
TEMPERATURES = [0.5, 2.0, 3.5]


def raw_model_inputs(tokenizer, titles, abstracts):
    from modeling_thmm import encode_documents

    encoded = encode_documents(tokenizer, titles, abstracts, 64)
    encoded.pop("truncated")
    return tokenizer.pad(encoded, return_tensors="pt")


def calibrated_copy(model, temperatures=TEMPERATURES):
    """The same weights with ``temperatures`` in the config."""
    other = type(model)(THMMConfig(**{**model.config.to_dict(), "calibration_temperatures": temperatures})).eval()
    other.load_state_dict(model.state_dict())
    return other


# ---- calibration ------------------------------------------------------------------------------------


def test_calibration_never_changes_the_ranking_within_a_node_and_survives_reload(tiny_model, tiny_tokenizer,
                                                                                   tmp_path):
    from modeling_thmm import THMMForHierarchicalClassification

    raw_model = tiny_model(seed=3)
    model = calibrated_copy(raw_model)
    titles, abstracts = [t for t, _ in TEXTS] * 3, [a[: 10 * (i + 1)] for i, (_, a) in enumerate(TEXTS * 3)]
    raw = raw_model.predict_proba(tiny_tokenizer, titles, abstracts)
    calibrated = model.predict_proba(tiny_tokenizer, titles, abstracts)
    assert not np.allclose(raw, calibrated)  # the temperatures do change the scores
    for node in range(raw.shape[1]):  # ... but never the order of two documents within a node: float32 rounding
        # may tie or untie two scores a hair apart (sigmoid saturates), never swap them
        pairs = (raw[:, node, None] - raw[None, :, node]) * (calibrated[:, node, None] - calibrated[None, :, node])
        assert (pairs >= 0).all(), node
    with torch.no_grad():
        logits = raw_model(**raw_model_inputs(tiny_tokenizer, titles, abstracts)).logits.double().numpy()
    scale = node_temperatures(model.taxonomy, TEMPERATURES)
    for node in range(raw.shape[1]):  # on the logits in float64, the ranks are identical, ties included
        np.testing.assert_array_equal(rankdata(1 / (1 + np.exp(-logits[:, node]))),
                                      rankdata(1 / (1 + np.exp(-logits[:, node] / scale[node]))))
    save_model_dir(model, tiny_tokenizer, tmp_path / "m")
    reloaded = THMMForHierarchicalClassification.from_pretrained(tmp_path / "m").eval()
    assert reloaded.config.calibration_temperatures == TEMPERATURES
    np.testing.assert_array_equal(reloaded.predict_proba(tiny_tokenizer, titles, abstracts), calibrated)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["calibration_temperatures"] == TEMPERATURES
    assert (tmp_path / "m" / "calibration_thmm.py").exists()  # the remote code applies it too


def test_mapped_thresholds_keep_every_decision(small_taxonomy):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(400, len(small_taxonomy)))
    thresholds = Thresholds(0.5, (0.6, 0.4, 0.3), per_node={"A43B": 0.2, "H04": 0.7})
    scale = node_temperatures(small_taxonomy, TEMPERATURES)
    before = small_taxonomy.select(1 / (1 + np.exp(-logits)), threshold=thresholds)
    mapped = calibrated_thresholds(thresholds, small_taxonomy, TEMPERATURES)
    after = small_taxonomy.select(1 / (1 + np.exp(-logits / scale)), threshold=mapped)
    np.testing.assert_array_equal(before, after)
    assert mapped.per_level != thresholds.per_level and set(mapped.per_node) == {"A43B", "H04"}


def test_mapped_thresholds_keep_every_decision_with_platt_shifts(small_taxonomy):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, size=(400, len(small_taxonomy)))
    thresholds = Thresholds(0.5, (0.6, 0.4, 0.3), per_node={"A43B": 0.2})
    shifts = [0.5, -1.0, -2.5]
    calibrated = calibrate_logits(logits, node_temperatures(small_taxonomy, TEMPERATURES),
                                  node_shifts(small_taxonomy, shifts))
    before = small_taxonomy.select(1 / (1 + np.exp(-logits)), threshold=thresholds)
    after = small_taxonomy.select(1 / (1 + np.exp(-calibrated)),
                                  threshold=calibrated_thresholds(thresholds, small_taxonomy, TEMPERATURES, shifts))
    np.testing.assert_array_equal(before, after)


def test_platt_recovers_a_shift_that_temperature_cannot(small_taxonomy):
    rng = np.random.default_rng(2)
    true_logits = rng.normal(-3, 2, size=(4000, len(small_taxonomy)))
    targets = rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))
    shifted = (true_logits + 1.5) * 2.0  # too high and overconfident: logit = 2 * (z + 1.5), so z = l / 2 - 1.5
    temperatures, shifts = fit_platt(shifted, targets, small_taxonomy)
    np.testing.assert_allclose(temperatures, [2.0] * 3, rtol=0.15)
    np.testing.assert_allclose(shifts, [-1.5] * 3, atol=0.25)
    platt = 1 / (1 + np.exp(-calibrate_logits(shifted, node_temperatures(small_taxonomy, temperatures),
                                              node_shifts(small_taxonomy, shifts))))
    only_t = 1 / (1 + np.exp(-shifted / node_temperatures(small_taxonomy, fit_temperatures(shifted, targets,
                                                                                           small_taxonomy))))
    assert (expected_calibration_error(platt, targets, small_taxonomy)["ece"]
            < expected_calibration_error(only_t, targets, small_taxonomy)["ece"])


def test_platt_shifts_are_saved_and_validated(tiny_model, tiny_tokenizer, tiny_encoder_config, small_taxonomy,
                                              tmp_path):
    from modeling_thmm import THMMForHierarchicalClassification

    model = calibrated_copy(tiny_model(seed=3))
    model.config.calibration_shifts = [0.1, -0.2, 0.3]
    save_model_dir(model, tiny_tokenizer, tmp_path / "m")
    reloaded = THMMForHierarchicalClassification.from_pretrained(tmp_path / "m")
    assert reloaded.config.calibration_shifts == [0.1, -0.2, 0.3]
    logits = np.random.default_rng(0).normal(size=(3, len(small_taxonomy)))
    np.testing.assert_allclose(reloaded.calibrated_logits(logits),
                               logits / node_temperatures(small_taxonomy, TEMPERATURES)
                               + node_shifts(small_taxonomy, [0.1, -0.2, 0.3]))
    for temperatures, shifts, rule in ((None, [0.0, 0.0, 0.0], "one shift per calibration temperature (none set)"),
                                       (TEMPERATURES, [0.0, 0.0], "one shift per calibration temperature (3)"),
                                       (TEMPERATURES, [0.0, float("inf"), 0.0], "must hold finite numbers")):
        with pytest.raises(ConfigFieldError, match="calibration_shifts") as err:
            THMMConfig(encoder_config=tiny_encoder_config, taxonomy=small_taxonomy, max_length=64,
                       calibration_temperatures=temperatures, calibration_shifts=shifts)
        assert rule in str(err.value)


def test_fitted_temperatures_undo_overconfidence_and_lower_ece(small_taxonomy):
    rng = np.random.default_rng(1)
    true_logits = rng.normal(-1, 2, size=(3000, len(small_taxonomy)))
    targets = rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))
    overconfident = true_logits * np.asarray([3.0, 1.0, 0.5])[small_taxonomy.levels - 1]
    temperatures = fit_temperatures(overconfident, targets, small_taxonomy)
    np.testing.assert_allclose(temperatures, [3.0, 1.0, 0.5], rtol=0.15)
    raw = 1 / (1 + np.exp(-overconfident))
    fixed = 1 / (1 + np.exp(-overconfident / node_temperatures(small_taxonomy, temperatures)))
    before, after = (expected_calibration_error(p, targets, small_taxonomy) for p in (raw, fixed))
    assert after["level1_ece"] < 0.5 * before["level1_ece"] and after["level3_ece"] < 0.5 * before["level3_ece"]
    assert after["ece"] < before["ece"]


def test_the_metric_reports_ece_per_level_for_probabilities_only(small_taxonomy, tmp_path):
    from thmm.hierarchical_metrics import compute_hierarchical_metrics, format_markdown

    scores = np.random.default_rng(0).random((2, len(small_taxonomy)))
    results = compute_hierarchical_metrics([["A43B"], []], [["A43C"], ["B41F"]], scores=scores,
                                           taxonomy=small_taxonomy)
    targets = small_taxonomy.multi_hot([["A43C"], ["B41F"]])
    assert results["level3_ece"] == pytest.approx(
        expected_calibration_error(scores, targets, small_taxonomy)["level3_ece"])
    assert "| run | 3 | " in format_markdown(results).split("### Calibration")[1]
    decision_values = compute_hierarchical_metrics([["A43B"], []], [["A43C"], ["B41F"]], scores=scores * 4 - 2,
                                                   taxonomy=small_taxonomy)
    assert "ece" not in decision_values  # SVM decision values are no probabilities
    path = plot_reliability({"test": (scores, targets)}, small_taxonomy, tmp_path / "r.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("temperatures, rule", [([1.0, 2.0], "one temperature per taxonomy level (3)"),
                                                ([1.0, 0.0, 1.0], "must hold temperatures in [0.05, 20.0]"),
                                                ([1.0, float("nan"), 1.0], "must hold temperatures in")])
def test_bad_temperatures_are_refused_naming_the_field(tiny_encoder_config, small_taxonomy, temperatures, rule):
    with pytest.raises(ConfigFieldError, match="calibration_temperatures") as err:
        THMMConfig(encoder_config=tiny_encoder_config, taxonomy=small_taxonomy, max_length=64,
                   calibration_temperatures=temperatures)
    assert rule in str(err.value)


# ---- document confidence and review flags -------------------------------------------------------------


def test_document_confidence_is_the_probability_of_the_whole_decision(small_taxonomy):
    scores = np.full((1, len(small_taxonomy)), 0.1)
    selected = np.zeros_like(scores, dtype=bool)
    selected[0, :2] = True
    scores[0, :2] = 0.8
    expected = 0.8**2 * 0.9 ** (len(small_taxonomy) - 2)
    assert document_confidence(scores, selected)[0] == pytest.approx(expected)


def test_review_flags_follow_the_threshold(tiny_model, tiny_tokenizer):
    from pipeline_thmm import HierarchicalPatentClassificationPipeline

    model = calibrated_copy(tiny_model(seed=2, level_thresholds=[0.5, 0.45, 0.4]))
    pipe = HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer)
    documents = [{"title": t, "abstract": a} for t, a in TEXTS]
    plain = pipe(documents)
    probs = model.predict_proba(tiny_tokenizer, [t for t, _ in TEXTS], [a for _, a in TEXTS])
    confidence = model.document_confidence(probs)
    middle = float(np.median(confidence))
    outputs = pipe(documents, review_below=middle, decimals=None)
    assert [o["predicted"] for o in outputs] == pipe(documents, decimals=None)  # the same codes and scores
    np.testing.assert_allclose([o["confidence"] for o in outputs], confidence, rtol=1e-5)
    assert [o["review"] for o in outputs] == [c < middle for c in confidence]
    assert sum(o["review"] for o in outputs) == 2  # the two below the median of five
    assert not any(o["review"] for o in pipe(documents, review_below=0.0))
    assert all(o["review"] for o in pipe(documents, review_below=1.0))
    assert isinstance(plain[0], list)  # without review_below, the usual lists of codes
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="review_below: must be a confidence between 0 and 1"):
            pipe(documents, review_below=bad)


def test_thmm_predict_writes_confidence_and_review(tiny_model, tiny_tokenizer, tmp_path, capsys):
    from thmm.cli import predict

    model_dir = save_model_dir(calibrated_copy(tiny_model(seed=2)), tiny_tokenizer, tmp_path / "m")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "title": t, "abstract": a}) + "\n" for i, (t, a) in enumerate(TEXTS)))
    out = tmp_path / "out.jsonl"
    assert predict.cli(["--model", str(model_dir), "--input", str(source), "--output", str(out),
                        "--review-below", "0.3", "--full-precision"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(line["review"] == (line["confidence"] < 0.3) for line in lines)
    assert list(lines[0]) == ["id", "predicted", "confidence", "review", "truncated"]
    for bad in ("1.5", "-0.2", "nan"):
        assert exit_code(predict.cli, ["--model", str(model_dir), "--input", str(source), "--review-below", bad]) == 2
        assert "error: --review-below: must be a confidence between 0 and 1" in capsys.readouterr().err


# ---- explanations -------------------------------------------------------------------------------------


def with_lexical_scorer(model, tokenizer, weight=0.5):
    rng = np.random.default_rng(0)
    vocab, nodes = len(tokenizer), len(model.taxonomy)
    model.set_lexical_scorer(rng.random(vocab), rng.normal(size=(vocab, nodes)), rng.normal(size=nodes), weight,
                             1.5, -0.2)
    return model


def test_explanations_name_only_words_of_the_document(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import pipeline

    model = with_lexical_scorer(calibrated_copy(tiny_model(seed=4)), tiny_tokenizer)
    save_model_dir(model, tiny_tokenizer, tmp_path / "m")
    assert (tmp_path / "m" / "explain_thmm.py").exists()  # the saved pipeline explains without this package
    pipe = pipeline(model=str(tmp_path / "m"), trust_remote_code=True, explain=True)
    documents = [{"title": t, "abstract": a} for t, a in TEXTS] + [{"title": "Drone-rotor, unmanned WING"}]  # no ")": past the tiny embeddings
    outputs = pipe(documents, at_least_one=True)
    named = 0
    for document, codes in zip(documents, outputs):
        text = document["title"] + " " + document.get("abstract", "")
        for record in codes:
            weights = [e["weight"] for e in record["evidence"]]
            assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
            for evidence in record["evidence"]:
                assert evidence["word"] in text.split() or evidence["word"] in text  # as written there
                assert any(ch.isalnum() for ch in evidence["word"])
                named += 1
    assert named > 10
    # the same codes as without explanations; explain is a plain boolean
    assert [[r["code"] for r in codes] for codes in outputs] == [[r["code"] for r in codes] for codes in
                                                                  pipe(documents, at_least_one=True, explain=False)]
    with pytest.raises(ValueError, match="explain: must be True or False"):
        pipe(documents, explain="yes")


def test_lexical_evidence_reads_top_k_scorers_as_dense_ones(tiny_model, tiny_tokenizer):
    """Main-group models keep each node's top-k SVM weights only: the explanation reads those weights,
    and with k the whole vocabulary it finds exactly the dense scorer's evidence."""
    import torch

    from explain_thmm import explain_document

    dense = with_lexical_scorer(tiny_model(seed=4), tiny_tokenizer)
    rng = np.random.default_rng(0)
    vocab, nodes = len(tiny_tokenizer), len(dense.taxonomy)
    idf, weight, bias = rng.random(vocab), rng.normal(size=(vocab, nodes)), rng.normal(size=nodes)
    top_k = tiny_model(seed=4)
    top_k.set_lexical_scorer(idf, weight, bias, 0.5, 1.5, -0.2, top_k=vocab)
    pieces = torch.tensor([5, 9, 5, 12])
    assert torch.allclose(top_k.lexical.piece_weights(pieces, [0, 3]), dense.lexical.piece_weights(pieces, [0, 3]))
    small = tiny_model(seed=4)
    small.set_lexical_scorer(idf, weight, bias, 0.5, 1.5, -0.2, top_k=2)
    kept = small.lexical.piece_weights(pieces, [0, 3])
    assert (kept != 0).sum(dim=0).le(2 * 2).all()  # only a node's kept pieces (each may occur twice) weigh
    codes = list(dense.taxonomy.nodes[:3])
    assert explain_document(top_k, tiny_tokenizer, "drone rotor", "an unmanned wing", codes) == \
        explain_document(dense, tiny_tokenizer, "drone rotor", "an unmanned wing", codes)


def test_explanation_words_are_whole_words_of_the_text(tiny_model, tiny_tokenizer):
    from explain_thmm import document_words

    title, abstract = "Zylophone sole", "An insole (boot-lace) for walking."
    _, words = document_words(tiny_tokenizer, title, abstract, 64)
    assert [w for w, _ in words] == ["Zylophone", "sole", "An", "insole", "boot", "lace", "for", "walking"]


def test_thmm_predict_explain(tiny_model, tiny_tokenizer, tmp_path):
    from thmm.cli import predict

    model_dir = save_model_dir(with_lexical_scorer(tiny_model(seed=4), tiny_tokenizer), tiny_tokenizer, tmp_path / "m")
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\t{a}\n" for t, a in TEXTS))
    out = tmp_path / "out.jsonl"
    assert predict.cli(["--model", str(model_dir), "--input", str(source), "--output", str(out), "--explain",
                        "--at-least-one"]) == 0
    for (title, abstract), line in zip(TEXTS, out.read_text().splitlines()):
        for record in json.loads(line)["predicted"]:
            assert all(e["word"] in f"{title} {abstract}" for e in record["evidence"])


# ---- thmm-suggest -------------------------------------------------------------------------------------


def test_suggest_is_deterministic_for_a_seed_and_prefers_uncertain_documents(small_taxonomy):
    from thmm.suggest import suggest

    rng = np.random.default_rng(0)
    probs = rng.random((200, len(small_taxonomy))) * 0.05  # sure negatives ...
    probs[17] = 0.5  # ... but one document sits on every threshold
    thresholds = np.full(len(small_taxonomy), 0.5)
    first, scores = suggest(probs, thresholds, 20, seed=3)
    again, _ = suggest(probs, thresholds, 20, seed=3)
    np.testing.assert_array_equal(first, again)
    assert first[0] == 17 and len(set(first)) == 20 and np.all(np.diff(scores) <= 1e-6 + 0 * scores[1:])
    ties = np.full((50, len(small_taxonomy)), 0.2)
    orders = {tuple(suggest(ties, thresholds, 5, seed=s)[0]) for s in range(4)}
    assert len(orders) > 1  # the seed breaks ties
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n: must be an integer of at least 1"):
            suggest(probs, thresholds, bad)


def test_suggest_favours_rare_nodes(small_taxonomy):
    from thmm.suggest import suggest

    leaf = {code: small_taxonomy.index(code) for code in ("A43B", "H04W")}
    probs = np.full((101, len(small_taxonomy)), 0.01)
    probs[:100, leaf["A43B"]] = 0.45  # a common node, uncertain in 100 documents
    probs[100, leaf["H04W"]] = 0.45  # a rare one, uncertain in one
    chosen, _ = suggest(probs, np.full(len(small_taxonomy), 0.5), 2, seed=0)
    assert 100 in chosen


def exit_code(command, argv) -> int:
    try:
        return command(argv)
    except SystemExit as exit_:  # argparse's errors
        return exit_.code


def test_thmm_suggest_cli(saved_model_dir, tmp_path, capsys):
    from thmm.cli import suggest

    source = tmp_path / "pool.jsonl"
    source.write_text("".join(json.dumps({"id": f"P{i}", "title": t, "abstract": a[: 5 + 7 * i]}) + "\n"
                              for i, (t, a) in enumerate(TEXTS * 2)))
    outputs = []
    for _ in range(2):
        out = tmp_path / "s.jsonl"
        assert suggest.cli(["--model", str(saved_model_dir), "--input", str(source), "--n", "4", "--seed", "7",
                            "--output", str(out)]) == 0
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    lines = [json.loads(line) for line in outputs[0].splitlines()]
    assert [line["rank"] for line in lines] == [1, 2, 3, 4] and len({line["id"] for line in lines}) == 4
    for argv, message in ((["--n", "0"], "error: --n: must be at least 1 (got 0)"),
                          (["--n", "1", "--seed", "-1"], "error: --seed: must be at least 0 (got -1)"),
                          (["--n", "11"], "error: --n: 11 patents asked for, but " + str(source) + " holds only 10")):
        assert exit_code(suggest.cli, ["--model", str(saved_model_dir), "--input", str(source), *argv]) == 2
        assert capsys.readouterr().err.strip() == message  # one line: no loading bar before it
    (tmp_path / "mine.txt").write_text("my notes\n")
    assert suggest.cli(["--model", str(saved_model_dir), "--input", str(source), "--n", "1", "--output",
                        str(tmp_path / "mine.txt")]) == 2
    assert (tmp_path / "mine.txt").read_text() == "my notes\n"


# ---- training: --calibration temperature and --resume-from-model -------------------------------------


@pytest.fixture(scope="module")
def calibrated_run(tiny_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated") / "run"
    summary = train_in_process(["--dataset", QUICKSTART_DATA, "--encoder", tiny_encoder_dir, "--output-dir", out,
                                *SMALL_RUN_ARGS, "--calibration", "temperature", "--no-lexical-fusion"])
    return out, summary


def test_a_calibrated_run_saves_temperatures_and_keeps_its_decisions(calibrated_run):
    out, summary = calibrated_run
    config = json.loads((out / "model" / "config.json").read_text())
    assert len(config["calibration_temperatures"]) == 3
    assert summary["calibration"]["temperatures"] == config["calibration_temperatures"]
    for key in ("micro_f1", "macro_f1"):  # thresholds mapped with the temperatures: the same decisions
        assert summary["test"][key] == pytest.approx(summary["calibration"]["test_uncalibrated"][key], abs=1e-9)
    assert "level1_ece" in summary["test"] and "level1_ece" in summary["calibration"]["test_uncalibrated"]
    report = (out / "metrics" / "test_metrics.md").read_text()
    assert "### Coverage: classify the surest documents" in report and "| 100% | 8 |" in report
    for plot in ("test_metrics_coverage.png", "test_metrics_reliability.png", "test_metrics_per_level_f1.png"):
        assert (out / "metrics" / plot).read_bytes()[:4] == b"\x89PNG"
    assert [row["coverage"] for row in summary["test_coverage"]][-1] == 1.0
    first = json.loads((out / "test_predictions.jsonl").read_text().splitlines()[0])
    assert 0 <= first["confidence"] <= 1


def test_resume_from_model_continues_and_refuses_another_taxonomy(calibrated_run, tiny_model, tiny_encoder_dir,
                                                                 tmp_path):
    from configuration_thmm import Taxonomy as Tax
    from modeling_thmm import THMMForHierarchicalClassification
    from thmm.arguments import ConfigError
    from thmm.trainer import load_trained_weights

    out, _ = calibrated_run
    trained = THMMForHierarchicalClassification.from_pretrained(out / "model")
    fresh = type(trained)(THMMConfig(**{**trained.config.to_dict(), "calibration_temperatures": None}))
    load_trained_weights(fresh, str(out / "model"), trained.taxonomy)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    other = Tax.from_codes(["A43B", "H04W"])
    with pytest.raises(ConfigError, match=r"--resume-from-model .*: it was trained for another taxonomy"):
        load_trained_weights(tiny_model(taxonomy=other), str(out / "model"), other)
    with pytest.raises(ConfigError, match="--resume-from-model .*missing: cannot load it"):
        load_trained_weights(fresh, str(tmp_path / "missing"), trained.taxonomy)
    # through the command line: training data whose taxonomy differs is refused before any training
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for split in ("train", "dev", "test"):
        lines = (QUICKSTART_DATA / f"{split}.tsv").read_text().splitlines()
        (narrow / f"{split}.tsv").write_text("\n".join(lines[:1] + [ln for ln in lines[1:] if "A43B" in ln][:12]) + "\n")
    from thmm.cli import train

    code = train.cli(["--dataset", str(narrow), "--encoder", str(tiny_encoder_dir), "--output-dir",
                      str(tmp_path / "run2"), *SMALL_RUN_ARGS, "--resume-from-model", str(out / "model")])
    assert code == 2 and not (tmp_path / "run2" / "model").exists()


def test_resume_from_model_trains_on(calibrated_run, tiny_encoder_dir, tmp_path):
    out, _ = calibrated_run
    taxonomy_file = tmp_path / "taxonomy.json"
    from modeling_thmm import THMMForHierarchicalClassification

    THMMForHierarchicalClassification.from_pretrained(out / "model").taxonomy.to_json(taxonomy_file)
    summary = train_in_process(["--dataset", QUICKSTART_DATA, "--encoder", tiny_encoder_dir, "--output-dir",
                                tmp_path / "more", *SMALL_RUN_ARGS, "--max-train-samples", "24",
                                "--taxonomy", taxonomy_file, "--resume-from-model", out / "model",
                                "--no-lexical-fusion"])
    assert summary["test"]["micro_f1"] is not None and (tmp_path / "more" / "model" / "config.json").exists()


# ---- the benchmark scripts' own pieces (their figures are in docs/benchmarks.md) ----------------------


def test_faithfulness_deletes_every_occurrence_of_the_words():
    without = bench_module("faithfulness").without
    assert without("Drone with a drone-rotor, and DRONE legs", {"drone", "legs"}) == "with a - rotor , and"


@pytest.mark.parametrize("name", ["faithfulness", "active_learning"])
def test_bench_scripts_say_so_without_the_data(name, tmp_path):
    argv = ["--data", str(tmp_path)] + (["--model", str(tmp_path)] if name == "faithfulness" else [])
    with pytest.raises(SystemExit, match="no dronesr data at .*nothing measured"):
        bench_module(name).main(argv)
