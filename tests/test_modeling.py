import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertModel, pipeline

from configuration_thmm import ConfigFieldError, THMMConfig, Taxonomy
from conftest import SMALL_TAXONOMY_CODES, build_tiny_model
from modeling_thmm import (
    FlatHead,
    HierarchicalHeads,
    THMMForHierarchicalClassification,
    TaxonomyMismatchError,
    encode_documents,
)

HEAD_TYPES = ["tmm", "thmm", "flat"]
REPRESENTATIONS = ["cls", "cnn", "mean"]


MAX_LENGTH = 64  # word-pieces: within the tiny encoder's 128 positions, as the config requires


def make_model(encoder_config, taxonomy, seed=0, **kwargs):
    return build_tiny_model(encoder_config, taxonomy, seed, **{"max_length": MAX_LENGTH, **kwargs}).train()


def make_batch(tokenizer):
    titles = ["shoe sole with heel", "wireless packet radio network", "lithium battery cell electrode", "ink"]
    abstracts = ["an insole for a boot", "a base station and terminal", "", ""]
    enc = encode_documents(tokenizer, titles, abstracts, max_length=24)
    enc.pop("truncated")
    return tokenizer.pad(enc, return_tensors="pt")


LABELS = [["A43B"], ["H04L", "H04W"], ["H01M", "Y10T"], ["B41F"]]


@pytest.mark.parametrize("head_type", HEAD_TYPES)
@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_shapes_and_loss(tiny_encoder_config, small_taxonomy, tiny_tokenizer, head_type, rep):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type=head_type, doc_representation=rep)
    batch = make_batch(tiny_tokenizer)
    labels = torch.from_numpy(small_taxonomy.multi_hot(LABELS))
    out = model(**batch, labels=labels)
    assert out.logits.shape == (4, len(small_taxonomy))
    doc_dim = 8 * 4 if rep == "cnn" else tiny_encoder_config["hidden_size"]
    assert out.document_embedding.shape == (4, doc_dim)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    if head_type == "flat":
        leaf = small_taxonomy.leaf_ids
        expected = nn.functional.binary_cross_entropy_with_logits(out.logits[:, leaf], labels[:, leaf])
    else:
        expected = nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    assert model(**batch, return_dict=False)[0].shape == (4, len(small_taxonomy))


def naive_hierarchical_logits(heads: HierarchicalHeads, taxonomy: Taxonomy, doc: torch.Tensor) -> torch.Tensor:
    """Per-node nn.Linear modules in a Python loop, built from the vectorized weights."""
    logits = torch.zeros(doc.shape[0], len(taxonomy))
    h2_by_node = {}
    for depth, (level, s) in enumerate(zip(heads.levels, taxonomy.level_slices)):
        for j, node in enumerate(range(s.start, s.stop)):
            w1 = level.weight1[:, j, :]
            x = doc
            if level.parent_weight1 is not None:
                w1 = torch.cat([w1, level.parent_weight1[j]], dim=0)
                x = torch.cat([doc, h2_by_node[int(taxonomy.parent_index[node])]], dim=1)
            hidden = w1.shape[1]
            lin1, lin2, out = nn.Linear(w1.shape[0], hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)
            with torch.no_grad():
                lin1.weight.copy_(w1.T)
                lin1.bias.copy_(level.bias1[j, 0])
                lin2.weight.copy_(level.weight2[j].T)
                lin2.bias.copy_(level.bias2[j, 0])
                out.weight.copy_(level.weight_out[j].T)
                out.bias.copy_(level.bias_out[j, 0])
            h2 = torch.relu(lin2(torch.relu(lin1(x))))
            h2_by_node[node] = h2
            logits[:, node] = out(h2)[:, 0]
    return logits


@pytest.mark.parametrize("head_type", ["tmm", "thmm"])
def test_vectorized_heads_equal_naive_reference(tiny_encoder_config, small_taxonomy, head_type):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type=head_type).eval()
    doc = torch.randn(5, tiny_encoder_config["hidden_size"])
    with torch.no_grad():
        fast = model.heads(doc)
        slow = naive_hierarchical_logits(model.heads, small_taxonomy, doc)
    assert (fast - slow).abs().max().item() < 1e-6


