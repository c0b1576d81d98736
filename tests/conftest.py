"""Shared fixtures: a tiny random BERT encoder and tokenizer built in code (no downloads), and what
keeps the suite fast on CI's 2 CPU cores: node SVMs fitted in process, training runs killed in
children of a preloaded fork server (no fresh Python per kill), tiny runs trained once and shared
between tests, and a private cache and one torch thread per pytest-xdist worker."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Eight subclass codes over four sections: the small taxonomy most tests build (18 nodes: 4, 6, 8 per level).
SMALL_TAXONOMY_CODES = ("A43B", "A43C", "A47J", "B41F", "H04L", "H04W", "H01M", "Y10T")

TINY_WORDS = (
    "a an the of for and with to in on by is are device method system apparatus "
    "footwear shoe sole heel upper lace boot sandal insole "
    "printing press ink sheet cylinder plate paper "
    "network wireless packet radio antenna base station terminal channel protocol "
    "battery cell electrode lithium charging vehicle motor electric "
    "drone aircraft rotor wing flight unmanned "
    "coffee brewing kitchen heating water "
    "sensor patient diagnosis blood image neural learning model training data processor memory"
).split()


def bench_module(name: str):
    """A script of bench/ imported from its file, without putting bench/ on sys.path (registered in
    sys.modules: the dataclasses of a script need that)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}_test", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab = specials + sorted(set(TINY_WORDS)) + letters + [str(d) for d in range(10)] + [".", ",", "-", "(", ")"]
    vocab = list(dict.fromkeys(vocab))  # once each ("a" is a word and a letter): ids 0..n-1, as the embeddings
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    vocab_path = write_tiny_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    words = vocab_path.read_text(encoding="utf-8").split()
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, model_max_length=64)


@pytest.fixture(scope="session")
def tiny_encoder_config(tiny_tokenizer):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
    ).to_dict()


@pytest.fixture(scope="session")
def small_taxonomy():
    from configuration_thmm import Taxonomy

    return Taxonomy.from_codes(SMALL_TAXONOMY_CODES)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_encoder_config, tiny_tokenizer):
    """A tiny random BERT saved like a Hub checkpoint (weights + tokenizer), for train.py --encoder."""
    import torch
    from transformers import AutoConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(AutoConfig.for_model(**tiny_encoder_config)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


QUICKSTART_DATA = REPO_ROOT / "dataset_script" / "quickstart"

# A small training run on the quickstart patents: 40 training and 13 dev/test documents, tiny heads.
SMALL_TRAINING = ["--dataset", str(QUICKSTART_DATA), "--max-train-samples", "40", "--max-eval-samples", "13",
                  "--batch-size", "8", "--eval-batch-size", "8", "--max-length", "48", "--epochs", "2",
                  "--learning-rate", "1e-3", "--report-to", "none", "--head-hidden-size", "16"]


def small_training_args(encoder_dir, output_dir, *extra):
    """``SMALL_TRAINING`` with an encoder and an output folder; ``extra`` options win (they come last)."""
    return [*SMALL_TRAINING, "--encoder", str(encoder_dir), "--output-dir", str(output_dir), *extra]


def force_fusion_weight(monkeypatch, weight: float) -> None:
    """Lexical fusion may choose only ``weight`` (above 0: the fused path is what a run saves)."""
    from thmm import lexical

    choose = lexical.choose_fusion_weight
    monkeypatch.setattr(lexical, "choose_fusion_weight", lambda *a, **kw: choose(*a, **{**kw, "weights": (weight,)}))


# --------------------------------------------------------------------------------------------------
# Shared builders: tiny models, a saved model folder, a command-line runner, a fake Hub API
# --------------------------------------------------------------------------------------------------


def build_tiny_model(encoder_config, taxonomy, seed=0, **config_kwargs):
    """A randomly initialised TMM/THMM/flat model over a tiny BERT (small heads by default), in eval mode."""
    import torch

    from configuration_thmm import THMMConfig
    from modeling_thmm import THMMForHierarchicalClassification

    torch.manual_seed(seed)
    config_kwargs = {"head_hidden_size": 16, "flat_hidden_size": 24, "cnn_num_filters": 8, "max_length": 64,
                     **config_kwargs}  # max_length within the tiny encoder's 128 positions
    config = THMMConfig(encoder_config=encoder_config, taxonomy=taxonomy, **config_kwargs)
    return THMMForHierarchicalClassification(config).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_encoder_config, small_taxonomy):
    """``tiny_model(seed=0, taxonomy=None, **config_kwargs)``: see :func:`build_tiny_model`."""

    def make(seed=0, taxonomy=None, **config_kwargs):
        return build_tiny_model(tiny_encoder_config, taxonomy or small_taxonomy, seed, **config_kwargs)

    return make


