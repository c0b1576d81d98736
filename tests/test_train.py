"""train.py end to end on the embedded quickstart patents with a tiny random encoder (CPU, offline)."""

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import QUICKSTART_DATA, REPO_ROOT, SMALL_TRAINING, run_command, small_training_args, train_in_process
from thmm import checkpoints, data, features
from thmm.arguments import ConfigError, TrainingArguments, parse_args
from thmm.cli import train as train_cli
from thmm.data import LengthGroupedSampler
from thmm.trainer import train as run_training

pytestmark = pytest.mark.slow  # end-to-end training runs; CI runs them too

SMALL, small_args = SMALL_TRAINING, small_training_args


def run_script(args, timeout=300, launcher=None):
    return run_command([REPO_ROOT / "train.py", *args], launcher=launcher, timeout=timeout)


def free_port() -> int:
    """A TCP port nothing listens on now (for a torchrun rendezvous beside other test processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What test_resume_after_kill_matches_uninterrupted_run's runs add to SMALL: a checkpoint every 2 steps
# (5 steps per epoch), the last 3 of them kept after the run.
RESUMABLE = ("--checkpoint-every", "2", "--save-total-limit", "3", "--keep-checkpoints")
TITLED = ("--label-titles", str(REPO_ROOT / "tests" / "fixtures" / "cpc_titles.tsv"), "--node-threshold-min-support",
          "2", "--small-dev-documents", "0")  # per-node thresholds on its 13 dev documents


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, tmp_path_factory):
    """A 2-epoch run with code titles and per-node thresholds, which kept its checkpoints: the
    uninterrupted reference of the shuffled resume test too (the checkpoints do not change the run)."""
    out = tmp_path_factory.mktemp("run") / "thmm"
    summary = train_in_process(small_args(tiny_encoder_dir, out, *TITLED, *RESUMABLE))
    return out, summary


def test_end_to_end_outputs(trained):
    out, summary = trained
    model_dir = out / "model"
    for name in ("config.json", "model.safetensors", "README.md", "tokenizer_config.json", "modeling_thmm.py"):
        assert (model_dir / name).exists(), name
    assert not list(model_dir.glob("*.bin"))
    for name in ("test_metrics.json", "test_metrics.md", "test_metrics_per_level_f1.png", "dev_metrics.json",
                 "summary.json"):
        assert (out / "metrics" / name).exists(), name
    assert len(summary["history"]) == 2 and summary["best_epoch"] in (1, 2)
    assert summary["test"]["num_documents"] == 13 and 0.0 <= summary["test"]["micro_f1"] <= 1.0
    assert summary["test"]["auprc"] is not None
    # at least one leaf per document, at the same thresholds: only adds predictions
    assert summary["test_at_least_one"]["micro_recall"] >= summary["test"]["micro_recall"]
    assert summary["test_at_least_one"]["num_documents"] == 13
    config = json.loads((model_dir / "config.json").read_text())
    assert config["level_thresholds"] == summary["thresholds"]["per_level"]
    assert len(config["level_thresholds"]) == 3
    assert config["node_thresholds"] == summary["thresholds"]["per_node"]
    card = (model_dir / "README.md").read_text()
    assert "model-index" in card and "Macro F1" in card and "trust_remote_code=True" in card
    assert (out / "logs").exists() is False  # --report-to none writes no tracker logs


def test_saved_model_reloads_through_automodel_with_same_predictions(trained):
    from transformers import AutoModel, AutoTokenizer

    from dataset_script import read_patent_tsv

    out, _ = trained
    model = AutoModel.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    rows = read_patent_tsv(QUICKSTART_DATA / "test.tsv")[:13]
    predicted = model.predict(tokenizer, [r["title"] for r in rows], [r["abstract"] for r in rows])
    saved = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert [s["id"] for s in saved] == [r["patent_id"] for r in rows]
    for before, after in zip(saved, predicted):
        assert [p["code"] for p in before["predicted"]] == [p["code"] for p in after]
        for p, q in zip(before["predicted"], after):
            assert abs(p["score"] - q["score"]) <= 1e-4 + 1e-9  # two scores rounded to 4 places
    titled = [p for s in saved for p in s["predicted"] if p["code"] == "H04W"]
    assert all(p["title"] == "WIRELESS COMMUNICATION NETWORKS" for p in titled)


def test_thresholds_are_tuned_on_dev(trained):
    _, summary = trained
    thresholds = summary["thresholds"]
    objective = TrainingArguments.threshold_objective  # the default
    assert thresholds["objective"] == objective
    assert thresholds["per_level_score"] >= thresholds["global_score"]  # per-level search starts from the global
    assert thresholds["per_node_score"] >= thresholds["per_level_score"]  # and the per-node from the per-level
    assert summary["dev"][objective] == pytest.approx(thresholds["per_node_score"])


@pytest.mark.parametrize("batching", [[], ["--group-by-length"], ["--freeze-lower-layers", "2"]],
                         ids=["shuffled", "grouped-by-length", "lower-layers-cached"])
def test_resume_after_kill_matches_uninterrupted_run(tiny_encoder_dir, tmp_path, batching, request, train_in_child,
                                                     capsys):
    """A run SIGKILLed at step 7 (in a process of its own) and resumed (in this one) ends with the
    weights, history and scores of an uninterrupted run (in this one)."""
    if "--freeze-lower-layers" in batching:  # both runs share one cache: the second reuses the first's
        batching = [*batching, "--features-cache-dir", str(tmp_path / "cache")]
    common = [*TITLED, *RESUMABLE, *batching]
    if batching:
        full = tmp_path / "full"
        train_in_process(small_args(tiny_encoder_dir, full, *common))
    else:  # the module's run is this run
        full = request.getfixturevalue("trained")[0]

    killed_out, log = tmp_path / "killed", tmp_path / "killed.log"
    killed = train_in_child(small_args(tiny_encoder_dir, killed_out, *common, "--debug-kill-at-step", "7"), log)
    assert killed == -9, (killed, log.read_text()[-2000:])
    steps = sorted(p.name for p in (killed_out / "checkpoints").iterdir())
    assert steps[-1] == "step_00000006"  # 5 steps per epoch: epoch 1 ends at 5, then 6; killed at 7

    capsys.readouterr()
    assert train_cli.cli(small_args(tiny_encoder_dir, killed_out, *common, "--resume")) == 0
    resumed = capsys.readouterr()
    assert "resumed from" in resumed.out and "step 6" in resumed.out, resumed.err[-3000:]  # only step 7 was lost
    after = json.loads((killed_out / "checkpoints" / "step_00000010" / checkpoints.TRAINER_STATE).read_text())
    assert after["micro_batches"] == 1  # a checkpoint written after the resume records the resumed run's

    for rel in ("checkpoints/step_00000010/model.safetensors", "model/model.safetensors"):
        a, b = load_file(full / rel), load_file(killed_out / rel)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (rel, key)
    full_summary = json.loads((full / "metrics" / "summary.json").read_text())
    resumed_summary = json.loads((killed_out / "metrics" / "summary.json").read_text())
    assert full_summary["history"] == resumed_summary["history"]
    for key in ("test", "dev", "thresholds", "best_epoch"):
        assert full_summary[key] == resumed_summary[key], key


def test_refuses_to_overwrite_checkpoints_or_resume_with_other_args(tiny_encoder_dir, tmp_path, capsys):
    def run(out, *extra):  # thmm-train in process: its exit code and its stderr
        capsys.readouterr()
        code = train_cli.cli(small_args(tiny_encoder_dir, out, "--epochs", "1", *extra))
        return code, capsys.readouterr().err

    out = tmp_path / "run"
    code, err = run(out, "--keep-checkpoints")
    assert code == 0, err[-2000:]
    code, err = run(out)
    assert code == 2 and "already has checkpoints" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0  # one line
    code, err = run(out, "--resume", "--head-type", "tmm", "--head-dropout", "0.1")
    assert code == 2 and "different arguments" in err
    assert "head_type: 'thmm' -> 'tmm'" in err and "head_dropout: 0.25 -> 0.1" in err
    # a finished run whose checkpoints were deleted is not silently replaced
    done = tmp_path / "done"
    code, err = run(done)
    assert code == 0, err[-2000:]
    assert not (done / "checkpoints").exists() and (done / "model" / "config.json").exists()
    code, err = run(done)
    assert code == 2 and "already holds a finished run" in err


def test_resume_accepts_an_older_checkpoint_that_lacks_a_newer_option():
    current = {"head_type": "tmm", "epochs": 8, "group_by_length": False}
    # An option added after the checkpoint was made counts as its default, so only real changes are refused.
    assert checkpoints.resume_arg_differences({"head_type": "tmm", "epochs": 8}, current) == {}
    assert checkpoints.resume_arg_differences({"head_type": "tmm", "epochs": 8}, {**current, "group_by_length": True}) == {
        "group_by_length": (False, True)}
    assert checkpoints.resume_arg_differences({"head_type": "thmm", "epochs": 8, "group_by_length": False}, current) == {
        "head_type": ("thmm", "tmm")}
    # ... except an option whose default is not what runs did before it existed: the old rule is named
    selection = {"selection_metric": "macro_f1_tuned", "selection_only": False}
    assert checkpoints.resume_arg_differences({"head_type": "tmm"}, {"head_type": "tmm", **selection}) == {
        "selection_metric": ("macro_f1", "macro_f1_tuned"), "selection_only": (True, False)}
    assert checkpoints.resume_arg_differences(
        {"head_type": "tmm"}, {"head_type": "tmm", "selection_metric": "macro_f1", "selection_only": True}) == {}
    # the threshold options act after the last epoch: a resume may change them (the run ends as an
    # uninterrupted one with them would), while the options that shape training may not
    args = TrainingArguments(threshold_granularity="level", node_threshold_min_support=5, lexical_fusion=False)
    kept = checkpoints.resume_args(args)
    assert "threshold_granularity" not in kept and "node_threshold_min_support" not in kept
    assert "lexical_fusion" not in kept  # fitted after the last epoch too
    assert "threshold_objective" in kept and "head_type" in kept


def test_two_processes_evaluate_every_example_once(tiny_encoder_dir, tmp_path, one_distributed_run_at_a_time):
    # --multi_gpu selects Accelerate's torchrun launcher; without CUDA, train.py then runs DDP over gloo on CPUs.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    result = run_script(small_args(tiny_encoder_dir, tmp_path / "ddp", "--epochs", "1"), launcher=launcher)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "on 2 process(es)" in result.stdout
    summary = json.loads((tmp_path / "ddp" / "metrics" / "summary.json").read_text())
    assert summary["dev"]["num_documents"] == 13 and summary["test"]["num_documents"] == 13  # 13: uneven shards
    ids = [json.loads(line)["id"] for line in (tmp_path / "ddp" / "test_predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 13


def test_frozen_encoder_cache_reuse_and_invalidation(tiny_encoder_dir, tmp_path, tiny_encoder_config, tiny_tokenizer):
    from transformers import AutoConfig, BertModel

    cache = tmp_path / "cache"
    frozen = ["--freeze-encoder", "--features-cache-dir", str(cache), "--epochs", "1"]

    def run(name, *extra, encoder=tiny_encoder_dir):
        summary = run_training(parse_args(small_args(encoder, tmp_path / name, *frozen, *extra)))
        return summary["frozen_encoder_cache"], summary["frozen_encoder_cache_hit"]

    first_dir, first_hit = run("a")
    second_dir, second_hit = run("b")
    assert (first_hit, second_hit) == (False, True) and first_dir == second_dir
    info = json.loads((cache / first_dir / "cache_info.json").read_text())
    assert info["max_length"] == 48 and info["documents"] == {"train": 40, "validation": 13, "test": 13}
    assert {p.name for p in (cache / first_dir).glob("*.safetensors")} == {"train.safetensors", "validation.safetensors",
                                                                       "test.safetensors"}
    shorter_dir, shorter_hit = run("c", "--max-length", "32")
    assert not shorter_hit and shorter_dir != first_dir

    torch.manual_seed(123)  # same architecture, different weights
    other = tmp_path / "other-encoder"
    BertModel(AutoConfig.for_model(**tiny_encoder_config)).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    other_dir, other_hit = run("d", encoder=other)
    assert not other_hit and other_dir not in (first_dir, shorter_dir)

    cnn_dir, cnn_hit = run("e", "--doc-representation", "cnn")
    assert not cnn_hit and "token_states" in load_file(cache / cnn_dir / "validation.safetensors")


def test_frozen_encoder_trains_only_heads(tiny_encoder_dir, tmp_path):
    out = tmp_path / "frozen"
    run_training(parse_args(small_args(tiny_encoder_dir, out, "--freeze-encoder", "--epochs", "1",
                                            "--features-cache-dir", str(tmp_path / "cache"))))
    from transformers import BertModel

    original = BertModel.from_pretrained(tiny_encoder_dir).state_dict()
    saved = load_file(out / "model" / "model.safetensors")
    for name, tensor in original.items():
        assert torch.equal(saved["encoder." + name], tensor), name


def test_prior_output_bias_init_starts_the_heads_at_the_training_frequencies(tiny_encoder_dir, tmp_path):
    from thmm.trainer import Trainer

    trainer = Trainer(parse_args(small_args(tiny_encoder_dir, tmp_path / "prior", "--output-bias-init", "prior",
                                            "--head-type", "tmm")))
    taxonomy, train = trainer.taxonomy, trainer.references["train"]
    frequencies = (data.label_targets(taxonomy, train).sum(axis=0) + 1) / (len(train) + 2)
    biases = torch.cat([level.bias_out.detach().flatten() for level in trainer.accelerator.unwrap_model(
        trainer.model).heads.levels])
    torch.testing.assert_close(torch.sigmoid(biases).double(), torch.from_numpy(frequencies.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)


def test_lower_layers_mode_trains_only_the_top_layers_on_a_reused_cache(tiny_encoder_dir, tmp_path):
    cache = tmp_path / "cache"
    lower = ["--freeze-lower-layers", "3", "--features-cache-dir", str(cache), "--epochs", "1"]
    first = run_training(parse_args(small_args(tiny_encoder_dir, tmp_path / "a", *lower)))
    second = run_training(parse_args(small_args(tiny_encoder_dir, tmp_path / "b", *lower, "--head-type", "tmm")))
    assert (first["frozen_encoder_cache_hit"], second["frozen_encoder_cache_hit"]) == (False, True)
    assert first["frozen_encoder_cache"] == second["frozen_encoder_cache"]  # the heads do not change the states
    for path in (tmp_path / "a").rglob("*"):  # what the run leaves: model, metrics, predictions, marker
        if path.is_file():
            assert str(tmp_path) not in path.read_bytes().decode("utf-8", "replace"), path
    info = json.loads((cache / first["frozen_encoder_cache"] / "cache_info.json").read_text())
    assert info["lower_layers"] == 3 and info["doc_representation"] is None
    states = load_file(cache / first["frozen_encoder_cache"] / "validation.safetensors")
    assert states["token_states"].dtype == torch.float16 and states["token_states"].shape[1] == 32
    assert states["token_states"].shape[0] == int(states["lengths"].sum())

    from transformers import BertModel

    original = BertModel.from_pretrained(tiny_encoder_dir).state_dict()
    saved = load_file(tmp_path / "a" / "model" / "model.safetensors")
    frozen = [n for n in original if n.startswith("embeddings.") or n.split(".")[:3] in
              (["encoder", "layer", "0"], ["encoder", "layer", "1"], ["encoder", "layer", "2"])]
    top = [n for n in original if n.startswith("encoder.layer.3.") and n.endswith("weight")]
    assert frozen and top
    for name in frozen:
        assert torch.equal(saved["encoder." + name], original[name]), name
    assert all(not torch.equal(saved["encoder." + name], original[name]) for name in top)

    other = run_training(parse_args(small_args(tiny_encoder_dir, tmp_path / "c", "--freeze-lower-layers", "2",
                                               "--features-cache-dir", str(cache), "--epochs", "1")))
    assert not other["frozen_encoder_cache_hit"] and other["frozen_encoder_cache"] != first["frozen_encoder_cache"]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--head-type", "hmm"], "--head-type: invalid choice: 'hmm'"),
        (["--doc-representation", "pooler"], "--doc-representation: invalid choice"),
        (["--batch-size", "0"], "--batch-size: must be positive"),
        (["--learning-rate", "-1"], "--learning-rate: must be positive"),
        (["--batch-size", "10", "--gradient-accumulation-steps", "3"], "divisible"),
        (["--max-length", "4"], "--max-length: must be at least 8"),
        (["--threshold", "1.5"], "--threshold: must be a probability in [0, 1], got 1.5"),
        (["--mixed-precision", "fp8"], "--mixed-precision: invalid choice"),
        (["--output-bias-init", "zeros"], "--output-bias-init: invalid choice: 'zeros'"),
        (["--epochs", "1.5"], "--epochs: invalid int value: '1.5'"),
        (["--taxonomy", "/nonexistent/tax.json"], "--taxonomy: file not found"),
        (["--config", "/nonexistent/run.yaml"], "--config: file not found"),
    ],
)
def test_bad_config_values_give_clear_errors(argv, fragment, capsys):
    with pytest.raises((ConfigError, SystemExit)) as err:
        parse_args(argv)
    if err.type is SystemExit:  # argparse: exit 2 with "error: argument --x/--x-y: ..." on stderr
        assert err.value.code == 2
        message = capsys.readouterr().err.replace("_", "-")
    else:
        message = str(err.value)
    assert fragment in message


def test_config_file_and_command_line(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("head_type: tmm\nlearning-rate: 1e-3\nhead_learning_rate: 2.0e-5\nepochs: 4\nfreeze_encoder: true\n")
    args = parse_args(["--config", str(cfg), "--epochs", "7"])
    assert (args.head_type, args.learning_rate, args.head_learning_rate, args.epochs) == ("tmm", 1e-3, 2e-5, 7)
    assert args.freeze_encoder is True and isinstance(args.learning_rate, float)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"head_typo": "tmm"}))
    with pytest.raises(ConfigError, match="unknown argument.*head_typo"):
        parse_args(["--config", str(bad)])
    fractional = tmp_path / "fractional.yaml"
    fractional.write_text("epochs: 1.5\n")
    with pytest.raises(ConfigError, match=r"fractional.yaml, field 'epochs': expected int, got 1.5"):
        parse_args(["--config", str(fractional)])
    assert train_cli.cli(["--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch-size: must be positive (got 0)"
    assert train_cli.cli(["--config", str(fractional)]) == 2


TRAINING_CONFIGS = sorted(p for p in (REPO_ROOT / "configs").glob("*.yaml") if not p.name.startswith("accelerate_"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_shipped_training_configs_parse_to_their_values(path):
    """Every shipped training config is valid, and each of its fields reaches the arguments as written
    (a misspelled key or a value the parser would coerce fails here)."""
    import yaml

    args = parse_args(["--config", str(path)])
    fields = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in fields.items():
        if value is not None:
            assert getattr(args, key) == value, key


def test_training_configs_found():
    assert {p.name for p in TRAINING_CONFIGS} >= {"uspto70k_thmm_scibert.yaml", "tmm_mean_finetune.yaml",
                                                 "thmm_mean_finetune.yaml", "thmm_mean_top2.yaml"}


@pytest.mark.parametrize("rep", ["cls", "cnn"])
def test_length_sorted_encoding_keeps_document_order(tiny_model, small_taxonomy, tiny_tokenizer, rep):
    from modeling_thmm import encode_documents

    model = tiny_model(doc_representation=rep)
    split = {"title": ["battery", "wireless packet radio network base station terminal", "shoe sole", "ink"],
             "abstract": ["", "a channel protocol", "", "printing press sheet"]}
    cached = features.encode_features(model, tiny_tokenizer, split, 32, 2, "cpu", "test")
    dataset = features.FeatureSplit(cached, np.zeros((4, len(small_taxonomy)), dtype=np.float32))
    for i in range(4):
        enc = encode_documents(tiny_tokenizer, split["title"][i : i + 1], split["abstract"][i : i + 1], 32)
        enc.pop("truncated")
        with torch.no_grad():
            direct = model.encoder_features(**tiny_tokenizer.pad(enc, return_tensors="pt"))[0]
        got = dataset[i]["encoder_features"].float()
        assert got.shape == direct.shape
        torch.testing.assert_close(got, direct, rtol=2e-3, atol=2e-3)  # CNN token states are stored in fp16


def test_length_grouped_sampler():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1003)
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=7)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(1003)) and first == list(sampler)  # a permutation, deterministic
    sampler.set_epoch(1)
    assert list(sampler) != first  # reshuffled each epoch
    batches = [first[i : i + 10] for i in range(0, 1003, 10)]
    assert len(batches[-1]) == 3 and all(len(b) == 10 for b in batches[:-1])  # only the last batch is short
    spread = np.mean([np.ptp(lengths[b]) for b in batches[:-1]])
    random_spread = np.mean([np.ptp(lengths[rng.permutation(1003)[:10]]) for _ in range(100)])
    assert spread < random_spread / 3


def test_predict_proba_keeps_input_order(tiny_model, small_taxonomy, tiny_tokenizer):
    model = tiny_model()
    titles = ["ink", "wireless packet radio network base station terminal channel", "shoe sole", "battery cell"]
    together = model.predict_proba(tiny_tokenizer, titles, batch_size=2)
    for i, title in enumerate(titles):
        np.testing.assert_allclose(together[i], model.predict_proba(tiny_tokenizer, [title])[0], atol=1e-5)
    assert model.predict_proba(tiny_tokenizer, []).shape == (0, len(small_taxonomy))


def test_cpu_micro_batches_keep_the_batch_gradient(tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    """On a CPU a batch whose head activations exceed the budget is trained in micro-batches: the
    same optimizer steps, and (dropout off) the same weights as the whole batch at once."""
    from thmm import trainer as trainer_module

    def frozen_run(name, *extra):
        out = tmp_path / name
        summary = run_training(parse_args(small_args(
            tiny_encoder_dir, out, "--freeze-encoder", "--epochs", "1", "--head-dropout", "0", "--head-type", "thmm",
            "--features-cache-dir", str(tmp_path / "cache"), "--no-lexical-fusion", *extra)))
        return load_file(out / "model" / "model.safetensors"), summary

    fixed = []  # runs that fixed glibc's mmap threshold: --low-cpu-memory's, and any run on torch's huge pages
    monkeypatch.setattr(trainer_module, "fix_malloc_mmap_threshold", lambda: fixed.append(True))
    monkeypatch.setattr(trainer_module, "torch_uses_huge_pages", lambda: False)
    whole, _ = frozen_run("whole")
    from configuration_thmm import THMMConfig

    slices = THMMConfig.from_pretrained(tmp_path / "whole" / "model").get_taxonomy().level_slices
    per_document = 16 * max(s.stop - s.start for s in slices)  # the widest level's heads, 16 wide
    monkeypatch.setattr(trainer_module, "CPU_MICRO_BATCH_ELEMENTS", 4 * per_document)  # 4 of the 8 documents
    capsys.readouterr()
    micro, _ = frozen_run("micro")
    assert "training in 2 micro-batches of 4 documents per step of 8" in "".join(capsys.readouterr())
    assert fixed == []
    # --low-cpu-memory trains in micro-batches of its own, smaller budget
    monkeypatch.setattr(trainer_module, "LOW_MEMORY_MICRO_BATCH_ELEMENTS", 2 * per_document)
    low, _ = frozen_run("low", "--low-cpu-memory")
    assert "training in 4 micro-batches of 2 documents per step of 8" in "".join(capsys.readouterr()) and fixed == [True]
    # on huge pages the default fixes the threshold too, with a budget between the two
    monkeypatch.setattr(trainer_module, "torch_uses_huge_pages", lambda: True)
    monkeypatch.setattr(trainer_module, "HUGE_PAGE_MICRO_BATCH_ELEMENTS", 8 * per_document)  # the whole batch
    huge, _ = frozen_run("huge")
    log = "".join(capsys.readouterr())
    assert "micro-batches" not in log and "on huge pages: yes" in log and fixed == [True, True]
    assert whole.keys() == micro.keys() == low.keys() == huge.keys()
    for name in whole:
        torch.testing.assert_close(micro[name], whole[name], rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(low[name], whole[name], rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(huge[name], whole[name], rtol=1e-4, atol=1e-5, msg=name)


def test_training_state_is_released_after_the_last_epoch(tiny_encoder_dir, tmp_path, monkeypatch):
    """Fusion, tuning and saving run without the trained model, the optimizer's moments and the
    gradients (they reload the best epoch), and tuning lets go of the best epoch's model once it has its
    logits; the run still ends with a model. On a CPU, --low-cpu-memory fixes glibc's mmap threshold first."""
    import gc
    import weakref

    import thmm.lexical
    import thmm.trainer
    from modeling_thmm import THMMForHierarchicalClassification
    from thmm.trainer import Trainer

    fixed = []
    monkeypatch.setattr(thmm.trainer, "fix_malloc_mmap_threshold", lambda: fixed.append(True))

    def live_models():
        gc.collect()
        return [o for o in gc.get_objects() if type(o) is THMMForHierarchicalClassification]

    trainer = Trainer(parse_args(small_args(tiny_encoder_dir, tmp_path / "run", "--freeze-encoder", "--epochs", "1",
                                            "--features-cache-dir", str(tmp_path / "cache"), "--low-cpu-memory")))
    optimizer_state = weakref.ref(trainer.optimizer)
    assert fixed == [True] and len(live_models()) == 1
    trainer.fit()
    assert trainer.model is None and trainer.optimizer is None and optimizer_state() is None
    assert live_models() == []  # nothing (Accelerate included) holds the trained weights any more
    jobs, fit_fusion = [], thmm.lexical.fit_fusion
    monkeypatch.setattr(thmm.lexical, "fit_fusion", lambda *a, **k: jobs.append(k["n_jobs"]) or fit_fusion(*a, **k))
    trainer.tune_thresholds()
    assert live_models() == []  # nor the best epoch's, reloaded for its logits
    assert jobs == [1]  # --low-cpu-memory: the SVMs in this process, not in workers holding their own rows
    trainer.save()
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