def test_flat_head_is_max_over_children(tiny_encoder_config, small_taxonomy):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type="flat").eval()
    doc = torch.randn(5, tiny_encoder_config["hidden_size"])
    with torch.no_grad():
        logits, leaf_logits = model.heads(doc)
        leaf_ref = model.heads.classifier(model.heads.mlp(doc))
    tax = small_taxonomy
    assert torch.equal(leaf_logits, leaf_ref)
    assert torch.equal(logits[:, tax.leaf_ids], leaf_ref)
    for code in tax.nodes:
        kids = tax.children(code)
        if kids:
            expected = torch.stack([logits[:, tax.index(k)] for k in kids], 1).max(1).values
            assert torch.equal(logits[:, tax.index(code)], expected), code
    np.testing.assert_allclose(tax.max_from_leaves(leaf_ref.numpy()), logits.numpy(), rtol=0, atol=0)


def test_thmm_and_tmm_differ_exactly_by_parent_links(tiny_encoder_config, small_taxonomy):
    thmm = make_model(tiny_encoder_config, small_taxonomy, head_type="thmm").eval()
    tmm = make_model(tiny_encoder_config, small_taxonomy, head_type="tmm", seed=1).eval()
    thmm_state = thmm.state_dict()
    links = [k for k in thmm_state if "parent_weight1" in k]
    assert len(links) == small_taxonomy.num_levels - 1  # every level but the top has parent links
    assert set(tmm.state_dict()) == set(thmm_state) - set(links)
    tmm.load_state_dict({k: v for k, v in thmm_state.items() if k not in links})
    doc = torch.randn(3, tiny_encoder_config["hidden_size"])
    with torch.no_grad():
        differs = not torch.allclose(thmm.heads(doc), tmm.heads(doc))
        for name in links:
            thmm.get_parameter(name).zero_()
        same = torch.equal(thmm.heads(doc), tmm.heads(doc))
    assert differs and same


def test_parent_signal_reaches_only_descendants(tiny_encoder_config, small_taxonomy):
    tax = small_taxonomy
    doc = torch.randn(3, tiny_encoder_config["hidden_size"])
    a = tax.index("A")
    for head_type in ("thmm", "tmm"):
        model = make_model(tiny_encoder_config, tax, head_type=head_type).eval()
        with torch.no_grad():
            before = model.heads(doc)
            model.heads.levels[0].weight2[a].add_(0.5)  # perturb section A's second hidden layer
            changed = (model.heads(doc) - before).abs().amax(0) > 0
        changed_codes = {tax.nodes[i] for i in np.flatnonzero(changed.numpy())}
        if head_type == "thmm":
            assert changed_codes == {"A"} | {c for c in tax.nodes if tax.ancestors(c)[:1] == ["A"]}
        else:
            assert changed_codes == {"A"}


@pytest.mark.parametrize("head_type", HEAD_TYPES)
def test_gradients_reach_encoder_and_every_head(tiny_encoder_config, small_taxonomy, tiny_tokenizer, head_type):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type=head_type, head_dropout=0.0)
    batch = make_batch(tiny_tokenizer)
    model(**batch, labels=torch.from_numpy(small_taxonomy.multi_hot(LABELS))).loss.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.encoder.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    if head_type == "flat":
        per_leaf = model.heads.classifier.weight.grad.abs().sum(1)
        assert (per_leaf > 0).all()
        assert model.heads.mlp[0].weight.grad.abs().sum() > 0
    else:
        for level in model.heads.levels:
            assert (level.weight1.grad.abs().sum((0, 2)) > 0).all()  # every node of the level
            assert (level.weight2.grad.abs().sum((1, 2)) > 0).all()
            assert (level.weight_out.grad.abs().sum((1, 2)) > 0).all()
            if level.parent_weight1 is not None:
                assert (level.parent_weight1.grad.abs().sum((1, 2)) > 0).all()


@pytest.mark.parametrize("head_type", HEAD_TYPES)
@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_save_load_bit_identical(tmp_path, tiny_encoder_config, small_taxonomy, tiny_tokenizer, head_type, rep):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type=head_type, doc_representation=rep).eval()
    batch = make_batch(tiny_tokenizer)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = THMMForHierarchicalClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert loaded.config.get_taxonomy() == small_taxonomy


