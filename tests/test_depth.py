"""Taxonomies deeper than the subclass (issue 32): group symbols in every notation, depths 3/4/5,
the main-group heads, the config's depth, the metric at 4 levels, and thmm-train/thmm-predict at depth 4."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from configuration_thmm import THMMConfig, Taxonomy, TaxonomyError
from taxonomy_thmm import cpc_ancestors, cpc_level, cut_code, cut_labels, label_depth, normalize_symbol
from conftest import QUICKSTART_DATA, build_tiny_model, save_model_dir, train_in_process

# --------------------------------------------------------------------------------------------------
# Symbols
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("written, canonical", [
    ("G05D1/02", "G05D 1/02"),            # compact (Lens.org)
    ("G05D 1/02", "G05D 1/02"),           # spaced (patent offices' display form)
    ("G05D   1/02", "G05D 1/02"),         # padded bulk-file form, main group right-aligned in 4 places
    ("G05D0001020000", "G05D 1/02"),      # 14-digit master-file form
    ("G05D0001000000", "G05D 1/00"),      # ... a main group
    ("H04L0029080000", "H04L 29/08"),
    ("H01L2924000140", "H01L 2924/00014"),  # CPC's 4-digit main groups and 5-digit subgroups
    ("G05D0001/0221", "G05D 1/0221"),     # leading zeros of the main group
    ("B64C39/024", "B64C 39/024"),
    ("Y02E10/50", "Y02E 10/50"),
    ("A43B", "A43B"), ("A43", "A43"), ("A", "A"),  # section, class, subclass as they are
])
def test_every_notation_becomes_the_canonical_code(written, canonical):
    assert normalize_symbol(written) == canonical


@pytest.mark.parametrize("written, fragment", [
    ("g05d1/02", "upper case"),
    (" G05D1/02", "surrounding whitespace"),
    ("G05D1/2", "malformed CPC symbol 'G05D1/2'"),       # a subgroup has at least two digits
    ("G05D 0/02", "main group 0 does not exist"),
    ("G05D-1/02", "'G05D-1/02'"),
    ("G05D1-02", "'G05D1-02'"),
    ("G05D 1 /02", "'G05D 1 /02'"),
    ("G05D12345/02", "'G05D12345/02'"),                  # main groups have at most 4 digits
    ("G05D000102000", "'G05D000102000'"),                # 13 digits: not the master-file form
    ("Z05D1/02", "'Z05D1/02'"),
    ("G05D1/02 (2006.01)", "'G05D1/02 (2006.01)'"),       # version indicators are not symbols
])
def test_malformed_symbols_are_refused_naming_them(written, fragment):
    with pytest.raises(TaxonomyError) as err:
        normalize_symbol(written)
    assert fragment in str(err.value)
    assert "'G05D1/02', 'G05D 1/02', 'G05D   1/02' or 'G05D0001020000'" in str(err.value)  # the accepted forms


def test_ipc_has_no_section_y():
    assert normalize_symbol("Y02E10/50", "cpc") == "Y02E 10/50"
    with pytest.raises(TaxonomyError, match="malformed IPC symbol"):
        normalize_symbol("Y02E10/50", "ipc")


def test_levels_ancestors_and_cuts():
    assert cpc_level("G05D 1/00", depth=4) == 4 and cpc_level("G05D 1/02", depth=5) == 5
    assert cpc_ancestors("G05D 1/02", depth=5) == ["G", "G05", "G05D", "G05D 1/00"]
    assert cpc_ancestors("G05D 1/00", depth=4) == ["G", "G05", "G05D"]
    assert cut_code("G05D 1/02", 4) == "G05D 1/00" and cut_code("G05D 1/02", 3) == "G05D"
    assert cut_code("G05D 1/02", 5) == "G05D 1/02" and cut_code("A43B", 4) == "A43B"
    assert cut_labels(["G05D 1/02", "G05D 1/04", "G08G 1/04", "A43B"], 4) == ["G05D 1/00", "G08G 1/00", "A43B"]
    assert label_depth(["A43B"]) == 3 and label_depth(["A43B", "G05D 1/00"]) == 4
    assert label_depth(["G05D 1/02"]) == 5 and label_depth([]) == 3


def test_depth_three_refuses_groups_as_before_and_depth_four_refuses_subgroups():
    with pytest.raises(TaxonomyError, match="only section, class and subclass"):
        cpc_level("G05D 1/02")
    with pytest.raises(TaxonomyError, match="is a subgroup; at depth 4 labels stop at the main group .'G05D 1/00'"):
        cpc_level("G05D 1/02", depth=4)
    with pytest.raises(TaxonomyError, match=r"write it as 'G05D 1/02'"):
        cpc_level("G05D1/02", depth=5)  # taxonomy codes are canonical
    with pytest.raises(TaxonomyError, match="depth must be one of"):
        cpc_level("A43B", depth=6)


# --------------------------------------------------------------------------------------------------
# Taxonomies at depths 3, 4, 5
# --------------------------------------------------------------------------------------------------

GROUP_CODES = ["G05D 1/02", "G05D 1/04", "G05D 3/00", "G08G 1/04", "B64C 39/02", "A43B"]


@pytest.mark.parametrize("depth, per_level", [(3, [3, 4, 4]), (4, [3, 4, 4, 4]), (5, [3, 4, 4, 4, 4])])
def test_taxonomy_at_each_depth(depth, per_level):
    tax = Taxonomy.from_codes(cut_labels(GROUP_CODES, depth), scheme="ipc", depth=depth)
    assert [s.stop - s.start for s in tax.level_slices] == per_level and tax.depth == depth
    assert Taxonomy.from_dict(tax.to_dict()) == tax and Taxonomy.from_dict(tax.to_dict()).depth == depth
    assert ("depth" in tax.to_dict()) == (depth > 3)  # a subclass taxonomy is stored as it always was
    if depth == 5:
        assert tax.parent("G05D 1/02") == "G05D 1/00" and tax.children("G05D 1/00") == ["G05D 1/02", "G05D 1/04"]
        assert tax.ancestors("G05D 1/04") == ["G", "G05", "G05D", "G05D 1/00"]
        assert tax.distance("G05D 1/02", "G05D 1/04") == 2 and tax.distance("G05D 1/02", "G08G 1/04") == 8
        assert tax.level("G05D 3/00") == 4 and tax.level("A43B") == 3  # leaves at any level
    if depth == 4:
        assert tax.children("G05D") == ["G05D 1/00", "G05D 3/00"]
        with pytest.raises(TaxonomyError, match="subgroup"):
            tax.index("G05D 1/02")


def test_serialized_taxonomy_checks_depth_and_prefix_rule():
    data = Taxonomy.from_codes(["G05D 1/00"], scheme="ipc", depth=4).to_dict()
    with pytest.raises(TaxonomyError, match="only section, class and subclass"):
        Taxonomy.from_dict({k: v for k, v in data.items() if k != "depth"})
    bad = dict(data, parents=[p if p != "G05D" else "G05" for p in data["parents"]])
    with pytest.raises(TaxonomyError, match="prefix rule gives 'G05D'"):
        Taxonomy.from_dict(bad)
    with pytest.raises(TaxonomyError, match="depth must be one of"):
        Taxonomy.from_dict(dict(data, depth=7))
    with pytest.raises(TaxonomyError, match="parent-map taxonomy has none"):
        Taxonomy({"a": None}, scheme=None, depth=4)


def test_title_file_codes_in_any_notation(tmp_path):
    from taxonomy_thmm import read_label_titles

    path = tmp_path / "titles.tsv"
    path.write_text("G05D\tCONTROLLING\nG05D1/00\tControl of position\nG05D   1/02\tin two dimensions\n"
                    "G05D0003000000\tControl of position or direction\n", encoding="utf-8")
    assert read_label_titles(path) == {"G05D": "CONTROLLING", "G05D 1/00": "Control of position",
                                       "G05D 1/02": "in two dimensions", "G05D 3/00": "Control of position or direction"}
    path.write_text("G05D\tCONTROLLING\nG05D1/2\tbad\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"titles.tsv, line 2, field 'code': malformed CPC symbol 'G05D1/2'"):
        read_label_titles(path)


# --------------------------------------------------------------------------------------------------
# Reading data with group symbols
# --------------------------------------------------------------------------------------------------


def write_tsv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["patent_id", "title", "abstract", "labels"])
        for row in rows:
            writer.writerow([row["patent_id"], row["title"], row["abstract"], str(list(row["labels"]))])
    return path


def test_reader_normalizes_group_symbols_and_names_bad_ones(tmp_path):
    from dataset_script.readers import PatentDataError, read_patent_tsv

    rows = [{"patent_id": "1", "title": "drone", "abstract": "", "labels": ["G05D1/02", "G05D   1/04", "A43B"]},
            {"patent_id": "2", "title": "shoe", "abstract": "", "labels": ["A43B0013040000"]}]
    read = read_patent_tsv(write_tsv(tmp_path / "ok.tsv", rows), scheme="ipc")
    assert read[0]["labels"] == ["G05D 1/02", "G05D 1/04", "A43B"] and read[0]["classes"] == ["A43", "G05"]
    assert read[1]["labels"] == ["A43B 13/04"] and read[1]["sections"] == ["A"]
    rows[1]["labels"] = ["A43B13/4"]
    with pytest.raises(PatentDataError, match=r"bad.tsv, line 3, field 'labels': malformed IPC symbol 'A43B13/4'"):
        read_patent_tsv(write_tsv(tmp_path / "bad.tsv", rows), scheme="ipc")
    rows[1]["labels"] = ["A43B13/04", "A43B 13/04"]
    with pytest.raises(PatentDataError, match=r"line 3, field 'labels': code 'A43B 13/04' is listed twice"):
        read_patent_tsv(write_tsv(tmp_path / "twice.tsv", rows), scheme="ipc")


# --------------------------------------------------------------------------------------------------
# Heads and config at depth 4 and 5
# --------------------------------------------------------------------------------------------------


def deep_taxonomy(depth=4):
    return Taxonomy.from_codes(cut_labels(GROUP_CODES, depth), scheme="ipc", depth=depth)


@pytest.mark.parametrize("head_type", ["tmm", "thmm"])
@pytest.mark.parametrize("depth", [3, 5])
def test_the_heads_lean_relu_dropout_trains_bit_for_bit_as_autograds_composition(tiny_encoder_config, head_type, depth,
                                                                                  monkeypatch):
    """heads_thmm.relu_dropout keeps only its output for the backward pass; with dropout on, the same
    seed gives the same logits and the same gradient for every weight as dropout(relu(x)) in autograd,
    per-node levels (depth 3) and shared ones (depth 5) alike."""
    import heads_thmm

    def logits_and_gradients():
        model = build_tiny_model(tiny_encoder_config, deep_taxonomy(depth), head_type=head_type, head_dropout=0.25,
                                 deep_head_hidden_size=8).train()
        torch.manual_seed(3)
        doc = torch.randn(5, model.heads.levels[0].in_features, requires_grad=True)
        logits = model.heads(doc)
        (logits * torch.linspace(-1, 1, logits.shape[1])).sum().backward()
        return [logits, doc.grad] + [p.grad for p in model.heads.parameters()]

    lean = logits_and_gradients()
    assert all(g is not None for g in lean) and lean[1].abs().sum() > 0
    monkeypatch.setattr(heads_thmm, "relu_dropout", lambda x, dropout: dropout(torch.nn.functional.relu(x)))
    plain = logits_and_gradients()
    assert len(lean) == len(plain) and all(torch.equal(a, b) for a, b in zip(lean, plain))


@pytest.mark.parametrize("head_type", ["tmm", "thmm"])
@pytest.mark.parametrize("depth", [4, 5])
def test_deep_heads_cost_one_output_row_per_node(tiny_encoder_config, head_type, depth):
    """Main groups and subgroups add an output row and bias per node (THMM at depth 5 also an
    embedding per main group); the subclass levels keep the paper's per-node heads."""
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(depth), head_type=head_type, deep_head_hidden_size=8)
    taxonomy = model.taxonomy
    deep = model.heads.levels[3]
    assert type(deep).__name__ == "SharedLevelHeads" and type(model.heads.levels[2]).__name__ == "LevelHeads"
    per_node = {name: p.numel() // deep.num_nodes for name, p in deep.named_parameters() if p.shape[0] == deep.num_nodes}
    expected = {"weight_out": 8, "bias_out": 1} | ({"node_embedding": 8} if head_type == "thmm" and depth == 5 else {})
    assert per_node == expected
    logits = model(input_ids=torch.tensor([[2, 7, 8, 3]]), attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    assert logits.shape == (1, len(taxonomy)) and torch.isfinite(logits).all()


def test_thmm_parent_link_conditions_the_main_groups(tiny_encoder_config):
    """At depth 4, a main group's score depends on its parent subclass head's hidden state; siblings
    share that parent-conditioned state and differ only by their output rows."""
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="thmm", deep_head_hidden_size=8)
    tax, heads = model.taxonomy, model.heads
    doc = torch.randn(2, 32)
    base = heads(doc)
    with torch.no_grad():  # change the G05D subclass head only
        heads.levels[2].weight2[tax.index("G05D") - tax.level_slices[2].start].mul_(-3.0)
    changed = (heads(doc) - base).abs().amax(dim=0) > 1e-6
    moved = {tax.nodes[i] for i in torch.nonzero(changed).flatten().tolist()}
    assert moved == {"G05D", "G05D 1/00", "G05D 3/00"}  # the subclass and its main groups, nothing else


def test_per_node_deep_heads_are_the_papers_heads(tiny_encoder_config):
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="thmm", deep_heads="per_node",
                             deep_head_hidden_size=4)
    deep = model.heads.levels[3]
    assert type(deep).__name__ == "LevelHeads" and deep.weight2.shape == (4, 4, 4)
    assert deep.parent_weight1.shape == (4, 16, 4)  # reads the subclass head's 16-wide hidden layer


