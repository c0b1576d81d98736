# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Tests of thmm.thresholds and of thmm.evaluation's node-matrix decoding.

Threshold tuning scores candidates from count tables; here every result is checked against the
per-call path it replaced, kept below as the reference: decode each candidate into label lists with
``Taxonomy.decode`` and score them with ``compute_hierarchical_metrics``.
"""

import numpy as np
import pytest

from configuration_thmm import Taxonomy, TaxonomyError, Thresholds
from thmm.hierarchical_metrics import compute_hierarchical_metrics
from thmm.evaluation import decoded_matrix, evaluate_probabilities, evaluation_taxonomy
from thmm.thresholds import (
    GRANULARITIES,
    OBJECTIVES,
    NODE_GRID,
    THRESHOLD_GRID,
    TunedThresholds,
    _GridCounts,
    synthetic_dev_set,
    time_threshold_tuning,
    tune_thresholds,
    uses_frequency_bands,
)


def reference_scores(probs, references, taxonomy, thresholds, eval_taxonomy, with_scores=False):
    """The metric of the label lists Taxonomy.decode gives: the slow path tuning used to take."""
    predictions = taxonomy.decode(probs, threshold=thresholds)
    return compute_hierarchical_metrics(
        predictions,
        references,
        scores=probs if with_scores else None,
        score_labels=list(taxonomy.nodes) if with_scores else None,
        taxonomy=eval_taxonomy,
    )


def reference_tune(probs, references, taxonomy, objective, eval_taxonomy) -> TunedThresholds:
    """tune_thresholds as it was: the whole metric of decoded label lists for each of ~133 candidates."""

    def score(thr):
        return reference_scores(probs, references, taxonomy, thr, eval_taxonomy)[objective]

    global_scores = {t: score(t) for t in THRESHOLD_GRID}
    best_global = max(global_scores, key=lambda t: (global_scores[t], -abs(t - 0.5)))
    levels = [best_global] * taxonomy.num_levels
    best = global_scores[best_global]
    for _ in range(2):
        for lvl in range(taxonomy.num_levels):
            for t in THRESHOLD_GRID:
                trial = list(levels)
                trial[lvl] = t
                value = score(trial)
                if value > best + 1e-12:
                    best, levels = value, trial
    return TunedThresholds(Thresholds(best_global, tuple(levels), objective), global_scores[best_global], best)


def assert_same_tuning(new: TunedThresholds, old: TunedThresholds):
    assert new.thresholds == old.thresholds
    assert new.global_score == pytest.approx(old.global_score, abs=1e-12)
    assert new.per_level_score == pytest.approx(old.per_level_score, abs=1e-12)


def parent_map_case(num_docs=150, seed=0):
    """A 4-level non-CPC hierarchy whose children are not contiguous in node order, and references."""
    rng = np.random.default_rng(seed)
    parents = {}
    for top in range(3):
        for mid in range(3):
            parents[f"m{mid}{top}"] = f"t{top}"  # sorts by mid first: siblings interleave
            for low in range(2):
                parents[f"l{low}{mid}{top}"] = f"m{mid}{top}"
                if low == 0:
                    parents[f"x{mid}{top}"] = f"l0{mid}{top}"
    taxonomy = Taxonomy.from_parent_map(parents)
    nodes = list(taxonomy.nodes)
    references = [[str(c) for c in rng.choice(nodes, rng.integers(0, 3), replace=False)] for _ in range(num_docs)]
    probs = rng.random((num_docs, len(taxonomy)))
    return probs, references, taxonomy, taxonomy


@pytest.mark.parametrize(("seed", "objective"), [(0, "f1_avg"), (1, "macro_f1"), (2, "micro_f1"), (3, "micro_precision"),
                                                   (4, "f1_mean")])
def test_tuning_equals_the_per_call_path(seed, objective):
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(200, 60, seed=seed, outside_rate=0.1)
    assert set(eval_taxonomy.nodes) > set(taxonomy.nodes)  # gold codes the model has no node for
    new = tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy, "level")
    assert_same_tuning(new, reference_tune(probs, references, taxonomy, objective, eval_taxonomy))


def test_tuning_with_probabilities_on_the_grid_values():
    # Probabilities exactly at (and one float32 step around) grid values: p >= t decides as in float64.
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(150, 40, seed=5, outside_rate=0.1)
    rng = np.random.default_rng(5)
    grid = np.array(THRESHOLD_GRID, dtype=np.float32)
    near = np.concatenate([grid, np.nextafter(grid, np.float32(0)), np.nextafter(grid, np.float32(1))])
    on_grid = rng.random(probs.shape) < 0.5
    probs[on_grid] = rng.choice(near, int(on_grid.sum()))
    probs[0, :3] = np.nan  # never selected, as in Taxonomy.decode
    for values in (probs, probs.astype(np.float64), probs.astype(np.float64).round(2)):
        new = tune_thresholds(values, references, taxonomy, "f1_avg", eval_taxonomy, "level")
        assert_same_tuning(new, reference_tune(values, references, taxonomy, "f1_avg", eval_taxonomy))


def test_tuning_on_a_deeper_non_cpc_hierarchy():
    probs, references, taxonomy, eval_taxonomy = parent_map_case()
    assert taxonomy.num_levels == 4
    new = tune_thresholds(probs, references, taxonomy, "f1_avg", eval_taxonomy, "level")
    assert_same_tuning(new, reference_tune(probs, references, taxonomy, "f1_avg", eval_taxonomy))


@pytest.mark.parametrize("case", ["cpc", "parent_map"])
def test_every_candidate_scores_as_the_metric(case):
    if case == "cpc":
        probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(120, 50, seed=7, outside_rate=0.1)
    else:
        probs, references, taxonomy, eval_taxonomy = parent_map_case(seed=7)
    counts = _GridCounts(probs, references, taxonomy, eval_taxonomy)
    rng = np.random.default_rng(0)
    for _ in range(15):
        grid_index = rng.integers(0, len(THRESHOLD_GRID), taxonomy.num_levels).tolist()
        thresholds = [THRESHOLD_GRID[k] for k in grid_index]
        expected = reference_scores(probs, references, taxonomy, thresholds, eval_taxonomy)
        assert counts.scores(grid_index) == {key: expected[key] for key in OBJECTIVES}


def test_tuning_errors():
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(20, 30, seed=0)
    with pytest.raises(ValueError, match="objective must be one of"):
        tune_thresholds(probs, references, taxonomy, "auprc", eval_taxonomy)
    with pytest.raises(ValueError, match="19 rows of probabilities but 20 references"):
        tune_thresholds(probs[1:], references, taxonomy, "f1_avg", eval_taxonomy)
    with pytest.raises(TaxonomyError, match="expected scores of shape"):
        tune_thresholds(probs[:, 1:], references, taxonomy, "f1_avg", eval_taxonomy)
    with pytest.raises(ValueError, match="no documents"):
        tune_thresholds(probs[:0], [], taxonomy, "f1_avg", eval_taxonomy)
    with pytest.raises(TaxonomyError, match=r"references\[0\].*not in the taxonomy"):
        tune_thresholds(probs, [["Y99Z"], *references[1:]], taxonomy, "f1_avg", eval_taxonomy)
    only_gold = Taxonomy.from_codes({code for labels in references for code in labels})
    with pytest.raises(TaxonomyError, match="lacks the model node"):
        tune_thresholds(probs, references, taxonomy, "f1_avg", only_gold)
    with pytest.raises(ValueError, match="no gold label"):
        tune_thresholds(probs, [[] for _ in references], taxonomy, "macro_f1", eval_taxonomy)


def test_time_threshold_tuning():
    timing = time_threshold_tuning(300, num_nodes=80, seed=1)
    assert timing["num_docs"] == 300 and timing["num_nodes"] <= 80 < timing["num_eval_nodes"] + 10
    assert timing["seconds"] > 0 and timing["objective"] == "f1_avg"
    assert len(timing["per_level"]) == 3 and timing["global_threshold"] in THRESHOLD_GRID


# --------------------------------------------------------------------------------------------------
# Per-node thresholds
# --------------------------------------------------------------------------------------------------


def reference_node_tune(probs, references, taxonomy, objective, eval_taxonomy, min_support,
                        frequency=None) -> TunedThresholds:
    """Per-node coordinate ascent scored by the per-call path: from the per-level result (then, given
    each node's training ``frequency``, two top-down passes in which every frequency band of the nodes
    gold in fewer than ``min_support`` documents tries every grid value together), deepest level
    first, every node gold in at least ``min_support`` documents tries every grid value."""
    level = reference_tune(probs, references, taxonomy, objective, eval_taxonomy)
    base = level.thresholds
    support = np.zeros(len(taxonomy), int)  # documents whose closed gold set holds the node
    for labels in references:
        closed = {a for code in labels for a in (*eval_taxonomy.ancestors(code), code) if a in taxonomy}
        for code in closed:
            support[taxonomy.index(code)] += 1
    own, best = {}, level.per_level_score
    band_best = None
    if frequency is not None:
        bands = {}
        for n, code in enumerate(taxonomy.nodes):
            if taxonomy.levels[n] > 1 and support[n] < min_support:  # bands by hand: 1-2, 3-5, 6-10, 11-25, 26-50, 51+
                band = sum(frequency[n] >= bound for bound in (3, 6, 11, 26, 51))
                bands.setdefault((int(taxonomy.levels[n]), band), []).append(code)
        for _ in range(2):
            for key in sorted(bands):
                codes, choice = bands[key], None
                for t in NODE_GRID:
                    trial = Thresholds(base.global_threshold, base.per_level, objective,
                                       per_node={**own, **dict.fromkeys(codes, t)})
                    value = reference_scores(probs, references, taxonomy, trial, eval_taxonomy)[objective]
                    if value > best + 1e-12:
                        best, choice = value, t
                if choice is not None:
                    own.update(dict.fromkeys(codes, choice))
        band_best = best
    for nodes in reversed(taxonomy.level_slices):
        for n in range(nodes.start, nodes.stop):
            code = taxonomy.nodes[n]
            if support[n] < min_support:
                continue
            choice = own.get(code, base.per_level[int(taxonomy.levels[n]) - 1])
            for t in NODE_GRID:
                trial = Thresholds(base.global_threshold, base.per_level, objective, per_node={**own, code: t})
                value = reference_scores(probs, references, taxonomy, trial, eval_taxonomy)[objective]
                if value > best + 1e-12:
                    best, choice = value, t
            own[code] = choice
    per_node = {c: t for c, t in own.items() if t != base.per_level[int(taxonomy.levels[taxonomy.index(c)]) - 1]}
    thresholds = Thresholds(base.global_threshold, base.per_level, objective, per_node=per_node)
    return TunedThresholds(thresholds, level.global_score, level.per_level_score, best, band_best)


@pytest.mark.parametrize("objective", ["f1_avg", "micro_f1", "macro_f1", "f1_mean"])
def test_node_tuning_equals_the_per_call_path(objective):
    for probs, references, taxonomy, eval_taxonomy, min_support in (
        (*synthetic_dev_set(240, 40, seed=5, outside_rate=0.05), 4),
        (*parent_map_case(120, seed=2), 6),  # 4 levels, siblings not contiguous in node order
    ):
        new = tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy, "node", min_support)
        old = reference_node_tune(probs, references, taxonomy, objective, eval_taxonomy, min_support)
        assert new.thresholds == old.thresholds
        assert new.per_node_score == pytest.approx(old.per_node_score, abs=1e-12)
        scored = evaluate_probabilities(probs, references, taxonomy, new.thresholds, eval_taxonomy, with_scores=False)
        assert scored[objective] == pytest.approx(new.per_node_score, abs=1e-12)
        assert new.per_node_score >= new.per_level_score


@pytest.mark.parametrize("objective", ["f1_mean", "macro_f1", "micro_f1"])
def test_frequency_bands_equal_the_per_call_path(objective):
    rng = np.random.default_rng(11)
    for probs, references, taxonomy, eval_taxonomy, min_support in (
        (*synthetic_dev_set(240, 40, seed=5, outside_rate=0.05), 12),
        (*parent_map_case(120, seed=2), 12),  # 4 levels, siblings not contiguous in node order
    ):
        probs = probs ** 3  # many probabilities below THRESHOLD_GRID, where the small values of NODE_GRID decide
        frequency = rng.integers(0, 80, len(taxonomy))
        new = tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy, "node", min_support, frequency)
        old = reference_node_tune(probs, references, taxonomy, objective, eval_taxonomy, min_support, frequency)
        assert new.thresholds == old.thresholds
        assert new.per_band_score == pytest.approx(old.per_band_score, abs=1e-12)
        assert new.per_node_score == pytest.approx(old.per_node_score, abs=1e-12)
        scored = evaluate_probabilities(probs, references, taxonomy, new.thresholds, eval_taxonomy, with_scores=False)
        assert scored[objective] == pytest.approx(new.per_node_score, abs=1e-12)
        assert new.per_node_score >= new.per_band_score > new.per_level_score  # the bands moved something
        assert min(new.thresholds.per_node.values()) < THRESHOLD_GRID[0]
    with pytest.raises(ValueError, match="node_frequency must hold one count >= 0 per node"):
        tune_thresholds(probs, references, taxonomy, objective, eval_taxonomy, "node", min_support, frequency[1:])


def test_training_node_counts_and_when_the_bands_apply():
    from datasets import Dataset

    from thmm.data import training_node_counts

    taxonomy = Taxonomy.from_codes(["A01B", "A01C", "B60K"])
    train = Dataset.from_dict({"labels": [["A01B"], ["A01B", "A01C"], ["B60K", "Z99Z"], []]})
    counts = dict(zip(taxonomy.nodes, training_node_counts(taxonomy, train).tolist()))
    # each document counts once per node, ancestors included; a code outside the taxonomy counts nowhere
    assert counts == {"A": 2, "B": 1, "A01": 2, "B60": 1, "A01B": 2, "A01C": 1, "B60K": 1}
    assert uses_frequency_bands("node", True)
    assert not uses_frequency_bands("node", False)
    assert not uses_frequency_bands("level", True) and not uses_frequency_bands("global", True)


def test_node_thresholds_separate_leaves_one_level_threshold_cannot():
    taxonomy = Taxonomy.from_codes(["A01B", "A01C"])
    rng = np.random.default_rng(0)
    # A01B's positives score 0.3 against 0.1; A01C's 0.9 against 0.6: no one leaf threshold fits both.
    b_gold = rng.random(200) < 0.5
    c_gold = ~b_gold | (rng.random(200) < 0.3)  # every document has a gold leaf (A and A01 score 0.99)
    probs = np.full((200, len(taxonomy)), 0.99)
    probs[:, taxonomy.index("A01B")] = np.where(b_gold, 0.3, 0.1)
    probs[:, taxonomy.index("A01C")] = np.where(c_gold, 0.9, 0.6)
    references = [[c for c, g in (("A01B", b), ("A01C", c)) if g] for b, c in zip(b_gold, c_gold)]
    level = tune_thresholds(probs, references, taxonomy, "micro_f1", taxonomy, "level")
    node = tune_thresholds(probs, references, taxonomy, "micro_f1", taxonomy, "node", node_min_support=20)
    assert level.per_level_score < 0.99 and node.per_node_score == 1.0
    per_node = node.thresholds.per_node
    assert 0.1 < node.thresholds.for_nodes(taxonomy)[taxonomy.index("A01B")] <= 0.3
    assert 0.6 < node.thresholds.for_nodes(taxonomy)[taxonomy.index("A01C")] <= 0.9
    assert set(per_node) <= {"A01B", "A01C"} and per_node
    # a support above every node's keeps the level thresholds
    few = tune_thresholds(probs, references, taxonomy, "micro_f1", taxonomy, "node", node_min_support=201)
    assert few.thresholds.per_node is None and few.per_node_score == few.per_level_score


def test_global_granularity_and_errors():
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(200, 40, seed=1)
    tuned = tune_thresholds(probs, references, taxonomy, "f1_avg", eval_taxonomy, "global")
    assert tuned.thresholds.per_level is None and tuned.thresholds.per_node is None
    assert tuned.global_score == tuned.per_level_score
    assert GRANULARITIES == ("global", "level", "node")
    with pytest.raises(ValueError, match="granularity must be one of"):
        tune_thresholds(probs, references, taxonomy, "f1_avg", eval_taxonomy, "leaf")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="node_min_support must be a positive integer"):
            tune_thresholds(probs, references, taxonomy, "f1_avg", eval_taxonomy, "node", bad)


def test_per_node_thresholds_in_thresholds_and_decode():
    taxonomy = Taxonomy.from_codes(["A43B", "A43C"])
    thresholds = Thresholds(0.5, (0.5, 0.4, 0.3), "f1_avg", per_node={"A43C": 0.7, "A": 0.2})
    assert list(thresholds.per_node) == ["A", "A43C"]  # sorted, so that equal thresholds compare equal
    assert thresholds.for_nodes(taxonomy).tolist() == [0.2, 0.4, 0.3, 0.7]
    assert Thresholds.from_dict(thresholds.to_dict()) == thresholds
    assert Thresholds(0.5, per_node={}).per_node is None
    scores = np.array([[0.1, 0.1, 0.35, 0.65]])
    assert taxonomy.decode(scores, thresholds) == [["A", "A43", "A43B"]]  # A43C's own 0.7 is not reached
    with pytest.raises(ValueError, match=r"per_node\['A43C'\]: must be a probability in \[0, 1\], got 1.5"):
        Thresholds(0.5, per_node={"A43C": 1.5})
    with pytest.raises(ValueError, match="per_node: must map codes to probabilities"):
        Thresholds(0.5, per_node=[0.3])
    with pytest.raises(TaxonomyError, match="per-node thresholds for 1 codes outside the taxonomy, e.g. 'B41F'"):
        Thresholds(0.5, per_node={"B41F": 0.3}).for_nodes(taxonomy)


# --------------------------------------------------------------------------------------------------
# Decoding into a node matrix
# --------------------------------------------------------------------------------------------------


def test_decoded_matrix_is_the_decoded_label_sets():
    probs, _, taxonomy, eval_taxonomy = synthetic_dev_set(100, 60, seed=3, outside_rate=0.1)
    for values in (probs, probs.astype(np.float64), probs.astype(np.float16)):
        for thresholds in (0.3, [0.5, 0.45, 0.2], Thresholds(per_level=(0.6, 0.1, 0.35))):
            matrix = decoded_matrix(values, taxonomy, thresholds, eval_taxonomy)
            decoded = taxonomy.decode(values, threshold=thresholds)
            assert matrix.dtype == bool
            np.testing.assert_array_equal(matrix, eval_taxonomy.multi_hot(decoded).astype(bool))


def test_decoded_matrix_at_least_one_is_decode_at_least_one():
    probs, _, taxonomy, eval_taxonomy = synthetic_dev_set(200, 60, seed=5, outside_rate=0.1)
    for values in (probs, probs.astype(np.float16)):
        for thresholds in (0.9, Thresholds(per_level=(0.2, 0.5, 0.95))):
            plain = decoded_matrix(values, taxonomy, thresholds, eval_taxonomy)
            matrix = decoded_matrix(values, taxonomy, thresholds, eval_taxonomy, block_size=64, at_least_one=True)
            decoded = taxonomy.decode(values, threshold=thresholds, at_least_one=True)
            np.testing.assert_array_equal(matrix, eval_taxonomy.multi_hot(decoded).astype(bool))
            leaves = [eval_taxonomy.label2id[taxonomy.nodes[i]] for i in taxonomy.leaf_ids]
            assert not plain[:, leaves].any(axis=1).all()  # the case is exercised: some documents were empty
            assert matrix[:, leaves].any(axis=1).all() and (matrix | plain == matrix).all()


def test_evaluate_probabilities_equals_the_label_list_path():
    probs, references, taxonomy, eval_taxonomy = synthetic_dev_set(150, 60, seed=4, outside_rate=0.1)
    assert evaluation_taxonomy(taxonomy, references, "cpc") == eval_taxonomy
    for thresholds in (0.5, Thresholds(per_level=(0.5, 0.4, 0.3))):
        for with_scores in (True, False):
            new = evaluate_probabilities(probs, references, taxonomy, thresholds, eval_taxonomy, with_scores)
            old = reference_scores(probs, references, taxonomy, thresholds, eval_taxonomy, with_scores)
            assert new.keys() == old.keys()
            for key, value in old.items():
                if isinstance(value, float) and key == "auprc":
                    assert new[key] == pytest.approx(value, abs=1e-12), key
                else:
                    assert new[key] == value, key


def test_evaluation_taxonomy_must_keep_the_model_parents():
    from thmm.evaluation import model_columns

    taxonomy = Taxonomy.from_parent_map({"b": "a", "c": "a"})
    moved = Taxonomy.from_parent_map({"b": "a", "c": "b"})
    with pytest.raises(TaxonomyError, match="another parent"):
        model_columns(taxonomy, moved)
    np.testing.assert_array_equal(model_columns(taxonomy, taxonomy), np.arange(3))
