"""The table behind ``test_bad_inputs.py``: :class:`Case` (one row), :class:`Env` (the paths a row
works on) and the setups rows share. Rows live in ``test_bad_inputs.py`` and in ``bad_inputs_*.py``
modules beside it (each defines ``CASES``), which the test collects."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import QUICKSTART_DATA

SMALL = ["--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--batch-size", "8",
         "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none", "--learning-rate", "1e-3"]
STEP1, STEP2 = "checkpoints/step_00000001", "checkpoints/step_00000002"  # 16 documents, batches of 8


class Env:
    """Paths for one case: copies of the trained run, the quickstart data and a saved model, made on
    demand under ``tmp``; ``names`` fills the ``{run}``, ``{data}``, ``{model}``, ``{tmp}`` of the key words."""

    def __init__(self, tmp: Path, encoder: Path, run: Path, model: Path):
        self.tmp, self.encoder, self.sources = tmp, encoder, {"run": run, "data": QUICKSTART_DATA, "model": model}
        self.run, self.data, self.model = tmp / "run", tmp / "data", tmp / "model"
        self.names = {"run": self.run, "data": self.data, "model": self.model, "tmp": tmp}

    def copy(self, name: str) -> Path:
        target = self.tmp / name
        if not target.exists():
            shutil.copytree(self.sources[name], target)
        return target

    def train_argv(self, *extra, dataset=QUICKSTART_DATA, out=None) -> list[str]:
        return ["--dataset", str(dataset), "--encoder", str(self.encoder), "--output-dir", str(out or self.tmp / "out"),
                *SMALL, *extra]

    def resume_argv(self, *extra) -> list[str]:
        self.copy("run")
        return self.train_argv("--resume", "--checkpoint-every", "1", "--keep-checkpoints", *extra, out=self.run)

    def predict_argv(self, *extra, model=None) -> list[str]:
        documents = self.tmp / "documents.txt"
        documents.write_text("Shoe sole with a heel\tAn insole for a boot.\n", encoding="utf-8")
        return ["--model", str(model or self.sources["model"]), "--input", str(documents), *extra]

    def file(self) -> Path:
        """A regular file, so that a path under it cannot be a directory (as root, os.access lies about modes)."""
        path = self.tmp / "file.txt"
        path.write_text("not a directory\n")
        return path


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, **changes) -> None:
    """Set keys of a JSON file; ``None`` removes one."""
    data = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None or k not in changes}))


@dataclass
class Case:
    entry: str  # "train" / "predict" / "publish" / "stats": the command, in process; "api": a Python call
    make: Callable  # env -> argv for a command, or a zero-argument call for "api"
    expect: int | type[Exception] | None  # a command's exit code; for "api", the exception, or None: returns
    words: tuple = ()  # key words of the message ({run}, {data}, {model}, {tmp} filled in)
    one_line: bool = True  # one "error: ..." line; False: a usage block and "PROG: error: ..."
    after: Callable | None = None  # env -> None: more checks once it ran




def trainer(argv):
    """A call that builds a Trainer (no training) and returns it."""
    from thmm.arguments import parse_args
    from thmm.trainer import Trainer

    return lambda: Trainer(parse_args(argv))


def model_with(env, weights_keep=None, **config):
    """A copy of the saved tiny model with a truncated weights file and/or config.json changes."""
    env.copy("model")
    if weights_keep is not None:
        truncate(env.model / "model.safetensors", weights_keep)
    if config:
        edit_json(env.model / "config.json", **config)
    return env.model


def load_model(path_of):
    from modeling_thmm import THMMForHierarchicalClassification

    return lambda env: (lambda: THMMForHierarchicalClassification.from_pretrained(path_of(env)))
