"""pipeline_thmm: the pipeline saved with a model, loaded by `pipeline(model=dir, trust_remote_code=True)`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import save_model_dir
from pipeline_thmm import PIPELINE_TASK, HierarchicalPatentClassificationPipeline

LONG_ABSTRACT = "a wireless terminal and a base station exchange packet data over a radio channel " * 4

# (inputs, call arguments): each is run by the saved pipeline and compared with the model's own decoding.
CASES = [
    ("shoe sole with heel", {}),
    (["wireless packet radio network", "shoe sole", "ink"], {"batch_size": 2}),
    ({"title": "lithium battery cell", "abstract": "an electrode for an electric vehicle"}, {}),
    ([{"title": "radio network", "abstract": LONG_ABSTRACT}, {"title": "coffee brewing"}], {"batch_size": 2}),
    (["shoe sole", "radio"], {"top_k": 1}),
    ("printing press", {"threshold": 0.0}),
    ("printing press", {"threshold": 1.0}),
    ("printing press", {"threshold": [0.5, 0.4, 0.6]}),
]


def as_documents(inputs):
    docs = inputs if isinstance(inputs, list) else [inputs]
    return [d if isinstance(d, dict) else {"title": d} for d in docs]


@pytest.fixture(scope="module")
def model(tiny_model, tiny_tokenizer):
    """A saved model with everything a trained one may carry: tuned thresholds, titles and a fused
    lexical scorer (so that the remote-code route is shown to fuse it too)."""
    import numpy as np

    model = tiny_model(max_length=16, label_titles={"A43B": "Footwear parts"})
    model.config.level_thresholds = [0.45, 0.5, 0.52]
    rng = np.random.default_rng(0)
    vocab, nodes = len(tiny_tokenizer), len(model.taxonomy)
    model.set_lexical_scorer(rng.random(vocab), rng.normal(size=(vocab, nodes)), rng.normal(size=nodes),
                             fusion_weight=0.3, scale=2.0, shift=-0.5)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, tiny_tokenizer):
    return save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("pipeline") / "model")


def expected_records(model, tokenizer, inputs, batch_size=None, **decoding):
    docs = as_documents(inputs)
    probs = model.predict_proba(tokenizer, [d["title"] for d in docs], [d.get("abstract", "") for d in docs])
    records = model.label_records(probs, **{"decimals": None, **decoding})  # full precision: compared within rounding
    return records if isinstance(inputs, list) else records[0]


def assert_same_records(got, expected):
    """``got`` (scores rounded to 4 places, the default) are ``expected`` (full precision) up to rounding."""
    assert [r["code"] for r in got] == [r["code"] for r in expected]
    for g, e in zip(got, expected):
        assert (g["level"], g["title"]) == (e["level"], e["title"])
        assert g["score"] == round(g["score"], 4) and abs(g["score"] - e["score"]) < 0.5e-4 + 1e-5, (g, e)


MODEL_MODULES = ("configuration_thmm", "taxonomy_thmm", "modeling_thmm", "heads_thmm", "lexical_thmm",
                 "encoder_layers_thmm", "weights_thmm", "tokenization_thmm", "decoding_thmm", "pipeline_thmm")


def test_save_pretrained_carries_the_pipeline(model_dir):
    for name in MODEL_MODULES:  # the pipeline and every module of the model's code
        assert (model_dir / f"{name}.py").exists(), name
    custom = json.loads((model_dir / "config.json").read_text())["custom_pipelines"]
    assert custom == {
        PIPELINE_TASK: {"impl": "pipeline_thmm.HierarchicalPatentClassificationPipeline", "pt": ["AutoModel"],
                        "type": "text"}
    }


def test_saved_pipeline_runs_without_the_package(model_dir, model, tiny_tokenizer):
    """A fresh process that cannot import this package finds the pipeline from config.json alone."""
    tmp = model_dir.parent
    (tmp / "cases.json").write_text(json.dumps(CASES))
    script = textwrap.dedent(
        f"""
        import json, os, sys
        for name in {MODEL_MODULES!r}:
            sys.modules[name] = None  # the installed package must not be used
        from transformers import pipeline
        pipe = pipeline(model={str(model_dir)!r}, trust_remote_code=True)
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
        results = [pipe(inputs, **kwargs) for inputs, kwargs in json.load(open("cases.json"))]
        pipe.model.save_pretrained("resaved")  # a model loaded as remote code still saves its pipeline
        resaved = json.load(open("resaved/config.json"))["custom_pipelines"]
        json.dump({{"results": results, "resaved": [sorted(resaved), os.path.exists("resaved/pipeline_thmm.py")]}},
                  open("results.json", "w"))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp / "modules"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp / "results.json").read_text())
    assert out["resaved"] == [[PIPELINE_TASK], True]
    for (inputs, kwargs), got in zip(CASES, out["results"]):
        expected = expected_records(model, tiny_tokenizer, inputs, **kwargs)
        if isinstance(inputs, list):
            assert len(got) == len(expected)
            for g, e in zip(got, expected):
                assert_same_records(g, e)
        else:
            assert_same_records(got, expected)
    by_threshold = {json.dumps(kwargs.get("threshold")): got for (_, kwargs), got in zip(CASES, out["results"])}
    assert len(by_threshold["0.0"]) == len(model.taxonomy) and by_threshold["1.0"] == []
    top1 = out["results"][4]
    assert [sum(r["level"] == 3 for r in doc) for doc in top1] == [1, 1]


