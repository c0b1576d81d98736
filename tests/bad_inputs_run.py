"""Bad-input rows for a training run's options, folders, caches, resume and faults (see test_bad_inputs.py)."""

from __future__ import annotations

import json
import shutil
import zipfile
from unittest import mock

import torch

from bad_input_table import STEP1, STEP2, Case, trainer
from conftest import QUICKSTART_DATA


def train_call(argv):
    """A call that runs a whole training run in process (no command-line error mapping)."""
    from thmm.arguments import parse_args
    from thmm.trainer import train

    return lambda: train(parse_args(argv))


def one_dev_document(env):
    env.copy("data")
    rows = (QUICKSTART_DATA / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (env.data / "dev.tsv").write_text("".join(rows[:2]), encoding="utf-8")
    return env.train_argv(dataset=env.data)


def changed_training_text(env):
    """--resume, with the same options, of a run on a copy of the data whose first training title
    was edited after the run stopped (before its final save)."""
    from thmm.arguments import parse_args
    from thmm.trainer import train

    env.copy("data")
    argv = env.train_argv("--checkpoint-every", "1", "--keep-checkpoints", "--no-lexical-fusion", dataset=env.data)
    train(parse_args(argv))
    shutil.rmtree(env.tmp / "out" / "model")
    lines = (env.data / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    pid, title, rest = lines[1].split("\t", 2)
    lines[1] = "\t".join([pid, title + " (edited)", rest])
    (env.data / "train.tsv").write_text("".join(lines), encoding="utf-8")
    return [*argv, "--resume"]


def finished_then_resumed(env):
    from thmm.arguments import parse_args
    from thmm.trainer import train

    argv = env.resume_argv()
    train(parse_args(argv))  # finishes the copied run
    return argv


def disk_full(env):
    from safetensors import SafetensorError

    def fail(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    run = train_call(env.train_argv("--checkpoint-every", "1"))

    def call():
        with mock.patch("accelerate.Accelerator.save_state", fail):
            run()

    return call


def damaged_zip(env, name="optimizer.bin"):
    """A complete zip archive that is not a torch state: passes a size check, fails to load."""
    argv = env.resume_argv()
    with zipfile.ZipFile(env.run / STEP2 / name, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x05not a pickle")
    return trainer(argv)


def nonfinite_optimizer(env):
    argv = env.resume_argv()
    path = env.run / STEP2 / "optimizer.bin"
    state = torch.load(path, weights_only=True)
    for tensors in state["state"].values():
        for value in tensors.values():
            if value.is_floating_point() and value.ndim:
                value.fill_(float("nan"))
    torch.save(state, path)
    return trainer(argv)


def cache_tampered(env, tamper):
    """Build a frozen-encoder cache, damage it with ``tamper(cache_folder)``, then build the run again."""
    cache = env.tmp / "cache"
    argv = env.train_argv("--freeze-encoder", "--features-cache-dir", str(cache))
    trainer(argv)()
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    tamper(folder)
    return trainer(argv)


def other_encoder_weights(folder):
    info = json.loads((folder / "cache_info.json").read_text())
    info["encoder_weights"] = "0" * 64
    (folder / "cache_info.json").write_text(json.dumps(info))


def other_row_count(folder):
    shutil.copy(folder / "train.safetensors", folder / "validation.safetensors")


def encoder_with_code(env):
    """A copy of the tiny encoder whose config names code of its own (an unknown model type with an auto_map)."""
    encoder = env.tmp / "encoder"
    shutil.copytree(env.encoder, encoder)
    config = json.loads((encoder / "config.json").read_text())
    config.update(model_type="custom-bert", auto_map={"AutoConfig": "custom.Config", "AutoModel": "custom.Model"})
    (encoder / "config.json").write_text(json.dumps(config))
    (encoder / "custom.py").write_text(f"open({str(env.tmp / 'ran')!r}, 'w').write('ran')\n")
    return [*env.train_argv(), "--encoder", str(encoder)]


def no_code_ran(env):
    assert not (env.tmp / "ran").exists()


def user_files_intact(env):
    assert (env.tmp / "mine" / "notes.txt").read_text() == "mine"


def users_folder(env, *extra):
    (env.tmp / "mine").mkdir()
    (env.tmp / "mine" / "notes.txt").write_text("mine")
    return env.train_argv(*extra, out=env.tmp / "mine")


def taxonomy_file(env, name, text):
    path = env.tmp / name
    path.write_text(text, encoding="utf-8")
    return env.train_argv("--taxonomy", str(path))


CASES = {
    # ---- --taxonomy: the option and the file named, whatever is wrong in it
    "run-taxonomy-json-without-parents": Case(
        "train", lambda env: taxonomy_file(env, "tax.json", '{"nodes": ["A"]}'), 2,
        ("--taxonomy {tmp}/tax.json", "'nodes' and 'parents'")),
    "run-taxonomy-json-cut-off": Case(
        "train", lambda env: taxonomy_file(env, "tax.json", '{"nodes": ["A"'), 2, ("--taxonomy {tmp}/tax.json",)),
    "run-taxonomy-titles-lower-case-code": Case(
        "train", lambda env: taxonomy_file(env, "tax.tsv", "a43b\tFootwear\n"), 2,
        ("--taxonomy {tmp}/tax.tsv", "field 'code'", "'a43b'", "upper case")),
    "run-depth-6": Case("train", lambda env: env.train_argv("--depth", "6"), 2, ("--depth: must be one of 3, 4, 5 (got 6)",)),
    "run-deep-head-hidden-size-0": Case("train", lambda env: env.train_argv("--deep-head-hidden-size", "0"), 2,
                                        ("--deep-head-hidden-size: must be positive (got 0)",)),
    "run-depth-other-than-taxonomy-json": Case(
        "train", lambda env: [*taxonomy_file(env, "tax.json", json.dumps(
            {"scheme": "cpc", "depth": 4, "nodes": ["A", "A43", "A43B", "A43B 13/00"],
             "parents": [None, "A", "A43", "A43B"]})), "--depth", "3"], 2,
        ("--taxonomy {tmp}/tax.json: its depth is 4, not --depth 3",)),
    "run-taxonomy-titles-malformed-group-symbol": Case(
        "train", lambda env: taxonomy_file(env, "tax.tsv", "A43B\tFootwear\nA43B13/4\tSoles\n"), 2,
        ("--taxonomy {tmp}/tax.tsv", "line 2, field 'code': malformed CPC symbol 'A43B13/4'")),
    # ---- numbers: finite, and sizes the run can use
    "run-weight-decay-inf": Case("train", lambda env: env.train_argv("--weight-decay", "inf"), 2,
                                 ("--weight-decay: must be a finite number (got inf)",)),
    "run-focal-gamma-inf": Case("train", lambda env: env.train_argv("--loss-type", "focal", "--focal-gamma", "inf"), 2,
                                ("--focal-gamma: must be a finite number",)),
    "run-learning-rate-nan": Case("train", lambda env: env.train_argv("--learning-rate", "nan"), 2,
                                  ("--learning-rate: must be a finite number",)),
    "run-warmup-ratio-nan": Case("train", lambda env: env.train_argv("--warmup-ratio", "nan"), 2,
                                 ("--warmup-ratio: must be a finite number",)),
    "run-lexical-max-train-documents-1": Case(
        "train", lambda env: env.train_argv("--lexical-max-train-documents", "1"), 2,
        ("--lexical-max-train-documents: must be 0 (all of them) or at least 2 (got 1)",)),
    "run-small-dev-documents-negative": Case("train", lambda env: env.train_argv("--small-dev-documents", "-1"), 2,
                                             ("--small-dev-documents: must be 0 (never) or positive (got -1)",)),
    "run-one-dev-document-with-fusion": Case(
        "train", one_dev_document, 2, ("--lexical-fusion: the validation split has 1 document(s)", "--no-lexical-fusion")),
    # ---- output folders: never one the package did not write
    "run-output-dir-empty-string": Case("train", lambda env: [*env.train_argv(), "--output-dir", ""], 2,
                                        ("--output-dir: must name a folder",)),
    "run-output-dir-users-folder": Case(
        "train", lambda env: users_folder(env), 2, ("--output-dir {tmp}/mine", "did not write", "notes.txt"),
        after=user_files_intact),
    "run-output-dir-users-folder-overwrite": Case(
        "train", lambda env: users_folder(env, "--overwrite-output-dir"), 2, ("--output-dir {tmp}/mine", "did not write"),
        after=user_files_intact),
    # ---- resume: the same data, and a finished run says so
    "run-resume-changed-data": Case(
        "train", changed_training_text, 2, ("--resume: the training data changed", "split(s) train")),
    "run-resume-finished": Case("train", finished_then_resumed, 0, ("holds a finished run", "nothing to resume")),
    # ---- faults while writing, and damaged optimizer state
    "run-disk-full-at-checkpoint": Case(
        "api", disk_full, OSError, ("{tmp}/out/checkpoints/step_00000001: cannot write", "No space left on device")),
    "run-optimizer-not-a-torch-state": Case(
        "api", damaged_zip, None, ("WARNING", "{run}/" + STEP2 + "/optimizer.bin: damaged",
                                   "previous complete checkpoint {run}/" + STEP1)),
    "run-optimizer-nonfinite": Case(
        "api", nonfinite_optimizer, None, ("{run}/" + STEP2 + "/optimizer.bin: holds NaN or infinite values",
                                           "previous complete checkpoint {run}/" + STEP1)),
    # ---- caches: a cache that does not match the run is built again, never trusted
    "run-cache-other-encoder": Case(
        "api", lambda env: cache_tampered(env, other_encoder_weights), None,
        ("does not match this run", "written for other encoder_weights", "building it again")),
    "run-cache-other-row-count": Case(
        "api", lambda env: cache_tampered(env, other_row_count), None,
        ("does not match this run", "validation.safetensors holds 16 documents, the validation split 8")),
    # ---- code: an encoder that would run code of its own is refused unless trusted
    "run-encoder-needs-remote-code": Case(
        "train", encoder_with_code, 2, ("--encoder {tmp}/encoder", "--trust-remote-code"), after=no_code_ran),
    # ---- --resume-from-model (issue 34): the same taxonomy, a model that loads
    "run-resume-from-model-other-taxonomy": Case(
        "train", lambda env: env.train_argv("--resume-from-model", str(env.sources["model"])), 2,
        ("--resume-from-model", "it was trained for another taxonomy", "--taxonomy")),
    "run-resume-from-model-missing": Case(
        "train", lambda env: env.train_argv("--resume-from-model", str(env.tmp / "nothing")), 2,
        ("--resume-from-model {tmp}/nothing: cannot load it",)),
}


def titles_file(env, text):
    path = env.tmp / "titles.tsv"
    path.write_text(text, encoding="utf-8")
    return env.train_argv("--label-titles", str(path))


CASES.update({
    # ---- --label-titles: a code that could never match is refused, not left unused
    "run-label-titles-lower-case-code": Case(
        "train", lambda env: titles_file(env, "A43B\tFootwear\na43c\tShoes\n"), 2,
        ("{tmp}/titles.tsv, line 2, field 'code'", "'a43c'", "upper case")),
    "run-label-titles-control-character": Case(
        "train", lambda env: titles_file(env, "A43B\tFoot\x00wear\n"), 2,
        ("{tmp}/titles.tsv, line 1, field 'title'", "control character")),
    "run-taxonomy-non-ascii-digit": Case(
        "train", lambda env: taxonomy_file(env, "tax.tsv", "A\u06643B\tFootwear\n"), 2,
        ("--taxonomy {tmp}/tax.tsv", "malformed CPC code")),
})


def run_file(env, name, text):
    path = env.tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def encoder_without_tokenizer(env):
    """A copy of the tiny encoder with its weights and config only: transformers would build an empty tokenizer."""
    encoder = env.tmp / "bare-encoder"
    encoder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(env.encoder / name, encoder / name)
    return encoder


def encoder_with_bigger_tokenizer(env):
    """A copy of the tiny encoder whose tokenizer gained word-pieces its embeddings have no row for."""
    from transformers import AutoTokenizer

    encoder = env.tmp / "grown-encoder"
    shutil.copytree(env.encoder, encoder)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    tokenizer.add_tokens(["zzfirst", "zzsecond"])
    tokenizer.save_pretrained(encoder)
    return encoder


SUBCLASS_TAXONOMY = {"scheme": "cpc", "depth": 3, "nodes": ["A", "A43", "A43B"], "parents": [None, "A", "A43"]}

CASES.update({
    # ---- the encoder's tokenizer must be its own, before any training
    "run-encoder-without-tokenizer-files": Case(
        "train", lambda env: env.train_argv("--encoder", str(encoder_without_tokenizer(env))), 2,
        ("--encoder {tmp}/bare-encoder: the tokenizer has no vocabulary", "tokenizer files")),
    "run-encoder-tokenizer-bigger-than-embeddings": Case(
        "train", lambda env: env.train_argv("--encoder", str(encoder_with_bigger_tokenizer(env))), 2,
        ("--encoder {tmp}/grown-encoder", "more than the", "rows")),
    # ---- --taxonomy JSON: its scheme, its depth and its codes must be the data's
    "run-taxonomy-json-other-scheme": Case(
        "train", lambda env: taxonomy_file(env, "tax.json", json.dumps({**SUBCLASS_TAXONOMY, "scheme": "ipc"})), 2,
        ("--taxonomy {tmp}/tax.json: its scheme is ipc, not --scheme cpc",)),
    "run-taxonomy-json-upper-case-suffix": Case(
        "train", lambda env: taxonomy_file(env, "tax.JSON", json.dumps({**SUBCLASS_TAXONOMY, "scheme": "ipc"})), 2,
        ("--taxonomy {tmp}/tax.JSON: its scheme is ipc",)),  # read as JSON, not as a titles file
    "run-taxonomy-json-without-training-codes": Case(
        "train", lambda env: taxonomy_file(env, "tax.json", json.dumps(
            {"scheme": None, "nodes": ["X", "Y"], "parents": [None, "X"]})), 2,
        ("--taxonomy {tmp}/tax.json: none of the training labels is one of its codes",)),
    # ---- run files: every value read once, the command line first
    "run-config-key-twice": Case(
        "train", lambda env: ["--config", str(run_file(env, "run.yaml", "epochs: 1\nepochs: 3\n"))], 2,
        ("--config {tmp}/run.yaml: the key 'epochs' appears twice",)),
    "run-config-json-key-twice": Case(
        "train", lambda env: ["--config", str(run_file(env, "run.json", '{"epochs": 1, "epochs": 3}'))], 2,
        ("--config {tmp}/run.json: the key 'epochs' appears twice",)),
    "run-config-two-spellings": Case(
        "train", lambda env: ["--config", str(run_file(env, "run.yaml", "batch_size: 8\nbatch-size: 16\n"))], 2,
        ("--config {tmp}/run.yaml: 'batch_size' and 'batch-size' name the same option",)),
    "run-config-twice": Case(
        "train", lambda env: ["--config", str(run_file(env, "a.yaml", "epochs: 1\n")), "--config",
                              str(run_file(env, "b.yaml", "epochs: 2\n"))], 2, ("--config: given 2 times",)),
    "run-dataset-empty": Case("train", lambda env: env.train_argv("--dataset", ""), 2,
                              ("--dataset: must name a folder or a Hub dataset",)),
})

CASES.update({
    "run-resume-from-model-empty": Case("train", lambda env: env.train_argv("--resume-from-model", ""), 2,
                                        ("--resume-from-model: empty path",)),
    "run-config-abbreviated": Case(  # --conf would be a second --config that the count could not see
        "train", lambda env: ["--conf", str(run_file(env, "a.yaml", "epochs: 1\n")), "--config",
                              str(run_file(env, "b.yaml", "epochs: 2\n"))], 2, ("unrecognized arguments: --conf",)),
})

CASES["run-taxonomy-json-key-twice"] = Case(
    "train", lambda env: taxonomy_file(env, "tax.json", '{"scheme": "cpc", "scheme": "ipc", "nodes": ["A"], '
                                                        '"parents": [null]}'), 2,
    ("--taxonomy {tmp}/tax.json", "the key 'scheme' appears twice"))