def save_model_dir(model, tokenizer, path: Path) -> Path:
    """What train.py leaves in OUTPUT_DIR/model: weights, config, remote code and the tokenizer."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A saved tiny THMM with code titles, max length 16 and tuned-looking per-level thresholds."""
    model = tiny_model(max_length=16, label_titles={"H04W": "WIRELESS COMMUNICATION NETWORKS"},
                       level_thresholds=[0.5, 0.45, 0.4])
    return save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("saved-model"))


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def train_in_process(argv) -> dict:
    """``thmm.trainer.train`` on ``argv`` in this process, the root logger put back after it (a run
    points it at the stdout captured at the time); the run summary. For fixtures, which outlive the
    test whose capture the run would log into."""
    from thmm.arguments import parse_args
    from thmm.trainer import train

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return train(parse_args([str(a) for a in argv]))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# The tiny run of tests/test_run_safety.py and tests/test_bad_inputs.py: 16 training documents in
# batches of 8 (2 optimizer steps), 8 dev and 8 test documents.
SMALL_RUN_ARGS = ("--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1", "--batch-size", "8",
                  "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none", "--learning-rate", "1e-3")


@pytest.fixture(scope="session")
def small_run(tiny_encoder_dir, tmp_path_factory) -> Path:
    """A finished run of ``SMALL_RUN_ARGS`` on the quickstart data, trained once for the session, that
    kept the checkpoint of each of its 2 steps (``--checkpoint-every 1 --keep-checkpoints``). Shared:
    a test that changes it works on a copy (``shutil.copytree``)."""
    out = tmp_path_factory.mktemp("small-run") / "run"
    train_in_process(["--dataset", QUICKSTART_DATA, "--encoder", tiny_encoder_dir, "--output-dir", out,
                      *SMALL_RUN_ARGS, "--checkpoint-every", "1", "--keep-checkpoints"])
    return out


def run_command(args, cwd=REPO_ROOT, launcher=None, timeout=300, pythonpath=True):
    """Run ``python ARGS`` (or ``LAUNCHER ARGS``) offline in a subprocess; the CompletedProcess."""
    import subprocess
    import sys

    env = {**os.environ, **OFFLINE_ENV}
    if pythonpath:
        env["PYTHONPATH"] = str(REPO_ROOT)
    else:
        env.pop("PYTHONPATH", None)
    cmd = (launcher or [sys.executable]) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def fake_hub_api(monkeypatch):
    """Replaces ``huggingface_hub.HfApi``; the list it returns records every create/upload call."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, str(folder_path), kwargs))
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return calls


# --------------------------------------------------------------------------------------------------
# Test-process set-up: private caches, logging put back, node SVMs fitted in process
# --------------------------------------------------------------------------------------------------

_CACHE_ROOT: Path | None = None


def pytest_configure(config):
    """Each test process (the one pytest process, or each xdist worker) gets its own ``datasets`` and
    remote-code module caches, which its subprocesses inherit: two workers never build one Arrow cache
    or write one ``transformers_modules/<folder>`` at the same time, and the user's ~/.cache is left
    alone. Set before any test module imports ``datasets`` or ``transformers``."""
    global _CACHE_ROOT
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    _CACHE_ROOT = Path(tempfile.mkdtemp(prefix=f"thmm-tests-{worker or 'main'}-"))
    os.environ["HF_DATASETS_CACHE"] = str(_CACHE_ROOT / "datasets")
    os.environ["HF_MODULES_CACHE"] = str(_CACHE_ROOT / "modules")
    if worker and "OMP_NUM_THREADS" not in os.environ:
        # pytest-xdist runs a test process per core: one torch thread each (the tiny models in them gain
        # nothing from more). Their subprocesses keep torch's default.
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config):
    if _CACHE_ROOT is not None:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def restore_logging():
    """An in-process training run points the root logger at the test's captured stdout (and sets its
    level); put both back after every test, so that no later test logs into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _auto_registries() -> list[dict]:
    """The dicts that ``AutoConfig.register``, ``AutoModel*.register``, ``AutoTokenizer.register`` and
    ``PIPELINE_REGISTRY.register_pipeline`` add to (those of transformers' modules already imported)."""
    found = []
    config_auto = sys.modules.get("transformers.models.auto.configuration_auto")
    if config_auto is not None:
        found.append(config_auto.CONFIG_MAPPING._extra_content)
    for name in ("transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto"):
        module = sys.modules.get(name)
        if module is not None:
            found += [m._extra_content for m in vars(module).values() if isinstance(getattr(m, "_extra_content", None), dict)]
    pipelines = sys.modules.get("transformers.pipelines")
    if pipelines is not None and hasattr(pipelines, "PIPELINE_REGISTRY"):
        found += [pipelines.PIPELINE_REGISTRY.supported_tasks, pipelines.PIPELINE_REGISTRY.task_aliases]
    return found