def test_config_depth_follows_the_taxonomy_and_a_mismatch_is_refused(tiny_encoder_config, tmp_path, tiny_tokenizer):
    from transformers import AutoConfig

    config = THMMConfig(encoder_config=tiny_encoder_config, taxonomy=deep_taxonomy(4), max_length=64)
    assert config.depth == 4
    assert THMMConfig(encoder_config=tiny_encoder_config, taxonomy=Taxonomy.from_codes(["A43B"]), max_length=64).depth == 3
    with pytest.raises(ValueError, match=r"field 'depth': must equal the taxonomy's depth 4 \(got 3\)"):
        THMMConfig(encoder_config=tiny_encoder_config, taxonomy=deep_taxonomy(4), depth=3, max_length=64)
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="tmm")
    folder = save_model_dir(model, tiny_tokenizer, tmp_path / "model")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["depth"] == 4 and saved["taxonomy"]["depth"] == 4
    saved["depth"] = 3  # a config.json edited, or written for other weights
    (folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError) as err:
        AutoConfig.from_pretrained(folder, trust_remote_code=True)
    message = str(err.value)
    assert "config.json, field 'depth': must equal the taxonomy's depth 4 (got 3)" in message
    assert "\n" not in message  # one line


def test_depth_four_round_trip_through_automodel_remote_code(tiny_encoder_config, tiny_tokenizer, tmp_path):
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="thmm",
                             label_titles={"G05D 1/00": "Control of position"})
    model.save_pretrained(tmp_path)
    batch = dict(tiny_tokenizer(["drone flight control"], return_tensors="pt"))
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save(batch, tmp_path / "batch.pt")  # test-only scratch input
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})  # the same sums as the expected logits (xdist: 1)
        for name in ("configuration_thmm", "taxonomy_thmm", "modeling_thmm", "heads_thmm", "lexical_thmm",
                     "encoder_layers_thmm", "weights_thmm", "tokenization_thmm", "decoding_thmm"):
            sys.modules[name] = None  # the installed package must not be used
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules")
        assert model.config.depth == 4 and model.taxonomy.depth == 4
        with torch.no_grad():
            logits = model(**torch.load({str(tmp_path / "batch.pt")!r})).logits
        assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r}))
        records = model.label_records(torch.sigmoid(logits), top_k=1)[0]
        assert [r["level"] for r in records] == [1, 2, 3, 4], records  # a main group with its ancestors
        assert records[-1]["code"].count(" ") == 1 and records[-1]["code"].endswith("/00")
        print("REMOTE-OK")
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK" in result.stdout


