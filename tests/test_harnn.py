"""The HARNN baseline (bench/harnn.py): its per-level outputs on a tiny taxonomy, seeded training, and
bench/quality.py refusing bad HARNN options with the option named."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from configuration_thmm import Taxonomy
from conftest import REPO_ROOT, bench_module

CODES = ["A43B", "A43C", "H04L", "H04W"]  # 8 nodes: A, H | A43, H04 | A43B, A43C, H04L, H04W


harnn = bench_module("harnn")
TINY = dict(embedding_dim=8, lstm_hidden=6, attention_size=5, fc_size=7, w2v_epochs=2, min_count=1, batch_size=4)


def tiny_model(taxonomy, seed=0, **overrides):
    torch.manual_seed(seed)
    config = harnn.HARNNConfig(**{**TINY, **overrides})
    return harnn.HARNN(20, [s.stop - s.start for s in taxonomy.level_slices], config)


def test_shapes_and_per_level_outputs_on_a_tiny_taxonomy():
    taxonomy = Taxonomy.from_codes(CODES)
    assert [s.stop - s.start for s in taxonomy.level_slices] == [2, 2, 4]
    model = tiny_model(taxonomy).eval()
    ids, lengths = harnn.pad_batch([[2, 3, 4, 5, 6], [7, 8], [9]])
    out = model(ids, lengths)
    assert [tuple(x.shape) for x in out["level_logits"]] == [(3, 2), (3, 2), (3, 4)]
    # the levels' local logits in taxonomy order, and a global prediction over every node
    assert out["local_logits"].shape == out["global_logits"].shape == out["probs"].shape == (3, len(taxonomy))
    torch.testing.assert_close(out["local_logits"][:, taxonomy.level_slices[2]], out["level_logits"][2])
    # each level's categories attend over the real words only
    for level, attention in zip(taxonomy.level_slices, out["attention"]):
        assert attention.shape == (3, level.stop - level.start, 5)
        torch.testing.assert_close(attention.sum(-1), torch.ones(3, level.stop - level.start))
        assert attention[1, :, 2:].abs().max() == 0 and attention[2, :, 1:].abs().max() == 0
    # alpha mixes the global and the local scores
    mix = 0.5 * torch.sigmoid(out["global_logits"]) + 0.5 * torch.sigmoid(out["local_logits"])
    torch.testing.assert_close(out["probs"], mix)
    for alpha, key in ((1.0, "global_logits"), (0.0, "local_logits")):
        other = tiny_model(taxonomy, alpha=alpha).eval()(ids, lengths)
        torch.testing.assert_close(other["probs"], torch.sigmoid(other[key]))
    # padding changes nothing: a document scores the same alone as in a padded batch
    alone = model(*harnn.pad_batch([[7, 8]]))
    torch.testing.assert_close(alone["probs"][0], out["probs"][1])
    loss = harnn.HARNN.loss(out, torch.from_numpy(taxonomy.multi_hot([["A43B"], ["H04W", "H04L"], []])))
    loss.backward()  # every parameter gets a gradient (the deeper levels' through the class dependency too)
    assert all(p.grad is not None for p in model.parameters())


def test_deeper_levels_read_the_words_the_level_above_attends_to():
    """Class dependency: a level's word weights come from the attention of the level above, so
    changing a top-level category embedding changes the lower levels' outputs."""
    taxonomy = Taxonomy.from_codes(CODES)
    model = tiny_model(taxonomy).eval()
    ids, lengths = harnn.pad_batch([[2, 3, 4, 5, 6]])
    before = model(ids, lengths)
    with torch.no_grad():
        model.levels[0].category_embeddings.mul_(-3.0)
    after = model(ids, lengths)
    assert not torch.allclose(before["level_logits"][1], after["level_logits"][1])


def tiny_corpus():
    """Documents whose words give away their labels; dev and test reuse the training words."""
    words = {"A43B": "shoe sole heel", "A43C": "lace boot fastening", "H04L": "packet network protocol",
             "H04W": "wireless radio terminal"}
    rng = np.random.default_rng(0)
    docs, refs = [], []
    for i in range(48):
        labels = sorted(set(rng.choice(CODES, size=1 + i % 2)))
        docs.append(" ".join(w for code in labels for w in words[code].split()) + " device")
        refs.append(labels)
    tokens = [harnn.tokenize(d) for d in docs]
    return ({"train": tokens[:32], "validation": tokens[32:40], "test": tokens[40:]},
            {"train": refs[:32], "validation": refs[32:40], "test": refs[40:]})