@pytest.fixture(autouse=True)
def restore_auto_registries():
    """A model loaded in process with ``trust_remote_code`` imports the saved copy of the model files,
    which register their classes for the Auto classes and the pipeline task: every later test in the
    process would then get the copy's classes. Put the registries back after each test."""
    saved = [(registry, dict(registry)) for registry in _auto_registries()]
    yield
    for registry, content in saved:
        if registry != content:
            registry.clear()
            registry.update(content)


@pytest.fixture(scope="session", autouse=True)
def node_svms_in_process():
    """Training runs in the test process fit their node SVMs one after another in that process
    (joblib's sequential backend) instead of in worker processes that each import torch and
    transformers first: the fits are seeded, so the result is the same (tests/test_lexical.py checks
    it), and on 2 CPU cores the workers' start-up cost more than the whole tiny run."""
    from joblib import parallel_config

    with parallel_config(backend="sequential"):
        yield


# --------------------------------------------------------------------------------------------------
# Training runs killed in a child process, without starting Python anew for each
# --------------------------------------------------------------------------------------------------

# What a training run imports: a fork server imports it once, and each child it forks starts from there.
TRAIN_PRELOAD = ("torch", "transformers", "accelerate", "datasets", "sklearn.svm", "matplotlib.pyplot",
                 "thmm.cli.train", "thmm.trainer", "thmm.lexical", "thmm.reports")


def _train_cli_in_child(argv: list[str], log: str, env: dict, threads: int) -> None:
    """In the forked child: ``thmm-train ARGV`` with stdout and stderr in ``log``; exits with its code
    (or dies by the SIGKILL the run sends itself)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    import torch
    from joblib import parallel_config

    from thmm.cli.train import cli

    torch.set_num_threads(threads)  # the test process's: the runs that tests compare compute alike
    with parallel_config(backend="sequential"):  # as in the test process (node_svms_in_process)
        code = cli(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="session")
def train_in_child():
    """``train_in_child(argv, log, env=None, timeout=300)``: run ``thmm-train ARGV`` in a separate
    process, forked from a server that imported torch, transformers and thmm once for the session
    (multiprocessing's fork server: single-threaded, never ran a model); the child's exit code, -9
    when it was SIGKILLed (``--debug-kill-at-step``, ``THMM_DEBUG_KILL_AT``). A test that kills a run
    needs a process of its own, but not a fresh interpreter: a ``python train.py`` costs about 10 s
    of imports on CI's machine before it trains."""
    import multiprocessing
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(TRAIN_PRELOAD))
    forkserver.ensure_running()

    def run(argv, log, env=None, timeout=300) -> int:
        import torch

        process = context.Process(target=_train_cli_in_child,
                                  args=([str(a) for a in argv], str(log), dict(env or {}), torch.get_num_threads()))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise TimeoutError(f"thmm-train {' '.join(map(str, argv))} ran past {timeout} s; its log: {log}")
        return process.exitcode

    return run


@pytest.fixture
def one_distributed_run_at_a_time(tmp_path_factory):
    """Tests that launch several processes (DDP, FSDP over gloo) take turns across pytest-xdist
    workers: two such launches at once on CI's 2 cores starve each other's collectives."""
    import fcntl

    lock_path = Path(tempfile.gettempdir()) / "thmm-tests-distributed.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
        fcntl.flock(lock, fcntl.LOCK_UN)