# --------------------------------------------------------------------------------------------------
# The metric at 4 levels, by hand
# --------------------------------------------------------------------------------------------------


def test_metric_against_a_hand_computed_four_level_example():
    """Gold G05D 1/00 and B64C 39/00; predicted G05D 1/00 and G05D 3/00 (one document).

    Closed upwards: gold {G, G05, G05D, G05D 1/00, B, B64, B64C, B64C 39/00} (8 nodes),
    predicted {G, G05, G05D, G05D 1/00, G05D 3/00} (5): 4 true positives, 1 false positive, 4 misses.
    Micro: P 4/5, R 4/8, F1 = 2 * 0.8 * 0.5 / 1.3 = 8/13. Level 4: P 1/2, R 1/2, F1 1/2; levels 1-3:
    P 1, R 1/2.
    The false positive G05D 3/00 is 2 hops from the nearest gold main group G05D 1/00.
    """
    from thmm.hierarchical_metrics import compute_hierarchical_metrics

    taxonomy = Taxonomy.from_codes(["G05D 1/00", "G05D 3/00", "B64C 39/00"], scheme="ipc", depth=4)
    results = compute_hierarchical_metrics([["G05D 1/00", "G05D 3/00"]], [["G05D 1/00", "B64C 39/00"]],
                                           taxonomy=taxonomy)
    assert results["micro_precision"] == pytest.approx(4 / 5) and results["micro_recall"] == pytest.approx(4 / 8)
    assert results["micro_f1"] == pytest.approx(8 / 13)
    assert results["level4_micro_precision"] == pytest.approx(0.5) and results["level4_micro_recall"] == 0.5
    assert results["level4_micro_f1"] == pytest.approx(0.5)
    # macro at level 4: precision over the predicted main groups (1 and 0), recall over the gold ones (1 and 0)
    assert results["level4_macro_precision"] == pytest.approx(0.5) and results["level4_macro_recall"] == 0.5
    for level in (1, 2, 3):  # one of two gold nodes found, nothing wrong predicted
        assert results[f"level{level}_micro_precision"] == 1.0 and results[f"level{level}_micro_recall"] == 0.5
    assert results["level4_avg_predicted"] == 2.0 and results["level4_avg_gold"] == 2.0  # coverage at level 4
    assert results["error_level"] == 4 and results["fp_count"] == 1 and results["fp_hops_mean"] == pytest.approx(2.0)
    # without a taxonomy the metric builds one from the codes (group symbols need no option)
    again = compute_hierarchical_metrics([["G05D 1/00", "G05D 3/00"]], [["G05D 1/00", "B64C 39/00"]])
    assert again["micro_f1"] == pytest.approx(8 / 13)


