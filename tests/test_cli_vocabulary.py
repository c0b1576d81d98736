"""One vocabulary across thmm-train, thmm-predict, thmm-publish and thmm-stats (issue 31): the shared
option names, ``--version``, tidy ``--help``, the old spellings (accepted for one release, with one
deprecation warning naming the new one), and quiet logging. Fast: ``--help``/``--version``, parsing,
and tiny inputs only; no training."""

from __future__ import annotations

import json
import logging
import re
import shlex
from types import SimpleNamespace

import pytest

import thmm
from conftest import QUICKSTART_DATA
from dataset_script import publish as publish_module
from thmm import cli as commands
from thmm.cli import predict as predict_cli
from thmm.cli import suggest as suggest_cli
from thmm.cli import train as train_cli

VERSION = f"thmm-patents {thmm.__version__}"
COMMANDS = {"train": train_cli.cli, "predict": predict_cli.cli, "publish": commands.publish, "stats": commands.stats,
            "suggest": suggest_cli.cli}
# the shared names each command takes (transformers' TrainingArguments names where one exists)
SHARED = {
    "train": ["--output-dir", "--dataset", "--config", "--push-to-hub", "--hub-model-id", "--hub-private", "--version",
              "--quiet", "--verbose"],
    "predict": ["--output-dir", "--output", "--version", "--quiet", "--verbose"],
    "publish": ["--output-dir", "--dataset", "--dataset-config", "--push-to-hub", "--hub-model-id", "--hub-private",
                "--version", "--quiet", "--verbose"],
    "stats": ["--output-dir", "--dataset", "--dataset-config", "--version", "--quiet", "--verbose"],
    "suggest": ["--output", "--version", "--quiet", "--verbose"],
}
# each command's own options of issue 34 (calibration, review, explanations, active learning), dashed
OWN = {"train": ["--calibration", "--resume-from-model"], "predict": ["--review-below", "--explain"],
       "suggest": ["--model", "--input", "--n", "--seed", "--format", "--batch-size", "--device",
                   "--trust-remote-code"]}


