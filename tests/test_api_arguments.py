"""The Python API's lower-level functions refuse bad arguments naming the argument (and the document
and node), as the commands do: active-learning ranking, calibration, explanations, and decoding
options under remote code, where a model holds two copies of the taxonomy's classes."""

import importlib.util
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, SMALL_TAXONOMY_CODES
from taxonomy_thmm import Taxonomy


def _other_copy_of_taxonomy_module():
    """``taxonomy_thmm`` loaded a second time under another name, as ``transformers_modules`` loads a
    saved model's config and model code: its classes are not this module's."""
    spec = importlib.util.spec_from_file_location("copied_taxonomy_thmm", REPO_ROOT / "taxonomy_thmm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_decoding_options_name_the_threshold_whatever_copy_the_taxonomy_is_of(small_taxonomy):
    from decoding_thmm import check_decoding_options

    other = _other_copy_of_taxonomy_module().Taxonomy.from_codes(SMALL_TAXONOMY_CODES)
    assert type(other) is not Taxonomy and other == small_taxonomy and small_taxonomy == other
    for taxonomy in (small_taxonomy, other):
        with pytest.raises(ValueError, match=r"^threshold: expected one threshold per level \(3\)"):
            check_decoding_options(taxonomy, threshold=[0.5, 0.4])
    with pytest.raises(ValueError, match=r"^threshold: expected a number, or a list of one per level, got a dict"):
        check_decoding_options(small_taxonomy, threshold={"A43B": 0.3})


def test_predict_names_a_missing_text_list_and_a_tokenizer_that_is_a_name(tiny_model, tiny_tokenizer):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^titles: expected a list of strings, got NoneType"):
        model.predict(tiny_tokenizer, None)
    with pytest.raises(ValueError, match=r"^tokenizer: expected a tokenizer .*got str"):
        model.predict("bert-base-uncased", ["shoe sole"])
    assert len(model.predict(tiny_tokenizer, ["shoe sole"], None)) == 1  # abstracts may be left out


@pytest.mark.parametrize("call, message", [
    (lambda P, T: (np.full_like(P, np.nan), T, 3, 0), r"^probabilities: document 0, node 0: nan is not a probability"),
    (lambda P, T: (P * 5, T, 3, 0), r"^probabilities: document \d+, node \d+: .* is not a probability"),
    (lambda P, T: (P, np.full_like(T, 2.0), 3, 0), r"^node_thresholds: node 0: 2.0 is not a probability"),
    (lambda P, T: (P, 0.5, 3, 0), r"^node_thresholds: expected one probability per node"),
    (lambda P, T: (P, T[:-1], 3, 0), r"^probabilities: expected shape \[documents, 3\]"),
    (lambda P, T: (P, T, 3, "a"), r"^seed: must be an integer of at least 0 \(got 'a'\)"),
    (lambda P, T: (P, T, 3, -1), r"^seed: must be an integer of at least 0 \(got -1\)"),
    (lambda P, T: (P, T, 0, 0), r"^n: must be an integer of at least 1"),
])
def test_suggest_refuses_what_it_cannot_rank(call, message):
    from thmm.suggest import suggest

    probabilities = np.random.default_rng(0).random((6, 4))
    thresholds = np.full(4, 0.5)
    with pytest.raises(ValueError, match=message):
        suggest(*call(probabilities, thresholds))
    chosen, scores = suggest(probabilities, thresholds, 3, seed=1)
    assert len(set(chosen.tolist())) == 3 and np.isfinite(scores).all()


def test_calibration_fits_refuse_scores_and_labels_they_cannot_fit(small_taxonomy):
    from calibration_thmm import node_shifts, node_temperatures
    from thmm.calibration import expected_calibration_error, fit_platt, fit_temperatures

    nodes = len(small_taxonomy)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, nodes))
    targets = (rng.random((8, nodes)) > 0.5).astype(float)
    for fit in (fit_temperatures, fit_platt):
        with pytest.raises(ValueError, match=r"^logits: document 0, node 0: nan is not finite"):
            fit(np.full((8, nodes), np.nan), targets, small_taxonomy)
        with pytest.raises(ValueError, match=r"^targets: document \d+, node \d+: 2.0 is not 0 or 1"):
            fit(logits, targets * 2, small_taxonomy)
    probabilities = 1 / (1 + np.exp(-logits))
    with pytest.raises(ValueError, match=r"^probabilities: document 0, node 0: 1.5 is not a probability"):
        expected_calibration_error(np.full((8, nodes), 1.5), targets, small_taxonomy)
    with pytest.raises(ValueError, match=r"^probabilities: expected shape \[documents, "):
        expected_calibration_error(probabilities[:, :2], targets, small_taxonomy)
    with pytest.raises(ValueError, match=r"^columns: expected a mask of"):
        expected_calibration_error(probabilities, targets, small_taxonomy, np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match=r"^targets: document \d+, node \d+: 2.0 is not 0 or 1"):
        expected_calibration_error(probabilities, targets * 2, small_taxonomy)
    # a column outside the mask may hold anything (the metric's floor below every score), 0/1 or bool labels
    masked = probabilities.copy()
    masked[:, 0] = -5.0
    keep = np.ones(nodes, dtype=bool)
    keep[0] = False
    ece = expected_calibration_error(masked, targets.astype(bool), small_taxonomy, keep)["ece"]
    assert ece == expected_calibration_error(probabilities, targets, small_taxonomy, keep)["ece"]
    with pytest.raises(ValueError, match=r"^temperatures: expected one number per taxonomy level \(3\)"):
        node_temperatures(small_taxonomy, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^temperatures: each must be a finite number in \[0.05, 20.0\]"):
        node_temperatures(small_taxonomy, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"^shifts: each must be a finite number \(got"):
        node_shifts(small_taxonomy, [0.0, float("inf"), 0.0])
    assert node_temperatures(small_taxonomy, [1.0, 2.0, 3.0]).tolist() == (small_taxonomy.levels.astype(float)).tolist()


def test_explanations_refuse_bad_arguments_and_show_only_words_with_a_weight(tiny_model, tiny_tokenizer,
                                                                              small_taxonomy):
    from explain_thmm import explain_document

    model = tiny_model().eval()
    code = small_taxonomy.nodes[-1]
    for kwargs, message in (({"top_words": -1}, r"^top_words: must be an integer of at least 1"),
                            ({"top_words": 2.5}, r"^top_words: must be an integer of at least 1"),
                            ({"codes": code}, r"^codes: expected a list of codes, got str"),
                            ({"codes": ["Z99Z"]}, r"^codes\[0\]: "),
                            ({"title": None}, r"^document: field 'title': expected a string, got NoneType")):
        arguments = {"title": "shoe sole with a heel", "abstract": "", "codes": [code], **kwargs}
        with pytest.raises(ValueError, match=message):
            explain_document(model, tiny_tokenizer, **arguments)
    evidence = explain_document(model, tiny_tokenizer, "shoe sole with a heel", "", [code], top_words=3)[code]
    assert len(evidence) <= 3 and all(word["weight"] > 0 for word in evidence)


def test_a_tokenizer_whose_ids_pass_the_embeddings_is_refused_before_any_work(tiny_model, tiny_tokenizer):
    """As many word-pieces as the model's, but ids past its embedding rows (an edited or another model's
    tokenizer.json): an IndexError deep in the encoder before; a ValueError naming the rows now."""

    class ShiftedIds:  # the tiny tokenizer with every id moved up by 1000
        name_or_path = "shifted"

        def __init__(self, inner):
            self.inner, self.all_special_ids = inner, inner.all_special_ids

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def __len__(self):
            return len(self.inner)

        def get_vocab(self):
            return {word: i + 1000 for word, i in self.inner.get_vocab().items()}

    model = tiny_model()
    model.check_tokenizer(tiny_tokenizer)
    with pytest.raises(ValueError, match=r"^shifted: the tokenizer gives word-piece ids up to \d+, past the \d+ rows"):
        model.check_tokenizer(ShiftedIds(tiny_tokenizer))


def test_the_evaluate_metric_names_the_argument_and_document_before_evaluate_checks_them():
    """evaluate checks the inputs' format first, in words that name nothing ("Predictions and/or references
    don't match the expected format"); the metric's own checks come before and name both."""
    import evaluate

    import thmm

    metric = evaluate.load(thmm.metric_path())
    for kwargs, message in (({"predictions": None, "references": [["A43B"]]}, r"^predictions: missing"),
                            ({"predictions": [["A43B"]], "references": None}, r"^references: missing"),
                            ({"predictions": [[5]], "references": [["A43B"]]},
                             r"^predictions\[0\]: label codes must be strings, got int 5"),
                            ({"predictions": [["A43B"]], "references": [["A43B"], "A43C"]},
                             r"^references\[1\] is the string 'A43C', not a list of label codes")):
        with pytest.raises(ValueError, match=message):
            metric.compute(**kwargs)
        with pytest.raises(ValueError, match=message):
            metric.add_batch(**kwargs)
    metric.add_batch(predictions=[["A43B"]], references=[["A43C"]])
    assert round(metric.compute()["micro_f1"], 4) == 0.6667  # the batches added: no arguments, no refusal
