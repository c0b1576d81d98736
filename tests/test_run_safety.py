"""What a training run may touch, and what it leaves when it stops at any point: nothing it did not
write is deleted, and ``OUTPUT/model`` is either absent or complete (and ``--resume`` then finishes
the run with the scores of an uninterrupted one)."""

from __future__ import annotations

import json

import pytest

from conftest import QUICKSTART_DATA
from thmm.cli import train as train_cli
from thmm.run_folder import RunFolder
from thmm.trainer import DEBUG_KILL_AT

pytestmark = pytest.mark.slow  # end-to-end training runs; CI runs them too

SMALL = ["--dataset", str(QUICKSTART_DATA), "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1",
         "--batch-size", "8", "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none",
         "--learning-rate", "1e-3", "--checkpoint-every", "1"]
# Every point after which a run writes something that matters, in the order a run reaches them.
PHASES = ("best_model_saved", "lexical_fitted", "thresholds_tuned", "model_written", "model_renamed")


def argv(encoder, out, *extra):
    return [*SMALL, "--encoder", str(encoder), "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(small_run):
    """The summary of the same run, never stopped (the session's shared run: SMALL's arguments; its
    kept checkpoints do not change what it trains)."""
    return json.loads((small_run / "metrics" / "summary.json").read_text())


def assert_model_absent_or_complete(run: RunFolder) -> bool:
    """``model/`` holds every file of a finished model, or does not exist; whether it exists."""
    if not run.model.exists():
        return False
    for name in ("config.json", "model.safetensors", "README.md", "tokenizer_config.json", "modeling_thmm.py"):
        assert (run.model / name).is_file(), name
    assert run.finished() and run.summary.is_file()
    from modeling_thmm import THMMForHierarchicalClassification

    THMMForHierarchicalClassification.from_pretrained(run.model)  # loads: not marked unfinished
    return True


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_each_phase_leaves_no_partial_model_and_resumes(phase, tiny_encoder_dir, tmp_path, uninterrupted,
                                                                  train_in_child, capsys):
    out = tmp_path / "run"
    log = tmp_path / "killed.log"
    killed = train_in_child(argv(tiny_encoder_dir, out), log, env={DEBUG_KILL_AT: phase})  # SIGKILLs itself
    assert killed == -9, (killed, log.read_text()[-2000:])
    run = RunFolder(out)
    complete = assert_model_absent_or_complete(run)
    assert complete == (phase == "model_renamed"), phase
    if not complete:  # an unfinished best model is refused where a user would load it
        from modeling_thmm import THMMForHierarchicalClassification

        if run.best_model.exists():
            with pytest.raises(OSError, match="unfinished"):
                THMMForHierarchicalClassification.from_pretrained(run.best_model)

    assert train_cli.cli(argv(tiny_encoder_dir, out, "--resume")) == 0
    assert assert_model_absent_or_complete(run)
    if complete:
        assert "holds a finished run" in capsys.readouterr().err
    assert not (out / "checkpoints").exists() and not run.partial_model.exists()
    summary = json.loads(run.summary.read_text())
    for key in ("test", "dev", "thresholds", "best_epoch", "test_heads_only", "lexical_fusion"):
        if key == "lexical_fusion":
            assert summary[key]["weight"] == uninterrupted[key]["weight"]
        else:
            assert summary[key] == uninterrupted[key], key


def test_an_interrupted_run_says_how_to_resume(tiny_encoder_dir, tmp_path, monkeypatch, capsys):
    from thmm.trainer import Trainer

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "tune_thresholds", stop)
    out = tmp_path / "run"
    assert train_cli.cli(argv(tiny_encoder_dir, out)) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: interrupted; ") and "resume with: thmm-train" in err and "--resume" in err
    assert f"--output-dir {out}" in err and not (out / "model").exists()


def test_user_files_survive_every_training_command(tiny_encoder_dir, tmp_path, capsys):
    """A user's files next to and inside the output folder survive a run, a rerun with
    --overwrite-output-dir and the quickstart; a folder the package did not write is refused whole."""
    outer = tmp_path / "work"
    out = outer / "run"
    outer.mkdir()
    (outer / "notes.txt").write_text("mine")
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--no-lexical-fusion")) == 0
    (out / "my_notes.txt").write_text("mine too")
    (out / "my_data").mkdir()
    (out / "my_data" / "train.tsv").write_text("keep")
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--no-lexical-fusion", "--overwrite-output-dir")) == 0
    assert train_cli.cli(["--quickstart", *argv(tiny_encoder_dir, out, "--no-lexical-fusion")]) == 0
    assert (outer / "notes.txt").read_text() == "mine" and (out / "my_notes.txt").read_text() == "mine too"
    assert (out / "my_data" / "train.tsv").read_text() == "keep" and (out / "model" / "config.json").exists()

    capsys.readouterr()
    for target in (outer, out / "my_data"):  # user folders, with and without --overwrite-output-dir
        for extra in ([], ["--overwrite-output-dir"], ["--resume"]):
            before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
            assert train_cli.cli(argv(tiny_encoder_dir, target, *extra)) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "did not write" in err[0] and str(target) in err[0], err
            assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("output_dir", ["", " ", "."])
def test_the_current_folder_is_never_an_output_by_accident(output_dir, tiny_encoder_dir, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("mine")
    code = train_cli.cli(argv(tiny_encoder_dir, output_dir, "--overwrite-output-dir"))
    assert code == 2 and "--output-dir" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_user_files_survive_prediction(saved_model_dir, tmp_path, capsys):
    """thmm-predict writes only its output file: a user's file beside it stays, its own earlier output is
    replaced, and an existing file it did not write is refused and left as it was."""
    from thmm.cli import predict as predict_cli

    documents = tmp_path / "patents.txt"
    documents.write_text("Shoe sole with a heel\nWireless packet radio\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "predictions.jsonl"
    common = ["--model", str(saved_model_dir), "--input", str(documents)]
    assert predict_cli.cli([*common, "--output", str(out)]) == 0
    assert predict_cli.cli([*common, "--output", str(out), "--top-k", "1"]) == 0  # its own output: replaced
    assert len(out.read_text().splitlines()) == 2
    capsys.readouterr()
    for mine in (tmp_path / "notes.txt", documents):
        before = mine.read_bytes()
        assert predict_cli.cli([*common, "--output", str(mine)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a thmm-predict output" in err[0] and str(mine) in err[0]
        assert mine.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "patents.txt", "predictions.jsonl"]
