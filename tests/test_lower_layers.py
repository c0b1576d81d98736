"""Frozen lower layers: the cached output states of the lowest N encoder layers, fed back through
the top layers, give the whole encoder's logits (exactly in float32, within fp16 rounding from the
fp16 cache), for every head type and document vector."""

import numpy as np
import pytest
import torch

from thmm.data import TokenCollator, TokenizedSplit, tokenize_split
from thmm.features import FeatureCollator, FeatureSplit, encode_features


def _batch(tiny_tokenizer):
    texts = ["a rotor blade for an unmanned aerial vehicle", "wireless charging pad",
             "method for controlling a drone swarm with a ground station and relay"]
    return tiny_tokenizer(texts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("rep, lower", [("mean", 1), ("mean", 3), ("cls", 2), ("cnn", 1)])
@pytest.mark.parametrize("head_type", ["tmm", "thmm", "flat"])
def test_cached_lower_states_give_the_whole_encoders_logits(tiny_model, tiny_tokenizer, head_type, rep, lower):
    model = tiny_model(head_type=head_type, doc_representation=rep)
    batch = _batch(tiny_tokenizer)
    with torch.no_grad():
        whole = model(**batch).logits
        model.freeze_lower_layers(lower)
        states = model.lower_layer_states(**batch)
        top = model(lower_layer_states=states, attention_mask=batch["attention_mask"]).logits
        top16 = model(lower_layer_states=states.half().float(), attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(top, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(top16, whole, rtol=0, atol=2e-3)  # the cache stores fp16


@pytest.mark.parametrize("lower", [1, 3])
def test_lower_states_come_from_the_lower_layers_alone(tiny_model, tiny_tokenizer, lower):
    model = tiny_model(head_type="tmm")
    batch = _batch(tiny_tokenizer)
    model.eval()
    with torch.no_grad():
        whole = model.encoder(**batch, output_hidden_states=True).hidden_states[lower]
        model.freeze_lower_layers(lower)
        calls = []
        hooks = [layer.register_forward_hook(lambda *_, i=i: calls.append(i))
                 for i, layer in enumerate(model.encoder.encoder.layer)]
        states = model.lower_layer_states(**batch)
        for hook in hooks:
            hook.remove()
    assert calls == list(range(lower))  # the layers above the cached one do not run
    torch.testing.assert_close(states, whole, rtol=0, atol=0)


def test_freezing_keeps_the_saved_weights_and_freezes_only_the_lower_part(tiny_model):
    model = tiny_model(head_type="thmm")
    names = set(model.state_dict())
    model.freeze_lower_layers(2)
    assert set(model.state_dict()) == names  # the top-layers view is not a second copy of the weights
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.", "encoder.encoder.layer.1."))
                          for n in frozen)
    assert any(n.startswith("encoder.encoder.layer.0.") for n in frozen)
    assert not any(n.startswith("encoder.encoder.layer.2.") for n in frozen)


def test_the_top_layers_follow_the_models_train_and_eval_mode(tiny_model, tiny_tokenizer):
    model = tiny_model(head_type="tmm")
    batch = _batch(tiny_tokenizer)
    model.freeze_lower_layers(1)
    states = model.lower_layer_states(**batch).detach()
    for training in (True, False):
        model.train(training)
        model(lower_layer_states=states, attention_mask=batch["attention_mask"])
        assert model._top_layers.training is training and model._top_layers.encoder.training is training
        assert all(layer.training is training for layer in model._top_layers.encoder.layer)


@pytest.mark.parametrize("lower, fragment", [(0, "freeze between 1 and 3"), (4, "the encoder has 4 layers"),
                                             (9, "got 9")])
def test_bad_layer_counts_are_refused(tiny_model, lower, fragment):
    model = tiny_model()
    with pytest.raises(ValueError, match=fragment):
        model.freeze_lower_layers(lower)


def test_cnn_cannot_sum_a_layer_below_the_cache(tiny_model):
    with pytest.raises(ValueError, match="the CNN sums the last 4 of 4 layers, so at most 1 can be frozen"):
        tiny_model(doc_representation="cnn").freeze_lower_layers(2)


def test_states_without_freezing_are_refused(tiny_model, tiny_tokenizer):
    model = tiny_model()
    batch = _batch(tiny_tokenizer)
    with pytest.raises(ValueError, match="freeze_lower_layers"):
        model.lower_layer_states(**batch)
    with pytest.raises(ValueError, match="freeze_lower_layers"):
        model(lower_layer_states=torch.zeros(3, 4, 32), attention_mask=batch["attention_mask"][:, :4])


def test_cache_round_trip_through_the_collator(tiny_model, tiny_tokenizer, tmp_path, small_taxonomy):
    """After freeze_lower_layers, encode_features stores each document's real tokens in fp16; the collator
    pads them back with the same mask, and the model gives the whole encoder's logits."""
    import datasets

    model = tiny_model(head_type="thmm")
    split = datasets.Dataset.from_dict({
        "patent_id": ["1", "2", "3"], "title": ["rotor blade", "wireless charging pad for a drone", "relay"],
        "abstract": ["", "a pad that charges", ""], "labels": [["H04L"], ["B64C"], ["H04L"]]})
    with torch.no_grad():
        model.freeze_lower_layers(2)
        arrays = encode_features(model, tiny_tokenizer, split, 32, 2, "cpu", "test", path=tmp_path / "t.safetensors")
        assert arrays["token_states"].dtype == np.float16
        rows = FeatureSplit(arrays).__getitems__([0, 1, 2])
        batch = FeatureCollator(key="lower_layer_states")(rows)
        cached = model(lower_layer_states=batch["lower_layer_states"], attention_mask=batch["attention_mask"]).logits
        tokens = TokenCollator(tiny_tokenizer)(TokenizedSplit(tokenize_split(split, tiny_tokenizer, 32, "test"))
                                                .__getitems__([0, 1, 2]))
        tokens.pop("index")
        whole = model(**tokens).logits
    torch.testing.assert_close(cached, whole, rtol=0, atol=2e-3)
