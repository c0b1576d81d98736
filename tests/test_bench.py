"""The benchmark scripts run (tiny settings; no timing assertions: figures belong in their output)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import QUICKSTART_DATA, REPO_ROOT, bench_module
from thmm.arguments import TrainingArguments
from thmm.lexical import FUSION_WEIGHTS

pytestmark = pytest.mark.slow  # end-to-end training runs; CI runs them too


def test_heads_benchmark_runs_and_compares_both_variants():
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "heads.py"), "--batches", "2", "--in-features", "16",
         "--steps", "1", "--warmup", "0", "--head-types", "thmm", "--relu-dropout",
         "--keep-gradients"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "819 heads" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 2 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["THMM", "THMM"]  # naive/vectorized, autograd's/lean
    assert all(float(r.split("|")[5].strip().rstrip("x")) > 0 for r in rows)  # speed-ups were measured
    assert "| batch | heads | autograd's fwd+bwd (ms) | lean fwd+bwd (ms) |" in out.stdout


def test_lexical_memory_benchmark_compares_the_same_matrix():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "lexical_memory.py"), "--documents", "1500",
                          "--length", "20"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same matrix: True" in out.stdout
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert {"coo", "token_counts"} <= set(rows)


def test_svm_solver_benchmark_compares_each_solver_with_the_default():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "svm_solvers.py"), "--data",
                          str(REPO_ROOT / "dataset_script" / "quickstart"), "--scheme", "cpc", "--sizes", "400",
                          "--nodes", "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| 400 |")]
    assert len(rows) == 6 and "default" in rows[0][4] and float(rows[0][6]) == 1.0  # the default against itself
    assert "SVM_SOLVER" in rows[-1][4]  # the fit's own solver, last
    assert all(0.0 < float(r[7]) <= 1.0 for r in rows)  # a share of the decisions, measured for each solver


def test_distributed_exit_benchmark_counts_each_ending(tmp_path, one_distributed_run_at_a_time):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "distributed_exit.py"), "--launches", "1",
                          "--load", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads((tmp_path / "distributed_exit.json").read_text())["counts"]
    assert set(counts) == {"interpreter", "thmm"} and all(sum(c.values()) == 1 for c in counts.values())
    assert counts["thmm"]["ok"] == 1  # the commands' ending finishes a launch that ran
    assert "| thmm.cli.end_distributed_process | 1 |" in out.stdout


def test_cpc_sized_taxonomy_has_cpc_level_sizes():
    tax = bench_module("heads").cpc_sized_taxonomy()
    assert [s.stop - s.start for s in tax.level_slices] == [9, 136, 674]


def run_quality_on_quickstart(out_dir, encoder_dir, *options):
    """bench/quality.py on the quickstart fixture with the tiny encoder, writing to ``out_dir``."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--encoder", str(encoder_dir), "--out", str(out_dir),
         "--small-dev-documents", "0", *options],  # its 60 dev documents tuned at the granularity asked
        capture_output=True, text=True, timeout=600, cwd=out_dir,
    )