@pytest.fixture(scope="module")
def pipe(model, tiny_tokenizer):
    return HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer)


def test_uses_the_models_tuned_thresholds(pipe, model, tiny_tokenizer):
    got = pipe(["shoe sole", "radio network"])
    for g, e in zip(got, model.predict(tiny_tokenizer, ["shoe sole", "radio network"], decimals=None)):
        assert_same_records(g, e)
    assert pipe([]) == []
    assert len(pipe(("shoe sole", "radio"))) == 2
    long_doc = pipe.preprocess({"title": "radio network", "abstract": LONG_ABSTRACT})
    assert long_doc["input_ids"].shape == (1, model.config.max_length)


@pytest.mark.parametrize(
    "bad, match",
    [
        (3, "got int"),
        ({"abstract": "an insole"}, "field 'title': missing"),
        ({"title": "shoe", "abstact": "typo"}, "unknown field.*'abstact'"),
        ({"title": 7}, "field 'title': expected a string, got int"),
        ({"title": "shoe", "abstract": ["a", "b"]}, "field 'abstract': expected a string, got list"),
        ("  ", "^document 0: fields 'title' and 'abstract': empty document"),
        (["shoe sole", {"title": " ", "abstract": "\n"}], "^document 1: fields 'title' and 'abstract': empty document"),
        (["shoe sole", None], "^document 1: .*got NoneType"),
        ({"title": "shoe", "abstract": 0}, "field 'abstract': expected a string, got int"),
    ],
)
def test_bad_input_raises_a_clear_error(pipe, bad, match):
    with pytest.raises(ValueError, match=match):
        pipe(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": [0.5, 0.5]}, "one threshold per level"),
        ({"threshold": -3}, r"^threshold: must be a probability in \[0, 1\] \(got -3\)"),
        ({"threshold": float("nan")}, r"^threshold: must be a probability in \[0, 1\]"),
        ({"threshold": [0.5, 2, 0.4]}, r"^threshold\[1\]: must be a probability in \[0, 1\] \(got 2\)"),
        ({"top_k": 0}, r"^top_k: must be an integer of at least 1 \(got 0\)"),
        ({"top_k": 1.5}, "^top_k: must be an integer"),
        ({"at_least_one": "yes"}, "^at_least_one: must be True or False"),
        ({"consistent": "false"}, "^consistent: must be True or False"),
        ({"batch_size": 0}, r"^batch_size: must be an integer of at least 1 \(got 0\)"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(["shoe sole", "radio"], **kwargs)


def test_documents_of_a_generator_are_checked_as_they_come(pipe):
    assert len(list(pipe(title for title in ["shoe sole", "radio"]))) == 2
    with pytest.raises(ValueError, match="^document 1: fields 'title' and 'abstract': empty document"):
        list(pipe(title for title in ["shoe sole", " "]))


@pytest.mark.parametrize("text, problem", [("sh\0oe", "holds a NUL character"),
                                           ("shoe \ud800", "holds a lone surrogate")])
def test_text_the_tokenizer_cannot_take_is_refused_like_the_command_does(pipe, model, tiny_tokenizer, text, problem):
    """The rule of thmm-predict's files (tokenization_thmm.text_problem), named by document and field."""
    with pytest.raises(ValueError, match=f"^document 0: field 'title': {problem}"):
        pipe(text)
    with pytest.raises(ValueError, match=f"^document 1: field 'abstract': {problem}"):
        model.predict(tiny_tokenizer, ["shoe", "radio"], ["sole", text])


def test_top_k_beside_a_threshold_or_at_least_one_is_refused(pipe, model, tiny_tokenizer):
    for option in ({"threshold": 0.99}, {"at_least_one": True}):
        name = next(iter(option))
        with pytest.raises(ValueError, match=f"^top_k and {name}: choose one"):
            pipe("shoe sole", top_k=1, **option)
        with pytest.raises(ValueError, match=f"^top_k and {name}: choose one"):
            model.predict(tiny_tokenizer, ["shoe sole"], top_k=1, **option)
    with pytest.raises(ValueError, match=r"^threshold: expected one threshold per level \(3\)"):
        model.predict(tiny_tokenizer, ["shoe sole"], threshold=[0.5, 0.4])


def test_long_text_gives_no_false_warning_about_indexing(model, tiny_tokenizer):
    """The text is truncated: transformers' "longer than the specified maximum ... indexing errors" warning
    (given once per tokenizer, which then keeps this flag) would be false."""
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.deprecation_warnings.clear()
    model.predict(tokenizer, ["shoe " * 5000])
    assert "sequence-length-is-longer-than-the-specified-maximum" not in tokenizer.deprecation_warnings


def test_unknown_argument(pipe):
    with pytest.raises(TypeError, match="top_n"):
        pipe("shoe sole", top_n=2)


def test_pipeline_refuses_a_tokenizer_bigger_than_the_embeddings(model, tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tiny_tokenizer.save_pretrained(tmp_path)
    bigger = AutoTokenizer.from_pretrained(tmp_path)
    bigger.add_tokens(["zzfirst"])
    with pytest.raises(ValueError, match="the tokenizer has 146 word-pieces, more than the 145 rows"):
        HierarchicalPatentClassificationPipeline(model=model, tokenizer=bigger)
    with pytest.raises(ValueError, match="^batch_size: must be an integer of at least 1"):
        HierarchicalPatentClassificationPipeline(model=model, tokenizer=tiny_tokenizer, batch_size=-1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.0, -0.1])
def test_decoding_refuses_what_is_not_a_probability(model, bad):
    """NaN would decode to no code, 2.0 to a code with a score above 1: both silently; refused, named."""
    import numpy as np

    probabilities = np.full((2, len(model.taxonomy)), 0.5)
    probabilities[1, 3] = bad
    for decode in (model.decode, model.label_records, model.document_confidence):
        with pytest.raises(ValueError, match=r"^probabilities: document 1, node 3: .* is not a probability"):
            decode(probabilities, at_least_one=True)
    with pytest.raises(ValueError, match=r"^probabilities: expected shape \[documents, "):
        model.decode(probabilities[:, :-1])
