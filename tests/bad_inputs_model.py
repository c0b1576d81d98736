"""Saved-model rows of the bad-input table (``test_bad_inputs.py``): a model folder is validated at
load, through the Python API (``THMMForHierarchicalClassification.from_pretrained``, ``predict``) and
through ``thmm-predict``. Each bad config.json field gives one line naming the file, the field, the
rule and the value; weights must hold the tensors the config describes, finite; the tokenizer must
fit the embeddings; an unfinished training run's folder is refused; bad ``predict`` calls are refused."""

from __future__ import annotations

import json

from safetensors.torch import load_file, save_file

from bad_input_table import Case, load_model, model_with
from configuration_thmm import ConfigFieldError, UnfinishedModelError
from modeling_thmm import WeightsError

CONFIG = "{model}/config.json, field "
WEIGHTS = "{model}/model.safetensors"


def config_case(words, **changes) -> Case:
    """``from_pretrained`` on a copy of the saved model with these config.json changes."""
    return Case("api", load_model(lambda env: model_with(env, **changes)), ConfigFieldError, (CONFIG + words,))


def predict_config_case(words, **changes) -> Case:
    """The same, through thmm-predict: exit 2 and one ``error:`` line."""
    return Case("predict", lambda env: env.predict_argv(model=model_with(env, **changes)), 2, (CONFIG + words,))


def without_taxonomy(env):
    return model_with(env, taxonomy=None, id2label=None, label2id=None)


def saved_config(env) -> dict:
    return json.loads((env.sources["model"] / "config.json").read_text())


def encoder_with(env, **changes):
    """A copy of the saved model whose ``encoder_config`` has these changes."""
    return model_with(env, encoder_config={**saved_config(env)["encoder_config"], **changes})


def nan_weights(env):
    env.copy("model")
    weights = load_file(env.model / "model.safetensors")
    weights["heads.levels.1.weight2"][0, 0, 0] = float("nan")
    save_file(weights, env.model / "model.safetensors", metadata={"format": "pt"})
    return env.model


def bigger_tokenizer(env):
    """A copy of the saved model whose tokenizer has two word-pieces more than the embeddings have rows."""
    from transformers import AutoTokenizer

    env.copy("model")
    tokenizer = AutoTokenizer.from_pretrained(env.model)
    tokenizer.add_tokens(["zzfirst", "zzsecond"])
    tokenizer.save_pretrained(env.model)
    return env.model


UNFINISHED = {"reason": "stopped after epoch 1 of 3", "resume": "thmm-train --output-dir runs/x --resume"}


def unfinished(env):
    env.copy("model")
    (env.model / "thmm_unfinished.json").write_text(json.dumps(UNFINISHED))
    return env.model


def loads_unfinished_when_allowed(env):
    from modeling_thmm import THMMForHierarchicalClassification

    return lambda: THMMForHierarchicalClassification.from_pretrained(unfinished(env), allow_unfinished=True)


def predict_call(**kwargs):
    """``model.predict`` on the saved model and its tokenizer, with these arguments."""

    def make(env):
        from transformers import AutoTokenizer

        from modeling_thmm import THMMForHierarchicalClassification

        model = THMMForHierarchicalClassification.from_pretrained(env.sources["model"])
        tokenizer = AutoTokenizer.from_pretrained(env.sources["model"])
        arguments = {"titles": ["shoe sole"], **kwargs}
        return lambda: model.predict(tokenizer, **arguments)

    return make


def shifted_tokenizer_ids(env):
    """A copy of the saved model whose tokenizer.json has as many word-pieces, but the last one's id moved
    past the embeddings (an edited file, or another model's of the same size)."""
    env.copy("model")
    path = env.model / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    vocab[last] += 1000
    path.write_text(json.dumps(data), encoding="utf-8")
    return env.model


def predict_with_bigger_tokenizer(env):
    from transformers import AutoTokenizer

    from modeling_thmm import THMMForHierarchicalClassification

    folder = bigger_tokenizer(env)
    model, tokenizer = THMMForHierarchicalClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    return lambda: model.predict(tokenizer, ["shoe sole"])


