"""The run folder in a user's hands: a replaced run takes only what it wrote, file by file (a user's
notes inside ``metrics/``, ``logs/`` or ``checkpoints/`` stay); a forged marker cannot name the folder
itself; two runs never share a folder; a failed write names its path, whichever library wrote."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil

import pytest

from conftest import QUICKSTART_DATA
from thmm.cli import train as train_cli
from thmm.run_folder import RunFolder

SMALL = ["--dataset", str(QUICKSTART_DATA), "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1",
         "--batch-size", "8", "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none",
         "--no-lexical-fusion", "--keep-checkpoints"]


def argv(encoder, out, *extra):
    return [*SMALL, "--encoder", str(encoder), "--output-dir", str(out), *extra]


@pytest.mark.slow
def test_a_users_file_inside_a_checkpoint_stays_when_the_checkpoint_goes(tmp_path):
    """A checkpoint folder lists what the package wrote in it: removing the checkpoint (rotation, the end of a
    run, a replaced run) leaves a file a user put inside, and the folder with it."""
    from thmm.checkpoints import delete_checkpoints
    from thmm.outputs import remove_written_folder, unlisted_entries, write_written_list

    root = tmp_path / "checkpoints"
    for name in ("step_00000001", "best_model"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("weights")
        (folder / "shards").mkdir()
        (folder / "shards" / "0.bin").write_text("shard")
        write_written_list(folder, also=["trainer_state.json"])
        (folder / "trainer_state.json").write_text("{}")
        (folder / "my_notes.txt").write_text("mine")
        assert unlisted_entries(folder) == {"my_notes.txt"}
        write_written_list(folder, leave=unlisted_entries(folder))  # a later save over it: still not the run's
        assert unlisted_entries(folder) == {"my_notes.txt"}
    delete_checkpoints(tmp_path)
    for name in ("step_00000001", "best_model"):
        assert unlisted_entries(root / name) == {"my_notes.txt"}  # still theirs if a run writes there again
        assert sorted(p.name for p in (root / name).iterdir()) == [".thmm-written.json", "my_notes.txt"]
    legacy = root / "step_00000002"  # written before the list, or interrupted before it: goes whole
    legacy.mkdir()
    (legacy / "optimizer.bin").write_text("state")
    remove_written_folder(legacy)
    assert not legacy.exists()
    (root / "step_00000001" / "my_notes.txt").unlink()
    write_written_list(root / "step_00000001")
    remove_written_folder(root / "step_00000001")
    assert not (root / "step_00000001").exists()


def test_a_replaced_run_takes_only_the_files_it_wrote(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--keep-checkpoints")) == 0
    written = json.loads((out / ".thmm-output.json").read_text())["written"]
    assert "model/config.json" in written and "metrics/summary.json" in written
    assert not {"model", "metrics", "checkpoints", "logs"} & set(written)  # files, not whole folders
    assert any(name.startswith("checkpoints/step_") and name.endswith("/") for name in written)
    step = sorted((out / "checkpoints").glob("step_*"))[-1]
    (step / "notes.txt").write_text("mine")  # inside a folder the run wrote whole
    for name in ("logs/notes.txt", "checkpoints/README.txt", "metrics/my_analysis.md"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("mine")
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--overwrite-output-dir", "--seed", "7")) == 0
    written = json.loads((out / ".thmm-output.json").read_text())["written"]
    for name in ("logs/notes.txt", "checkpoints/README.txt", "metrics/my_analysis.md"):
        assert (out / name).read_text() == "mine", name
        assert name not in written, name  # written just before the run, and still not the run's
    # the old checkpoint went, the note stayed; the new run's checkpoint of that step (or none) lists it not
    assert (step / "notes.txt").read_text() == "mine" and "notes.txt" not in (step / ".thmm-written.json").read_text()
    assert (out / "model" / "config.json").is_file()

    for mine in ("notes.txt", "drafts"):  # the new model must take the place of model/
        (out / "model" / mine).mkdir() if mine == "drafts" else (out / "model" / mine).write_text("mine")
        capsys.readouterr()
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        assert train_cli.cli(argv(tiny_encoder_dir, out, "--overwrite-output-dir")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: --output-dir {out}: model/{mine} was not written by thmm, and the new model must "
                       "take the place of model/: move it away"]
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
        shutil.rmtree(out / "model" / mine) if mine == "drafts" else (out / "model" / mine).unlink()


@pytest.mark.slow
def test_a_run_from_before_the_marker_resumes_and_stays_this_commands(tiny_encoder_dir, tmp_path):
    out = tmp_path / "run"
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--epochs", "1")) == 0
    shutil.rmtree(out / "model")
    for name in (".thmm-output.json", "test_predictions.jsonl"):
        (out / name).unlink()
    shutil.rmtree(out / "metrics")  # what a run of an older version left when stopped: checkpoints only
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--epochs", "1", "--resume")) == 0
    assert json.loads((out / ".thmm-output.json").read_text())["command"] == "thmm-train"
    assert (out / "model" / "config.json").is_file()
    assert train_cli.cli(argv(tiny_encoder_dir, out, "--epochs", "1", "--overwrite-output-dir")) == 0


def test_a_marker_cannot_name_the_folder_itself_or_what_lies_above(tmp_path):
    from thmm.outputs import claim_output_dir

    folder, outside = tmp_path / "forged", tmp_path / "outside.txt"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    outside.write_text("precious")
    (folder / ".thmm-output.json").write_text(json.dumps(
        {"command": "thmm-stats", "written": [".", "", "./", "..", "../outside.txt", "/etc/hostname", "a/../.."]}))
    claim_output_dir(folder, "--output-dir", "thmm-stats", replace=True)
    assert (folder / "thesis.tex").read_text() == "precious" and outside.read_text() == "precious"
    assert json.loads((folder / ".thmm-output.json").read_text())["written"] == []


def test_a_folder_another_run_holds_is_refused(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunFolder(out)
    holder.lock()  # as a run in progress holds it, from this process or another
    try:
        assert train_cli.cli(argv(tiny_encoder_dir, out)) == 2
        assert capsys.readouterr().err.strip() == (f"error: --output-dir {out}: another thmm-train is writing into "
                                                   "this folder now; wait for it to end, or choose another folder")
        assert not any(out.iterdir())
    finally:
        holder.unlock()
    assert not RunFolder(out).in_use()


def test_checkpoints_are_removed_but_a_users_file_beside_them(tmp_path):
    from thmm.checkpoints import delete_checkpoints, list_checkpoints

    root = tmp_path / "checkpoints"
    for name in ("step_00000001", "step_00000002", "best_model", "step_mine", "step_00000002.bak"):
        (root / name).mkdir(parents=True)
        (root / name / "trainer_state.json").write_text("{}")
    (root / "README.txt").write_text("mine")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    delete_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", "step_00000002.bak", "step_mine"]
    for name in ("README.txt", "step_00000002.bak", "step_mine"):
        shutil.rmtree(root / name) if (root / name).is_dir() else (root / name).unlink()
    (root / "step_00000003").mkdir()
    delete_checkpoints(tmp_path)
    assert not root.exists()


def test_a_failed_checkpoint_write_names_the_path_whichever_library_wrote(tmp_path, monkeypatch):
    from thmm import checkpoints

    target = tmp_path / "checkpoints" / "step_00000001"
    monkeypatch.setattr(checkpoints, "_write_problem", lambda path: "No space left on device")
    with pytest.raises(OSError, match=f"^{target}: cannot write \\(No space left on device\\)"):
        with checkpoints.writing(target):
            raise RuntimeError("basic_ios::clear: iostream error")  # torch's C++ writer on a full disk
    monkeypatch.setattr(checkpoints, "_write_problem", lambda path: None)
    with pytest.raises(RuntimeError, match="^a bug$"):  # the disk is fine: not an I/O failure
        with checkpoints.writing(target):
            raise RuntimeError("a bug")
    with pytest.raises(OSError, match=f"^{target}: cannot write"):  # shutil.copy names its source on ENOSPC
        with checkpoints.writing(target):
            raise OSError(errno.ENOSPC, "No space left on device", "/elsewhere/taxonomy_thmm.py")


def test_a_full_disk_under_a_staged_output_names_the_option(tmp_path):
    from thmm.outputs import staged_output_dir

    out = tmp_path / "stats"
    with pytest.raises(OSError, match=f"^\\[Errno 28\\] --output-dir {out}: could not be written \\(No space left"):
        with staged_output_dir(out, "--output-dir", "thmm-stats") as staging:
            (staging / "part").write_text("x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor its staging folder


def test_run_files_and_the_command_line(tmp_path, monkeypatch):
    """A value may start with "-"; the command line's --verbose wins over a file's quiet; "~" is expanded
    in every path option, from a file too (no shell expands it there)."""
    from thmm.arguments import parse_args

    monkeypatch.setenv("HOME", str(tmp_path))
    run = tmp_path / "run.yaml"
    run.write_text("output_dir: -odd\nquiet: true\nfeatures_cache_dir: ~/cache\n")
    args = parse_args(["--config", str(run), "--verbose"])
    assert args.output_dir == "-odd" and args.verbose and not args.quiet
    assert args.features_cache_dir == str(tmp_path / "cache")
    assert parse_args(["--output-dir=~/runs/x"]).output_dir == str(tmp_path / "runs" / "x")


def test_a_link_to_no_folder_is_named_as_such(tiny_encoder_dir, tmp_path, capsys):
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "nowhere")
    assert train_cli.cli(argv(tiny_encoder_dir, link)) == 2
    assert capsys.readouterr().err.strip() == (f"error: --output-dir {link}: a link to {tmp_path / 'nowhere'}, which "
                                               "does not exist; create that folder, or choose another")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_killed_commands_work_folder_is_removed_by_the_next_one(tmp_path):
    """A staging or parts folder that a kill -9 left (its process gone) goes when the next command makes
    one; a running process's, another machine's and a user's look-alike stay."""
    import socket
    import subprocess
    import sys

    from thmm.outputs import work_folder

    host = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    names = {"stale": f".thmm-staging-out-{host}-{gone}-abc", "running": f".thmm-staging-out-{host}-{os.getpid()}-abc",
             "elsewhere": f".thmm-staging-out-otherhost-{gone}-abc", "user": ".thmm-staging-out-notes"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "part").write_text("x")
    made = work_folder(tmp_path, ".thmm-staging-out-")
    assert made.is_dir() and made.name.startswith(f".thmm-staging-out-{host}-{os.getpid()}-")
    left = {p.name for p in tmp_path.iterdir()} - {made.name}
    assert left == {names["running"], names["elsewhere"], names["user"]}
