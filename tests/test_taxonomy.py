import json

import numpy as np
import pytest

from configuration_thmm import (
    Taxonomy,
    TaxonomyError,
    THMMConfig,
    Thresholds,
    cpc_ancestors,
    cpc_level,
    read_label_titles,
)


def test_prefix_rule_levels_and_order():
    tax = Taxonomy.from_codes(["B41F", "A43C", "A43B", "Y10T"])
    assert tax.nodes == ("A", "B", "Y", "A43", "B41", "Y10", "A43B", "A43C", "B41F", "Y10T")
    assert tax.levels.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert [tax.nodes[p] if p >= 0 else None for p in tax.parent_index] == [
        None, None, None, "A", "B", "Y", "A43", "A43", "B41", "Y10"
    ]
    assert tax.level_slices == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert tax.children("A43") == ["A43B", "A43C"]
    assert tax.ancestors("A43B") == ["A", "A43"]
    assert tax.expand(["A43B", "B41F"]) == {"A", "A43", "A43B", "B", "B41", "B41F"}
    assert tax.label2id["A43B"] == 6 and tax.id2label[6] == "A43B"
    assert [tax.nodes[i] for i in tax.leaf_ids] == ["A43B", "A43C", "B41F", "Y10T"]


def test_cpc_helpers():
    assert cpc_level("A") == 1 and cpc_level("A43") == 2 and cpc_level("A43B") == 3
    assert cpc_ancestors("H04W") == ["H", "H04"]
    assert cpc_level("Y10T", "cpc") == 3
    with pytest.raises(TaxonomyError, match="'Y10T'"):
        cpc_level("Y10T", "ipc")


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("A4", "'A4'"),
        ("a43b!", "'a43b!'"),
        ("", "''"),
        ("a43b", "upper case"),
        (" A43B", "whitespace"),
        ("A43B 13/04", "only section, class and subclass"),
        ("Z99Z", "'Z99Z'"),
    ],
)
def test_malformed_codes_are_named(code, fragment):
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.from_codes(["A43B", code])
    assert fragment in str(err.value)


def test_empty_and_non_string_codes():
    with pytest.raises(TaxonomyError, match="empty list"):
        Taxonomy.from_codes([])
    with pytest.raises(TaxonomyError, match="must be a string"):
        Taxonomy.from_codes([43])


def test_distance_matches_paper_example():
    tax = Taxonomy.from_codes(["A43B", "A43C", "B41F"])
    assert tax.distance("B41F", "A43B") == 6
    assert tax.distance("A43C", "A43B") == 2
    assert tax.distance("A43B", "A43B") == 0
    assert tax.distance("A43", "A43B") == 1


def test_parent_map_taxonomy_any_depth():
    tax = Taxonomy.from_parent_map({"dog": "mammal", "cat": "mammal", "mammal": "animal", "trout": "fish", "fish": "animal"})
    assert tax.nodes == ("animal", "fish", "mammal", "cat", "dog", "trout")
    assert tax.levels.tolist() == [1, 2, 2, 3, 3, 3]
    assert tax.ancestors("dog") == ["animal", "mammal"]
    assert tax.distance("dog", "trout") == 4
    with pytest.raises(TaxonomyError, match="cycle"):
        Taxonomy.from_parent_map({"a": "b", "b": "c", "c": "a"})
    with pytest.raises(TaxonomyError, match="its own parent"):
        Taxonomy.from_parent_map({"a": "a"})
    with pytest.raises(TaxonomyError, match="not in this taxonomy"):
        tax.index("horse")


def test_json_roundtrip_and_fingerprint(tmp_path, small_taxonomy):
    path = tmp_path / "tax.json"
    small_taxonomy.to_json(path)
    again = Taxonomy.from_json(path)
    assert again == small_taxonomy and again.nodes == small_taxonomy.nodes
    assert again.fingerprint == small_taxonomy.fingerprint
    assert Taxonomy.from_codes(["A43B"]).fingerprint != small_taxonomy.fingerprint
    broken = json.loads(path.read_text())
    broken["nodes"] = list(reversed(broken["nodes"]))
    broken["parents"] = list(reversed(broken["parents"]))
    with pytest.raises(TaxonomyError, match="canonical"):
        Taxonomy.from_dict(broken)
    with pytest.raises(TaxonomyError, match="'nodes' and 'parents'"):
        Taxonomy.from_dict({"nodes": ["A"]})


