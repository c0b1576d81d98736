# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Tests of hierarchical_metrics and of the evaluate module in metrics/hierarchical.

Hand-computed cases pin every number; random cases check agreement with scikit-learn, with the
ancestor expansion done here independently (CPC string prefixes), so that a wrong expansion fails.
"""

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from configuration_thmm import Taxonomy, TaxonomyError
from thmm.hierarchical_metrics import compute_hierarchical_metrics, format_markdown, plot_per_level_f1, write_report

REPO = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO / "thmm" / "metrics" / "hierarchical"


def approx(value):
    return pytest.approx(float(value), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# A hand-computed case
# --------------------------------------------------------------------------------------------------
#
# Taxonomy (CPC prefix rule over the codes seen): A, B, A43, B41, A43B, A43C, B41F.
# Closed upwards:
#   doc 0  pred A A43 A43B B B41 B41F    gold A A43 A43C
#   doc 1  pred -                        gold A A43 A43B
#   doc 2  pred A A43 A43B               gold A A43 A43B B B41 B41F
# Per node (tp, predicted, gold): A (2,2,3)  B (0,1,1)  A43 (2,2,3)  B41 (0,1,1)
#                                 A43B (1,2,2)  A43C (0,0,1)  B41F (0,1,1)

PREDICTIONS = [["A43B", "B41F"], [], ["A43B"]]
REFERENCES = [["A43C"], ["A43B"], ["A43B", "B41F"]]


@pytest.fixture(scope="module")
def hand_results():
    return compute_hierarchical_metrics(PREDICTIONS, REFERENCES)


def test_hand_case_overall(hand_results):
    r = hand_results
    # TP = 5, predicted = 9, gold = 12.
    assert r["micro_precision"] == approx(Fraction(5, 9))
    assert r["micro_recall"] == approx(Fraction(5, 12))
    assert r["micro_f1"] == approx(Fraction(10, 21))
    # Mean over the 7 gold nodes; per-node P = 1,0,1,0,1/2,0,0; R = 2/3,0,2/3,0,1/2,0,0; F1 = 4/5,0,4/5,0,1/2,0,0.
    assert r["macro_precision"] == approx(Fraction(5, 14))
    assert r["macro_recall"] == approx(Fraction(11, 42))
    assert r["macro_f1"] == approx(Fraction(3, 10))
    assert r["f1_avg"] == approx(Fraction(60, 163))  # harmonic mean of 10/21 and 3/10
    assert r["f1_mean"] == approx(Fraction(163, 420))  # arithmetic mean of 10/21 and 3/10
    assert r["auprc"] is None and r["unscored_gold_labels"] is None
    assert r["num_documents"] == 3 and r["num_nodes"] == 7 and r["num_gold_labels"] == 7
    assert r["unknown_predictions"] == r["unknown_references"] == r["unknown_score_labels"] == 0


def test_hand_case_per_level(hand_results):
    r = hand_results
    for level in (1, 2):  # sections (A, B) and classes (A43, B41) have the same counts here
        assert r[f"level{level}_micro_precision"] == approx(Fraction(2, 3))
        assert r[f"level{level}_micro_recall"] == approx(Fraction(1, 2))
        assert r[f"level{level}_micro_f1"] == approx(Fraction(4, 7))
        assert r[f"level{level}_macro_precision"] == approx(Fraction(1, 2))
        assert r[f"level{level}_macro_recall"] == approx(Fraction(1, 3))
        assert r[f"level{level}_macro_f1"] == approx(Fraction(2, 5))
    assert r["level3_micro_precision"] == approx(Fraction(1, 3))
    assert r["level3_micro_recall"] == approx(Fraction(1, 4))
    assert r["level3_micro_f1"] == approx(Fraction(2, 7))
    assert r["level3_macro_precision"] == approx(Fraction(1, 6))
    assert r["level3_macro_recall"] == approx(Fraction(1, 6))
    assert r["level3_macro_f1"] == approx(Fraction(1, 6))
    assert "level4_macro_f1" not in r


def test_hand_case_coverage(hand_results):
    r = hand_results
    for level in (1, 2, 3):
        assert r[f"level{level}_avg_predicted"] == approx(1.0)  # 2 + 0 + 1 labels over 3 documents
        assert r[f"level{level}_avg_gold"] == approx(Fraction(4, 3))  # 1 + 1 + 2
        assert r[f"level{level}_docs_without_prediction"] == 1  # doc 1


def test_hand_case_false_positive_hops(hand_results):
    # The paper's example: gold A43C; B41F is 6 hops away (via the root), A43B 2 hops (via A43).
    r = hand_results
    assert r["error_level"] == 3
    assert r["fp_documents"] == 1 and r["fp_count"] == 2 and r["fp_without_gold"] == 0
    assert r["fp_hops_mean"] == approx(4.0)
    assert r["fp_hops_std"] == approx(2.0)

    by_level = {lvl: compute_hierarchical_metrics(PREDICTIONS, REFERENCES, error_level=lvl) for lvl in (1, 2)}
    assert by_level[2]["fp_count"] == 1 and by_level[2]["fp_hops_mean"] == approx(4.0)  # B41 vs A43
    assert by_level[2]["fp_hops_std"] == approx(0.0)
    assert by_level[1]["fp_count"] == 1 and by_level[1]["fp_hops_mean"] == approx(2.0)  # B vs A
    # The error level does not change the other numbers.
    assert by_level[1]["micro_f1"] == hand_results["micro_f1"]


def test_paper_hops_example_nearest_gold():
    # Nearest gold wins: with gold A43B and B41J, B41F is 2 hops (to B41J), not 6.
    r = compute_hierarchical_metrics([["B41F", "A43C"]], [["A43B", "B41J"]])
    assert r["fp_count"] == 2 and r["fp_hops_mean"] == approx(2.0)
    r = compute_hierarchical_metrics([["B41F", "A43C"]], [["A43B"]])
    assert sorted([r["fp_hops_mean"] - r["fp_hops_std"], r["fp_hops_mean"] + r["fp_hops_std"]]) == [2.0, 6.0]


def test_false_positive_without_gold_at_level():
    taxonomy = Taxonomy.from_codes(["A43B", "B41F"])
    # Doc 0 has only a section as gold: its subclass FP has no gold subclass to measure against.
    r = compute_hierarchical_metrics([["A43B"], ["B41F"]], [["A"], ["A43B"]], taxonomy=taxonomy)
    assert r["fp_count"] == 2 and r["fp_documents"] == 2
    assert r["fp_without_gold"] == 1
    assert r["fp_hops_mean"] == approx(6.0) and r["fp_hops_std"] == approx(0.0)  # only doc 1 measured
    r = compute_hierarchical_metrics([["A43B"]], [["A"]], taxonomy=taxonomy)
    assert r["fp_count"] == 1 and r["fp_without_gold"] == 1
    assert r["fp_hops_mean"] is None and r["fp_hops_std"] is None
    assert r["level1_micro_precision"] == approx(1.0) and r["level3_micro_precision"] == approx(0.0)


def test_results_are_plain_json_types(hand_results):
    assert json.loads(json.dumps(hand_results, allow_nan=False)) == hand_results
    for key, value in hand_results.items():
        assert value is None or type(value) in (int, float), (key, type(value))


def test_a_level_without_gold_gives_plain_json_types(tmp_path):
    """A depth-4 taxonomy scored on documents whose gold stops at the subclass (a dev split without main
    groups): level 4 has no gold node, and its scores are still plain floats (or None), writable as JSON."""
    taxonomy = Taxonomy.from_codes(["A43B 1/00", "A43B", "B41F"], depth=4)
    r = compute_hierarchical_metrics([["A43B 1/00"], ["B41F"]], [["A43B"], ["B41F"]], taxonomy=taxonomy)
    assert r["level4_micro_precision"] == 0.0 and r["level4_macro_f1"] is None
    for key, value in r.items():
        assert value is None or type(value) in (int, float), (key, type(value))
    write_report({"dev": r}, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["dev"]["level4_micro_f1"] == 0.0


def test_label_order_and_repeats_do_not_matter():
    a = compute_hierarchical_metrics([["B41F", "A43B", "A43B"]], [["A43C", "A43", "A"]])
    b = compute_hierarchical_metrics([["A43B", "B41F"]], [["A43C"]])
    assert a == b


# --------------------------------------------------------------------------------------------------
# AUPRC
# --------------------------------------------------------------------------------------------------

AUPRC_TAXONOMY = Taxonomy.from_codes(["A43B", "B41F"])  # nodes: A, B, A43, B41, A43B, B41F


def test_auprc_hand_case():
    # Columns in node order. Ranking of the 12 (doc, node) pairs, + for gold:
    # .9+ .8+ .7+ .6+ .5- .4- .35+ .3+ .2- .1- .05- 0-  ->  AP = (4 + 5/7 + 6/8) / 6 = 51/56
    scores = np.array([[0.9, 0.2, 0.8, 0.1, 0.3, 0.4], [0.5, 0.7, 0.05, 0.6, 0.0, 0.35]])
    r = compute_hierarchical_metrics([["A43B"], []], [["A43B"], ["B41F"]], scores=scores, taxonomy=AUPRC_TAXONOMY)
    assert r["auprc"] == approx(Fraction(51, 56))
    assert r["unscored_gold_labels"] == 0
    # Column order follows score_labels, not the taxonomy.
    order = [5, 3, 1, 0, 2, 4]
    labels = [AUPRC_TAXONOMY.nodes[i] for i in order]
    r2 = compute_hierarchical_metrics(
        [["A43B"], []], [["A43B"], ["B41F"]], scores=scores[:, order], score_labels=labels, taxonomy=AUPRC_TAXONOMY
    )
    assert r2["auprc"] == approx(Fraction(51, 56))


def test_auprc_leaf_scores_take_max_over_children():
    # Leaves A43B, B41F. Each ancestor gets its child's score: doc 0 -> A, A43, A43B = .3 (gold),
    # B, B41, B41F = .4; doc 1 -> A-side 0, B-side .35 (gold). Tied groups: .4 (3 neg), .35 (3 pos),
    # .3 (3 pos), 0 (3 neg): AP = 1/2 * 3/6 + 1/2 * 6/9 = 7/12.
    leaf_scores = np.array([[0.3, 0.4], [0.0, 0.35]])
    refs = [["A43B"], ["B41F"]]
    r = compute_hierarchical_metrics(
        [[], []], refs, scores=leaf_scores, score_labels=["A43B", "B41F"], taxonomy=AUPRC_TAXONOMY
    )
    assert r["auprc"] == approx(Fraction(7, 12))
    # Without score_labels, a leaf-wide score matrix is read as the taxonomy's leaves.
    r_default = compute_hierarchical_metrics([[], []], refs, scores=leaf_scores, taxonomy=AUPRC_TAXONOMY)
    assert r_default["auprc"] == r["auprc"]
    # Same as giving every node the taxonomy's max-over-children scores explicitly.
    full = AUPRC_TAXONOMY.max_from_leaves(leaf_scores)
    assert compute_hierarchical_metrics([[], []], refs, scores=full, taxonomy=AUPRC_TAXONOMY)["auprc"] == r["auprc"]


def test_auprc_gold_node_without_score_is_ranked_last():
    # A flat model with outputs for A43B and B41F only; the gold subclass C07D (and C, C07) has none.
    taxonomy = Taxonomy.from_codes(["A43B", "B41F", "C07D"])
    # Node scores: A-side .2 (gold), B-side .1, C-side below everything (gold).
    # AP = 3/6 * 3/3 + 3/6 * 6/9 = 5/6: the unscored gold nodes only count at the very end.
    r = compute_hierarchical_metrics(
        [["A43B"]], [["A43B", "C07D"]], scores=np.array([[0.2, 0.1]]), score_labels=["A43B", "B41F"], taxonomy=taxonomy
    )
    assert r["auprc"] == approx(Fraction(5, 6))
    assert r["unscored_gold_labels"] == 3
    # Only unscored gold: AP = the positive rate of the last group, 3/9.
    r = compute_hierarchical_metrics(
        [[]], [["C07D"]], scores=np.array([[0.2, 0.1]]), score_labels=["A43B", "B41F"], taxonomy=taxonomy
    )
    assert r["auprc"] == approx(Fraction(1, 3))
    # Strictly below the lowest real score, not tied with it. Doc 0 gold C07D, doc 1 gold A43B whose
    # .1 is the lowest score: .9 .5 .3 (9 neg), .1 (3 pos), unscored (3 pos, 3 neg):
    # AP = 3/6 * 3/12 + 3/6 * 6/18 = 7/24 (a tie at .1 would give 6/18 = 1/3).
    r = compute_hierarchical_metrics(
        [[], []], [["C07D"], ["A43B"]], scores=np.array([[0.5, 0.9], [0.1, 0.3]]), score_labels=["A43B", "B41F"],
        taxonomy=taxonomy,
    )
    assert r["auprc"] == approx(Fraction(7, 24))
    assert r["unscored_gold_labels"] == 3


def test_auprc_undefined_without_gold():
    r = compute_hierarchical_metrics([["A43B"]], [[]], scores=np.ones((1, 6)), taxonomy=AUPRC_TAXONOMY)
    assert r["auprc"] is None


# --------------------------------------------------------------------------------------------------
# Agreement with scikit-learn on random data (expansion done here, by CPC prefixes)
# --------------------------------------------------------------------------------------------------

CODES = ["A43B", "A43C", "A47J", "B41F", "B41J", "B60R", "G06F", "G06N", "H04L", "H04W", "H01M", "Y02E"]


def prefix_closure(codes):
    return {c[:n] for c in codes for n in (1, 3, len(c))}


def prefix_hops(a, b):
    """Hops between two subclasses, from their codes: same class 2, same section 4, else 6."""
    return 2 if a[:3] == b[:3] else 4 if a[0] == b[0] else 6


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(1234)
    n = 200
    refs = [list(rng.choice(CODES, size=rng.integers(0, 4), replace=False)) for _ in range(n)]
    preds = [list(rng.choice(CODES, size=rng.integers(0, 4), replace=False)) for _ in range(n)]
    refs = [[str(c) for c in doc] for doc in refs]
    preds = [[str(c) for c in doc] for doc in preds]
    universe = sorted(prefix_closure(CODES), key=lambda c: (len(c), c))
    col = {c: j for j, c in enumerate(universe)}
    gold = np.zeros((n, len(universe)), dtype=int)
    pred = np.zeros((n, len(universe)), dtype=int)
    for i in range(n):
        gold[i, [col[c] for c in prefix_closure(refs[i])]] = 1
        pred[i, [col[c] for c in prefix_closure(preds[i])]] = 1
    # A shuffled column order, so that the module must map columns through score_labels.
    perm = rng.permutation(len(universe))
    return {
        "refs": refs,
        "preds": preds,
        "universe": universe,
        "gold": gold,
        "pred": pred,
        "scores": rng.random((n, len(universe))),
        "perm": perm,
    }


def sklearn_prf(gold, pred):
    micro = precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)[:3]
    gold_labels = np.flatnonzero(gold.sum(axis=0))
    per_label = precision_recall_fscore_support(gold, pred, labels=gold_labels, average=None, zero_division=0)[:3]
    return micro, [float(np.mean(v)) for v in per_label]


def test_agreement_with_sklearn(random_case):
    c = random_case
    labels = [c["universe"][j] for j in c["perm"]]
    r = compute_hierarchical_metrics(c["preds"], c["refs"], scores=c["scores"][:, c["perm"]], score_labels=labels)
    micro, macro = sklearn_prf(c["gold"], c["pred"])
    assert [r["micro_precision"], r["micro_recall"], r["micro_f1"]] == pytest.approx(list(micro), abs=1e-12)
    assert [r["macro_precision"], r["macro_recall"], r["macro_f1"]] == pytest.approx(macro, abs=1e-12)
    assert r["num_gold_labels"] == int((c["gold"].sum(axis=0) > 0).sum())
    assert r["auprc"] == pytest.approx(average_precision_score(c["gold"], c["scores"], average="micro"), abs=1e-12)

    levels = np.array([{1: 1, 3: 2, 4: 3}[len(code)] for code in c["universe"]])
    for level in (1, 2, 3):
        cols = levels == level
        micro, macro = sklearn_prf(c["gold"][:, cols], c["pred"][:, cols])
        got = [r[f"level{level}_{k}"] for k in ("micro_precision", "micro_recall", "micro_f1")]
        assert got == pytest.approx(list(micro), abs=1e-12)
        got = [r[f"level{level}_{k}"] for k in ("macro_precision", "macro_recall", "macro_f1")]
        assert got == pytest.approx(macro, abs=1e-12)
        assert r[f"level{level}_avg_predicted"] == pytest.approx(c["pred"][:, cols].sum() / 200)
        assert r[f"level{level}_avg_gold"] == pytest.approx(c["gold"][:, cols].sum() / 200)
        assert r[f"level{level}_docs_without_prediction"] == int((c["pred"][:, cols].sum(axis=1) == 0).sum())


def test_false_positive_hops_match_brute_force(random_case):
    c = random_case
    r = compute_hierarchical_metrics(c["preds"], c["refs"])
    hops, without_gold, docs = [], 0, 0
    for preds, refs in zip(c["preds"], c["refs"]):
        wrong = set(preds) - set(refs)
        docs += bool(wrong)
        if wrong and not refs:
            without_gold += len(wrong)
        elif wrong:
            hops += [min(prefix_hops(a, b) for b in refs) for a in wrong]
    assert r["fp_documents"] == docs
    assert r["fp_count"] == len(hops) + without_gold
    assert r["fp_without_gold"] == without_gold > 0
    assert r["fp_hops_mean"] == pytest.approx(np.mean(hops)) and r["fp_hops_std"] == pytest.approx(np.std(hops))


def test_leaf_scores_match_prefix_max(random_case):
    c = random_case
    rng = np.random.default_rng(7)
    leaf_scores = rng.random((200, len(CODES)))
    r = compute_hierarchical_metrics(c["preds"], c["refs"], scores=leaf_scores, score_labels=CODES)
    # Independently: a node scores the max over the leaves it is a prefix of.
    below = [[j for j, leaf in enumerate(CODES) if leaf.startswith(node)] for node in c["universe"]]
    node_scores = np.stack([leaf_scores[:, leaves].max(axis=1) for leaves in below], axis=1)
    assert r["auprc"] == pytest.approx(average_precision_score(c["gold"], node_scores, average="micro"), abs=1e-12)
    assert r["unscored_gold_labels"] == 0


# --------------------------------------------------------------------------------------------------
# Empty inputs
# --------------------------------------------------------------------------------------------------


def test_no_predictions_at_all():
    r = compute_hierarchical_metrics([[], []], [["A43B"], ["B41F", "A43C"]])
    for kind in ("micro", "macro"):
        for key in ("precision", "recall", "f1"):
            assert r[f"{kind}_{key}"] == 0.0, (kind, key)
    assert r["f1_avg"] == 0.0 and r["f1_mean"] == 0.0
    for level in (1, 2, 3):
        assert r[f"level{level}_docs_without_prediction"] == 2
        assert r[f"level{level}_avg_predicted"] == 0.0
    assert r["level3_avg_gold"] == approx(1.5)
    assert r["fp_count"] == 0 and r["fp_documents"] == 0 and r["fp_hops_mean"] is None
    assert r["num_gold_labels"] == 7


def test_no_references_at_all():
    taxonomy = Taxonomy.from_codes(["A43B", "B41F"])
    r = compute_hierarchical_metrics([["A43B"], []], [[], []], scores=np.ones((2, 6)), taxonomy=taxonomy)
    assert r["micro_precision"] == 0.0 and r["micro_recall"] == 0.0 and r["micro_f1"] == 0.0
    assert r["macro_precision"] is None and r["macro_f1"] is None and r["f1_avg"] is None
    assert r["f1_mean"] is None
    assert r["num_gold_labels"] == 0 and r["auprc"] is None
    assert r["fp_count"] == 1 and r["fp_without_gold"] == 1 and r["fp_hops_mean"] is None
    # Without labels anywhere there is nothing to build a default taxonomy from...
    with pytest.raises(TaxonomyError, match="pass taxonomy="):
        compute_hierarchical_metrics([[], []], [[], []])
    # ...but with a taxonomy, empty documents are fine.
    r = compute_hierarchical_metrics([[], []], [[], []], taxonomy=taxonomy)
    assert r["micro_f1"] == 0.0 and r["macro_f1"] is None and r["level1_docs_without_prediction"] == 2


def test_zero_documents_is_an_error():
    with pytest.raises(ValueError, match="no documents"):
        compute_hierarchical_metrics([], [])


# --------------------------------------------------------------------------------------------------
# Input validation, unknown codes
# --------------------------------------------------------------------------------------------------


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_hierarchical_metrics([["A43B"], []], [["A43B"]])


def test_bare_string_instead_of_list():
    with pytest.raises(ValueError, match=r"references\[0\] is the string 'A43B'.*\['A43B'\]"):
        compute_hierarchical_metrics([["A43B"]], ["A43B"])
    with pytest.raises(ValueError, match="predictions must be a list"):
        compute_hierarchical_metrics("A43B", [["A43B"]])
    with pytest.raises(ValueError, match=r"references\[1\] must be a list"):
        compute_hierarchical_metrics([["A43B"], []], [["A43B"], None])
    with pytest.raises(TaxonomyError, match=r"predictions\[0\].*int"):
        compute_hierarchical_metrics([[43]], [["A43B"]])


@pytest.mark.parametrize(
    "bad, hint",
    [("A4", "expected a section"), ("a43b", "upper case"), ("", "expected a section"), ("A43B12", "the subclass is")],
)
def test_malformed_code_names_code_and_document(bad, hint):
    with pytest.raises(TaxonomyError, match=rf"references\[1\]: malformed CPC code '{bad}'.*{hint}"):
        compute_hierarchical_metrics([["A43B"], []], [["A43B"], ["B41F", bad]])
    # With a given taxonomy, malformed codes raise even in "ignore" mode.
    with pytest.raises(TaxonomyError, match=rf"predictions\[0\]: malformed CPC code '{bad}'"):
        compute_hierarchical_metrics([[bad]], [["A43B"]], taxonomy=AUPRC_TAXONOMY, unknown_labels="ignore")


def test_unknown_codes_error_mode():
    with pytest.raises(TaxonomyError, match=r"references\[2\]: label code 'H04L' is not in the taxonomy.*ignore"):
        compute_hierarchical_metrics([[], [], []], [["A43B"], [], ["B41F", "H04L"]], taxonomy=AUPRC_TAXONOMY)
    with pytest.raises(TaxonomyError, match=r"score_labels\[1\]: label code 'H04L'"):
        compute_hierarchical_metrics(
            [["A43B"]], [["A43B"]], scores=np.ones((1, 2)), score_labels=["A43B", "H04L"], taxonomy=AUPRC_TAXONOMY
        )


def test_unknown_codes_ignore_mode_counts_and_excludes():
    preds = [["A43B", "H04L"], ["A47J"], ["B41F"]]
    refs = [["A43B"], ["A43B", "H04W"], ["B41F", "H04L", "H04W"]]
    r = compute_hierarchical_metrics(
        preds,
        refs,
        taxonomy=AUPRC_TAXONOMY.to_dict(),  # the dict form works too
        unknown_labels="ignore",
        scores=np.full((3, 3), 0.5),
        score_labels=["A43B", "B41F", "G06F"],
    )
    assert r["unknown_predictions"] == 2 and r["unknown_references"] == 3 and r["unknown_score_labels"] == 1
    # The numbers are those of the data without the unknown codes (A47J does not credit A either).
    clean = compute_hierarchical_metrics(
        [["A43B"], [], ["B41F"]], [["A43B"], ["A43B"], ["B41F"]], taxonomy=AUPRC_TAXONOMY,
        scores=np.full((3, 2), 0.5), score_labels=["A43B", "B41F"],
    )
    unknown_keys = {"unknown_predictions", "unknown_references", "unknown_score_labels"}
    for key in clean.keys() - unknown_keys:
        assert r[key] == clean[key], key
    assert r["micro_precision"] == 1.0 and r["micro_recall"] == approx(Fraction(6, 9))  # doc 1 misses A, A43, A43B


def test_custom_hierarchy():
    taxonomy = Taxonomy.from_parent_map({"dog": "animal", "cat": "animal", "oak": "plant"})
    r = compute_hierarchical_metrics(
        [["cat"], ["fish"]], [["dog"], ["oak"]], taxonomy=taxonomy, unknown_labels="ignore"
    )
    # doc 0: pred animal cat, gold animal dog -> TP 1 of 2; doc 1: gold plant oak, nothing predicted.
    assert r["micro_precision"] == approx(0.5) and r["micro_recall"] == approx(0.25)
    assert r["unknown_predictions"] == 1 and r["fp_hops_mean"] == approx(2.0)


def test_scores_validation():
    refs = [["A43B"], ["B41F"]]
    with pytest.raises(ValueError, match=r"shape \[documents=2"):
        compute_hierarchical_metrics([[], []], refs, scores=np.ones((3, 6)), taxonomy=AUPRC_TAXONOMY)
    with pytest.raises(ValueError, match="5 columns but the taxonomy has 6 nodes and 2 leaves"):
        compute_hierarchical_metrics([[], []], refs, scores=np.ones((2, 5)), taxonomy=AUPRC_TAXONOMY)
    with pytest.raises(ValueError, match="2 columns but score_labels has 3 codes"):
        compute_hierarchical_metrics([[], []], refs, scores=np.ones((2, 2)), score_labels=["A", "B", "A43B"])
    with pytest.raises(ValueError, match="twice"):
        compute_hierarchical_metrics([[], []], refs, scores=np.ones((2, 2)), score_labels=["A43B", "A43B"])
    with pytest.raises(ValueError, match="scores need score_labels"):
        compute_hierarchical_metrics([[], []], refs, scores=np.ones((2, 6)))
    with pytest.raises(ValueError, match="without scores"):
        compute_hierarchical_metrics([[], []], refs, score_labels=["A43B", "B41F"])
    with pytest.raises(ValueError, match="NaN"):
        compute_hierarchical_metrics([[], []], refs, scores=np.full((2, 2), np.nan), score_labels=["A43B", "B41F"])


def test_option_validation():
    with pytest.raises(ValueError, match="unknown_labels"):
        compute_hierarchical_metrics([["A43B"]], [["A43B"]], unknown_labels="drop")
    for level in (0, 4, "3", True):
        with pytest.raises(ValueError, match="error_level"):
            compute_hierarchical_metrics([["A43B"]], [["A43B"]], error_level=level)


# --------------------------------------------------------------------------------------------------
# evaluate module
# --------------------------------------------------------------------------------------------------

EVALUATE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import evaluate
    from configuration_thmm import Taxonomy

    metric = evaluate.load(sys.argv[1])
    taxonomy = Taxonomy.from_codes(["A43B", "B41F"])
    out = {
        "plain": metric.compute(predictions=[["A43B", "B41F"], [], ["A43B"]],
                                references=[["A43C"], ["A43B"], ["A43B", "B41F"]]),
        "scored": metric.compute(predictions=[["A43B"], []], references=[["A43B"], ["B41F"]],
                                 scores=np.array([[0.9, 0.2, 0.8, 0.1, 0.3, 0.4], [0.5, 0.7, 0.05, 0.6, 0.0, 0.35]]),
                                 taxonomy=taxonomy.to_dict(), error_level=2),
        "ignored": metric.compute(predictions=[["A43B", "H04L"]], references=[["A43B"]],
                                  taxonomy=taxonomy, unknown_labels="ignore"),
    }
    print("RESULTS=" + json.dumps(out))
    """
)


