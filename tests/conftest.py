"""Shared fixtures: a tiny random BERT encoder and tokenizer built in code (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Eight subclass codes over four sections: the small taxonomy most tests build (18 nodes: 4, 6, 8 per level).
SMALL_TAXONOMY_CODES = ("A43B", "A43C", "A47J", "B41F", "H04L", "H04W", "H01M", "Y10T")

TINY_WORDS = (
    "a an the of for and with to in on by is are device method system apparatus "
    "footwear shoe sole heel upper lace boot sandal insole "
    "printing press ink sheet cylinder plate paper "
    "network wireless packet radio antenna base station terminal channel protocol "
    "battery cell electrode lithium charging vehicle motor electric "
    "drone aircraft rotor wing flight unmanned "
    "coffee brewing kitchen heating water "
    "sensor patient diagnosis blood image neural learning model training data processor memory"
).split()


def write_tiny_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab = specials + sorted(set(TINY_WORDS)) + letters + [str(d) for d in range(10)] + [".", ",", "-", "(", ")"]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    vocab_path = write_tiny_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    words = vocab_path.read_text(encoding="utf-8").split()
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, model_max_length=64)


@pytest.fixture(scope="session")
def tiny_encoder_config(tiny_tokenizer):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
    ).to_dict()


@pytest.fixture(scope="session")
def small_taxonomy():
    from configuration_thmm import Taxonomy

    return Taxonomy.from_codes(SMALL_TAXONOMY_CODES)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_encoder_config, tiny_tokenizer):
    """A tiny random BERT saved like a Hub checkpoint (weights + tokenizer), for train.py --encoder."""
    import torch
    from transformers import AutoConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(AutoConfig.for_model(**tiny_encoder_config)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


QUICKSTART_DATA = REPO_ROOT / "dataset_script" / "quickstart"


# --------------------------------------------------------------------------------------------------
# Shared builders: tiny models, a saved model folder, a command-line runner, a fake Hub API
# --------------------------------------------------------------------------------------------------


def build_tiny_model(encoder_config, taxonomy, seed=0, **config_kwargs):
    """A randomly initialised TMM/THMM/flat model over a tiny BERT (small heads by default), in eval mode."""
    import torch

    from configuration_thmm import THMMConfig
    from modeling_thmm import THMMForHierarchicalClassification

    torch.manual_seed(seed)
    config_kwargs = {"head_hidden_size": 16, "flat_hidden_size": 24, "cnn_num_filters": 8, "max_length": 64,
                     **config_kwargs}  # max_length within the tiny encoder's 128 positions
    config = THMMConfig(encoder_config=encoder_config, taxonomy=taxonomy, **config_kwargs)
    return THMMForHierarchicalClassification(config).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_encoder_config, small_taxonomy):
    """``tiny_model(seed=0, taxonomy=None, **config_kwargs)``: see :func:`build_tiny_model`."""

    def make(seed=0, taxonomy=None, **config_kwargs):
        return build_tiny_model(tiny_encoder_config, taxonomy or small_taxonomy, seed, **config_kwargs)

    return make


def save_model_dir(model, tokenizer, path: Path) -> Path:
    """What train.py leaves in OUTPUT_DIR/model: weights, config, remote code and the tokenizer."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A saved tiny THMM with code titles, max length 16 and tuned-looking per-level thresholds."""
    model = tiny_model(max_length=16, label_titles={"H04W": "WIRELESS COMMUNICATION NETWORKS"},
                       level_thresholds=[0.5, 0.45, 0.4])
    return save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("saved-model"))


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_command(args, cwd=REPO_ROOT, launcher=None, timeout=300, pythonpath=True):
    """Run ``python ARGS`` (or ``LAUNCHER ARGS``) offline in a subprocess; the CompletedProcess."""
    import subprocess
    import sys

    env = {**os.environ, **OFFLINE_ENV}
    if pythonpath:
        env["PYTHONPATH"] = str(REPO_ROOT)
    else:
        env.pop("PYTHONPATH", None)
    cmd = (launcher or [sys.executable]) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def fake_hub_api(monkeypatch):
    """Replaces ``huggingface_hub.HfApi``; the list it returns records every create/upload call."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, str(folder_path), kwargs))
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return calls