def test_multi_hot_expands_ancestors(small_taxonomy):
    tax = small_taxonomy
    y = tax.multi_hot([["A43B"], ["H04W", "Y10T"], []])
    assert {tax.nodes[i] for i in np.flatnonzero(y[0])} == {"A", "A43", "A43B"}
    assert {tax.nodes[i] for i in np.flatnonzero(y[1])} == {"H", "H04", "H04W", "Y", "Y10", "Y10T"}
    assert y[2].sum() == 0
    with pytest.raises(TaxonomyError, match="'G06F' is not in this taxonomy"):
        tax.multi_hot([["G06F"]])


def test_decode_threshold_closure_topk_and_levels(small_taxonomy):
    tax = small_taxonomy
    scores = np.zeros((3, len(tax)))
    i = tax.index
    scores[0, i("A43B")] = 0.9  # child above threshold, parents below: closure adds them
    scores[0, i("A")] = 0.2
    scores[1, i("H")] = 0.8  # an inner node alone
    scores[1, i("H04W")] = 0.4
    scores[2, i("B41F")] = 0.3
    assert tax.decode(scores, 0.5) == [["A", "A43", "A43B"], ["H"], []]
    assert tax.decode(scores, [0.5, 0.5, 0.35]) == [["A", "A43", "A43B"], ["H", "H04", "H04W"], []]
    assert tax.decode(scores, 0.5, at_least_one=True)[2] == ["B", "B41", "B41F"]
    top2 = tax.decode(scores, top_k=2)
    assert {"H", "H04", "H04W"} <= set(top2[1]) and len([c for c in top2[1] if len(c) == 4]) == 2
    assert tax.decode(scores, top_k=1) == [["A", "A43", "A43B"], ["H", "H04", "H04W"], ["B", "B41", "B41F"]]
    with pytest.raises(TaxonomyError, match="one threshold per level"):
        tax.decode(scores, [0.5, 0.5])
    with pytest.raises(TaxonomyError, match="shape"):
        tax.decode(scores[:, :3])


def test_max_from_leaves(small_taxonomy):
    tax = small_taxonomy
    leaves = np.arange(len(tax.leaf_ids), dtype=float)[None, :] / 10
    full = tax.max_from_leaves(leaves)
    assert full[0, tax.index("A43")] == max(full[0, tax.index("A43B")], full[0, tax.index("A43C")])
    assert full[0, tax.index("H")] == max(full[0, tax.index(c)] for c in ("H04L", "H04W", "H01M"))


def test_config_carries_taxonomy(small_taxonomy, tmp_path):
    config = THMMConfig(taxonomy=small_taxonomy, head_type="tmm", level_thresholds=[0.5, 0.4, 0.3])
    assert config.num_labels == len(small_taxonomy)
    assert config.id2label[0] == small_taxonomy.nodes[0]
    assert config.problem_type == "multi_label_classification"
    assert config.decision_thresholds == [0.5, 0.4, 0.3]
    config.save_pretrained(tmp_path)
    again = THMMConfig.from_pretrained(tmp_path)
    assert again.get_taxonomy() == small_taxonomy
    assert again.encoder_config.vocab_size == 31090  # SciBERT-shaped default encoder
    assert again.auto_map["AutoModel"] == "modeling_thmm.THMMForHierarchicalClassification"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"head_type": "hmm"}, "head_type"),
        ({"doc_representation": "pooler"}, "doc_representation"),
        ({"head_dropout": 1.5}, "head_dropout"),
        ({"threshold": 2.0}, "threshold"),
        ({"level_thresholds": [0.5]}, "level_thresholds"),
        ({"cnn_kernel_sizes": [0, 2]}, "cnn_kernel_sizes"),
    ],
)
def test_bad_config_values(small_taxonomy, kwargs, fragment):
    with pytest.raises(Exception) as err:
        THMMConfig(taxonomy=small_taxonomy, **kwargs)
    assert fragment in str(err.value)