MMAP_PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    from thmm.trainer import fix_malloc_mmap_threshold
    assert fix_malloc_mmap_threshold()
libc.free(libc.malloc(16 << 20))  # a large block freed: glibc would now serve blocks below 16 MiB from its heap
before = libc.mallinfo2().hblkhd
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_keeps_large_tensors_mmapped_after_large_frees():
    """Freed gradients and activations leave resident memory only when glibc's mmap threshold stays
    fixed: a 4 MiB block after a 16 MiB free is mmapped with the fix and taken from the heap without it."""
    import ctypes
    import subprocess

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    mmapped = {mode: int(subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True,
                                        check=True, cwd=REPO_ROOT).stdout) for mode in ("default", "fixed")}
    assert mmapped["default"] == 0 and mmapped["fixed"] >= 4 << 20


def test_a_run_stopped_for_memory_resumes_with_low_cpu_memory_only_when_allowed(caplog):
    """--low-cpu-memory changes the micro-batches, not what is learned: a resume that adds it is refused
    with the way out named, and let through with --allow-nonidentical-resume (a warning); other changed
    arguments are still refused."""
    saved = {"args": checkpoints.resume_args(TrainingArguments())}
    with pytest.raises(ConfigError, match=r"low_cpu_memory: False -> True \(add --allow-nonidentical-resume"):
        checkpoints.check_resume_arguments(Path("ckpt"), saved, TrainingArguments(low_cpu_memory=True))
    with caplog.at_level("WARNING", logger="thmm.train"):
        checkpoints.check_resume_arguments(
            Path("ckpt"), saved, TrainingArguments(low_cpu_memory=True, allow_nonidentical_resume=True))
    assert "--resume with changed --low-cpu-memory (--allow-nonidentical-resume)" in caplog.text
    with pytest.raises(ConfigError, match="head_type: 'thmm' -> 'tmm'") as error:
        checkpoints.check_resume_arguments(Path("ckpt"), saved, TrainingArguments(
            low_cpu_memory=True, allow_nonidentical_resume=True, head_type="tmm"))
    assert "add --allow-nonidentical-resume" not in str(error.value)


