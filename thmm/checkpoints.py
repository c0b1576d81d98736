# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Resume checkpoints: Accelerate's ``save_state`` plus a JSON trainer state written last (and
atomically), so that a checkpoint without it is incomplete and ignored. Resume takes the latest
checkpoint whose files are whole (:func:`find_resume_checkpoint`); weights are written only when
finite (:func:`check_finite`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from modeling_thmm import read_safetensors_header

from .arguments import TrainingArguments
from .outputs import (is_under, read_marker, record_outputs, remove_written_folder, unlisted_entries,
                      write_written_list)

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
STATE_KEYS = ("epoch", "batches_done", "global_step", "args", "taxonomy_fingerprint")

# Arguments that cannot change the weights or the scores of a run, or act only after the last epoch
# (so that a resumed run ends as an uninterrupted one with them would); every other one must match.
RESUME_EXEMPT = frozenset({
    "threshold_granularity", "node_threshold_min_support", "threshold_frequency_bands", "lexical_fusion", "lexical_max_train_documents",
    "lexical_max_negatives",
    "small_dev_documents",
    "output_dir", "resume", "overwrite_output_dir", "keep_checkpoints", "checkpoint_every", "save_total_limit",
    "logging_steps", "report_to", "num_workers", "preprocessing_num_workers", "push_to_hub", "hub_model_id",
    "hub_private", "quiet", "verbose",
    "features_cache_dir", "eval_batch_size", "debug_kill_at_step", "quickstart", "allow_nonidentical_resume",
    "allow_split_overlap", "trust_remote_code",
})


class NonFiniteError(ValueError):
    """A NaN or infinite loss, gradient norm or weight: training stops, and nothing non-finite is written."""


def check_finite(named_tensors, what: str) -> None:
    """Refuse to write ``what`` when a floating-point tensor of ``named_tensors`` (name, tensor) pairs
    holds a NaN or an infinity (one device sync for all of them)."""
    named = [(name, t) for name, t in named_tensors if t.is_floating_point()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).tolist()
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if bad:
        raise NonFiniteError(f"refusing to write {what}: {len(bad)} tensors hold NaN or infinite values "
                             f"(e.g. {bad[:3]}); nothing was written")


@contextlib.contextmanager
def writing(path: Path):
    """Writing ``path`` (a checkpoint or a model folder): a failed write (a full disk, a lost mount)
    becomes one ``OSError`` naming the path, whichever library was writing."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as err:
        probe = None
        if isinstance(err, RuntimeError) and not isinstance(err, SafetensorError):
            probe = _write_problem(path)  # torch's C++ writer may say only "basic_ios::clear: iostream error"
            if probe is None and not any(word in str(err).lower() for word in TORCH_WRITE_FAILURES):
                raise  # not an I/O failure
        reason = probe or (getattr(err, "strerror", None) or str(err).strip() or type(err).__name__).splitlines()[0]
        where = getattr(err, "filename", None)
        if not where or not is_under(where, path):  # shutil.copy names its source when the target's disk is full
            where = path
        raise OSError(f"{where}: cannot write ({reason}); free some space or choose another --output-dir, then "
                      "resume with --resume") from None


# How torch's writers word a failed write ("PytorchStreamWriter failed writing file ...", a short write
# seen as "unexpected pos ... vs ...", the stream's "iostream error").
TORCH_WRITE_FAILURES = ("writ", "unexpected pos", "iostream error")


def _write_problem(path: Path) -> str | None:
    """Why a file cannot be written beside ``path`` now (a full disk, a read-only mount), or ``None``."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * (1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        return err.strerror or str(err)
    return None


def resume_args(args: TrainingArguments) -> dict:
    """The arguments a resumed run must share with the checkpoint's."""
    return {k: v for k, v in dataclasses.asdict(args).items() if k not in RESUME_EXEMPT}


# What runs did before these options existed (their defaults now differ): the best epoch and early
# stopping on dev macro-hF1 at --threshold alone.
BEFORE_OPTION = {"selection_metric": "macro_f1", "selection_only": True}


def resume_arg_differences(saved: dict, current: dict) -> dict:
    """``{key: (checkpoint value, current value)}`` for the resume-relevant arguments that differ.

    A key an older checkpoint lacks was added as an option later, so that run used its default, or,
    for an option whose default is not what runs did before it existed, the earlier behaviour.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)} | BEFORE_OPTION
    saved = {k: saved.get(k, defaults[k]) for k in current}
    return {k: (saved[k], v) for k, v in current.items() if saved[k] != v}


# Arguments that change how a batch is computed, not what is learned (the micro-batches, hence the
# dropout masks and the summation order): a run stopped for memory may be resumed with them changed
# under --allow-nonidentical-resume, and then differs from an uninterrupted run within dropout's noise.
NONIDENTICAL_RESUME_OK = frozenset({"low_cpu_memory"})


def check_resume_arguments(path: Path, saved: dict, args: TrainingArguments) -> None:
    """Refuse ``--resume`` from checkpoint ``path`` (its trainer state ``saved``) when an argument that
    changes the result differs, listing each difference (checkpoint -> now); with
    ``--allow-nonidentical-resume``, differences in :data:`NONIDENTICAL_RESUME_OK` only are logged."""
    from .arguments import ConfigError

    differing = resume_arg_differences(saved["args"], resume_args(args))
    if differing and args.allow_nonidentical_resume and differing.keys() <= NONIDENTICAL_RESUME_OK:
        logging.getLogger("thmm.train").warning(
            "--resume with changed %s (--allow-nonidentical-resume): the run will not repeat an uninterrupted one "
            "exactly", ", ".join(f"--{k.replace('_', '-')}" for k in sorted(differing)))
        return
    if differing:
        hint = ""
        if differing.keys() <= NONIDENTICAL_RESUME_OK:
            hint = " (add --allow-nonidentical-resume to resume with it changed)"
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(differing.items()))
        raise ConfigError(f"--resume: {path} was made with different arguments (checkpoint -> now): {listed}{hint}")


def check_resume_micro_batches(path: Path, saved: dict, micro_batches: int, args: TrainingArguments) -> None:
    """The micro-batches per step also follow the machine (a CPU, torch's huge pages), not only the
    arguments: a resume that would train in other micro-batches than its checkpoint's draws other dropout
    masks, so it is refused like a changed ``--low-cpu-memory`` (logged with ``--allow-nonidentical-resume``)."""
    before = saved.get("micro_batches")  # absent from checkpoints written before it was recorded
    if before is None or before == micro_batches:
        return
    what = (f"{path} trained in {before} micro-batches per step and this run would train in {micro_batches} (on a "
            "CPU they follow --low-cpu-memory and whether torch uses huge pages: THP_MEM_ALLOC_ENABLE=1 before torch "
            "starts, as thmm-train sets it)")
    if not args.allow_nonidentical_resume:
        from .arguments import ConfigError

        raise ConfigError(f"--resume: {what}; add --allow-nonidentical-resume to continue anyway")
    logging.getLogger("thmm.train").warning(
        "--resume: %s; continuing (--allow-nonidentical-resume): the run will not repeat an uninterrupted one exactly",
        what)


# A checkpoint folder's name, as save_checkpoint makes it: "step_" and the step, 8 digits or more. Other
# names under checkpoints/ (step_mine, a copy step_00000010.bak) are a user's, never read nor removed.
CHECKPOINT_NAME = re.compile(r"step_(\d{8,})")


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """The folders under ``checkpoints/`` named as :func:`save_checkpoint` names them, complete or not."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]


def checkpoint_step(folder: Path) -> int:
    """The optimizer step of a checkpoint folder (one of :func:`checkpoint_folders`), from its name."""
    return int(CHECKPOINT_NAME.fullmatch(folder.name)[1])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints (their trainer state written last), oldest first."""
    found = [p for p in checkpoint_folders(output_dir) if (p / TRAINER_STATE).exists()]
    return sorted(found, key=checkpoint_step)


def unfinished_checkpoints(output_dir: Path, newer_than: Path | None = None) -> list[Path]:
    """The checkpoint folders without their trainer state (a save that was interrupted, or a removed
    file), oldest first; only those after ``newer_than`` when given."""
    after = checkpoint_step(newer_than) if newer_than is not None else -1
    found = [p for p in checkpoint_folders(output_dir)
             if not (p / TRAINER_STATE).exists() and checkpoint_step(p) > after]
    return sorted(found, key=checkpoint_step)


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint ``path`` cannot be resumed from, naming the damaged file; ``None`` when it is
    complete: the trainer state parses and has its keys, every safetensors file is whole, and every
    torch-serialised file (optimizer, scheduler) is a complete archive. The RNG state is checked apart
    (:func:`rng_state_problem`)."""
    from accelerate.utils import MODEL_NAME, OPTIMIZER_NAME, SAFE_MODEL_NAME, SCHEDULER_NAME

    state_file = path / TRAINER_STATE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{state_file}: unreadable ({err})"
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        return f"{state_file}: lacks {', '.join(missing)}"
    # the model, optimizer and scheduler states, in any of Accelerate's layouts (FSDP shards are folders)
    layouts = ((f"{SAFE_MODEL_NAME}.safetensors", f"{MODEL_NAME}*"), (f"{OPTIMIZER_NAME}*",), (f"{SCHEDULER_NAME}*",))
    for patterns in layouts:
        if not any(any(path.glob(pattern)) for pattern in patterns):
            return f"{path / patterns[0].replace('*', '.bin')}: missing"
    for file in sorted(path.iterdir()):
        if file.suffix == ".safetensors":
            try:
                read_safetensors_header(file)
            except OSError as err:
                return str(err)
        elif file.suffix == ".bin" and file.is_file():
            problem = torch_archive_problem(file)
            if problem:
                return f"{file}: {problem}"
    return None


def torch_archive_problem(file: Path) -> str | None:
    """Why an optimizer or scheduler state file cannot be used: not a complete archive, not loadable
    as plain tensors and numbers (no code runs: ``weights_only``), or holding NaN or infinite values."""
    if not zipfile.is_zipfile(file):
        return "truncated or damaged (not a complete torch archive)"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any failure to read it back means it is damaged
        return f"damaged ({type(err).__name__}: {(str(err).strip() or '-').splitlines()[0][:200]})"
    tensors = [t for t in _tensors(state) if t.is_floating_point()]
    if tensors and not all(bool(torch.isfinite(t).all()) for t in tensors):
        return "holds NaN or infinite values"
    return None


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def find_resume_checkpoint(output_dir: Path) -> tuple[Path | None, list[str]]:
    """The latest complete checkpoint (``None`` if none), and the problems of the newer ones passed over."""
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def rng_state_problem(path: Path, process_index: int) -> str | None:
    """Why this process's RNG state in checkpoint ``path`` cannot be restored, naming the file (Accelerate's
    ``load_state`` would skip it with an info message), or ``None``."""
    from accelerate.utils import RNG_STATE_NAME, load

    file = path / f"{RNG_STATE_NAME}_{process_index}.pkl"
    if not file.is_file():
        return f"{file}: missing"
    try:
        states = load(file)
    except Exception as err:  # any failure to unpickle means the state cannot be restored
        return f"{file}: unreadable ({type(err).__name__}: {(str(err).strip() or '-').splitlines()[0]})"
    needed = ["random_state", "numpy_random_seed", "torch_manual_seed"]
    if torch.cuda.is_available():
        needed.append("torch_cuda_manual_seed")
    missing = [k for k in needed if k not in states] if isinstance(states, dict) else needed
    return f"{file}: lacks {', '.join(missing)}" if missing else None


def save_checkpoint(accelerator, output_dir: Path, state: dict, limit: int, *, model) -> Path:
    """Accelerate's ``save_state``, then the trainer state (written last, atomically, so that an interrupted
    save leaves an incomplete checkpoint that resume ignores). Refuses non-finite weights."""
    check_finite(model.named_parameters(), f"checkpoint step {state['global_step']}")
    path = Path(output_dir) / CHECKPOINT_DIR / f"step_{state['global_step']:08d}"
    if accelerator.is_main_process and (path / TRAINER_STATE).exists():  # a damaged one that resume passed over
        (path / TRAINER_STATE).unlink()
    if accelerator.is_main_process:
        users = unlisted_entries(path)  # a user's files in a checkpoint written before (a resumed run's) stay theirs
        record_written_whole(output_dir, path)
    with writing(path):
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            write_written_list(path, also=[TRAINER_STATE], leave=users)
            write_json_atomic(path / TRAINER_STATE, state)
    if accelerator.is_main_process:
        for old in list_checkpoints(output_dir)[:-limit]:
            remove_written_folder(old)
    accelerator.wait_for_everyone()
    return path


def load_trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def record_written_whole(output_dir: Path, folder: Path) -> None:
    """List ``folder`` in the marker of ``output_dir`` (where it has one) as written whole by the package,
    before it is written: a replace of the run folder may then remove it, even half-written."""
    if read_marker(output_dir) is not None:
        record_outputs(output_dir, [Path(folder).relative_to(output_dir).as_posix() + "/"])


def delete_checkpoints(output_dir: Path) -> None:
    """Remove the checkpoints a run wrote (``step_NNNNNNNN`` and ``best_model``), and ``checkpoints/`` if that
    leaves it empty: a file a user put there stays."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return
    for entry in [*checkpoint_folders(output_dir), root / "best_model"]:
        if entry.is_dir() and not entry.is_symlink():
            remove_written_folder(entry)
    with contextlib.suppress(OSError):
        root.rmdir()
