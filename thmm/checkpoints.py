# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Resume checkpoints: Accelerate's ``save_state`` plus a JSON trainer state written last (and
atomically), so that a checkpoint without it is incomplete and ignored."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from .arguments import TrainingArguments

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"

# Arguments that cannot change the weights or the scores of a run; every other one must match on resume.
RESUME_EXEMPT = frozenset({
    "output_dir", "resume", "overwrite_output_dir", "keep_checkpoints", "checkpoint_every", "save_total_limit",
    "logging_steps", "report_to", "num_workers", "push_to_hub", "hub_private", "features_cache_dir",
    "eval_batch_size", "debug_kill_at_step", "quickstart",
})


def resume_args(args: TrainingArguments) -> dict:
    """The arguments a resumed run must share with the checkpoint's."""
    return {k: v for k, v in dataclasses.asdict(args).items() if k not in RESUME_EXEMPT}


def resume_arg_differences(saved: dict, current: dict) -> dict:
    """``{key: (checkpoint value, current value)}`` for the resume-relevant arguments that differ.

    A key an older checkpoint lacks was added as an option later, so that run used its default.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    saved = {k: saved.get(k, defaults[k]) for k in current}
    return {k: (saved[k], v) for k, v in current.items() if saved[k] != v}


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINT_DIR
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE).exists()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(accelerator, output_dir: Path, state: dict, limit: int) -> Path:
    path = Path(output_dir) / CHECKPOINT_DIR / f"step_{state['global_step']:08d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        write_json_atomic(path / TRAINER_STATE, state)
        for old in list_checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def load_trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def delete_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(Path(output_dir) / CHECKPOINT_DIR, ignore_errors=True)