def test_frozen_features_give_same_logits(tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    batch = make_batch(tiny_tokenizer)
    for rep in REPRESENTATIONS:
        model = make_model(tiny_encoder_config, small_taxonomy, doc_representation=rep).eval()
        with torch.no_grad():
            feats = model.encoder_features(**batch)
            direct = model(**batch).logits
            cached = model(encoder_features=feats, attention_mask=batch["attention_mask"]).logits
        assert torch.equal(direct, cached), rep
        assert feats.ndim == (3 if rep == "cnn" else 2)


def test_cnn_ignores_padding(tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    model = make_model(tiny_encoder_config, small_taxonomy, doc_representation="cnn").eval()
    enc = tiny_tokenizer(["shoe sole with heel"], return_tensors="pt")
    padded = tiny_tokenizer(["shoe sole with heel"], padding="max_length", max_length=20, return_tensors="pt")
    short = tiny_tokenizer(["ink"], return_tensors="pt")  # 3 tokens: shorter than kernels 4 and 5
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, model(**padded).logits, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(model(**short).logits).all()


def test_bf16_autocast_forward(tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type="thmm")
    batch = make_batch(tiny_tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=torch.from_numpy(small_taxonomy.multi_hot(LABELS)))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_from_encoder_loads_pretrained_weights(tmp_path, tiny_encoder_config, small_taxonomy):
    torch.manual_seed(3)
    encoder = BertModel(AutoConfig.for_model(**tiny_encoder_config))
    encoder.save_pretrained(tmp_path / "enc")
    model = THMMForHierarchicalClassification.from_encoder(str(tmp_path / "enc"), small_taxonomy, head_type="tmm",
                                                           max_length=MAX_LENGTH)
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name
    assert model.config.encoder_name_or_path == str(tmp_path / "enc")
    assert model.config.encoder_config.hidden_size == tiny_encoder_config["hidden_size"]


def test_auto_classes_resolve_thmm(tmp_path, tiny_encoder_config, small_taxonomy):
    model = make_model(tiny_encoder_config, small_taxonomy)
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is THMMConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is THMMForHierarchicalClassification
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is THMMForHierarchicalClassification
    assert type(AutoModel.from_config(model.config)) is THMMForHierarchicalClassification


def test_trust_remote_code_in_fresh_process(tmp_path, tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    model = make_model(tiny_encoder_config, small_taxonomy).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_thmm.py").exists() and (tmp_path / "configuration_thmm.py").exists()
    assert (tmp_path / "taxonomy_thmm.py").exists()  # a relative import of configuration_thmm.py
    for name in ("heads_thmm", "lexical_thmm", "encoder_layers_thmm", "weights_thmm", "tokenization_thmm",
                 "decoding_thmm"):  # the concerns split out of modeling_thmm.py, relative imports of it
        assert (tmp_path / f"{name}.py").exists(), name
    batch = make_batch(tiny_tokenizer)
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save(dict(batch), tmp_path / "batch.pt")  # test-only scratch input, not an artefact
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})  # the same sums as the expected logits (xdist: 1)
        for name in ("configuration_thmm", "taxonomy_thmm", "modeling_thmm", "heads_thmm", "lexical_thmm",
                     "encoder_layers_thmm", "weights_thmm", "tokenization_thmm", "decoding_thmm"):
            sys.modules[name] = None  # the installed package must not be used
        from transformers import AutoModel, AutoModelForSequenceClassification
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            logits = model(**batch).logits
        assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r}))
        assert len(model.decode(torch.sigmoid(logits))) == len(logits)  # the config's Thresholds, remotely
        # a threshold passed in: the model's copy of Thresholds meets the config's copy of Taxonomy
        assert len(model.label_records(torch.sigmoid(logits), threshold=[0.5, 0.4, 0.3])) == len(logits)
        print("REMOTE-OK")
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # not the repository
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK" in result.stdout


