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

    return Taxonomy.from_codes(["A43B", "A43C", "A47J", "B41F", "H04L", "H04W", "H01M", "Y10T"])


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