def test_a_resume_in_other_micro_batches_than_its_checkpoint_is_refused_unless_allowed(trained, caplog):
    """The micro-batches follow the machine too (torch's huge pages), not only the arguments: each
    checkpoint records them, and a resume that would train in others is refused, naming the way out."""
    from thmm.checkpoints import check_resume_micro_batches

    out, _ = trained
    states = [json.loads((p / checkpoints.TRAINER_STATE).read_text()) for p in checkpoints.list_checkpoints(out)]
    assert states and all(s["micro_batches"] == 1 for s in states)  # the small run's batch fits one
    saved, args = states[-1], TrainingArguments()
    check_resume_micro_batches(Path("ckpt"), saved, 1, args)  # the same: nothing to say
    check_resume_micro_batches(Path("ckpt"), {}, 4, args)  # a checkpoint from before they were recorded
    with pytest.raises(ConfigError, match=r"--resume: ckpt trained in 1 micro-batches per step and this run would "
                                          r"train in 4 .*THP_MEM_ALLOC_ENABLE=1.*add --allow-nonidentical-resume"):
        check_resume_micro_batches(Path("ckpt"), saved, 4, args)
    with caplog.at_level("WARNING", logger="thmm.train"):
        check_resume_micro_batches(Path("ckpt"), saved, 4, TrainingArguments(allow_nonidentical_resume=True))
    assert "would train in 4" in caplog.text and "will not repeat an uninterrupted one exactly" in caplog.text