def test_pipeline_scores_every_node(tmp_path, tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    model = make_model(tiny_encoder_config, small_taxonomy).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    classifier = pipeline("text-classification", model=str(tmp_path), top_k=None, function_to_apply="sigmoid")
    results = classifier(["wireless packet radio network", "shoe sole"])
    assert len(results) == 2
    scores = {r["label"]: r["score"] for r in results[0]}
    assert set(scores) == set(small_taxonomy.nodes)
    with torch.no_grad():
        enc = tiny_tokenizer(["wireless packet radio network"], return_tensors="pt")
        probs = torch.sigmoid(model(**enc).logits)[0]
    for code, score in scores.items():
        assert abs(score - probs[small_taxonomy.index(code)].item()) < 1e-5


def test_predict_and_decode(tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    model = make_model(tiny_encoder_config, small_taxonomy, label_titles={"A43B": "Footwear parts"})
    model.config.level_thresholds = [0.0, 0.0, 0.0]  # everything passes: all nodes predicted
    out = model.predict(tiny_tokenizer, ["shoe sole"], ["an insole"])
    assert {d["code"] for d in out[0]} == set(small_taxonomy.nodes)
    entry = next(d for d in out[0] if d["code"] == "A43B")
    assert entry["level"] == 3 and entry["title"] == "Footwear parts" and 0 <= entry["score"] <= 1
    assert [d["level"] for d in out[0]] == sorted(d["level"] for d in out[0])
    top = model.predict(tiny_tokenizer, ["shoe sole", "radio"], top_k=1)
    assert [sum(d["level"] == 3 for d in doc) for doc in top] == [1, 1]
    probs = model.predict_proba(tiny_tokenizer, ["shoe sole"])
    assert model.decode(probs, threshold=1.0) == [[]]


def test_encode_documents_is_batch_independent(tiny_tokenizer):
    titles = ["shoe sole", "radio network terminal", "battery"]
    abstracts = ["an insole for a boot with a heel", "", "a lithium cell"]
    together = encode_documents(tiny_tokenizer, titles, abstracts, max_length=8)
    for i in range(3):
        alone = encode_documents(tiny_tokenizer, titles[i : i + 1], abstracts[i : i + 1], max_length=8)
        assert alone["input_ids"][0] == together["input_ids"][i]
    assert together["truncated"] == [True, False, False]  # only the first document exceeds 8 word-pieces
    assert tiny_tokenizer.decode(together["input_ids"][1]) == "[CLS] radio network terminal [SEP]"
    assert together["token_type_ids"][2][-1] == 1  # the abstract is the second segment
    with pytest.raises(ValueError, match="2 abstracts"):
        encode_documents(tiny_tokenizer, titles, abstracts[:2], max_length=8)


def test_different_taxonomy_is_refused(tmp_path, tiny_encoder_config, small_taxonomy):
    from safetensors.torch import load_file

    model = make_model(tiny_encoder_config, small_taxonomy)
    model.save_pretrained(tmp_path)
    same_shape = Taxonomy.from_codes([c if c != "A43C" else "A43D" for c in SMALL_TAXONOMY_CODES])
    smaller = Taxonomy.from_codes(["A43B", "H04W"])
    for other in (same_shape, smaller):
        config = THMMConfig(encoder_config=tiny_encoder_config, taxonomy=other, head_hidden_size=16,
                            max_length=MAX_LENGTH)
        with pytest.raises(TaxonomyMismatchError, match="A43"):
            THMMForHierarchicalClassification.from_pretrained(tmp_path, config=config)
        fresh = THMMForHierarchicalClassification(config)
        with pytest.raises(TaxonomyMismatchError, match="different taxonomy"):
            fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))


def test_flat_head_buffers_survive_loading(tmp_path, tiny_encoder_config, small_taxonomy):
    model = make_model(tiny_encoder_config, small_taxonomy, head_type="flat")
    model.save_pretrained(tmp_path)
    loaded = THMMForHierarchicalClassification.from_pretrained(tmp_path)
    assert isinstance(loaded.heads, FlatHead)
    assert loaded.heads.leaf_ids.tolist() == small_taxonomy.leaf_ids.tolist()
    for depth, (parents, children) in enumerate(small_taxonomy.children_by_level()):
        assert getattr(loaded.heads, f"parents_{depth}").tolist() == parents.tolist()
        assert getattr(loaded.heads, f"children_{depth}").tolist() == children.tolist()


