import json

import numpy as np
import pytest

from configuration_thmm import THMMConfig, Taxonomy, TaxonomyError, cpc_ancestors, cpc_level, read_label_titles


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
