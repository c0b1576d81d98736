"""A saved model is validated at load, and nothing saved holds a local path: from_pretrained's standard
keywords, config fields as one-line errors, the tokenizer against the embeddings, unfinished
training runs (also through remote code and the pipeline), and the files a model is saved as."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoTokenizer

from configuration_thmm import (
    UNFINISHED_MARKER,
    ConfigFieldError,
    THMMConfig,
    UnfinishedModelError,
    portable_model_name,
)
from conftest import save_model_dir
from modeling_thmm import THMMForHierarchicalClassification

BATCH_TITLES = ["shoe sole with heel", "wireless packet radio network"]


def logits(model, tokenizer):
    batch = tokenizer(BATCH_TITLES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.float()


@pytest.fixture(scope="module")
def reference(saved_model_dir, tiny_tokenizer):
    return logits(THMMForHierarchicalClassification.from_pretrained(saved_model_dir), tiny_tokenizer)


# ---- from_pretrained: the standard keyword arguments -------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dtype": torch.float16},
        {"torch_dtype": torch.float16},
        {"device_map": "cpu"},
        {"local_files_only": True},
        {"revision": "main"},
        {"low_cpu_mem_usage": True},
        {"output_loading_info": True},
        {"config": "SAVED"},  # the folder's THMMConfig object
        {"config": "FOLDER"},  # a folder to read config.json from
        {"cache_dir": "TMP"},
    ],
    ids=lambda kwargs: next(iter(kwargs)) + ("-" + str(kwargs["config"]) if "config" in kwargs else ""),
)
def test_from_pretrained_takes_the_standard_keywords(saved_model_dir, tiny_tokenizer, reference, tmp_path, kwargs):
    values = {"SAVED": THMMConfig.from_pretrained(saved_model_dir), "FOLDER": str(saved_model_dir), "TMP": tmp_path}
    kwargs = {key: values.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}
    loaded = THMMForHierarchicalClassification.from_pretrained(saved_model_dir, **kwargs)
    model = loaded[0] if kwargs.get("output_loading_info") else loaded
    if kwargs.get("output_loading_info"):
        info = loaded[1]
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    half = torch.float16 in kwargs.values()
    assert next(model.parameters()).dtype == (torch.float16 if half else torch.float32)
    torch.testing.assert_close(logits(model, tiny_tokenizer), reference, atol=2e-2 if half else 0, rtol=0)


def test_from_pretrained_subfolder(saved_model_dir, tiny_tokenizer, reference, tmp_path):
    shutil.copytree(saved_model_dir, tmp_path / "repo" / "thmm")
    model = THMMForHierarchicalClassification.from_pretrained(tmp_path / "repo", subfolder="thmm")
    torch.testing.assert_close(logits(model, tiny_tokenizer), reference, atol=0, rtol=0)
    (tmp_path / "repo" / "thmm" / "config.json").write_text(
        json.dumps({**json.loads((saved_model_dir / "config.json").read_text()), "head_dropout": 2}))
    with pytest.raises(ConfigFieldError, match=rf"^{tmp_path}/repo/thmm/config.json, field 'head_dropout'"):
        THMMForHierarchicalClassification.from_pretrained(tmp_path / "repo", subfolder="thmm")


# ---- config fields: one line each, a ValueError ------------------------------------------------------


def test_config_field_errors_are_one_line_value_errors(saved_model_dir, tmp_path, small_taxonomy):
    with pytest.raises(ConfigFieldError) as err:
        THMMConfig(taxonomy=small_taxonomy, head_dropout=1.5)
    assert str(err.value) == "THMMConfig, field 'head_dropout': must be in [0, 1) (got 1.5)"
    assert isinstance(err.value, ValueError) and (err.value.field, err.value.value) == ("head_dropout", 1.5)
    folder = shutil.copytree(saved_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "consistent_scores": "false"}))
    for load in (THMMConfig.from_pretrained, AutoConfig.from_pretrained):
        with pytest.raises(ConfigFieldError) as err:
            load(folder)
        assert str(err.value) == f"{folder}/config.json, field 'consistent_scores': must be a boolean (got 'false')"


def test_config_is_validated_again_at_save(tiny_model, tmp_path):
    model = tiny_model(max_length=64)  # within the tiny encoder's 128 positions
    model.config.head_dropout = 5.0  # an assignment is not checked; save_pretrained validates
    with pytest.raises(StrictDataclassError, match="field 'head_dropout': must be in"):
        model.save_pretrained(tmp_path)


# ---- the tokenizer must fit the model's tables ---------------------------------------------------------


def test_check_tokenizer(tiny_model, tiny_tokenizer, tmp_path):
    import numpy as np

    model = tiny_model(max_length=64)  # within the tiny encoder's 128 positions
    model.check_tokenizer(tiny_tokenizer)  # the tokenizer the embeddings were made for
    tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
    bigger = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    bigger.add_tokens(["zzfirst"])
    with pytest.raises(ValueError, match=rf"^{tmp_path}/tokenizer: the tokenizer has 146 word-pieces, more than the "
                                         r"145 rows of this model's encoder embeddings"):
        model.check_tokenizer(bigger)
    with pytest.raises(ValueError, match="^runs/x/model: the tokenizer has 146"):
        model.check_tokenizer(bigger, where="runs/x/model")
    with pytest.raises(ValueError, match="the tokenizer has 146"):
        model.predict(bigger, ["shoe sole"])
    with pytest.raises(ValueError, match="^runs/x/model: no tokenizer; use the one saved with the model"):
        model.check_tokenizer(None, where="runs/x/model")
    vocab, nodes = 100, len(model.taxonomy)  # a lexical scorer over fewer word-pieces than the tokenizer has
    model.set_lexical_scorer(np.ones(vocab), np.zeros((vocab, nodes)), np.zeros(nodes), 0.5, 1.0, 0.0)
    with pytest.raises(ValueError, match="145 word-pieces, more than the 100 rows of this model's lexical scorer"):
        model.check_tokenizer(tiny_tokenizer)


# ---- unfinished training runs ---------------------------------------------------------------------------


@pytest.fixture
def unfinished_dir(saved_model_dir, tmp_path):
    folder = shutil.copytree(saved_model_dir, tmp_path / "model")
    marker = {"reason": "killed in epoch 2", "resume": "thmm-train --resume"}
    (folder / UNFINISHED_MARKER).write_text(json.dumps(marker))
    return folder


def test_unfinished_folder_is_refused_unless_allowed(unfinished_dir):
    with pytest.raises(UnfinishedModelError) as err:
        THMMForHierarchicalClassification.from_pretrained(unfinished_dir)
    assert str(err.value) == (f"{unfinished_dir}: an unfinished training run's model (killed in epoch 2); "
                              "finish the run with: thmm-train --resume")
    assert isinstance(err.value, OSError)
    THMMForHierarchicalClassification.from_pretrained(unfinished_dir, allow_unfinished=True)
    (unfinished_dir / UNFINISHED_MARKER).write_text("{not json")
    with pytest.raises(UnfinishedModelError, match=f"its {UNFINISHED_MARKER} is unreadable"):
        THMMForHierarchicalClassification.from_pretrained(unfinished_dir)


def test_unfinished_folder_is_refused_as_remote_code_and_by_the_pipeline(unfinished_dir):
    """In a fresh process (remote code registers its classes with the Auto classes): AutoModel and
    pipeline() with trust_remote_code both refuse, the reason on the first line."""
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("configuration_thmm", "taxonomy_thmm", "modeling_thmm", "heads_thmm", "lexical_thmm",
                     "encoder_layers_thmm", "weights_thmm", "tokenization_thmm", "decoding_thmm", "pipeline_thmm"):
            sys.modules[name] = None  # the saved folder's code, not the installed package
        from transformers import AutoModel, pipeline
        for load in (lambda: AutoModel.from_pretrained({str(unfinished_dir)!r}, trust_remote_code=True),
                     lambda: pipeline(model={str(unfinished_dir)!r}, trust_remote_code=True)):
            try:
                load()
                print("LOADED")
            except OSError as err:
                print("REFUSED", str(err).splitlines()[0])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(unfinished_dir.parent / "modules"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                            cwd=unfinished_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = f"REFUSED {unfinished_dir}: an unfinished training run's model (killed in epoch 2); finish the run with"
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith(expected) for line in lines), result.stdout


# ---- nothing saved holds a local path ---------------------------------------------------------------------


def test_saved_files_hold_no_local_path(tiny_encoder_dir, small_taxonomy, tmp_path):
    """A model built from a local encoder folder, saved as the trainer saves it (model, then tokenizer)."""
    model = THMMForHierarchicalClassification.from_encoder(str(tiny_encoder_dir), small_taxonomy, head_hidden_size=8,
                                                           max_length=64)
    assert model.config.encoder_name_or_path == str(tiny_encoder_dir)  # in memory, where it came from
    folder = tmp_path / "model"
    save_model_dir(model, AutoTokenizer.from_pretrained(tiny_encoder_dir), folder)
    for path in folder.iterdir():
        text = path.read_bytes().decode("utf-8", "replace")
        for local in (str(tiny_encoder_dir), str(tiny_encoder_dir.parent), str(tmp_path)):
            assert local not in text, (path.name, local)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["encoder_name_or_path"] == tiny_encoder_dir.name
    assert saved["encoder_config"].get("_name_or_path") in (None, tiny_encoder_dir.name)
    assert json.loads((folder / "tokenizer_config.json").read_text()).get("name_or_path") in (None,
                                                                                              tiny_encoder_dir.name)
    THMMForHierarchicalClassification.from_pretrained(folder)  # and it loads


def test_portable_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "encoders" / "scibert").mkdir(parents=True)
    assert portable_model_name("allenai/scibert_scivocab_uncased") == "allenai/scibert_scivocab_uncased"
    assert portable_model_name("bert-base-uncased") == "bert-base-uncased"
    assert portable_model_name(str(tmp_path / "encoders" / "scibert")) == "scibert"
    assert portable_model_name("encoders/scibert/") == "scibert"
    assert portable_model_name("./encoders/scibert") == "scibert"
    assert portable_model_name("~/models/minilm") == "minilm"
    assert portable_model_name("C:\\models\\minilm") == "minilm"
    snapshot = "/root/.cache/huggingface/hub/models--allenai--scibert_scivocab_uncased/snapshots/24f92d32b1bf"
    assert portable_model_name(snapshot) == "allenai/scibert_scivocab_uncased"
    assert portable_model_name(".") == tmp_path.name