def test_seeded_training_is_deterministic():
    pytest.importorskip("gensim")
    tokens, refs = tiny_corpus()
    taxonomy = Taxonomy.from_codes({c for r in refs["train"] for c in r})
    config = harnn.HARNNConfig(**TINY, epochs=2, patience=2, seed=7)
    quiet = lambda *_: None  # noqa: E731
    first, second = (harnn.fit_harnn(tokens, refs, taxonomy, config, scheme="cpc", log=quiet) for _ in range(2))
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key
    for split in ("validation", "test"):
        assert first["probs"][split].shape == (8, len(taxonomy))
        np.testing.assert_array_equal(first["probs"][split], second["probs"][split])
    assert [h["dev_auprc"] for h in first["history"]] == [h["dev_auprc"] for h in second["history"]]
    assert first["best_epoch"] in (1, 2) and len(first["train_seconds"]) == 2
    other = harnn.fit_harnn(tokens, refs, taxonomy, harnn.HARNNConfig(**TINY, epochs=2, seed=8), scheme="cpc", log=quiet)
    assert not np.array_equal(other["probs"]["test"], first["probs"]["test"])


def test_word2vec_does_not_depend_on_the_python_hash_seed():
    """gensim seeds each word's vector with a hash of the word: Python's str hash differs per process."""
    pytest.importorskip("gensim")
    script = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('h', sys.argv[1]); "
              "m = importlib.util.module_from_spec(spec); sys.modules['h'] = m; spec.loader.exec_module(m); "
              "v, x = m.train_word2vec([['shoe', 'sole', 'heel'], ['packet', 'network', 'shoe']] * 5, "
              "m.HARNNConfig(embedding_dim=4, min_count=1, w2v_epochs=1)); print(sorted(v.items()), x.round(6).tolist())")
    outputs = set()
    for hash_seed in ("1", "2"):
        run = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "bench" / "harnn.py")], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.add(run.stdout)
    assert len(outputs) == 1


BAD_OPTIONS = [
    (["--harnn-alpha", "1.5"], "--harnn-alpha: must be a number in [0, 1], got 1.5"),
    (["--harnn-alpha", "-0.1"], "--harnn-alpha: must be a number in [0, 1], got -0.1"),
    (["--harnn-alpha", "nan"], "--harnn-alpha: must be a number in [0, 1], got nan"),
    (["--harnn-epochs", "0"], "--harnn-epochs: must be a positive integer, got 0"),
    (["--harnn-lstm-hidden", "0"], "--harnn-lstm-hidden: must be a positive integer, got 0"),
    (["--harnn-fc-size", "-512"], "--harnn-fc-size: must be a positive integer, got -512"),
    (["--harnn-attention-size", "0"], "--harnn-attention-size: must be a positive integer, got 0"),
    (["--harnn-embedding-dim", "0"], "--harnn-embedding-dim: must be a positive integer, got 0"),
    (["--harnn-max-words", "0"], "--harnn-max-words: must be a positive integer, got 0"),
    (["--harnn-batch-size", "0"], "--harnn-batch-size: must be a positive integer, got 0"),
    (["--harnn-min-count", "0"], "--harnn-min-count: must be a positive integer, got 0"),
    (["--harnn-w2v-epochs", "0"], "--harnn-w2v-epochs: must be a positive integer, got 0"),
    (["--harnn-dropout", "1"], "--harnn-dropout: must be a number in [0, 1), got 1.0"),
    (["--harnn-learning-rate", "0"], "--harnn-learning-rate: must be a positive finite number, got 0.0"),
    (["--harnn-learning-rate", "inf"], "--harnn-learning-rate: must be a positive finite number, got inf"),
    (["--patience", "0"], "--patience: must be a positive integer, got 0"),
    (["--harnn-epochs", "two"], "--harnn-epochs: invalid int value: 'two'"),
    (["--models", "harnn,rnn"], "--models: unknown model 'rnn'; choose from svm, "),
    (["--models", "harnn-orig", "--retune", "macro_f1"], "--models: 'harnn-orig' cannot be retuned"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_harnn_options_are_refused_naming_the_option(argv, message, tmp_path, capsys):
    quality = bench_module("quality")
    with pytest.raises(SystemExit) as exit_info:  # before any data is read: the data folder does not exist
        quality.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--models", "harnn", *argv])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out").exists()