# --------------------------------------------------------------------------------------------------
# thmm-train and thmm-predict at depth 4
# --------------------------------------------------------------------------------------------------

NOTATIONS = (lambda sub, main, group: f"{sub}{main}/{group}",             # train: compact
             lambda sub, main, group: f"{sub} {main}/{group}",            # dev: spaced
             lambda sub, main, group: f"{sub}{main:04d}{group}0000")      # test: master-file form


@pytest.fixture(scope="module")
def group_dataset(tmp_path_factory):
    return write_group_dataset(tmp_path_factory.mktemp("groups"))


def write_group_dataset(out):
    """The quickstart patents with group symbols (two main groups per subclass, subgroups below)."""
    for split, notation in zip(("train", "dev", "test"), NOTATIONS):
        with open(QUICKSTART_DATA / f"{split}.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        for i, row in enumerate(rows):
            subclasses = [code.strip(" '") for code in row["labels"].strip("[]").split(",")]
            row["labels"] = [notation(sub, 1 + (i + k) % 2, f"{2 * (1 + i % 3):02d}") for k, sub in enumerate(subclasses)]
        write_tsv(out / f"{split}.tsv", rows)
    return out


def test_train_and_predict_at_depth_four(group_dataset, tiny_encoder_dir, tmp_path):
    from thmm.cli import predict

    out = tmp_path / "run"
    summary = train_in_process(["--dataset", group_dataset, "--encoder", tiny_encoder_dir, "--output-dir", out,
                                "--depth", "4", "--head-type", "thmm", "--max-train-samples", "48", "--epochs", "1",
                                "--batch-size", "16", "--max-length", "32", "--head-hidden-size", "8",
                                "--deep-head-hidden-size", "8", "--report-to", "none", "--no-lexical-fusion"])
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["depth"] == 4 and config["deep_heads"] == "shared"
    taxonomy = Taxonomy.from_dict(config["taxonomy"])
    assert taxonomy.num_levels == 4 and all(code.endswith("/00") for code in taxonomy.nodes[taxonomy.level_slices[3]])
    assert "level4_micro_f1" in summary["test"]
    card = (out / "model" / "README.md").read_text()
    assert "**Depth:** 4: codes down to the main group" in card
    predictions = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert all(code.endswith("/00") for p in predictions for code in p["labels"] if len(code) > 4)  # cut at depth 4

    titles = tmp_path / "input.txt"
    titles.write_text("Unmanned aircraft with folding rotor arms\nInsole with pressure sensors\n", encoding="utf-8")
    result = tmp_path / "predicted.jsonl"
    assert predict.cli(["--model", str(out / "model"), "--input", str(titles), "--output", str(result),
                        "--top-k", "1"]) == 0
    for line in result.read_text().splitlines():
        predicted = json.loads(line)["predicted"]
        assert [r["level"] for r in predicted] == [1, 2, 3, 4]  # the main group and its ancestors
        main = predicted[-1]["code"]
        assert main.endswith("/00") and [r["code"] for r in predicted[:3]] == [main[0], main[:3], main[:4]]


def test_quality_benchmark_at_depth_four(group_dataset, tiny_encoder_dir, tmp_path):
    """bench/quality.py --depth 4: SVM and TMM at the main group, with the cost columns (epoch time,
    peak RSS, model size, head parameters)."""
    out = subprocess.run(
        [sys.executable, str(QUICKSTART_DATA.parents[1] / "bench" / "quality.py"), "--data", str(group_dataset),
         "--scheme", "cpc", "--encoder", str(tiny_encoder_dir), "--out", str(tmp_path), "--depth", "4",
         "--models", "svm,tmm-mean", "--epochs", "1", "--n-jobs", "1", "--no-lexical-fusion",
         "--deep-head-hidden-size", "8"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for run in results.values():
        assert run["settings"]["depth"] == 4 and "level4_macro_f1" in run["test"] and run["peak_rss_mb"] > 0
    tmm = results["tmm-mean"]
    assert tmm["model_bytes"] > 0 and tmm["head_parameters"] > 0 and tmm["settings"]["deep_heads"] == "shared"
    report = (tmp_path / "results.md").read_text()
    assert "| tmm-mean | 4 | shared |" in report and "4 = main group" in report


def test_deep_levels_can_start_at_their_priors_alone(tiny_encoder_config):
    """What the trainer does at depth 4 and 5 unless --output-bias-init prior: the main groups'
    output biases at the log-odds of their priors, the levels above as initialised."""
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="tmm")
    taxonomy = model.taxonomy
    before = [level.bias_out.detach().clone() for level in model.heads.levels]
    priors = np.linspace(0.01, 0.5, len(taxonomy))
    model.init_output_biases(priors, from_level=4)
    for depth, (level, nodes) in enumerate(zip(model.heads.levels, taxonomy.level_slices), start=1):
        if depth < 4:
            assert torch.equal(level.bias_out, before[depth - 1])
        else:
            expected = torch.log(torch.tensor(priors[nodes] / (1 - priors[nodes]))).float()
            assert torch.allclose(level.bias_out.view(-1), expected)


def test_top_k_lexical_scorer_round_trip_at_depth_four(tiny_encoder_config, tiny_tokenizer, tmp_path):
    """A depth-4 model's lexical scorer keeps each node's top-k weights (sparse); saved and loaded, it
    scores as the dense scorer holding only those weights, and with k = vocab as the dense one."""
    from modeling_thmm import THMMForHierarchicalClassification

    rng = np.random.default_rng(0)
    model = build_tiny_model(tiny_encoder_config, deep_taxonomy(4), head_type="thmm")
    vocab, nodes = len(tiny_tokenizer), len(model.taxonomy)
    idf, weight, bias = rng.random(vocab), rng.normal(size=(vocab, nodes)), rng.normal(size=nodes)
    batch = dict(tiny_tokenizer(["drone flight control", "shoe sole"], return_tensors="pt", padding=True))
    outputs = {}
    for top_k in (0, 4, vocab):
        model.set_lexical_scorer(idf, weight, bias, fusion_weight=0.5, scale=2.0, shift=-1.0, top_k=top_k)
        folder = save_model_dir(model, tiny_tokenizer, tmp_path / f"k{top_k}")
        loaded = THMMForHierarchicalClassification.from_pretrained(folder).eval()
        assert loaded.config.lexical_top_k == top_k
        assert ("lexical.weight" in loaded.state_dict()) == (top_k == 0)
        with torch.no_grad():
            outputs[top_k] = loaded(**batch).logits
            assert torch.equal(outputs[top_k], model(**batch).logits)
    assert torch.allclose(outputs[0], outputs[vocab], atol=1e-5)  # every weight kept: the dense scores
    assert not torch.allclose(outputs[0], outputs[4], atol=1e-3)  # 4 of them: other scores


def test_thresholds_are_tuned_at_depth_five():
    """Five levels: one threshold per level (the count tables hold 20 ** 5 cells per section)."""
    from thmm.thresholds import tune_thresholds

    taxonomy = deep_taxonomy(5)
    references = [["G05D 1/02"], ["B64C 39/02", "A43B"], ["G08G 1/04"], ["G05D 3/00"]] * 3
    probs = np.random.default_rng(0).random((len(references), len(taxonomy))).astype(np.float32)
    tuned = tune_thresholds(probs, references, taxonomy, "f1_mean", taxonomy, "level")
    assert len(tuned.thresholds.per_level) == 5


def test_labels_cut_to_the_depth_are_reported_at_the_default_verbosity(caplog):
    """A change to the data is said without --verbose: a warning, which the commands show by default."""
    import logging

    import datasets

    from thmm.data import cut_splits

    splits = {"train": datasets.Dataset.from_dict({"labels": [["G05D 1/02", "A43B"], ["G05D 1/00"]]})}
    with caplog.at_level(logging.WARNING, logger="thmm.data"):
        cut = cut_splits(splits, 3)
    assert cut["train"]["labels"] == [["G05D", "A43B"], ["G05D"]]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "train: 2 labels deeper than depth 3 cut to their subclass")]
