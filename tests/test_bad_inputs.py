"""Bad inputs and faults through the public entry points: the commands (``thmm-train`` and
``thmm-predict``, run in process) and the Python API. Each row of one table says where the input
goes, how it is made bad, and what must come out: exit code 2 with one ``error: ...`` line, an
exception of a given type, or a reported warning. It also gives the key words of the message: the
file, line, field or option."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bad_input_table import SMALL, STEP1, STEP2, Case, Env, load_model, model_with, trainer, truncate
from conftest import QUICKSTART_DATA, REPO_ROOT, SMALL_RUN_ARGS
from dataset_script import PatentDataError
from modeling_thmm import TaxonomyMismatchError
from thmm.checkpoints import NonFiniteError

pytestmark = pytest.mark.slow  # end-to-end training runs; CI runs them too


@pytest.fixture(scope="module")
def trained_run(small_run, tmp_path_factory):
    """A run that kept a checkpoint after each of its 2 steps and stopped before its final save (its
    model/ removed, as a kill before the rename leaves it); the cases copy it. A copy of the session's
    ``small_run`` (conftest.py): the same arguments as ``SMALL``, with ``--checkpoint-every 1``."""
    assert tuple(SMALL) == SMALL_RUN_ARGS  # the rows' --resume argv must match the run's arguments
    out = tmp_path_factory.mktemp("bad-inputs") / "run"
    shutil.copytree(small_run, out)
    shutil.rmtree(out / "model")
    return out


@pytest.fixture
def env(tmp_path, tiny_encoder_dir, trained_run, saved_model_dir):
    return Env(tmp_path, tiny_encoder_dir, trained_run, saved_model_dir)


# ---- the setups ---------------------------------------------------------------------------------


def damaged(env, *files):
    """``--resume`` argv for a copy of the trained run with these files truncated."""
    argv = env.resume_argv()
    for rel in files:
        truncate(env.run / rel)
    return argv


def removed(env, *files):
    """``--resume`` argv for a copy of the trained run with these files deleted."""
    argv = env.resume_argv()
    for rel in files:
        (env.run / rel).unlink()
    return argv


def without_rng_state(env, *extra, damage=lambda path: path.unlink()):
    argv = env.resume_argv(*extra)
    damage(env.run / STEP2 / "random_states_0.pkl")
    return argv


def data_with(env, **files):
    """The quickstart data with some split files replaced (text) or removed (``None``)."""
    env.copy("data")
    for name, text in files.items():
        path = env.data / f"{name}.tsv"
        path.unlink() if text is None else path.write_text(text, encoding="utf-8")
    return env.data


def overlapping_data(env):
    """dev.tsv's first patent is train.tsv's first one."""
    train_rows = (QUICKSTART_DATA / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev_rows = (QUICKSTART_DATA / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    return data_with(env, dev="".join([dev_rows[0], train_rows[1], *dev_rows[2:]]))


def yaml_config(env, text):
    path = env.tmp / "run.yaml"
    path.write_text(text)
    return path


def parses_1e_3_as_float(env):
    from thmm.arguments import parse_args

    def call():
        args = parse_args(["--config", str(yaml_config(env, "learning_rate: 1e-3\nhead_learning_rate: 2e-4\n"))])
        assert (args.learning_rate, args.head_learning_rate) == (1e-3, 2e-4)

    return call


def one_more_node(env):
    saved = json.loads((env.sources["model"] / "config.json").read_text())["taxonomy"]
    nodes, parents = saved["nodes"], saved["parents"]
    at = nodes.index("A43C") + 1  # a new subclass A43D under A43, in the canonical (level, code) order
    return model_with(env, taxonomy={**saved, "nodes": nodes[:at] + ["A43D"] + nodes[at:],
                                     "parents": parents[:at] + ["A43"] + parents[at:]}, id2label=None, label2id=None)


def wipo_document(env, xml: str, encoding: str):
    """``read_wipo_alpha`` over one document (``xml`` declares ``encoding`` and is written in it)."""
    from dataset_script import read_wipo_alpha

    folder = env.tmp / "wipo"
    folder.mkdir()
    (folder / "doc.xml").write_bytes(f'<?xml version="1.0" encoding="{encoding}"?>\n{xml}'.encode(encoding))
    return lambda: read_wipo_alpha(folder)


LAUGHS = ('<!DOCTYPE record [\n<!ENTITY a "aaaaaaaaaa">\n<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n'
          '<record pn="EP1"><ipcs mc="A01B0013080000"/><tis><ti xml:lang="EN">&b;</ti></tis></record>\n')
EXTERNAL = ('<!DOCTYPE record [\n<!ENTITY ext SYSTEM "file:///etc/passwd">\n]>\n'
            '<record pn="EP1"><ipcs mc="A01B0013080000"/><tis><ti xml:lang="EN">&ext;</ti></tis></record>\n')


def finite_checkpoints_and_no_model(env):
    out = env.tmp / "out"
    assert not (out / "model").exists()
    for weights in out.glob("checkpoints/*/model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(weights).values()), weights


def nonfinite_guard(env):
    from thmm.checkpoints import check_finite

    return lambda: check_finite([("heads.w", torch.tensor([1.0, float("nan")]))], "the model to somewhere")


def missing_data(env, name):
    from dataset_script import load_patent_splits

    return lambda: load_patent_splits(name)


def resume_change(option, value, before, after):
    return Case("train", lambda env: env.resume_argv(option, value), 2,
                ("--resume", "different arguments", f"{option[2:].replace('-', '_')}: {before} -> {after}"))


CASES = {
    # ---- resume: every result-changing argument is compared, each difference is named
    "resume-learning-rate": resume_change("--learning-rate", "2e-3", "0.001", "0.002"),
    "resume-weight-decay": resume_change("--weight-decay", "0.1", "0.01", "0.1"),
    "resume-max-train-samples": resume_change("--max-train-samples", "12", "16", "12"),
    "resume-head-dropout": resume_change("--head-dropout", "0.1", "0.25", "0.1"),
    "resume-head-hidden-size": resume_change("--head-hidden-size", "16", "8", "16"),
    "resume-several-changes": Case(
        "train", lambda env: env.resume_argv("--learning-rate", "2e-3", "--head-type", "tmm", "--seed", "1"), 2,
        ("learning_rate: 0.001 -> 0.002", "head_type: 'thmm' -> 'tmm'", "seed: 42 -> 1", "{run}/" + STEP2)),
    # ---- resume: the RNG state, or an explicit non-identical continuation
    "resume-rng-state-missing": Case(
        "train", without_rng_state, 2,
        ("{run}/" + STEP2 + "/random_states_0.pkl: missing", "--allow-nonidentical-resume")),
    "resume-rng-state-unreadable": Case(
        "train", lambda env: without_rng_state(env, damage=truncate), 2,
        ("{run}/" + STEP2 + "/random_states_0.pkl: unreadable", "--allow-nonidentical-resume")),
    "resume-rng-state-allowed": Case(
        "train", lambda env: without_rng_state(env, "--allow-nonidentical-resume"), 0,
        ("WARNING", "random_states_0.pkl: missing", "will not be bit-identical", "resumed from {run}/" + STEP2)),
    # ---- resume: a damaged latest checkpoint falls back to the previous complete one
    "resume-truncated-weights": Case(
        "api", lambda env: trainer(damaged(env, STEP2 + "/model.safetensors")), None,
        ("WARNING", "damaged checkpoint", "{run}/" + STEP2 + "/model.safetensors: not a complete safetensors file",
         "previous complete checkpoint {run}/" + STEP1)),
    "resume-truncated-trainer-state": Case(
        "api", lambda env: trainer(damaged(env, STEP2 + "/trainer_state.json")), None,
        ("WARNING", "{run}/" + STEP2 + "/trainer_state.json: unreadable", "previous complete checkpoint {run}/" + STEP1)),
    "resume-truncated-optimizer": Case(
        "api", lambda env: trainer(damaged(env, STEP2 + "/optimizer.bin")), None,
        ("{run}/" + STEP2 + "/optimizer.bin: truncated", "previous complete checkpoint {run}/" + STEP1)),
    "resume-trainer-state-removed": Case(  # an interrupted save, or a removed file: said even with --quiet
        "train", lambda env: removed(env, STEP2 + "/trainer_state.json"), 0,
        ("WARNING", "--resume: passing over step_00000002 in {run}/checkpoints: no trainer_state.json",
         "continuing from step_00000001")),
    "resume-no-usable-checkpoint": Case(
        "train", lambda env: damaged(env, STEP1 + "/trainer_state.json", STEP2 + "/model.safetensors"), 2,
        ("no usable checkpoint", "{run}/" + STEP1 + "/trainer_state.json", "{run}/" + STEP2 + "/model.safetensors")),
    # ---- non-finite loss or gradient: stop at that step, write nothing non-finite
    "nonfinite-loss": Case(
        "train", lambda env: env.train_argv("--learning-rate", "1e30", "--checkpoint-every", "1"), 2,
        ("non-finite training", "at optimizer step 2 (epoch 1", "learning rate too high (--learning-rate 1e+30)",
         "bad input", "nothing from it was written"), after=finite_checkpoints_and_no_model),
    "nonfinite-without-clipping": Case(
        "train", lambda env: env.train_argv("--learning-rate", "1e30", "--max-grad-norm", "0"), 2,
        ("non-finite training", "(epoch 1", "--learning-rate 1e+30"), after=finite_checkpoints_and_no_model),
    "nonfinite-weights-never-written": Case(
        "api", nonfinite_guard, NonFiniteError, ("refusing to write the model to somewhere", "heads.w")),
    # ---- output locations, before any work
    "output-dir-under-a-file": Case(
        "train", lambda env: env.train_argv(out=env.file() / "run"), 2,
        ("--output-dir {tmp}/file.txt/run", "{tmp}/file.txt is a file, not a folder")),
    "features-cache-under-a-file": Case(
        "train", lambda env: env.train_argv("--freeze-encoder", "--features-cache-dir", str(env.file() / "cache")), 2,
        ("--features-cache-dir {tmp}/file.txt/cache", "not a writable directory")),
    # ---- threshold tuning
    "node-threshold-min-support-zero": Case(
        "train", lambda env: env.train_argv("--node-threshold-min-support", "0"), 2,
        ("--node-threshold-min-support: must be at least 1",)),
    "threshold-granularity-unknown": Case(
        "train", lambda env: env.train_argv("--threshold-granularity", "leaf"), 2,
        ("--threshold-granularity", "leaf")),
    "threshold-objective-unknown": Case(
        "train", lambda env: env.train_argv("--threshold-objective", "f1_harmonic"), 2,
        ("--threshold-objective", "f1_harmonic")),
    "lexical-max-train-documents-negative": Case(
        "train", lambda env: env.train_argv("--lexical-max-train-documents", "-5"), 2,
        ("--lexical-max-train-documents", "must be 0 (all of them) or at least 2")),
    "lexical-max-negatives-negative": Case(
        "train", lambda env: env.train_argv("--lexical-max-negatives", "-1"), 2,
        ("--lexical-max-negatives", "must be 0 (all of them) or positive")),
    # ---- frozen lower layers: the tiny encoder has 4 layers
    "freeze-lower-layers-all": Case(
        "train", lambda env: env.train_argv("--freeze-lower-layers", "4"), 2,
        ("--freeze-lower-layers 4: the encoder has 4 layers: freeze between 1 and 3",)),
    "freeze-lower-layers-negative": Case(
        "train", lambda env: env.train_argv("--freeze-lower-layers", "-1"), 2,
        ("--freeze-lower-layers: must be non-negative",)),
    "freeze-lower-layers-with-frozen-encoder": Case(
        "train", lambda env: env.train_argv("--freeze-lower-layers", "2", "--freeze-encoder"), 2,
        ("--freeze-lower-layers: cannot be combined with --freeze-encoder",)),
    "freeze-lower-layers-below-cnn-sum": Case(
        "train", lambda env: env.train_argv("--freeze-lower-layers", "2", "--doc-representation", "cnn"), 2,
        ("--freeze-lower-layers 2: the CNN sums the last 4 of 4 layers, so at most 1 can be frozen",)),
    "predict-output-under-a-file": Case(
        "predict", lambda env: env.predict_argv("--output", str(env.file() / "out.jsonl")), 2,
        ("--output {tmp}/file.txt/out.jsonl",)),
    # ---- paths that do not exist are not Hub ids
    "dataset-relative-missing": Case(
        "train", lambda env: env.train_argv(dataset="./no-such-data"), 2, ("--dataset ./no-such-data: no such directory",)),
    "dataset-first-part-exists": Case(
        "train", lambda env: env.train_argv(dataset="tests/no-such-data"), 2,
        ("--dataset tests/no-such-data: no such directory",)),
    "dataset-nested-missing": Case(
        "train", lambda env: env.train_argv(dataset="data/uspto/no-such-split"), 2,
        ("--dataset data/uspto/no-such-split: no such directory",)),
    "dataset-api-missing": Case(
        "api", lambda env: missing_data(env, "./no-such-data"), FileNotFoundError, ("./no-such-data: no such directory",)),
    "encoder-missing": Case(
        "train", lambda env: [*env.train_argv(), "--encoder", "./no-such-encoder"], 2,
        ("--encoder ./no-such-encoder: no such directory",)),
    "encoder-not-a-model": Case(
        "train", lambda env: [*env.train_argv(), "--encoder", str(env.tmp)], 2,
        ("--encoder {tmp}: not a model directory (no config.json)",)),
    "model-api-missing": Case(
        "api", load_model(lambda env: "runs/no-such-run/model"), OSError, ("runs/no-such-run/model: no such directory",)),
    "predict-model-missing": Case(
        "predict", lambda env: env.predict_argv(model="./no-such-model"), 2, ("--model ./no-such-model: no such directory",)),
    # ---- data files: a bad TSV, a missing split, overlapping splits
    "bad-tsv": Case(
        "train", lambda env: env.train_argv(dataset=data_with(
            env, train=(REPO_ROOT / "tests/fixtures/dataset/bad/label_unclosed.tsv").read_text())), 2,
        ("{data}/train.tsv, line 2, field 'labels'", "expected a list of quoted codes")),
    "missing-split": Case(
        "train", lambda env: env.train_argv(dataset=data_with(env, test=None)), 2, ("{data}", "test.tsv")),
    "split-overlap": Case(
        "train", lambda env: env.train_argv(dataset=overlapping_data(env)), 2,
        ("1 patent_id(s)", "train ({data}/train.tsv)", "validation ({data}/dev.tsv)", "QS0001", "--allow-split-overlap")),
    "split-overlap-allowed": Case(
        "api", lambda env: trainer(env.train_argv("--allow-split-overlap", dataset=overlapping_data(env))), None,
        ("WARNING", "1 patent_id(s)", "QS0001", "kept (--allow-split-overlap)")),
    # ---- XML: no entity expansion and no external entities, in any encoding
    "xml-entity-expansion-utf16": Case(
        "api", lambda env: wipo_document(env, LAUGHS, "UTF-16"), PatentDataError,
        ("{tmp}/wipo/doc.xml, line 3, field 'DOCTYPE': entity declarations are not allowed",)),
    "xml-external-entity-utf16": Case(
        "api", lambda env: wipo_document(env, EXTERNAL, "UTF-16"), PatentDataError,
        ("{tmp}/wipo/doc.xml, line 3, field 'DOCTYPE'", "not allowed")),
    "xml-external-entity-latin1": Case(
        "api", lambda env: wipo_document(env, EXTERNAL, "ISO-8859-1"), PatentDataError,
        ("{tmp}/wipo/doc.xml, line 3, field 'DOCTYPE'",)),
    # ---- configuration values
    "yaml-fractional-epochs": Case(
        "train", lambda env: ["--config", str(yaml_config(env, "epochs: 1.5\n"))], 2,
        ("--config {tmp}/run.yaml, field 'epochs': expected int, got 1.5",)),
    "yaml-1e-3-is-a-float": Case("api", parses_1e_3_as_float, None),
    "yaml-bool-field": Case(
        "train", lambda env: ["--config", str(yaml_config(env, "threshold_frequency_bands: sometimes\n"))], 2,
        ("--config {tmp}/run.yaml, field 'threshold_frequency_bands': expected bool, got 'sometimes'",)),
    "option-bool": Case("train", lambda env: ["--threshold-frequency-bands", "maybe"], 2,
                        ("argument --threshold-frequency-bands/--no-threshold-frequency-bands", "got maybe")),
    "option-type": Case("train", lambda env: ["--batch-size", "x"], 2, ("error: argument --batch-size: invalid int",)),
    "option-range": Case("train", lambda env: ["--head-dropout", "1"], 2, ("--head-dropout: must be in [0, 1)",)),
    # ---- saved models: damaged weights, a config that does not match them
    "model-truncated-weights": Case(
        "api", load_model(lambda env: model_with(env, weights_keep=0.5)), OSError,
        ("{model}/model.safetensors: not a complete safetensors file",)),
    "model-truncated-header": Case(
        "api", load_model(lambda env: model_with(env, weights_keep=0.0001)), OSError,
        ("{model}/model.safetensors: not a complete safetensors file",)),
    "model-config-one-node-more": Case(
        "api", load_model(one_more_node), TaxonomyMismatchError,
        ("{model}/model.safetensors", "another taxonomy", "{model}/config.json")),
    "model-config-other-head-size": Case(
        "api", load_model(lambda env: model_with(env, head_hidden_size=8)), ValueError,
        ("{model}/model.safetensors: tensor 'heads.", "{model}/config.json")),
    "predict-truncated-weights": Case(
        "predict", lambda env: env.predict_argv(model=model_with(env, weights_keep=0.5)), 2,
        ("{model}/model.safetensors: not a complete safetensors file",)),
    "predict-config-one-node-more": Case(
        "predict", lambda env: env.predict_argv(model=one_more_node(env)), 2, ("{model}/model.safetensors",)),
    # ---- prediction options
    "predict-threshold-above-1": Case(
        "predict", lambda env: env.predict_argv("--threshold", "2"), 2, ("--threshold", "[0, 1]")),
    "predict-threshold-nan": Case(
        "predict", lambda env: env.predict_argv("--threshold", "nan"), 2, ("--threshold", "[0, 1]")),
    "predict-threshold-negative": Case(
        "predict", lambda env: env.predict_argv("--threshold", "-1"), 2, ("--threshold", "[0, 1]")),
    "predict-max-length-0": Case(
        "predict", lambda env: env.predict_argv("--max-length", "0"), 2, ("--max-length: must be at least 8",)),
    "predict-max-length-beyond-encoder": Case(
        "predict", lambda env: env.predict_argv("--max-length", "1000"), 2,
        ("--max-length: 1000 exceeds the encoder's 128 positions",)),
}

# Rows by area, one module each (tests/bad_inputs_*.py defines CASES); a name may appear once.
for _module in sorted(Path(__file__).parent.glob("bad_inputs_*.py")):
    _rows = importlib.import_module(_module.stem).CASES
    assert not set(_rows) & set(CASES), f"{_module.name} repeats {set(_rows) & set(CASES)}"
    CASES.update(_rows)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, env, capsys):
    from thmm import cli as commands
    from thmm.cli import predict as predict_cli
    from thmm.cli import train as train_cli

    case = CASES[name]
    target = case.make(env)
    if case.entry == "api" and case.expect is not None:
        with pytest.raises(case.expect) as info:
            target()
        message = str(info.value)
    elif case.entry == "api":
        target()
        message = capsys.readouterr().out
    else:
        command = {"train": train_cli.cli, "predict": predict_cli.cli, "publish": commands.publish,
                   "stats": commands.stats}[case.entry]
        try:
            code = command([str(a) for a in target])
        except SystemExit as exit_:  # argparse
            code = exit_.code
        out = capsys.readouterr()
        assert code == case.expect, out.err[-3000:]
        assert "Traceback" not in out.err
        if code:
            lines = out.err.strip().splitlines()  # progress bars may come first
            assert [line for line in lines if "error" in line.lower()] == lines[-1:], out.err[-3000:]
            assert re.match(r"error: " if case.one_line else r"\S+: error: ", lines[-1]), out.err[-3000:]
            message = lines[-1]
        else:
            message = out.out + out.err
    for word in case.words:
        assert word.format(**env.names) in message, (word, message[-3000:])
    if case.after:
        case.after(env)
