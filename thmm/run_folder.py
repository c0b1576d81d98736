# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""The folder a training run owns (``--output-dir``), and what it holds at each point of a run.

A run writes :data:`thmm.outputs.OUTPUT_MARKER` into its folder before anything else; a folder is
replaced only when it holds that marker, and then only the entries a run writes (:data:`RUN_ENTRIES`)
are removed, so a user's own files inside it stay. The model appears whole or not at all: the best
epoch's weights live in ``checkpoints/best_model`` (marked unfinished, see
``modeling_thmm.UNFINISHED_MARKER``) until thresholds, fusion, card and reports are done in
``.model.partial``, which is then renamed to ``model``. So ``model/`` exists exactly when the run
finished, and an interrupted run leaves checkpoints to resume from and no model."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import weakref
from pathlib import Path

from modeling_thmm import UNFINISHED_MARKER

from .arguments import QUICKSTART_DEFAULTS, ConfigError, TrainingArguments, quickstart_data
from .checkpoints import CHECKPOINT_DIR, list_checkpoints
from .outputs import OUTPUT_MARKER, check_output_dir, claim_output_dir, listed, read_marker, record_outputs

try:
    import fcntl
except ImportError:  # Windows: a run does not hold its folder there (RunFolder.lock)
    fcntl = None

MODEL_DIR = "model"
PARTIAL_MODEL_DIR = ".model.partial"
BEST_MODEL_DIR = f"{CHECKPOINT_DIR}/best_model"
SUMMARY_FILE = "metrics/summary.json"
# The entries a run writes in its folder. The marker lists what it wrote there file by file (and each
# checkpoint as a folder written whole), as it writes it; "replace the folder" removes those and nothing
# else, so a user's file inside metrics/ or logs/ stays.
RUN_ENTRIES = (MODEL_DIR, PARTIAL_MODEL_DIR, CHECKPOINT_DIR, "metrics", "logs", "test_predictions.jsonl")
COMMAND = "thmm-train"
# Written by a run but kept when it is replaced: the default feature cache of ``--output-dir .`` (content-keyed).
KEPT_ENTRIES = (".features_cache",)


