"""thmm-predict in a user's hands: documents on stdin never answer a prompt, and code that a model
folder names (an ``auto_map``) runs only with ``--trust-remote-code``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from conftest import OFFLINE_ENV, REPO_ROOT, save_model_dir
from thmm.cli import predict

# Each line is a "yes" to transformers' "Do you wish to run the custom code? [y/N]", and the last a document.
ANSWERS = "y\nyes\nY\ntitle\n"


def write_code(folder, marker) -> None:
    """A tokenizer module in the model folder that leaves ``marker`` when it is imported."""
    (folder / "tokenization_marker.py").write_text(
        "import pathlib\n\nfrom transformers import BertTokenizerFast\n\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n\n\n"
        "class MarkerTokenizer(BertTokenizerFast):\n    pass\n")


def name_code(path, auto_map: dict, **changes) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes, "auto_map": {**data.get("auto_map", {}), **auto_map}}))


@pytest.fixture
def model_with_code(tmp_path, tiny_model, tiny_tokenizer):
    """A saved tiny model whose tokenizer_config.json names a tokenizer class in the folder's own code."""
    folder = save_model_dir(tiny_model(max_length=16), tiny_tokenizer, tmp_path / "model")
    write_code(folder, tmp_path / "code-ran")
    name_code(folder / "tokenizer_config.json", {"AutoTokenizer": [None, "tokenization_marker.MarkerTokenizer"]},
              tokenizer_class="MarkerTokenizer")
    return folder


def predict_stdin(model, tmp_path, *extra, stdin=ANSWERS):
    """``predict.py --model MODEL --input -`` in a subprocess, documents on its stdin."""
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO_ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "predict.py"), "--model", str(model), "--input", "-",
                           "--top-k", "1", *extra], input=stdin, capture_output=True, text=True, env=env, timeout=300)


def assert_refused(result, file):
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == ""  # no prompt, no predictions
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert str(file) in lines[0] and "--trust-remote-code" in lines[0]


def test_stdin_never_answers_prompt(model_with_code, tmp_path):
    result = predict_stdin(model_with_code, tmp_path)
    assert_refused(result, model_with_code / "tokenizer_config.json")
    assert "[y/N]" not in result.stdout + result.stderr
    assert not (tmp_path / "code-ran").exists()


def test_config_naming_other_code_is_refused(tmp_path, tiny_model, tiny_tokenizer):
    """config.json names this package's classes, which load from here; any other code is refused."""
    folder = save_model_dir(tiny_model(max_length=16), tiny_tokenizer, tmp_path / "model")
    write_code(folder, tmp_path / "code-ran")
    name_code(folder / "config.json", {"AutoTokenizer": [None, "tokenization_marker.MarkerTokenizer"]})
    assert_refused(predict_stdin(folder, tmp_path), folder / "config.json")
    assert not (tmp_path / "code-ran").exists()


def test_trusted_remote_code_runs_without_prompting(model_with_code, tmp_path):
    """With --trust-remote-code the code runs (the user's explicit choice); still no prompt reads the documents."""
    result = predict_stdin(model_with_code, tmp_path, "--trust-remote-code")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2, 3, 4]
    assert "[y/N]" not in result.stdout + result.stderr
    assert (tmp_path / "code-ran").exists()


def test_no_prompt_even_past_the_auto_map_check(model_with_code, tmp_path, monkeypatch, capsys):
    """Without the refusal, every from_pretrained still gets an explicit trust_remote_code=False, and
    nothing but the reader takes stdin: transformers refuses, and no document answers anything."""
    monkeypatch.setattr(predict, "refuse_model_code", lambda model: None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ANSWERS.encode())))
    assert predict.cli(["--model", str(model_with_code), "--input", "-"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "[y/N]" not in out.err
    assert out.err.startswith(f"error: --model {model_with_code}: cannot load its tokenizer")
    assert not (tmp_path / "code-ran").exists()


def test_no_prompts_while_loading(monkeypatch):
    import builtins

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    stdin, prompt = sys.stdin, builtins.input
    with predict.no_prompts():
        with pytest.raises(EOFError):
            input("run it? [y/N] ")
        assert sys.stdin.read() == ""
    assert (sys.stdin, builtins.input) == (stdin, prompt)
    assert sys.stdin.read() == "y\n"  # the documents are still all there


def _output_opened(pid: int, folder) -> bool:
    """Whether process ``pid`` holds a file of ``folder`` open for writing: the output, unnamed or not."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(folder)):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("signal_name, code, message", [("SIGTERM", 143, "error: stopped by SIGTERM"),
                                                       ("SIGHUP", 129, "error: stopped by SIGHUP"),
                                                       ("SIGKILL", -9, None)])
def test_a_stopped_prediction_leaves_nothing_in_the_output_folder(tmp_path, tiny_model, tiny_tokenizer, signal_name,
                                                                  code, message):
    """A stop mid-run (a scheduler's SIGTERM, a closed terminal's SIGHUP, even SIGKILL, which nothing can
    clean up after) leaves neither the output nor a partial file beside it. The input is a FIFO kept open,
    so the command is stopped for certain after it opened its output and wrote a first document there."""
    import signal
    import time

    model = save_model_dir(tiny_model(max_length=16), tiny_tokenizer, tmp_path / "model")
    out, fifo = tmp_path / "out", tmp_path / "documents.txt"
    out.mkdir()
    (out / "user.txt").write_text("mine\n")
    os.mkfifo(fifo)
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO_ROOT)}
    # the signal's default disposition, as in a terminal: under nohup (or a background job) the tests inherit
    # SIGHUP (SIGINT) ignored, and the command rightly leaves an ignored signal alone
    signum = getattr(signal, signal_name)
    default = None if signum == signal.SIGKILL else lambda: signal.signal(signum, signal.SIG_DFL)
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "predict.py"), "--model", str(model), "--input",
                             str(fifo), "--chunk-size", "1", "--output", str(out / "predictions.jsonl")],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default)
    with open(fifo, "w") as writer:
        writer.write("shoe sole\nradio network\n")
        writer.flush()
        deadline = time.monotonic() + 240
        while not _output_opened(proc.pid, out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(1)  # the first chunk predicted and written, the second waiting on the open FIFO
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == code
    err = proc.stderr.read()
    assert "Traceback" not in err
    if message:
        assert err.strip().splitlines()[-1] == message
    assert sorted(p.name for p in out.iterdir()) == ["user.txt"]