def test_read_label_titles(tmp_path):
    good = tmp_path / "titles.tsv"
    good.write_text("A\tHUMAN NECESSITIES\nA43B\tFOOTWEAR PARTS\n", encoding="utf-8")
    assert read_label_titles(good) == {"A": "HUMAN NECESSITIES", "A43B": "FOOTWEAR PARTS"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("A\tHUMAN NECESSITIES\nA43B FOOTWEAR\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv, line 2"):
        read_label_titles(bad)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("A\tNÉCESSITÉS\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_label_titles(latin)


# --------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), -1, 2, float("inf"), "0.5", True, None])
def test_thresholds_reject_non_probabilities(bad):
    with pytest.raises(ValueError, match=r"^global_threshold: must be a probability in \[0, 1\], got "):
        Thresholds(bad)
    with pytest.raises(ValueError, match=r"^per_level\[2\]: must be a probability in \[0, 1\], got "):
        Thresholds(per_level=[0.5, 0.4, bad])
    with pytest.raises(ValueError, match=r"must be a probability"):
        Thresholds.coerce([0.5, bad])


def test_thresholds_message_names_the_value():
    with pytest.raises(ValueError) as err:
        Thresholds(per_level=[0.5, 0.4, float("nan")])
    assert str(err.value) == "per_level[2]: must be a probability in [0, 1], got nan"
    with pytest.raises(ValueError, match="per_level: must hold one threshold per level, got none"):
        Thresholds(per_level=[])
    with pytest.raises(ValueError, match="per_level: must be a sequence"):
        Thresholds(per_level=0.5)
    with pytest.raises(ValueError, match="objective"):
        Thresholds(objective=3)


def test_thresholds_per_level_length_is_checked_against_the_taxonomy(small_taxonomy):
    with pytest.raises(TaxonomyError, match=r"expected one threshold per level \(3\), got \[0.5, 0.4\]"):
        Thresholds(per_level=[0.5, 0.4]).for_nodes(small_taxonomy)
    with pytest.raises(TaxonomyError, match="one threshold per level"):
        small_taxonomy.decode(np.zeros((1, len(small_taxonomy))), Thresholds(per_level=[0.5] * 4))


def test_thresholds_parse_coerce_and_json(small_taxonomy):
    per_level = Thresholds.parse("0.5,0.4,0.3")
    assert per_level.per_level == (0.5, 0.4, 0.3) and per_level.decision == (0.5, 0.4, 0.3)
    assert Thresholds.parse(" 0.4 ") == Thresholds(0.4) and Thresholds(0.4).decision == 0.4
    for bad in ["", "abc", "0.5,,0.3", "0.5;0.4"]:
        with pytest.raises(ValueError, match=r"^thresholds: expected a probability like 0.4 or one per level") as err:
            Thresholds.parse(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"per_level\[2\]: must be a probability in \[0, 1\], got 1.5"):
        Thresholds.parse("0.5,0.4,1.5")
    assert Thresholds.coerce(np.float64(0.3)) == Thresholds(0.3)
    assert Thresholds.coerce(np.array([0.5, 0.4, 0.3])) == per_level
    assert Thresholds.coerce(per_level) is per_level
    by_node = per_level.for_nodes(small_taxonomy)
    assert by_node.tolist() == [[0.5, 0.4, 0.3][lvl - 1] for lvl in small_taxonomy.levels]
    assert Thresholds(0.25).for_nodes(small_taxonomy).tolist() == [0.25] * len(small_taxonomy)

    tuned = Thresholds(np.float64(0.45), [np.float32(0.5), 0.25, 0.75], "micro_f1")
    data = tuned.to_dict()
    assert data == {"global_threshold": 0.45, "per_level": [0.5, 0.25, 0.75], "objective": "micro_f1", "per_node": None}
    assert type(data["global_threshold"]) is float and all(type(t) is float for t in data["per_level"])
    assert json.loads(json.dumps(data)) == data and Thresholds.from_dict(data) == tuned
    assert Thresholds.from_dict({}) == Thresholds()
    with pytest.raises(ValueError, match="unknown keys"):
        Thresholds.from_dict({"global": 0.5})


def test_decode_takes_thresholds_and_raw_scores(small_taxonomy):
    tax = small_taxonomy
    scores = np.zeros((2, len(tax)))
    scores[0, [tax.index(c) for c in ("H", "H04", "H04W")]] = [0.8, 0.45, 0.4]
    assert tax.decode(scores, Thresholds(per_level=(0.5, 0.4, 0.35))) == tax.decode(scores, [0.5, 0.4, 0.35])
    assert tax.decode(scores, Thresholds(per_level=(0.5, 0.4, 0.35)))[0] == ["H", "H04", "H04W"]
    # Plain values may be on any score scale (e.g. SVM decision values), but must be finite.
    assert tax.decode(scores - 1.0, -0.25) == [["H"], []]
    with pytest.raises(ValueError, match=r"threshold\[1\]: must be a finite number, got nan"):
        tax.decode(scores, [0.5, float("nan"), 0.5])


def test_config_thresholds_and_choices(small_taxonomy):
    from configuration_thmm import (
        DOC_REPRESENTATIONS,
        HEAD_TYPES,
        MIN_MAX_LENGTH,
        check_max_length,
    )

    config = THMMConfig(taxonomy=small_taxonomy, threshold=0.4, level_thresholds=[0.5, 0.4, 0.3])
    assert config.thresholds == Thresholds(0.4, (0.5, 0.4, 0.3))
    assert THMMConfig(taxonomy=small_taxonomy, threshold=0.4).decision_thresholds == 0.4
    with pytest.raises(ValueError, match=r"field 'level_thresholds\[1\]': must be a probability in \[0, 1\] \(got nan\)"):
        THMMConfig(taxonomy=small_taxonomy, level_thresholds=[0.5, float("nan"), 0.3])
    config = THMMConfig(taxonomy=small_taxonomy, level_thresholds=[0.5, 0.4, 0.3], node_thresholds={"A43B": 0.2})
    node_values = config.thresholds.for_nodes(small_taxonomy)
    assert node_values[small_taxonomy.index("A43B")] == 0.2 and node_values[small_taxonomy.index("A43C")] == 0.3
    with pytest.raises(ValueError, match=r"field 'node_thresholds': must name taxonomy nodes \(1 do not, e.g. 'Z99Z'\)"):
        THMMConfig(taxonomy=small_taxonomy, node_thresholds={"Z99Z": 0.2})
    assert HEAD_TYPES == ("tmm", "thmm", "flat") and DOC_REPRESENTATIONS == ("cls", "cnn", "mean")
    for head_type in HEAD_TYPES:
        THMMConfig(taxonomy=small_taxonomy, head_type=head_type)
    assert check_max_length(MIN_MAX_LENGTH) == 8
    with pytest.raises(ValueError, match=r"^--max-length: must be at least 8 \(got 7\)$"):
        check_max_length(7, "--max-length")
    with pytest.raises(ValueError, match=r"field 'max_length': must be at least 8 \(got 4\)"):
        THMMConfig(taxonomy=small_taxonomy, max_length=4)


# --------------------------------------------------------------------------------------------------
# Closure and max-over-children on random hierarchies, against naive per-node code
# --------------------------------------------------------------------------------------------------


def random_taxonomy(seed: int, size: int = 60) -> Taxonomy:
    """A forest of uneven depth: several roots, leaves at every level."""
    rng = np.random.default_rng(seed)
    parents = {"n0": None}
    for i in range(1, size):
        parents[f"n{i}"] = None if rng.random() < 0.1 else f"n{rng.integers(0, i)}"
    return Taxonomy.from_parent_map(parents)


def naive_closure(tax: Taxonomy, labels) -> set[str]:
    out = set()
    for code in labels:
        while code is not None:
            out.add(code)
            code = tax.parent(code)
    return out


def naive_max_from_leaves(tax: Taxonomy, leaf_scores: np.ndarray) -> np.ndarray:
    leaf_column = {int(node): k for k, node in enumerate(tax.leaf_ids)}

    def score(node: int) -> np.ndarray:
        if node in leaf_column:
            return leaf_scores[:, leaf_column[node]]
        return np.max([score(child) for child in tax.children_ids(node)], axis=0)

    return np.stack([score(node) for node in range(len(tax))], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_closure_equals_naive_ancestor_expansion(seed):
    tax = random_taxonomy(seed)
    rng = np.random.default_rng(100 + seed)
    docs = [list(rng.choice(tax.nodes, size=rng.integers(0, 5), replace=True)) for _ in range(80)]
    expected = np.zeros((len(docs), len(tax)), dtype=bool)
    for row, labels in enumerate(docs):
        expected[row, [tax.index(code) for code in naive_closure(tax, labels)]] = True
    ids = [[tax.index(code) for code in labels] for labels in docs]
    np.testing.assert_array_equal(tax.multi_hot_ids(ids), expected)
    np.testing.assert_array_equal(tax.multi_hot(docs), expected.astype(np.float32))
    assert tax.multi_hot(docs).dtype == np.float32
    unexpanded = tax.multi_hot_ids(ids, expand=False)
    assert [set(np.flatnonzero(row)) for row in unexpanded] == [set(i) for i in ids]
    np.testing.assert_array_equal(tax.close_upwards(unexpanded), expected)
    np.testing.assert_array_equal(tax.ancestor_matrix() > 0, tax.multi_hot_ids([[i] for i in range(len(tax))]))
    with pytest.raises(TaxonomyError, match="out of range"):
        tax.multi_hot_ids([[len(tax)]])


@pytest.mark.parametrize("seed", range(5))
def test_max_from_leaves_equals_naive_loop(seed):
    tax = random_taxonomy(seed)
    leaf_scores = np.random.default_rng(seed).normal(size=(7, len(tax.leaf_ids)))
    expected = naive_max_from_leaves(tax, leaf_scores)
    np.testing.assert_array_equal(tax.max_from_leaves(leaf_scores), expected)
    # Documents are processed in blocks; the block size does not matter.
    full = np.full((7, len(tax)), -np.inf)
    full[:, tax.leaf_ids] = leaf_scores
    np.testing.assert_array_equal(tax.fill_from_children(full, block_size=3), expected)
    # A node that has a score keeps it; only nodes without one (-inf) take their children's max.
    inner = np.setdiff1d(np.arange(len(tax)), tax.leaf_ids)[0]
    full[:, inner] = 42.0
    filled = tax.fill_from_children(full)
    assert (filled[:, inner] == 42.0).all()


def test_children_by_level_tables(small_taxonomy):
    tables = small_taxonomy.children_by_level()
    assert len(tables) == small_taxonomy.num_levels - 1
    for parents, table in tables:
        for parent, row in zip(parents.tolist(), table.tolist()):
            kids = small_taxonomy.children_ids(parent)
            assert row[: len(kids)] == list(kids) and set(row[len(kids) :]) <= {parent}
        assert not table.flags.writeable


@pytest.mark.parametrize("seed", range(3))
def test_flat_head_node_logits_are_max_over_children(seed):
    import torch

    from modeling_thmm import FlatHead

    tax = random_taxonomy(seed)
    torch.manual_seed(seed)
    head = FlatHead(tax, in_features=8, hidden_size=16, dropout=0.0).eval()
    doc = torch.randn(5, 8)
    node_logits, leaf_logits = head(doc)
    assert torch.equal(node_logits[:, tax.leaf_ids], leaf_logits)
    for node in range(len(tax)):
        children = list(tax.children_ids(node))
        if children:
            assert torch.equal(node_logits[:, node], node_logits[:, children].max(dim=1).values), tax.nodes[node]
    expected = naive_max_from_leaves(tax, leaf_logits.detach().double().numpy())
    np.testing.assert_array_equal(node_logits.detach().double().numpy(), expected)
    node_logits.sum().backward()  # every leaf that is some node's max gets a gradient
    assert head.classifier.weight.grad.abs().sum() > 0


def test_document_counts_close_labels_upwards_once_per_document(small_taxonomy):
    ids = [["A43B", "A47J"], ["H04W"], [], ["A43B", "A43B"]]
    flat = np.array([small_taxonomy.index(c) for labels in ids for c in labels], dtype=np.int64)
    counts = small_taxonomy.document_counts(flat, [len(labels) for labels in ids])
    expected = small_taxonomy.multi_hot(ids).sum(axis=0)  # the dense route
    assert counts.dtype == np.int64 and np.array_equal(counts, expected)
    assert counts[small_taxonomy.index("A")] == 2 and counts[small_taxonomy.index("A43B")] == 2
    with pytest.raises(TaxonomyError, match="out of range"):
        small_taxonomy.document_counts(np.array([len(small_taxonomy)]), [1])
    with pytest.raises(TaxonomyError, match="lengths add up to 2 labels, but 1"):
        small_taxonomy.document_counts(flat[:1], [1, 1])