def test_evaluate_load_offline_matches_direct_call(tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env = dict(os.environ, **offline, HF_HOME=str(tmp_path / "hf"))  # a fresh module cache, no network
    proc = subprocess.run(
        [sys.executable, "-c", EVALUATE_SCRIPT, str(METRIC_DIR)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULTS="))
    got = json.loads(line[len("RESULTS="):])
    assert got["plain"] == compute_hierarchical_metrics(PREDICTIONS, REFERENCES)
    assert got["scored"] == compute_hierarchical_metrics(
        [["A43B"], []], [["A43B"], ["B41F"]],
        scores=np.array([[0.9, 0.2, 0.8, 0.1, 0.3, 0.4], [0.5, 0.7, 0.05, 0.6, 0.0, 0.35]]),
        taxonomy=AUPRC_TAXONOMY, error_level=2,
    )
    assert got["scored"]["auprc"] == approx(Fraction(51, 56))
    assert got["ignored"]["unknown_predictions"] == 1 and got["ignored"]["micro_f1"] == 1.0


def test_metric_script_has_no_copy_of_the_logic():
    source = (METRIC_DIR / "hierarchical.py").read_text()
    assert "from thmm import hierarchical_metrics" in source
    assert "hierarchical_metrics.compute_hierarchical_metrics(" in source
    assert "import numpy" not in source and "sklearn" not in source
    card = (METRIC_DIR / "README.md").read_text()
    assert card.startswith("---\n") and "evaluate.load(" in card


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def test_format_markdown_single_and_runs(hand_results):
    single = format_markdown(hand_results)
    assert "| Run | Macro P |" in single and "0.4762" in single  # micro F1 = 10/21
    assert "| run | 3 | 1.0000 | 1.3333 | 1 |" in single  # coverage row of level 3
    other = compute_hierarchical_metrics([["A43C"], ["A43B"], ["A43B", "B41F"]], REFERENCES)
    text = format_markdown({"THMM | cls": hand_results, "flat": other})
    assert "THMM \\| cls" in text and "| flat |" in text
    assert text.count("| flat |") == 1 + 3 + 3 + 1 + 1  # overall, 3 levels twice, errors, data (no ECE: no scores)
    assert "–" in text  # fp_hops of the perfect run are undefined
    with pytest.raises(ValueError, match="results dict"):
        format_markdown({"run": {"accuracy": 1.0}})


def test_write_report_files(tmp_path, hand_results):
    import matplotlib.image

    runs = {"tmm": hand_results, "thmm": compute_hierarchical_metrics([["A43C"], ["A43B"], ["A43B"]], REFERENCES)}
    paths = write_report(runs, tmp_path / "report", name="test")
    assert {p.name for p in paths.values()} == {"test.json", "test.md", "test_per_level_f1.png"}
    assert json.loads(paths["json"].read_text()) == runs
    markdown = paths["markdown"].read_text()
    assert "tmm" in markdown and "thmm" in markdown
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(paths["plot"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    single = write_report(hand_results, tmp_path / "single")
    assert single["plot"].name == "metrics_per_level_f1.png"
    assert single["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(single["json"].read_text()) == hand_results


def test_plot_handles_undefined_values(tmp_path, hand_results):
    broken = dict(hand_results, level3_macro_f1=None)
    path = plot_per_level_f1({"a": hand_results, "b": broken}, tmp_path / "sub" / "f1.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_metric_closure_agrees_with_the_taxonomy():
    # The metric closes its label sets with Taxonomy.multi_hot_ids; they must be exactly the
    # taxonomy's own multi_hot.
    import thmm.hierarchical_metrics as hm

    rng = np.random.default_rng(0)
    codes = ["A43B", "A43C", "A61B", "B41F", "H04L", "H04W", "G06F", "G06N"]
    taxonomy = Taxonomy.from_codes(codes)
    docs = [list(rng.choice(codes, size=rng.integers(0, 4), replace=False)) for _ in range(50)]
    label2id = {code: i for i, code in enumerate(taxonomy.nodes)}
    ids, unknown = hm._node_ids(docs, "docs", taxonomy, label2id, "error")
    closed = taxonomy.multi_hot_ids(ids)
    assert unknown == 0
    np.testing.assert_array_equal(closed, taxonomy.multi_hot(docs).astype(bool))


# --------------------------------------------------------------------------------------------------
# The vectorized metric against a straightforward reference (how it was computed before)
# --------------------------------------------------------------------------------------------------


def reference_metrics(predictions, references, taxonomy, scores=None, score_labels=None, error_level=None):
    """compute_hierarchical_metrics computed plainly: label sets closed by Taxonomy.expand, P/R/F1 by
    scikit-learn, AUPRC by scikit-learn over the flattened float64 node scores (an unscored node takes
    the max over its children, else the floor: the lowest score - 1, or one float step below it where
    that is no lower), hops by Taxonomy.distance."""
    nodes, num_docs = list(taxonomy.nodes), len(references)
    pred = np.array([[n in s for n in nodes] for s in map(taxonomy.expand, predictions)], dtype=int)
    gold = np.array([[n in s for n in nodes] for s in map(taxonomy.expand, references)], dtype=int)
    levels = np.array([taxonomy.level(n) for n in nodes])
    out = {}
    for prefix, cols in [("", levels > 0)] + [(f"level{lvl}_", levels == lvl) for lvl in range(1, levels.max() + 1)]:
        micro, macro = sklearn_prf(gold[:, cols], pred[:, cols])
        if not gold[:, cols].any():
            macro = [None] * 3
        for kind, values in (("micro", micro), ("macro", macro)):
            out.update({f"{prefix}{kind}_{key}": v for key, v in zip(("precision", "recall", "f1"), values)})
    out["f1_avg"] = 2 * out["micro_f1"] * out["macro_f1"] / (out["micro_f1"] + out["macro_f1"])
    out["f1_mean"] = (out["micro_f1"] + out["macro_f1"]) / 2
    for lvl in range(1, levels.max() + 1):
        cols = levels == lvl
        out[f"level{lvl}_avg_predicted"] = pred[:, cols].sum() / num_docs
        out[f"level{lvl}_avg_gold"] = gold[:, cols].sum() / num_docs
        out[f"level{lvl}_docs_without_prediction"] = int((pred[:, cols].sum(axis=1) == 0).sum())

    out["auprc"] = out["unscored_gold_labels"] = None
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        node_scores, has = np.zeros((num_docs, len(nodes))), np.zeros(len(nodes), dtype=bool)
        for k, code in enumerate(score_labels):
            node_scores[:, nodes.index(code)], has[nodes.index(code)] = scores[:, k], True
        for i in reversed(range(len(nodes))):  # deeper nodes first
            children = [nodes.index(c) for c in taxonomy.children(nodes[i]) if has[nodes.index(c)]]
            if not has[i] and children:
                node_scores[:, i], has[i] = node_scores[:, children].max(axis=1), True
        lowest = scores.min()
        node_scores[:, ~has] = min(lowest - 1.0, np.nextafter(lowest, -np.inf))  # strictly below, at any magnitude
        out["unscored_gold_labels"] = int(gold[:, ~has].sum())
        out["auprc"] = average_precision_score(gold, node_scores, average="micro")
        if 0 <= node_scores[:, has].min() and node_scores[:, has].max() <= 1:  # probabilities: ECE, plainly
            for prefix, cols in [("", has)] + [(f"level{lvl}_", has & (levels == lvl))
                                               for lvl in range(1, levels.max() + 1)]:
                p, y = node_scores[:, cols].ravel(), gold[:, cols].ravel()
                bins = [(p >= b / 15) & ((p < (b + 1) / 15) | (b == 14)) for b in range(15)]
                out[f"{prefix}ece"] = (sum(abs(p[m].mean() - y[m].mean()) * m.sum() for m in bins if m.any()) / len(p)
                                       if len(p) else None)

    error_level = error_level or int(levels.max())
    hops, without_gold, fp_docs, fp_count = [], 0, 0, 0
    for p, g in zip(pred, gold):
        wrong = [nodes[i] for i in np.flatnonzero(p & ~g & (levels == error_level))]
        right = [nodes[i] for i in np.flatnonzero(g & (levels == error_level))]
        fp_docs, fp_count = fp_docs + bool(wrong), fp_count + len(wrong)
        if wrong and not right:
            without_gold += len(wrong)
        hops += [min(taxonomy.distance(a, b) for b in right) for a in wrong if right]
    out.update(fp_documents=fp_docs, fp_count=fp_count, fp_hops_mean=np.mean(hops) if hops else None,
               fp_hops_std=np.std(hops) if hops else None, fp_without_gold=without_gold)
    out.update(num_documents=num_docs, num_nodes=len(nodes), num_gold_labels=int((gold.sum(axis=0) > 0).sum()),
               error_level=error_level, unknown_predictions=0, unknown_references=0, unknown_score_labels=0)
    return out


def assert_same_results(got, expected):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if value is None or isinstance(value, (int, np.integer)):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(float(value), abs=1e-12), key


@pytest.fixture(scope="module")
def model_case():
    """A CPC model taxonomy, predictions from its nodes, references with codes outside it."""
    rng = np.random.default_rng(2026)
    model_codes = ["A43B", "A43C", "A47J", "B41F", "B41J", "G06F", "G06N", "H04L", "H04W", "H01M"]
    outside = ["A43D", "B60R", "Y02E", "G06Q"]
    model = Taxonomy.from_codes(model_codes)
    docs = 300
    preds = [[str(c) for c in rng.choice(model.nodes, rng.integers(0, 4), replace=False)] for _ in range(docs)]
    refs = [[str(c) for c in rng.choice(model_codes + outside, rng.integers(0, 4), replace=False)] for _ in range(docs)]
    return model, Taxonomy.from_codes(model_codes + outside), preds, refs, rng


@pytest.mark.parametrize("kind", ["node float32", "node float64", "leaf float64", "huge float32", "none"])
def test_matches_the_straightforward_reference(model_case, kind):
    model, taxonomy, preds, refs, rng = model_case
    labels = list(model.nodes) if kind.startswith(("node", "huge")) else [model.nodes[i] for i in model.leaf_ids]
    scores = rng.random((len(refs), len(labels)))
    if kind == "huge float32":  # decision values where the floor (lowest - 1) is no lower in float32
        scores = scores * 1e9 - 1e30
    if "float32" in kind:
        scores = scores.astype(np.float32)
    perm = rng.permutation(len(labels))  # columns in any order
    scores, labels = (None, None) if kind == "none" else (scores[:, perm], [labels[i] for i in perm])
    got = compute_hierarchical_metrics(preds, refs, scores=scores, score_labels=labels, taxonomy=taxonomy)
    assert_same_results(got, reference_metrics(preds, refs, taxonomy, scores, labels))


@pytest.mark.parametrize("error_level", [2, 4])
def test_matches_the_reference_on_a_deeper_hierarchy(error_level):
    rng = np.random.default_rng(11)
    parents = {f"{a}{b}{c}{d}": f"{a}{b}{c}" for a in "pq" for b in "rs" for c in "tu" for d in "vw"}
    parents.update({f"{a}{b}{c}": f"{a}{b}" for a in "pq" for b in "rs" for c in "tu"})
    parents.update({f"{a}{b}": a for a in "pq" for b in "rs"})
    taxonomy = Taxonomy.from_parent_map(parents)
    nodes = list(taxonomy.nodes)
    preds = [[str(c) for c in rng.choice(nodes, rng.integers(0, 4), replace=False)] for _ in range(200)]
    refs = [[str(c) for c in rng.choice(nodes, rng.integers(0, 3), replace=False)] for _ in range(200)]
    scores = rng.random((200, len(nodes)))
    got = compute_hierarchical_metrics(preds, refs, scores=scores, taxonomy=taxonomy, error_level=error_level)
    assert_same_results(got, reference_metrics(preds, refs, taxonomy, scores, nodes, error_level))


def test_predicted_matrix_equals_label_lists(model_case):
    _, taxonomy, preds, refs, rng = model_case
    matrix = taxonomy.multi_hot(preds, expand=False).astype(bool)  # closed upwards by the metric
    scores = rng.random((len(refs), len(taxonomy))).astype(np.float32)
    for kwargs in ({}, {"scores": scores, "error_level": 2}):
        expected = compute_hierarchical_metrics(preds, refs, taxonomy=taxonomy, **kwargs)
        assert compute_hierarchical_metrics(None, refs, taxonomy=taxonomy, predicted_matrix=matrix, **kwargs) == expected
    with pytest.raises(ValueError, match="not both"):
        compute_hierarchical_metrics(preds, refs, taxonomy=taxonomy, predicted_matrix=matrix)
    with pytest.raises(ValueError, match="needs taxonomy"):
        compute_hierarchical_metrics(None, refs, predicted_matrix=matrix)
    with pytest.raises(ValueError, match="bool"):
        compute_hierarchical_metrics(None, refs, taxonomy=taxonomy, predicted_matrix=matrix.astype(int))
    with pytest.raises(ValueError, match="columns but the taxonomy has"):
        compute_hierarchical_metrics(None, refs, taxonomy=taxonomy, predicted_matrix=matrix[:, 1:])
    with pytest.raises(ValueError, match="got 299 predictions but 300 references"):
        compute_hierarchical_metrics(None, refs, taxonomy=taxonomy, predicted_matrix=matrix[1:])


def test_label_matrix_and_scores_from_counts(model_case):
    from thmm.hierarchical_metrics import label_matrix, scores_from_counts

    _, taxonomy, preds, refs, _ = model_case
    gold, unknown = label_matrix(refs, taxonomy, name="references")
    pred, _ = label_matrix(preds, taxonomy)
    assert unknown == 0 and gold.dtype == bool
    np.testing.assert_array_equal(gold, taxonomy.multi_hot(refs).astype(bool))
    counts = [(pred & gold).sum(axis=0), pred.sum(axis=0), gold.sum(axis=0)]
    expected = compute_hierarchical_metrics(preds, refs, taxonomy=taxonomy)
    assert scores_from_counts(*counts) == {key: expected[key] for key in scores_from_counts(*counts)}
    assert label_matrix([["A43B", "C12N"]], taxonomy, unknown_labels="ignore")[1] == 1
    with pytest.raises(TaxonomyError, match=r"docs\[0\]"):
        label_matrix([["A43Z"]], taxonomy, name="docs")


def test_a_report_replaces_only_a_report_and_stays_in_its_folder(tmp_path, hand_results):
    """write_report refuses a user's file of its names and a name that is a path, and writes its three
    files together or not at all (a NaN is refused before any folder exists)."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "metrics.md").write_text("my notes\n")
    with pytest.raises(ValueError, match="metrics.md: exists and is not a report of write_report"):
        write_report(hand_results, user)
    (user / "metrics.json").write_text('{"mine": 1}\n')
    with pytest.raises(ValueError, match="metrics.json: exists and is not a report of write_report"):
        write_report(hand_results, user)
    assert sorted(p.name for p in user.iterdir()) == ["metrics.json", "metrics.md"]
    assert (user / "metrics.md").read_text() == "my notes\n"
    for name in ("../escaped", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="^name: a file name stem"):
            write_report(hand_results, tmp_path / "reports", name=name)
    with pytest.raises(ValueError):
        write_report({**hand_results, "micro_f1": float("nan")}, tmp_path / "nan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]
    paths = write_report(hand_results, tmp_path / "reports")
    write_report(hand_results, tmp_path / "reports")  # its own report: replaced
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(p.name for p in paths.values())


def test_an_unscored_gold_node_ranks_below_scores_of_any_magnitude():
    """'Any monotone score works': a gold node without a score ranks below every given score, also where
    subtracting 1 from the lowest score is lost in float rounding."""
    taxonomy = Taxonomy.from_codes(["A43B", "A43C"])
    results = [compute_hierarchical_metrics([["A43B"]], [["A43C"]], scores=np.array([[value]]),
                                            score_labels=["A43B"], taxonomy=taxonomy)["auprc"]
               for value in (1.0, 1e17, -1e17)]
    assert results[0] == approx(results[1]) == approx(results[2])


def test_scores_must_be_real_and_have_columns():
    taxonomy = Taxonomy.from_codes(["A43B", "A43C"])
    for scores, labels, message in ((np.array([[0.5 + 1j, 0.1]]), ["A43B", "A43C"], "scores must be real numbers"),
                                    (np.zeros((1, 0)), [], r"scores must have shape \[documents=1, score columns\]")):
        with pytest.raises(ValueError, match=message):
            compute_hierarchical_metrics([["A43B"]], [["A43C"]], scores=scores, score_labels=labels, taxonomy=taxonomy)