CASES = {
    # ---- config.json: each bad field is one line naming the file, the field, the rule and the value
    "model-config-depth-other-than-taxonomy": config_case(
        "'depth': must equal the taxonomy's depth 3 (got 4)", depth=4),
    "model-config-depth-out-of-range": config_case("'depth': must be one of 3, 4, 5", depth=7),
    "model-config-dropout-out-of-range": config_case("'head_dropout': must be in [0, 1) (got 1.5)", head_dropout=1.5),
    "model-config-string-for-an-integer": config_case(
        "'head_hidden_size': must be an integer (got '16')", head_hidden_size="16"),
    "model-config-float-for-an-integer": config_case(
        "'cnn_num_filters': must be an integer (got 8.5)", cnn_num_filters=8.5),
    "model-config-false-string": config_case(
        "'consistent_scores': must be a boolean (got 'false')", consistent_scores="false"),
    "model-config-list-for-a-dict": config_case(
        "'label_titles': must be a dict of strings or null (got ['A'])", label_titles=["A"]),
    "model-config-unknown-head-type": config_case(
        "'head_type': must be one of 'tmm', 'thmm', 'flat' (got 'hmm')", head_type="hmm"),
    "model-config-threshold-nan": config_case(
        "'threshold': must be a probability in [0, 1] (got nan)", threshold=float("nan")),
    "model-config-level-threshold-infinite": config_case(
        "'level_thresholds[2]': must be a probability in [0, 1] (got inf)", level_thresholds=[0.5, 0.4, float("inf")]),
    "model-config-level-thresholds-too-few": config_case(
        "'level_thresholds': must hold one threshold per taxonomy level (3) (got [0.5])", level_thresholds=[0.5]),
    "model-config-node-threshold-unknown-code": config_case(
        "'node_thresholds': must name taxonomy nodes (1 do not, e.g. 'Z99Z')", node_thresholds={"Z99Z": 0.5}),
    "model-config-taxonomy-missing": Case(
        "api", load_model(without_taxonomy), ConfigFieldError,
        (CONFIG + "'taxonomy': must be given: the model has one head per taxonomy node (got None)",)),
    "model-config-taxonomy-not-a-dict": config_case(
        "'taxonomy': must be a dict or a Taxonomy or null (got ['A43B'])", taxonomy=["A43B"]),
    "model-config-taxonomy-malformed": config_case(
        "'taxonomy': a serialized taxonomy needs 'nodes' and 'parents' lists", taxonomy={"nodes": "A43B"}),
    "model-config-cnn-kernel-size-zero": config_case(
        "'cnn_kernel_sizes': must be a non-empty list of sizes of at least 1 (got [0, 2])", cnn_kernel_sizes=[0, 2]),
    "model-config-cnn-kernel-sizes-text": config_case(
        "'cnn_kernel_sizes': must be a list of integers (got '2,3')", cnn_kernel_sizes="2,3"),
    "model-config-encoder-hidden-size-text": Case(
        "api", load_model(lambda env: encoder_with(env, hidden_size="32")), ConfigFieldError,
        (CONFIG + "'encoder_config.hidden_size': must be an integer (got '32')",)),
    "model-config-encoder-layers-zero": Case(
        "api", load_model(lambda env: encoder_with(env, num_hidden_layers=0)), ConfigFieldError,
        (CONFIG + "'encoder_config.num_hidden_layers': must be an integer of at least 1 (got 0)",)),
    "model-config-encoder-unknown-type": Case(
        "api", load_model(lambda env: encoder_with(env, model_type="no-such-model")), ConfigFieldError,
        (CONFIG + "'encoder_config.model_type': must be a transformers model type",)),
    "model-config-id2label-junk": config_case(
        "'id2label': must follow the taxonomy's node order, or be left out", id2label={"x": "A"}),
    "model-config-max-length-beyond-positions": config_case(
        "'max_length': must be at most the encoder's 128 positions", max_length=1000),
    "model-config-dtype-unknown": config_case("'dtype': must name a torch dtype", dtype="float99"),
    "model-predict-config-false-string": predict_config_case(
        "'consistent_scores': must be a boolean (got 'false')", consistent_scores="false"),
    "model-predict-config-string-for-an-integer": predict_config_case(
        "'max_length': must be an integer (got '16')", max_length="16"),
    "model-predict-config-max-length-beyond-positions": predict_config_case(
        "'max_length': must be at most the encoder's 128 positions", max_length=1000),
    "model-predict-config-taxonomy-missing": Case(
        "predict", lambda env: env.predict_argv(model=without_taxonomy(env)), 2, (CONFIG + "'taxonomy'",)),
    # ---- the weights: the tensors the config describes, and finite
    "model-head-type-without-its-tensors": Case(
        "api", load_model(lambda env: model_with(env, head_type="tmm")), WeightsError,
        (WEIGHTS, "{model}/config.json", "head_type 'tmm'", "heads.levels.1.parent_weight1",
         "head_type and the other settings must match the tensors")),
    "model-predict-head-type-without-its-tensors": Case(
        "predict", lambda env: env.predict_argv(model=model_with(env, head_type="tmm")), 2,
        (WEIGHTS, "{model}/config.json", "heads.levels.1.parent_weight1")),
    "model-encoder-layers-without-tensors": Case(
        "api", load_model(lambda env: encoder_with(env, num_hidden_layers=2)), WeightsError,
        (WEIGHTS, "tensors it has no place for", "encoder.encoder.layer.2.")),
    "model-lexical-scorer-without-tensors": Case(
        "api", load_model(lambda env: model_with(env, lexical_vocab_size=10)), WeightsError,
        (WEIGHTS, "3 tensors it needs are missing", "lexical.bias")),
    "model-nan-weights": Case(
        "api", load_model(nan_weights), WeightsError,
        (WEIGHTS + ": tensor 'heads.levels.1.weight2' holds NaN or infinite values",)),
    "model-predict-nan-weights": Case(
        "predict", lambda env: env.predict_argv(model=nan_weights(env)), 2,
        (WEIGHTS + ": tensor 'heads.levels.1.weight2' holds NaN or infinite values",)),
    # ---- the tokenizer must fit the embeddings
    "model-tokenizer-bigger-than-embeddings": Case(
        "api", predict_with_bigger_tokenizer, ValueError,
        ("{model}: the tokenizer has 147 word-pieces, more than the 145 rows of this model's encoder embeddings",)),
    "model-predict-tokenizer-bigger-than-embeddings": Case(
        "predict", lambda env: env.predict_argv(model=bigger_tokenizer(env)), 2,
        ("{model}: the tokenizer has 147 word-pieces", "145 rows")),
    "model-predict-tokenizer-ids-past-embeddings": Case(  # an IndexError traceback deep in the encoder before
        "predict", lambda env: env.predict_argv(model=shifted_tokenizer_ids(env)), 2,
        ("{model}: the tokenizer gives word-piece ids up to 1144, past the 145 rows of this model's encoder "
         "embeddings",)),
    # ---- an unfinished training run's folder
    "model-unfinished": Case(
        "api", load_model(unfinished), UnfinishedModelError,
        ("{model}: an unfinished training run's model (stopped after epoch 1 of 3); finish the run with: "
         "thmm-train --output-dir runs/x --resume",)),
    "model-unfinished-allowed": Case("api", loads_unfinished_when_allowed, None),
    "model-predict-unfinished": Case(
        "predict", lambda env: env.predict_argv(model=unfinished(env)), 2,
        ("{model}: an unfinished training run's model", "finish the run with: thmm-train")),
    # ---- model.predict: bad arguments and empty documents are refused, not decoded
    "model-predict-api-batch-size-zero": Case(
        "api", predict_call(batch_size=0), ValueError, ("batch_size: must be an integer of at least 1 (got 0)",)),
    "model-predict-api-threshold-negative": Case(
        "api", predict_call(threshold=-3), ValueError, ("threshold: must be a probability in [0, 1] (got -3)",)),
    "model-predict-api-threshold-nan-per-level": Case(
        "api", predict_call(threshold=[0.5, float("nan"), 0.4]), ValueError,
        ("threshold[1]: must be a probability in [0, 1] (got nan)",)),
    "model-predict-api-top-k-zero": Case(
        "api", predict_call(top_k=0), ValueError, ("top_k: must be an integer of at least 1 (got 0)",)),
    "model-predict-api-empty-document": Case(
        "api", predict_call(titles=["shoe sole", "  "], abstracts=["an insole", ""]), ValueError,
        ("document 1: fields 'title' and 'abstract': empty document",)),
    "model-predict-api-title-not-text": Case(
        "api", predict_call(titles=["shoe sole", 7]), ValueError, ("document 1: field 'title': expected a string",)),
    "model-predict-api-titles-one-string": Case(
        "api", predict_call(titles="shoe sole"), ValueError, ("titles: expected a list of strings, got str",)),
    # ---- calibration (issue 34): one temperature per level, each in range
    "model-config-calibration-temperatures-per-level": config_case(
        "'calibration_temperatures': must hold one temperature per taxonomy level (3) (got [1.0])",
        calibration_temperatures=[1.0]),
    "model-config-calibration-shifts-without-temperatures": config_case(
        "'calibration_shifts': must hold one shift per calibration temperature (none set)",
        calibration_shifts=[0.0, 0.0, 0.0]),
    "model-config-calibration-temperature-zero": config_case(
        "'calibration_temperatures': must hold temperatures in [0.05, 20.0]", calibration_temperatures=[1.0, 0.0, 2.0]),
    # ---- lexical fusion: one weight, or one per level, each in [0, 1]
    "model-config-lexical-weights-per-level": config_case(
        "'lexical_weight': must hold one weight per taxonomy level (3), or be one number (got [0.0, 0.0])",
        lexical_weight=[0.0, 0.0]),
    "model-config-lexical-weight-out-of-range-in-list": config_case(
        "'lexical_weight': must be in [0, 1], or a non-empty list of such weights (one per level)",
        lexical_weight=[0.0, 1.5, 0.0]),
    "model-config-lexical-weights-empty": config_case(
        "'lexical_weight': must be in [0, 1], or a non-empty list of such weights (one per level) (got [])",
        lexical_weight=[]),
    "model-config-lexical-weight-not-a-number": config_case(
        "'lexical_weight': must be", lexical_weight="0.3"),
}
