"""Calibration on dronesr: expected calibration error and F1 before and after, temperature against Platt.

    python bench/calibration.py --model /tmp/thmm-active-learning/suggest-round4/run/model

The model's raw logits (heads fused with its lexical scorer, no calibration) are computed once on
dev and test. Each method is fitted on dev (``thmm.calibration``: ``temperature``, one temperature
per level; ``platt``, a temperature and a shift per level) and scored on both splits: ECE over all
(document, node) pairs and per level (15 bins), and the micro/macro-hF1 of the decisions at the
model's thresholds mapped through the method (``calibration_thmm.calibrated_thresholds``). The
model's thresholds are taken back to the raw scale first when it was saved calibrated.
"""

from __future__ import annotations

import argparse
import csv
import ast
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dronesr"


def raw_logits(model, tokenizer, titles, batch_size=256) -> np.ndarray:
    import torch

    from modeling_thmm import encode_documents, longest_first

    enc = encode_documents(tokenizer, titles, None, model.config.max_length)
    enc.pop("truncated")
    out = np.zeros((len(titles), len(model.taxonomy)), dtype=np.float32)
    order = longest_first([len(ids) for ids in enc["input_ids"]])
    with torch.no_grad():
        for start in range(0, len(titles), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in enc.items()}, return_tensors="pt")
            out[rows] = model(**batch).logits.float().numpy()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scheme", default="ipc")
    parser.add_argument("--documents", type=int, default=None, help="only the first N of each split (a smoke run)")
    args = parser.parse_args(argv)
    if not (args.data / "dev.tsv").exists():
        sys.exit(f"no dronesr data at {args.data}; nothing measured")
    from transformers import AutoTokenizer

    from calibration_thmm import calibrate_logits, calibrated_thresholds, node_shifts, node_temperatures
    from configuration_thmm import Thresholds
    from modeling_thmm import THMMForHierarchicalClassification
    from thmm.calibration import expected_calibration_error, fit_platt, fit_temperatures
    from thmm.data import label_targets
    from thmm.evaluation import evaluate_probabilities, evaluation_taxonomy

    model = THMMForHierarchicalClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    taxonomy, config = model.taxonomy, model.config
    saved = config.thresholds
    if config.calibration_temperatures is not None:  # back to the raw scale: the inverse map
        temps = config.calibration_temperatures
        shifts = config.calibration_shifts or [0.0] * len(temps)
        inverse = [1 / t for t in temps]
        saved = calibrated_thresholds(saved, taxonomy, inverse, [-b * t for b, t in zip(shifts, temps)])
    splits = {}
    for name, file in (("dev", "dev.tsv"), ("test", "test.tsv")):
        with open(args.data / file, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))[: args.documents]
        refs = [ast.literal_eval(r["labels"]) for r in rows]
        splits[name] = (raw_logits(model, tokenizer, [r["title"] for r in rows]), refs,
                        evaluation_taxonomy(taxonomy, refs, args.scheme))
    dev_logits, dev_refs, _ = splits["dev"]
    fits = {"none": None, "temperature": (fit_temperatures(dev_logits, label_targets(taxonomy, dev_refs), taxonomy),
                                          None),
            "platt": fit_platt(dev_logits, label_targets(taxonomy, dev_refs), taxonomy)}
    results = {}
    # isotonic regression per level, for comparison only (not offered by thmm-train): a step function,
    # so it ties documents within a node, and a threshold on a flat step can change decisions
    from sklearn.isotonic import IsotonicRegression

    dev_targets = label_targets(taxonomy, dev_refs)
    isotonic = [IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
        dev_logits[:, cols].ravel(), dev_targets[:, cols].ravel()) for cols in taxonomy.level_slices]
    node_thresholds = taxonomy.node_thresholds(saved)
    for name, (logits, refs, eval_taxonomy) in splits.items():
        probs = np.zeros(logits.shape, dtype=np.float32)
        mapped = np.zeros(len(taxonomy))
        for level, cols in enumerate(taxonomy.level_slices):
            probs[:, cols] = isotonic[level].predict(logits[:, cols].ravel()).reshape(len(logits), -1)
            raw_t = np.clip(node_thresholds[cols], 1e-7, 1 - 1e-7)
            mapped[cols] = isotonic[level].predict(np.log(raw_t) - np.log1p(-raw_t))
        every_node = Thresholds(0.5, per_node={code: float(t) for code, t in zip(taxonomy.nodes, mapped)})
        metrics = evaluate_probabilities(probs, refs, taxonomy, every_node, eval_taxonomy, with_scores=False)
        ties = float(np.mean([len(np.unique(probs[:, j])) / len(np.unique(logits[:, j])) for j in
                              range(probs.shape[1])]))
        results[f"isotonic/{name}"] = {"macro_f1": metrics["macro_f1"], "micro_f1": metrics["micro_f1"],
                                       **expected_calibration_error(probs, label_targets(taxonomy, refs), taxonomy),
                                       "distinct_scores_kept": ties}
    for method, fit in fits.items():
        thresholds = saved if fit is None else calibrated_thresholds(saved, taxonomy, fit[0], fit[1])
        for name, (logits, refs, eval_taxonomy) in splits.items():
            z = logits if fit is None else calibrate_logits(logits, node_temperatures(taxonomy, fit[0]),
                                                            node_shifts(taxonomy, fit[1]))
            probs = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(np.float32)
            metrics = evaluate_probabilities(probs, refs, taxonomy, thresholds, eval_taxonomy, with_scores=False)
            ece = expected_calibration_error(probs, label_targets(taxonomy, refs), taxonomy)
            results[f"{method}/{name}"] = {"macro_f1": metrics["macro_f1"], "micro_f1": metrics["micro_f1"], **ece,
                                           "fit": fit}
    print(json.dumps(results, indent=1))
    print("| method | split | ECE | level 1 | level 2 | level 3 | macro-hF1 | micro-hF1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        method, split = key.split("/")
        print(f"| {method} | {split} | {r['ece']:.5f} | {r['level1_ece']:.5f} | {r['level2_ece']:.5f} | "
              f"{r['level3_ece']:.5f} | {r['macro_f1']:.4f} | {r['micro_f1']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