def call(command, argv, capsys):
    """(exit code, stdout, stderr) of a command run in process."""
    try:
        code = COMMANDS[command]([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def help_text(command, capsys) -> str:
    code, out, _ = call(command, ["--help"], capsys)
    assert code == 0
    return out


def deprecations(err: str) -> list[str]:
    return [line for line in err.splitlines() if "deprecated" in line]


@pytest.fixture(autouse=True)
def restore_logging():
    root, named = logging.getLogger(), {n: logging.getLogger(n).level for n in ("thmm", "thmm.data", "dataset_script")}
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    for name, old in named.items():
        logging.getLogger(name).setLevel(old)


# ---- --version and the shared names ----------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_version(command, capsys):
    code, out, err = call(command, ["--version"], capsys)
    assert (code, out.strip(), err) == (0, VERSION, "")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_lists_the_shared_names(command, capsys):
    text = help_text(command, capsys)
    options = set(re.findall(r"(?m)^\s{2}(--[\w-]+)", text)) | set(re.findall(r"(?m)^\s{2}--[\w-]+, (--[\w-]+)", text))
    assert set(SHARED[command]) <= options, set(SHARED[command]) - options
    assert set(OWN.get(command, [])) <= options, set(OWN.get(command, [])) - options


# ---- --help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_is_tidy(command, capsys):
    text = help_text(command, capsys)
    invocations = [line for line in text.splitlines() if re.match(r"\s{2}-", line)] + [text.split("\n\n")[0]]
    assert not [line for line in invocations if re.search(r"--[a-z]+_\w", line)], "underscores: accepted, not shown"
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and not re.search(r"\(default[^)]*\)\s*\(default", flat)
    for entry in re.split(r"\n  (?=-)", text.split("options:", 1)[1]):  # one option's invocation and help
        assert len(re.findall(r"\(default\b|\bdefault:", entry)) <= 1, entry
    assert "debug-kill-at-step" not in text and "DEBUG_KILL" not in text
    assert "``" not in text


def test_train_help_examples_one_per_line_and_negations_on_one_line(capsys):
    text = help_text("train", capsys)
    lines = text.splitlines()
    assert lines[0] == "usage: thmm-train [--config RUN.yaml] [OPTIONS]"
    assert "    thmm-train --quickstart                  # offline demo: embedded patents + MiniLM, on CPU" in lines
    assert any(line.startswith("    thmm-train --config run.yaml --epochs 3") for line in lines)
    assert "  --lexical-fusion, --no-lexical-fusion" in lines and "  --no-lexical-fusion" not in lines
    assert text.count("keeps the paper's model") == 1
    assert "  --push-to-hub         upload the final model" in text  # a flag now; the repo is --hub-model-id
    assert "\nthe Hub:\n" in text and "\nmodel:\n" in text  # sections


@pytest.mark.parametrize("command", ["predict", "publish", "stats", "suggest"])
def test_examples_one_per_line(command, capsys):
    text = help_text(command, capsys)
    examples = [line for line in text.splitlines() if line.startswith(f"    thmm-{command} ")]
    assert len(examples) >= 2


# ---- thmm-train: parsing ----------------------------------------------------------------------------


def parse(argv, capsys):
    from thmm.arguments import parse_args

    args = parse_args([*map(str, argv)])
    return args, capsys.readouterr().err


def test_train_push_to_hub_is_a_flag_with_hub_model_id(tiny_encoder_dir, capsys):
    args, err = parse(["--encoder", tiny_encoder_dir, "--push-to-hub", "--hub-model-id", "me/thmm", "--hub-private"],
                      capsys)
    assert (args.push_to_hub, args.hub_model_id, args.hub_private, err) == (True, "me/thmm", True, "")
    from thmm.model_card import hub_repo_id

    assert hub_repo_id(args) == "me/thmm"
    args, _ = parse(["--encoder", tiny_encoder_dir, "--hub-model-id", "me/thmm"], capsys)
    assert args.push_to_hub is False and hub_repo_id(args) is None  # as in transformers: no push without the flag


@pytest.mark.parametrize("argv", [["--push-to-hub", "me/thmm"], ["--push-to-hub=me/thmm"], ["--push_to_hub", "me/thmm"]])
def test_train_old_push_to_hub_repo_warns_once(argv, tiny_encoder_dir, capsys):
    args, err = parse(["--encoder", tiny_encoder_dir, *argv], capsys)
    assert (args.push_to_hub, args.hub_model_id) == (True, "me/thmm")
    assert deprecations(err) == [err.strip()] and "--push-to-hub --hub-model-id REPO" in err


def test_train_depth_options_use_the_dashed_vocabulary(tiny_encoder_dir, capsys):
    """Issue 32's options: dashed names in --help, the choices shown, and parsed to the right types."""
    text = help_text("train", capsys)
    for option in ("--depth {3,4,5}", "--deep-heads {shared,per_node}", "--deep-head-hidden-size"):
        assert option in text, option
    args, err = parse(["--encoder", tiny_encoder_dir, "--depth", "4", "--deep-heads", "per_node",
                       "--deep-head-hidden-size", "16"], capsys)
    assert (args.depth, args.deep_heads, args.deep_head_hidden_size, err) == (4, "per_node", 16, "")
    args, _ = parse(["--encoder", tiny_encoder_dir], capsys)
    assert (args.depth, args.deep_heads, args.deep_head_hidden_size) == (None, "shared", 128)  # None: the labels' depth


def test_train_underscore_spellings_still_parse_silently(tiny_encoder_dir, capsys):
    args, err = parse(["--encoder", tiny_encoder_dir, "--head_type", "tmm", "--no_lexical_fusion", "--output_dir", "x",
                       "--hub_private"], capsys)
    assert (args.head_type, args.lexical_fusion, args.output_dir, args.hub_private, err) == ("tmm", False, "x", True, "")


def test_train_config_file_takes_new_and_old_names(tiny_encoder_dir, tmp_path, capsys):
    new = tmp_path / "new.yaml"
    new.write_text(f"encoder: {tiny_encoder_dir}\npush-to-hub: true\nhub_model_id: me/new\nquiet: true\n")
    args, err = parse(["--config", new], capsys)
    assert (args.push_to_hub, args.hub_model_id, args.quiet, err) == (True, "me/new", True, "")
    old = tmp_path / "old.yaml"
    old.write_text(f"encoder: {tiny_encoder_dir}\npush_to_hub: me/old\n")
    args, err = parse(["--config", old], capsys)
    assert (args.push_to_hub, args.hub_model_id) == (True, "me/old")
    assert len(deprecations(err)) == 1 and "hub_model_id: REPO" in err


@pytest.mark.parametrize("argv, words", [
    (["--push-to-hub"], "--push-to-hub: name the repo to upload to with --hub-model-id"),
    (["--quiet", "--verbose"], "--quiet and --verbose"),
])
def test_train_refuses_incomplete_options(argv, words, tiny_encoder_dir, capsys):
    code, _, err = call("train", ["--encoder", tiny_encoder_dir, *argv], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {words}")


def test_resume_command_round_trips_the_new_names(tiny_encoder_dir, capsys):
    from thmm.checkpoints import resume_args
    from thmm.run_folder import resume_command

    args, _ = parse(["--encoder", tiny_encoder_dir, "--push-to-hub", "me/thmm", "--quiet", "--no-lexical-fusion"],
                    capsys)
    command = resume_command(args)
    assert "--push-to-hub --hub-model-id me/thmm" in command and "--quiet" in command
    again, err = parse(shlex.split(command)[1:], capsys)
    assert (again.push_to_hub, again.hub_model_id, again.quiet, again.resume, err) == (True, "me/thmm", True, True, "")
    assert not {"hub_model_id", "push_to_hub", "hub_private", "quiet", "verbose"} & set(resume_args(args))


# ---- thmm-publish and thmm-stats: parsing (the work itself replaced) --------------------------------


@pytest.fixture
def publish_calls(monkeypatch):
    calls = []

    def fake_publish(out_dir, **kwargs):
        calls.append({"out_dir": out_dir, **kwargs})
        return {"out_dir": str(out_dir), "rows": {"train": 2}, "files": ["README.md"],
                **({"repo_id": kwargs["push_to_hub"], "commit_url": "url"} if kwargs["push_to_hub"] else {})}

    monkeypatch.setattr(publish_module, "publish", fake_publish)
    return calls


NEW_PUBLISH = ["--output-dir", "OUT", "--dataset", "DATA", "--dataset-config", "wipo_alpha", "--push-to-hub",
               "--hub-model-id", "me/data", "--hub-private"]
OLD_PUBLISH = {  # old spelling -> (its argv, the new spelling its warning names)
    "--out": (["--out", "OUT"], "--output-dir"),
    "--data-dir": (["--data-dir", "DATA"], "--dataset"),
    "--config NAME": (["--config", "wipo_alpha"], "--dataset-config NAME"),
    "--private": (["--private"], "--hub-private"),
    "--push-to-hub REPO": (["--push-to-hub", "me/data"], "--push-to-hub --hub-model-id REPO"),
}


def test_publish_new_names(publish_calls, capsys):
    code, out, err = call("publish", NEW_PUBLISH, capsys)
    assert (code, err) == (0, "")
    (kwargs,) = publish_calls
    assert kwargs["out_dir"] == "OUT" and kwargs["data_dir"] == "DATA" and kwargs["config_name"] == "wipo_alpha"
    assert kwargs["push_to_hub"] == "me/data" and kwargs["private"] is True and kwargs["option"] == "--output-dir"
    assert out == "wrote 1 files (train 2 rows) to OUT; pushed to me/data: url\n"  # no JSON unless --verbose


@pytest.mark.parametrize("old", list(OLD_PUBLISH))
def test_publish_old_spellings_warn_once(old, publish_calls, capsys):
    argv, new = OLD_PUBLISH[old]
    base = {"--out": [], "--push-to-hub REPO": ["--output-dir", "OUT"]}.get(old, ["--output-dir", "OUT"])
    code, _, err = call("publish", [*base, *argv, *argv], capsys)  # given twice: still one warning
    assert code == 0 and deprecations(err) == [f"warning: {old} is deprecated and goes in the next release; use {new}"]
    (kwargs,) = publish_calls
    got = {"--out": kwargs["out_dir"], "--data-dir": kwargs["data_dir"], "--config NAME": kwargs["config_name"],
           "--private": kwargs["private"], "--push-to-hub REPO": kwargs["push_to_hub"]}[old]
    assert got == {"--out": "OUT", "--data-dir": "DATA", "--config NAME": "wipo_alpha", "--private": True,
                   "--push-to-hub REPO": "me/data"}[old]
    assert kwargs["option"] == ("--out" if old == "--out" else "--output-dir")  # errors name what was typed


@pytest.mark.parametrize("argv, words", [
    ([], "error: the following arguments are required: --output-dir"),
    (["--output-dir", "OUT", "--push-to-hub"], "error: --push-to-hub: name the repo to upload to with --hub-model-id"),
    (["--output-dir", "OUT", "--config", "run.yaml"], "error: --config run.yaml: thmm-publish takes no run file; "
                                                      "the dataset config is --dataset-config"),
    (["--output-dir", "OUT", "--quiet", "--verbose"], "error: --quiet and --verbose: choose one"),
])
def test_publish_refusals(argv, words, publish_calls, capsys):
    code, _, err = call("publish", argv, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(words) and not publish_calls


def test_publish_quiet_and_verbose(publish_calls, capsys):
    assert call("publish", ["--output-dir", "OUT", "--quiet"], capsys) == (0, "", "")
    code, out, _ = call("publish", ["--output-dir", "OUT", "--verbose"], capsys)
    assert code == 0 and json.loads(out[: out.rindex("}") + 1])["out_dir"] == "OUT"


def test_stats_new_and_old_spellings(tmp_path, capsys):
    code, out, err = call("stats", ["--dataset", QUICKSTART_DATA, "--output-dir", tmp_path / "new", "--dataset-config",
                                    "uspto70k", "--cache-dir", tmp_path / "cache"], capsys)
    assert (code, err) == (0, "") and f"wrote stats.json, stats.md, label_distribution.png to {tmp_path / 'new'}" in out
    code, out, err = call("stats", ["--data-dir", QUICKSTART_DATA, "--out", tmp_path / "old", "--config", "uspto70k",
                                    "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 0 and (tmp_path / "old" / "stats.json").is_file()
    assert sorted(deprecations(err)) == [
        "warning: --config NAME is deprecated and goes in the next release; use --dataset-config NAME",
        "warning: --data-dir is deprecated and goes in the next release; use --dataset",
        "warning: --out is deprecated and goes in the next release; use --output-dir"]
    code, out, err = call("stats", ["--dataset", QUICKSTART_DATA, "--output-dir", tmp_path / "quiet", "--quiet",
                                    "--cache-dir", tmp_path / "cache"], capsys)
    assert (code, out, err) == (0, "", "") and (tmp_path / "quiet" / "stats.md").is_file()


def test_stats_error_names_the_spelling_used(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file\n")
    for option in ("--output-dir", "--out"):
        code, _, err = call("stats", ["--dataset", QUICKSTART_DATA, option, tmp_path / "mine"], capsys)
        assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {option} {tmp_path / 'mine'}: ")


# ---- thmm-predict ------------------------------------------------------------------------------------


def test_predict_output_dir_writes_predictions_jsonl(saved_model_dir, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("shoe sole with a heel\nradio network\n")
    common = ["--model", saved_model_dir, "--input", tmp_path / "in.txt", "--top-k", "1"]
    code, out, err = call("predict", [*common, "--output-dir", tmp_path / "preds" / "new"], capsys)
    assert (code, out) == (0, "")
    records = [json.loads(line) for line in (tmp_path / "preds" / "new" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [1, 2]
    assert call("predict", [*common, "--output", tmp_path / "one.jsonl"], capsys)[0] == 0
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "preds" / "new" / "predictions.jsonl").read_text()
    code, _, err = call("predict", [*common, "--output", tmp_path / "x.jsonl", "--output-dir", tmp_path], capsys)
    assert code == 2 and "not allowed with argument" in err
    (tmp_path / "file").write_text("")
    code, _, err = call("predict", [*common, "--output-dir", tmp_path / "file"], capsys)
    assert code == 2 and err.strip() == f"error: --output-dir {tmp_path / 'file'}: is a file, not a folder"


def test_predict_full_precision_passes_decimals_only_where_label_records_takes_it():
    from thmm.cli.predict import score_rounding

    class New:
        def label_records(self, probabilities, decimals=4):
            pass

    class Old:
        def label_records(self, probabilities):
            pass

    assert score_rounding(New(), True) == {"decimals": None} and score_rounding(New(), False) == {}
    assert score_rounding(Old(), True) == {} and score_rounding(Old(), False) == {}


# ---- quiet by default -------------------------------------------------------------------------------


def training_args(**kw):
    return SimpleNamespace(**{"quiet": False, "verbose": False, **kw})


def test_logging_levels_by_option():
    from thmm.trainer import configure_logging

    configure_logging(training_args())
    assert logging.getLogger("thmm.train").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("dataset_script.builder").getEffectiveLevel() == logging.WARNING  # summed up
    assert logging.getLogger("thmm.data").getEffectiveLevel() == logging.WARNING
    import datasets
    import transformers

    assert not transformers.utils.logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    configure_logging(training_args(quiet=True))
    assert logging.getLogger("thmm.train").getEffectiveLevel() == logging.WARNING
    configure_logging(training_args(verbose=True))
    assert logging.getLogger("thmm.lexical").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("thmm.data").getEffectiveLevel() == logging.DEBUG
    assert transformers.utils.logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    configure_logging(training_args())


@pytest.mark.parametrize("options, tty, shown", [
    ({}, True, True), ({}, False, False), ({"quiet": True}, True, False), ({"verbose": True}, False, True)])
def test_epoch_bar_rule(options, tty, shown, monkeypatch):
    from thmm import trainer

    monkeypatch.setattr(trainer.sys.stderr, "isatty", lambda: tty, raising=False)
    accelerator = SimpleNamespace(is_local_main_process=True)
    assert trainer.show_epoch_bar(training_args(**options), accelerator) is shown
    assert not trainer.show_epoch_bar(training_args(**options), SimpleNamespace(is_local_main_process=False))


def test_kept_epoch_line(caplog):
    from thmm.trainer import Trainer

    run = SimpleNamespace(
        args=SimpleNamespace(selection_metric="macro_f1_tuned", selection_only=False, patience=2),
        state={"epoch": 5, "selection": {"best_epoch": 3, "best": 0.41234, "stop": True}})
    with caplog.at_level(logging.INFO, logger="thmm.train"):
        Trainer._log_kept_epoch(run)
    assert caplog.messages == ["kept epoch 3 of 5 (dev macro_f1_tuned 0.4123); stopped early, no better "
                               "macro_f1_tuned or dev AUPRC for 2 epochs"]


def test_lexical_fusion_logs_one_line(tiny_tokenizer, small_taxonomy, caplog):
    """One info line (weight, its CV score, the heads' alone, the sample); each weight's score is a debug line."""
    from thmm import lexical

    leaves = [c for c in small_taxonomy.nodes if small_taxonomy.level(c) == 3]
    titles = [f"{w} device number {i}" for i, w in enumerate(["radio", "shoe", "ink", "battery"] * 10)]
    splits = {"train": {"title": titles, "abstract": [""] * 40},
              "validation": {"title": titles[:12], "abstract": [""] * 12}}
    references = {"train": [[leaves[i % 4]] for i in range(40)], "validation": [[leaves[i % 4]] for i in range(12)]}
    import numpy as np

    with caplog.at_level(logging.DEBUG, logger="thmm.lexical"):
        fusion = lexical.fit_fusion(splits, tiny_tokenizer, 16, small_taxonomy, references,
                                    {"validation": np.zeros((12, len(small_taxonomy)))}, scheme="cpc",
                                    objective="f1_mean", granularity="level", min_support=20, max_train_documents=25)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and info[0].startswith(f"lexical fusion: weight {fusion.choice.describe()} chosen on dev")
    assert "fitted on a random 25 of the 40 training documents" in info[0]
    # a debug line per weight tried for all nodes, then one per level's own choice
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == len(fusion.choice.cv_dev) + small_taxonomy.num_levels