def test_consistent_scores_never_let_a_child_exceed_its_parent(tiny_model, tiny_tokenizer):
    model = tiny_model(max_length=MAX_LENGTH)
    taxonomy = model.taxonomy
    rng = np.random.default_rng(0)
    probs = rng.random((50, len(taxonomy))).astype(np.float32)
    parents = taxonomy.parent_index
    has_parent = parents >= 0
    assert (probs[:, has_parent] > probs[:, parents[has_parent]]).any()  # raw scores can be inconsistent
    consistent = model.scores_for_decoding(probs, consistent=True)
    assert (consistent[:, has_parent] <= consistent[:, parents[has_parent]]).all()
    roots = ~has_parent
    np.testing.assert_array_equal(consistent[:, roots], probs[:, roots])
    # the minimum along the path, node by node
    for i, code in enumerate(taxonomy.nodes):
        path = [taxonomy.index(a) for a in taxonomy.ancestors(code)] + [i]
        np.testing.assert_allclose(consistent[:, i], probs[:, path].min(axis=1))
    records = model.label_records(probs, consistent=True, threshold=0.3)
    for doc in records:
        score = {r["code"]: r["score"] for r in doc}
        for code in score:
            parent = taxonomy.parent(code)
            assert parent is None or score[code] <= score[parent]
    model.config.consistent_scores = True  # the saved model's decoding uses it by default
    assert model.label_records(probs, threshold=0.3) == records
    assert model.decode(probs, top_k=2) == model.decode(consistent, top_k=2, consistent=False)


def test_focal_loss_down_weights_easy_examples(tiny_model):
    bce = tiny_model(max_length=MAX_LENGTH)
    focal = tiny_model(max_length=MAX_LENGTH, loss_type="focal", focal_gamma=2.0)
    logits = torch.tensor([[4.0, -4.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(bce.node_loss(logits, targets), plain.mean())
    p_t = torch.tensor([[torch.sigmoid(torch.tensor(4.0)), torch.sigmoid(torch.tensor(4.0)), 0.5]])
    torch.testing.assert_close(focal.node_loss(logits, targets), ((1 - p_t) ** 2 * plain).mean())
    assert focal.node_loss(logits, targets) < bce.node_loss(logits, targets)
    with pytest.raises(ConfigFieldError, match=r"field 'loss_type': must be one of 'bce', 'focal' \(got 'hinge'\)"):
        tiny_model(max_length=MAX_LENGTH, loss_type="hinge")


@pytest.mark.parametrize("head_type", ["tmm", "thmm", "flat"])
def test_prior_output_biases_start_every_node_at_its_prior(tiny_model, small_taxonomy, head_type):
    model = tiny_model(max_length=MAX_LENGTH, head_type=head_type).eval()
    priors = np.linspace(0.01, 0.6, len(small_taxonomy))
    model.init_output_biases(priors)
    zeros = torch.zeros(3, model.config.encoder_config.hidden_size)  # a zero document vector:
    for level in getattr(model.heads, "levels", []):  # silence the hidden layers, leaving the biases
        for p in (level.bias1, level.bias2):
            p.data.zero_()
    if head_type == "flat":
        for layer in model.heads.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.bias.data.zero_()
        with torch.no_grad():
            node_logits, leaf_logits = model.heads(zeros)
        leaves = small_taxonomy.leaf_ids
        torch.testing.assert_close(torch.sigmoid(leaf_logits[0]).double(), torch.from_numpy(priors[leaves]))
        inner = small_taxonomy.max_from_leaves(np.broadcast_to(priors[leaves], (1, len(leaves))))[0]
        torch.testing.assert_close(torch.sigmoid(node_logits[0]).double(), torch.from_numpy(inner))
    else:
        with torch.no_grad():
            logits = model.heads(zeros)
        torch.testing.assert_close(torch.sigmoid(logits[1]).double(), torch.from_numpy(priors))
    for bad in (priors[:-1], np.where(np.arange(len(priors)) == 2, 1.0, priors), priors * 0):
        with pytest.raises(ValueError, match="probabilities strictly between 0 and 1"):
            model.init_output_biases(bad)