def test_quality_benchmark_on_the_quickstart_data(tmp_path, tiny_encoder_dir):
    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "svm,flat-cls,tmm-mean", "--epochs", "1",
                                    "--n-jobs", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"svm", "flat-cls", "tmm-mean"}
    for run in results.values():
        assert run["test"]["num_documents"] == 60 and 0 <= run["test"]["macro_f1"] <= 1
        assert run["test"]["auprc"] is not None
    assert results["svm"]["settings"]["threshold"] == -0.25
    assert (tmp_path / "results.md").exists() and (tmp_path / "per_level_macro_f1.png").exists()
    assert "Targets (test)" in (tmp_path / "results.md").read_text()

    # the run fused a lexical scorer (the default) and reports the heads alone beside it
    weight = results["tmm-mean"]["lexical_fusion"]["weight"]  # one weight, or one per level
    assert all(w in FUSION_WEIGHTS for w in (weight if isinstance(weight, list) else [weight]))
    assert not isinstance(weight, list) or len(weight) == 3
    assert results["tmm-mean"]["test_heads_only"]["num_documents"] == 60
    assert results["tmm-mean"]["settings"]["lexical_fusion"] is True

    # --retune trains nothing: the finished TMM gets dev thresholds for micro-F1 beside its own ones
    weights = tmp_path / "runs" / "tmm-mean" / "model" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    heads_only = ("--no-lexical-fusion",)
    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "tmm-mean", "--retune", "micro_f1",
                                    *heads_only)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "tmm-mean", "--retune", "micro_f1",
                                    "--threshold-granularity", "level", *heads_only)
    assert out.returncode == 0, out.stderr[-3000:]
    retuned = json.loads((tmp_path / "results.json").read_text())
    assert set(retuned) == {"svm", "flat-cls", "tmm-mean", "tmm-mean@micro_f1:node", "tmm-mean@micro_f1"}
    assert retuned["tmm-mean"] == results["tmm-mean"] and weights.stat().st_mtime_ns == mtime
    for key, granularity in (("tmm-mean@micro_f1:node", "node"), ("tmm-mean@micro_f1", "level")):
        run = retuned[key]
        assert run["thresholds"]["objective"] == "micro_f1" and run["settings"]["threshold_granularity"] == granularity
        assert run["dev"]["micro_f1"] == pytest.approx(run["thresholds"][f"per_{granularity}_score"])
        assert run["test"]["num_documents"] == 60 and run["settings"]["retuned_from"] == "tmm-mean"
        # the same heads score the same documents: only the thresholds, not the scores, changed
        assert run["test"]["auprc"] == pytest.approx(results["tmm-mean"]["test_heads_only"]["auprc"])
    assert retuned["tmm-mean@micro_f1"]["thresholds"]["per_node"] is None
    # node thresholds tune the training-frequency bands by default; per-level ones have no bands
    assert retuned["tmm-mean@micro_f1:node"]["settings"]["threshold_frequency_bands"] is True
    assert retuned["tmm-mean@micro_f1"]["settings"]["threshold_frequency_bands"] is False
    assert retuned["tmm-mean@micro_f1:node"]["dev"]["micro_f1"] >= retuned["tmm-mean@micro_f1"]["dev"]["micro_f1"]
    assert "tmm-mean@micro_f1:node" in (tmp_path / "results.md").read_text()
    # with lexical fusion (the default) the retune fits the scorer anew; its heads-only line is the retune above
    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "tmm-mean", "--retune", "micro_f1")
    assert out.returncode == 0, out.stderr[-3000:]
    fused = json.loads((tmp_path / "results.json").read_text())["tmm-mean@micro_f1:node+lexical"]
    assert fused["settings"]["lexical_fusion"] is True and fused["lexical_fusion"]["objective"] == "micro_f1"
    assert fused["test_heads_only"] == retuned["tmm-mean@micro_f1:node"]["test"]
    assert "| tmm-mean@micro_f1:node+lexical |" in (tmp_path / "results.md").read_text()

    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "thmm-mean", "--retune", "micro_f1")
    assert out.returncode != 0 and "'thmm-mean' is not a neural model with a saved model" in out.stderr

    # an interrupted run (its saved best epoch, no results entry) is scored with this command's settings;
    # for the run's own objective that reproduces the finished run's test scores, lexical fusion included
    (tmp_path / "results.json").write_text(json.dumps({"svm": results["svm"]}))
    out = run_quality_on_quickstart(tmp_path, tiny_encoder_dir, "--models", "tmm-mean", "--retune",
                                    TrainingArguments.threshold_objective, "--epochs", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((tmp_path / "results.json").read_text())[f"tmm-mean@{TrainingArguments.threshold_objective}:node+lexical"]
    assert run["settings"]["interrupted"] is True and run["settings"]["frozen_encoder"] is True
    assert run["lexical_fusion"] == results["tmm-mean"]["lexical_fusion"] | {"fit_seconds": run["lexical_fusion"]["fit_seconds"]}
    for metric in ("macro_f1", "micro_f1", "auprc"):
        assert run["test"][metric] == pytest.approx(results["tmm-mean"]["test"][metric]), metric

    # bench/thresholds.py: per level against per node, by two-fold cross-validation on dev
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "tmm-mean", "--min-supports", "2,5", "--scores", "raw,consistent",
         "--decodings", "plain,at_least_one", "--objectives", "f1_avg,f1_mean"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    all_rows = json.loads((tmp_path / "thresholds.json").read_text())["tmm-mean"]
    assert [r["objective"] for r in all_rows] == ["f1_avg"] * 12 + ["f1_mean"] * 12
    for rows in (all_rows[:12], all_rows[12:]):
        assert [r["setting"] for r in rows] == [s + k + d for k in ("", ", consistent scores")
                                                for s in ("per level", "per node, support >= 2", "per node, support >= 5")
                                                for d in ("", ", at least one leaf")]
        assert [r["scores"] for r in rows] == ["raw"] * 6 + ["consistent"] * 6
        assert [r["decoding"] for r in rows] == ["plain", "at_least_one"] * 6
        assert rows[0]["nodes_with_own_threshold"] == 0
        assert rows[2]["nodes_with_own_threshold"] >= rows[4]["nodes_with_own_threshold"]
        assert all(rows[i]["nodes_with_own_threshold"] == rows[i + 1]["nodes_with_own_threshold"] for i in range(0, 12, 2))
    for row in all_rows:
        assert all(0 <= row[part][k] <= 1 for part in ("cv_dev", "test") for k in ("macro_f1", "micro_f1", "f1_avg", "f1_mean"))
        assert row["test"]["f1_mean"] == pytest.approx((row["test"]["macro_f1"] + row["test"]["micro_f1"]) / 2)
    report = (tmp_path / "thresholds.md").read_text()
    assert "per node, support >= 5" in report and "| tmm-mean | f1_mean | per level |" in report
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "tmm-mean", "--min-supports", "5", "--frequency-bands"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "thresholds.json").read_text())["tmm-mean"]
    assert [r["setting"] for r in rows] == ["per level", "per node, support >= 5",
                                            "per node, support >= 5, frequency bands"]
    assert [r["frequency_bands"] for r in rows] == [False, False, True]
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "thmm-mean"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--models: 'thmm-mean' is not a neural model with results in" in bad.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "tmm-mean", "--scores", "raw,capped"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--scores: expected raw, consistent or both" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "tmm-mean", "--decodings", "plain,top1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--decodings: expected plain, at_least_one or both" in bad.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "thresholds.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "tmm-mean", "--objectives", "f1_avg,accuracy"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--objectives: expected some of" in bad.stderr and "'f1_avg,accuracy'" in bad.stderr