def resume_command(args: TrainingArguments) -> str:
    """The ``thmm-train`` command line that continues this run: its non-default options and ``--resume``."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    if args.quickstart:
        defaults |= QUICKSTART_DEFAULTS | {"dataset": args.dataset, "label_titles": args.label_titles,
                                           "encoder": args.encoder, "quickstart": False}
        if args.dataset != quickstart_data():
            defaults["dataset"] = None
    words = ["thmm-train"] + (["--quickstart"] if args.quickstart else [])
    skipped = {"resume", "overwrite_output_dir", "debug_kill_at_step", "quickstart"}
    for field in dataclasses.fields(TrainingArguments):
        value = getattr(args, field.name)
        if field.name in skipped or value == defaults[field.name]:
            continue
        option = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else "--no-" + field.name.replace("_", "-"))
        else:
            words += [option, str(value)]
    return shlex.join([*words, "--resume"])


class RunFolder:
    """``--output-dir`` of one run: its entries, whether it finished, and the rules for reusing it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def model(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def partial_model(self) -> Path:
        return self.path / PARTIAL_MODEL_DIR

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL_DIR

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    def finished(self) -> bool:
        """Whether the folder holds a finished run's model (a model card, and not marked unfinished;
        a run before the atomic save also left ``model/`` while training, without a card)."""
        return ((self.model / "config.json").is_file() and (self.model / "README.md").is_file()
                and not (self.model / UNFINISHED_MARKER).exists())

    def is_marked(self) -> bool:
        return read_marker(self.path) is not None

    def foreign_entries(self) -> list[str]:
        """Entries no run writes (a user's own files), sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name not in RUN_ENTRIES + KEPT_ENTRIES + (OUTPUT_MARKER,))

    def is_legacy_run(self) -> bool:
        """A run folder from before the marker: run entries only, with checkpoints (``--resume`` takes it)."""
        return (self.path.is_dir() and not self.is_marked() and not self.foreign_entries()
                and bool(list_checkpoints(self.path)))

    def check(self, args: TrainingArguments) -> None:
        """Refuse, before any work, a folder this run must not write into (see the module docstring and
        :func:`thmm.outputs.check_output_dir`); writes nothing."""
        option = f"--output-dir {self.path}"
        if not (args.resume and self.is_legacy_run()):
            check_output_dir(self.path, "--output-dir", COMMAND)
        if self.in_use():
            raise ConfigError(f"{option}: another thmm-train is writing into this folder now; wait for it to end, "
                              "or choose another folder")
        if not args.resume and (others := self.user_files_in_model()):
            raise ConfigError(f"{option}: {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} was not written "
                              f"by thmm, and the new model must take the place of {MODEL_DIR}/: move it away")
        if args.overwrite_output_dir or (args.resume and self.finished()):
            return
        if list_checkpoints(self.path) and not args.resume:
            raise ConfigError(f"{option} already has checkpoints: pass --resume to continue or "
                              "--overwrite-output-dir to start over")
        if self.finished():
            raise ConfigError(f"{option} already holds a finished run ({self.model}): pass "
                              "--overwrite-output-dir to replace it")

    def claim(self, fresh: bool) -> None:
        """Hold the folder (:meth:`lock`) and mark it as this run's; for a ``fresh`` run (not resumed), first
        remove what an earlier run wrote there (what the marker lists; a user's files stay)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        if self.is_legacy_run():  # a run from before the marker: its entries, whole, are this command's
            self.path.joinpath(OUTPUT_MARKER).write_text(json.dumps({"command": COMMAND}), encoding="utf-8")
            record_outputs(self.path, [name for name in RUN_ENTRIES if (self.path / name).exists()])
        claim_output_dir(self.path, "--output-dir", COMMAND, replace=fresh)
        self.logs_before = self.snapshot(self.path / "logs")  # the trackers' files come during the run

    def lock(self) -> None:
        """Hold the folder for this process (an advisory lock on the folder itself, released when the
        process ends, however it ends): a second run into the same folder is refused instead of mixing its
        checkpoints, model and reports with this one's."""
        if getattr(self, "_lock", None) is not None or fcntl is None:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"--output-dir {self.path}: another thmm-train is writing into this folder now; "
                              "wait for it to end, or choose another folder") from None
        self._lock = fd
        self._unlock = weakref.finalize(self, os.close, fd)  # closing the folder's descriptor frees it

    def unlock(self) -> None:
        """Free the folder for another run (:meth:`lock`)."""
        if getattr(self, "_lock", None) is not None:
            self._unlock()
            self._lock = None

    def in_use(self) -> bool:
        """Whether another process holds the folder (:meth:`lock`); this one does not take it."""
        if not self.path.is_dir() or getattr(self, "_lock", None) is not None or fcntl is None:
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken here
        return False

    def snapshot(self, *paths: Path) -> dict[str, int]:
        """The files under ``paths`` (files or folders) and their modification times, relative names as
        keys: what was there before the run writes (see :meth:`record`)."""
        found = {}
        for path in paths:
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
            for file in files:
                found[file.relative_to(self.path).as_posix()] = file.stat().st_mtime_ns
        return found

    def record(self, before: dict[str, int], *paths: Path, names: str = "*") -> None:
        """List in the marker what the run just wrote under ``paths``: the files (matching ``names``) that
        are new or changed since ``before`` (:meth:`snapshot`, taken just before the run wrote them), so
        that a user's files beside them stay theirs."""
        written = [name for name, mtime in self.snapshot(*paths).items()
                   if before.get(name) != mtime and Path(name).match(names)]
        if written:
            record_outputs(self.path, written)

    def user_files_in_model(self) -> list[str]:
        """Entries in ``model/`` (files, folders, links) that the marker does not list: they would stay when
        the folder is replaced, and a new model cannot take the place of a folder that still holds any."""
        marker = read_marker(self.path)
        if marker is None or not self.model.is_dir():
            return []
        written, others = marker["written"], []
        for root, folders, files in os.walk(self.model):
            for name in folders + files:
                entry = Path(root, name)
                rel = entry.relative_to(self.path).as_posix()
                if entry.is_dir() and not entry.is_symlink():  # a folder of the run's holds a file it listed
                    ours = any(listed(w.rstrip("/"), [rel]) and w.rstrip("/") != rel for w in written)
                else:
                    ours = listed(rel, written)
                if not ours:
                    others.append(rel)
        return sorted(others)

    @staticmethod
    def make_readable(folder: Path) -> None:
        """Files as the user's umask makes them (safetensors writes its file 0600): a model to share is 0644."""
        umask = os.umask(0)
        os.umask(umask)
        for file in folder.iterdir():
            if file.is_file():
                file.chmod(0o666 & ~umask)

    def mark_unfinished(self, folder: Path, reason: str, resume: str) -> None:
        """Mark a model folder as not the run's result (``from_pretrained`` refuses it)."""
        (folder / UNFINISHED_MARKER).write_text(json.dumps({"reason": reason, "resume": resume}, indent=1),
                                                encoding="utf-8")