def test_moments_in_a_file_train_and_resume_as_the_plain_run(trained, tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    """With the moments in a temporary file between steps (as --low-cpu-memory keeps them): a run stopped
    at step 7 and resumed (checkpoints written and read with the moments in the file) ends with the
    weights of the module's plain run, bit for bit."""
    import thmm.offloaded_adamw
    import thmm.trainer
    from thmm.offloaded_adamw import OffloadedAdamW

    monkeypatch.setattr(thmm.offloaded_adamw, "OFFLOAD_MIN_ELEMENTS", 256)  # the tiny heads' weights
    monkeypatch.setattr(thmm.trainer, "offload_moments", lambda *a: True)  # --low-cpu-memory's, without its micro-batches
    made, real_make, real_kill = [], thmm.trainer.make_optimizer, os.kill
    monkeypatch.setattr(thmm.trainer, "make_optimizer", lambda *a: made.append(real_make(*a)) or made[-1])

    class Stopped(Exception):
        pass

    def stop(pid, sig):  # --debug-kill-at-step, in this process: the run stops there, as a kill would stop it
        raise Stopped

    out, common = tmp_path / "offloaded", [*TITLED, *RESUMABLE]
    monkeypatch.setattr(thmm.trainer.os, "kill", stop)
    with pytest.raises(Stopped):
        train_cli.cli(small_args(tiny_encoder_dir, out, *common, "--debug-kill-at-step", "7"))
    monkeypatch.setattr(thmm.trainer.os, "kill", real_kill)
    assert isinstance(made[0], OffloadedAdamW) and made[0]._slots  # some moments were in the file
    capsys.readouterr()
    assert train_cli.cli(small_args(tiny_encoder_dir, out, *common, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out and isinstance(made[1], OffloadedAdamW)
    a, b = load_file(trained[0] / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("device, low, offloaded", [("cpu", False, False), ("cpu", True, True), ("cuda", True, False)])
def test_the_moments_go_to_a_file_with_low_cpu_memory_on_a_cpu(device, low, offloaded, caplog, monkeypatch):
    from types import SimpleNamespace

    import thmm.trainer

    monkeypatch.setattr(thmm.trainer, "memory_limit", lambda: (10**12, "this machine's memory"))  # plenty
    args = TrainingArguments(low_cpu_memory=low)
    accelerator = SimpleNamespace(device=torch.device(device), unwrap_model=lambda m: m)
    with caplog.at_level(logging.INFO, logger="thmm"):
        model = torch.nn.Linear(2048, 1024)  # 2.1M weights (in the file), 1,024 biases (kept in memory)
        model.heads = SimpleNamespace(activation_elements=lambda: 1000)
        assert thmm.trainer.offload_moments(args, accelerator, model, 64) is offloaded
        assert not thmm.trainer.offload_moments(args, accelerator, torch.nn.Linear(4, 4), 64)  # nothing large enough
    assert ("the optimizer's moments (0.02 GB) wait in a temporary file between steps (--low-cpu-memory)"
            in caplog.text) is offloaded


def test_the_moments_go_to_a_file_by_default_only_where_the_epoch_would_cross_the_memory_limit(monkeypatch, caplog):
    """The epoch's estimated peak: resident memory now, a gradient and two moments per trainable weight,
    and ACTIVATION_PEAK_FACTOR micro-batch activations; the processes of one machine share its limit."""
    from types import SimpleNamespace

    import thmm.trainer

    model = torch.nn.Linear(2048, 1024)
    model.bias.requires_grad_(False)  # frozen: neither gradient nor moments
    model.heads = SimpleNamespace(activation_elements=lambda: 1000)  # 4,000 bytes a document
    monkeypatch.setattr(thmm.trainer, "resident_bytes", lambda: 500_000_000)
    peak = 500_000_000 + 3 * 2048 * 1024 * 4 + thmm.trainer.ACTIVATION_PEAK_FACTOR * 64 * 4000
    assert thmm.trainer.epoch_peak_estimate(model, 64) == peak
    accelerator = SimpleNamespace(device=torch.device("cpu"), unwrap_model=lambda m: m)

    def offloaded(limit, device="cpu"):
        monkeypatch.setattr(thmm.trainer, "memory_limit", lambda: limit)
        accelerator.device = torch.device(device)
        return thmm.trainer.offload_moments(TrainingArguments(), accelerator, model, 64)

    with caplog.at_level(logging.WARNING, logger="thmm"):
        assert not offloaded((peak, "the memory cgroup /box"))  # it fits
        assert not offloaded(None)  # unknown (not Linux)
        assert not offloaded((peak - 1, "the memory cgroup /box"), "cuda")  # the moments live on the GPU
        assert caplog.text == ""
        assert offloaded((peak - 1, "the memory cgroup /box"))
    assert (f"with AdamW's moments in memory this run's epoch would take about {peak / 1e9:.2f} GB, more than the "
            f"{(peak - 1) / 1e9:.2f} GB the memory cgroup /box allows: the moments (0.02 GB) wait in a temporary file "
            "between steps, and lexical fusion fits its SVMs in this process" in caplog.text)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert offloaded((2 * peak - 1, "this machine's memory")) and not offloaded((2 * peak, "this machine's memory"))
    assert f"about {peak / 1e9:.2f} GB in each of 2 processes" in caplog.text
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")  # not a count: this process alone
    assert offloaded((peak - 1, "this machine's memory")) and not offloaded((peak, "this machine's memory"))


def test_a_run_over_its_memory_limit_keeps_the_moments_in_a_file_and_fits_fusion_in_process(
        tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    """The whole path in a (faked) tight container: the warning, the optimizer, fusion's one process."""
    import thmm.lexical
    import thmm.offloaded_adamw
    import thmm.trainer
    from thmm.offloaded_adamw import OffloadedAdamW
    from thmm.trainer import Trainer

    monkeypatch.setattr(thmm.offloaded_adamw, "OFFLOAD_MIN_ELEMENTS", 256)  # the tiny heads' weights
    monkeypatch.setattr(thmm.trainer, "memory_limit", lambda: (10**8, "the memory cgroup /box"))
    trainer = Trainer(parse_args(small_args(tiny_encoder_dir, tmp_path / "run", "--epochs", "1")))
    assert "more than the 0.10 GB the memory cgroup /box allows" in capsys.readouterr().out  # the run's log
    assert isinstance(trainer.optimizer.optimizer, OffloadedAdamW)
    trainer.fit()
    jobs, fit_fusion = [], thmm.lexical.fit_fusion
    monkeypatch.setattr(thmm.lexical, "fit_fusion", lambda *a, **k: jobs.append(k["n_jobs"]) or fit_fusion(*a, **k))
    trainer.tune_thresholds()
    assert jobs == [1]




@pytest.mark.parametrize("args", [None, "runs/x", {"output_dir": "runs/x"}])
def test_the_python_api_names_its_argument(args):
    from thmm.trainer import Trainer, train

    for call in (train, Trainer):
        with pytest.raises(TypeError, match=r"^args: expected TrainingArguments"):
            call(args)