def test_quality_benchmark_skips_clearly_without_data(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--data", str(tmp_path / "absent"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0 and out.stdout.startswith("SKIPPED: no data at")


def test_harnn_rows_on_the_quickstart_data(tmp_path):
    """HARNN trains once for both rows (at 0.5, and dev-tuned as the other neural models); --retune
    re-tunes its saved scores without training."""
    pytest.importorskip("gensim")
    tiny = ("--harnn-epochs", "2", "--harnn-embedding-dim", "8", "--harnn-lstm-hidden", "8", "--harnn-fc-size", "8",
            "--harnn-attention-size", "8")
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "harnn-orig,harnn", *tiny], capture_output=True, text=True, timeout=600,
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("harnn epoch 1:") == 1  # one training run for both rows
    results = json.loads((tmp_path / "results.json").read_text())
    orig, tuned = results["harnn-orig"], results["harnn"]
    assert orig["settings"]["threshold"] == 0.5 and "thresholds" not in orig
    assert tuned["thresholds"]["objective"] == TrainingArguments.threshold_objective
    assert tuned["settings"]["threshold_granularity"] == "node" and tuned["settings"]["alpha"] == 0.5
    assert orig["test"]["num_documents"] == tuned["test"]["num_documents"] == 60
    assert orig["test"]["auprc"] == tuned["test"]["auprc"]  # the same scores, other thresholds
    assert orig["train_seconds_per_epoch"] > 0 and orig["best_epoch"] in (1, 2)
    probs = tmp_path / "runs" / "harnn" / "probs.npz"
    mtime = probs.stat().st_mtime_ns
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "quality.py"), "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
         "--out", str(tmp_path), "--models", "harnn", "--retune", "macro_f1", "--threshold-granularity", "global"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "harnn epoch" not in out.stdout and probs.stat().st_mtime_ns == mtime
    retuned = json.loads((tmp_path / "results.json").read_text())["harnn@macro_f1:global"]
    assert retuned["thresholds"]["per_level"] is None and retuned["settings"]["retuned_from"] == "harnn"
    assert retuned["dev"]["macro_f1"] == pytest.approx(retuned["thresholds"]["global_score"])
    assert "| harnn@macro_f1:global |" in (tmp_path / "results.md").read_text()


def test_cpu_memory_benchmark_compares_allocator_set_ups(tmp_path, tiny_encoder_dir):
    from thmm.cpu_memory import transparent_huge_pages_available

    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "cpu_memory.py"), "--dataset", str(QUICKSTART_DATA),
                          "--encoder", str(tiny_encoder_dir), "--documents", "64", "--max-length", "64", "--setups", "0,3,5"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| ") and "set-up" not in line]
    assert [r[1].strip() for r in rows] == ["glibc's default (4 KiB pages, dynamic threshold, 64 MiB)",
                                           "huge pages, fixed threshold, 32 MiB (default)",
                                           "huge pages, fixed threshold, 16 MiB, moments in a file (--low-cpu-memory)"]
    assert rows[0][2].strip() == "no" and rows[0][4].strip() == "1.00x"  # the base, without huge pages
    huge = "yes" if transparent_huge_pages_available() else "no"
    assert [r[2].strip() for r in rows[1:]] == [huge, huge]
    # the tiny model has no parameter large enough for the file, even with --low-cpu-memory
    assert [r[5].strip() for r in rows] == ["no", "no", "no"]
    assert all(float(r[6]) > 0.1 for r in rows)  # a measured peak, in GB


def test_cpu_memory_benchmark_refuses_bad_options_and_skips_without_a_corpus(tmp_path):
    bench = [sys.executable, str(REPO_ROOT / "bench" / "cpu_memory.py")]
    bad = subprocess.run([*bench, "--documents", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--documents 0: must be positive" in bad.stderr
    bad = subprocess.run([*bench, "--setups", "0,9", "--dataset", str(tmp_path), "--encoder", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--setups 0,9: indices from 0 to 5" in bad.stderr
    skipped = subprocess.run([*bench, "--dataset", str(tmp_path / "absent")], capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0 and "skipped: --dataset" in skipped.stdout and "is not a folder" in skipped.stdout
