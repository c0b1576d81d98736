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
import shlex
import shutil
from pathlib import Path

from .arguments import QUICKSTART_DEFAULTS, ConfigError, TrainingArguments, quickstart_data
from .checkpoints import CHECKPOINT_DIR, list_checkpoints

try:  # TEMPORARY until thmm.outputs and modeling_thmm.UNFINISHED_MARKER land
    from .outputs import OUTPUT_MARKER
except ImportError:
    OUTPUT_MARKER = ".thmm-output.json"
try:
    from modeling_thmm import UNFINISHED_MARKER
except ImportError:
    UNFINISHED_MARKER = "thmm_unfinished.json"


def write_output_marker(path, command):
    (Path(path) / OUTPUT_MARKER).write_text(json.dumps({"command": command}), encoding="utf-8")

MODEL_DIR = "model"
PARTIAL_MODEL_DIR = ".model.partial"
BEST_MODEL_DIR = f"{CHECKPOINT_DIR}/best_model"
SUMMARY_FILE = "metrics/summary.json"
# Every entry a run writes in its folder; "replace the folder" removes these and nothing else.
RUN_ENTRIES = (MODEL_DIR, PARTIAL_MODEL_DIR, CHECKPOINT_DIR, "metrics", "logs", "test_predictions.jsonl", OUTPUT_MARKER)
# Written by a run but kept when it is replaced: the default feature cache of ``--output-dir .`` (content-keyed).
KEPT_ENTRIES = (".features_cache",)
_SHOWN_ENTRIES = 5


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
        return (self.path / OUTPUT_MARKER).is_file()

    def foreign_entries(self) -> list[str]:
        """Entries no run writes (a user's own files), sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name not in RUN_ENTRIES + KEPT_ENTRIES)

    def check(self, args: TrainingArguments) -> None:
        """Refuse, before any work, a folder this run must not write into; see the module docstring."""
        option = f"--output-dir {self.path}"
        if not str(args.output_dir).strip():
            raise ConfigError("--output-dir: must name a folder (got an empty string)")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{option}: not a directory")
        entries = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        legacy_run = args.resume and entries and not self.foreign_entries() and bool(list_checkpoints(self.path))
        if entries and not self.is_marked() and not legacy_run:
            shown = ", ".join(entries[:_SHOWN_ENTRIES]) + (f" and {len(entries) - _SHOWN_ENTRIES} more"
                                                          if len(entries) > _SHOWN_ENTRIES else "")
            raise ConfigError(f"{option}: the folder holds files thmm-train did not write ({shown}; no "
                              f"{OUTPUT_MARKER}): nothing there is replaced; choose a new or empty folder")
        has_checkpoints = bool(list_checkpoints(self.path))
        if args.overwrite_output_dir or (args.resume and self.finished()):
            return
        if has_checkpoints and not args.resume:
            raise ConfigError(f"{option} already has checkpoints: pass --resume to continue or "
                              "--overwrite-output-dir to start over")
        if self.finished():
            raise ConfigError(f"{option} already holds a finished run ({self.model}): pass "
                              "--overwrite-output-dir to replace it")

    def claim(self, fresh: bool, command: str = "thmm-train") -> None:
        """Write the marker; for a ``fresh`` run (not resumed), first remove what an earlier run wrote
        (only :data:`RUN_ENTRIES`: the folder holds the marker, or is empty, by :meth:`check`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            for name in RUN_ENTRIES:
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.exists() or entry.is_symlink():
                    entry.unlink()
        write_output_marker(self.path, command)

    def mark_unfinished(self, folder: Path, reason: str, resume: str) -> None:
        """Mark a model folder as not the run's result (``from_pretrained`` refuses it)."""
        (folder / UNFINISHED_MARKER).write_text(json.dumps({"reason": reason, "resume": resume}, indent=1),
                                                encoding="utf-8")
