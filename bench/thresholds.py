"""Per-level against per-node thresholds on saved bench models, judged by cross-validation on dev.

    python bench/thresholds.py --out bench/results/top2 --models tmm-mean
    python bench/thresholds.py --out bench/results/small-flat40 --models flat-mean,tmm-mean,thmm-mean
    python bench/thresholds.py --out bench/results/full --models tmm-mean --min-supports 20,40 --scores raw,consistent
    python bench/thresholds.py --out bench/results/thmm3 --models thmm-mean --min-supports 20 --decodings plain,at_least_one
    python bench/thresholds.py --out bench/results/frozen --models thmm-mean --min-supports 20 --objectives f1_avg,f1_mean,micro_f1
    python bench/thresholds.py --out ~/thmm-bench/d4 --data ../shared/data/dronesr-groups --models tmm-mean --min-supports 20 --frequency-bands

Each named model was trained by ``bench/quality.py --out OUT`` (finished, or interrupted with a
retune entry that holds its settings). Its saved model scores dev and test once. Then, for
per-level thresholds (``--threshold-granularity level``) and for per-node ones at each
``--min-supports`` value, the thresholds are tuned on one half of dev and scored on the other half,
both ways round (two-fold cross-validation, a fixed random split): that is the number to choose by.
The test scores at thresholds tuned on the whole dev set are shown beside it, as the bench reports
them, not to choose by. ``--scores raw,consistent`` repeats every setting on consistent scores
(each node capped by its ancestors, as ``--consistent-scores`` decodes), with thresholds tuned on
them. ``--decodings plain,at_least_one`` scores every setting a second time with each document
given at least one leaf (its best) at the same thresholds. ``--objectives f1_avg,f1_mean`` repeats
everything with the thresholds tuned for each objective in turn; where ``OUT/results.json`` holds the
SVM, its dev and test scores are printed above the table, for the margins the bench's targets name.
The scores are the heads' alone: a model saved with lexical fusion is compared without it
(``bench/quality.py --retune`` fits and reports the fusion).

Writes ``OUT/thresholds.json`` and ``OUT/thresholds.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from quality import DEFAULT_DATA, NEURAL, run_probabilities, saved_run_settings

from thmm.arguments import TrainingArguments
from thmm.evaluation import evaluate_probabilities, evaluation_taxonomy
from thmm.thresholds import NODE_MIN_SUPPORT, OBJECTIVES, tune_thresholds

SHOWN = ("macro_f1", "micro_f1", "f1_avg", "f1_mean")


def compare(probs, references, taxonomy, scheme: str, objectives, min_supports, seed: int = 0,
            score_kinds=("raw",), decodings=("plain",), node_frequency=None) -> list[dict]:
    """One row per threshold objective, kind of scores, setting and decoding: two-fold dev cross-validation and test
    scores (``probs`` and ``references`` by split: ``validation``, ``test``). ``consistent`` scores are
    capped by their ancestors (``Taxonomy.min_along_path``, what ``--consistent-scores`` decodes)
    before the thresholds are tuned on them. The ``at_least_one`` decoding gives a document with no
    leaf above its threshold its best leaf, at the thresholds tuned for the plain decoding. With
    ``node_frequency`` (each node's training-document count), every per-node setting is repeated with
    the training-frequency bands (``--threshold-frequency-bands``)."""
    dev_refs = references["validation"]
    order = np.random.default_rng(seed).permutation(len(dev_refs))
    halves = [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])]
    eval_tax = {s: evaluation_taxonomy(taxonomy, references[s], scheme) for s in references}
    refs = {i: [dev_refs[d] for d in halves[i]] for i in (0, 1)}  # the halves, the same for every setting
    tax = {i: evaluation_taxonomy(taxonomy, refs[i], scheme) for i in (0, 1)}
    rows = []
    for objective, kind in ((o, k) for o in objectives for k in score_kinds):
        scores = probs if kind == "raw" else {s: taxonomy.min_along_path(p) for s, p in probs.items()}
        dev = scores["validation"]
        band_choices = (None,) if node_frequency is None else (None, node_frequency)
        for granularity, support, frequency in [("level", NODE_MIN_SUPPORT, None),
                                                *(("node", m, f) for m in min_supports for f in band_choices)]:
            fold_thresholds = [tune_thresholds(dev[halves[tune_on]], refs[tune_on], taxonomy, objective, tax[tune_on],
                                               granularity, support, frequency).thresholds for tune_on in (0, 1)]
            tuned = tune_thresholds(dev, dev_refs, taxonomy, objective, eval_tax["validation"], granularity, support,
                                    frequency)
            setting = ("per level" if granularity == "level" else f"per node, support >= {support}"
                       + ("" if frequency is None else ", frequency bands"))
            for decoding in decodings:
                at_least_one = decoding == "at_least_one"
                folds = [evaluate_probabilities(dev[halves[1 - i]], refs[1 - i], taxonomy, fold_thresholds[i],
                                                tax[1 - i], with_scores=False, at_least_one=at_least_one)
                         for i in (0, 1)]
                test = evaluate_probabilities(scores["test"], references["test"], taxonomy, tuned.thresholds,
                                              eval_tax["test"], with_scores=False, at_least_one=at_least_one)
                rows.append({
                    "setting": setting + ("" if kind == "raw" else ", consistent scores")
                    + (", at least one leaf" if at_least_one else ""),
                    "objective": objective, "scores": kind, "decoding": decoding,
                    "granularity": granularity, "min_support": support if granularity == "node" else None,
                    "frequency_bands": frequency is not None,
                    "cv_dev": {k: float(np.mean([f[k] for f in folds])) for k in SHOWN},
                    "test": {k: float(test[k]) for k in SHOWN},
                    "nodes_with_own_threshold": len(tuned.thresholds.per_node or {}),
                })
    return rows


def render(tables: dict, svm: dict | None = None) -> str:
    lines = ["# thresholds tuned on dev: two-fold cross-validation on dev (choose by this), and test", ""]
    if svm:
        lines += ["SVM (threshold -0.25): " + "; ".join(  # results written before f1_mean existed lack it
            f"{split} " + ", ".join(f"{k} {svm[split][k]:.4f}" for k in SHOWN if svm[split].get(k) is not None)
            for split in ("dev", "test")), ""]
    header = " | ".join(f"{part} {k.replace('_f1', '-hF1')}" for part in ("CV-dev", "test") for k in SHOWN)
    lines += [f"| model | objective | thresholds | {header} | nodes with their own |",
              "|---|---|---|" + "---:|" * (2 * len(SHOWN) + 1)]
    for name, rows in tables.items():
        for row in rows:
            cv, test = row["cv_dev"], row["test"]
            lines.append(f"| {name} | {row['objective']} | {row['setting']} | "
                         + " | ".join(f"{part[k]:.4f}" for part in (cv, test) for k in SHOWN)
                         + f" | {row['nodes_with_own_threshold']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--out", type=Path, required=True, help="the bench/quality.py --out of the models")
    parser.add_argument("--models", required=True, help="comma-separated neural models under OUT/runs")
    parser.add_argument("--objectives", default=TrainingArguments.threshold_objective,
                        help=f"comma-separated threshold objectives to compare, of {', '.join(OBJECTIVES)} "
                             "(default: training's)")
    parser.add_argument("--min-supports", default="5,10,20,40,80",
                        help="per-node settings to compare: dev documents a node must be gold in")
    parser.add_argument("--seed", type=int, default=0, help="of the random halving of dev")
    parser.add_argument("--frequency-bands", action="store_true",
                        help="repeat every per-node setting with the training-frequency bands")
    parser.add_argument("--scores", default="raw", help="comma-separated: raw, consistent (thresholds tuned on "
                        "scores capped by their ancestors, as --consistent-scores decodes)")
    parser.add_argument("--decodings", default="plain", help="comma-separated: plain, at_least_one (a document "
                        "with no leaf above its threshold gets its best leaf, as --at-least-one decodes)")
    args = parser.parse_args(argv)
    try:
        min_supports = [int(m) for m in args.min_supports.split(",")]
        if min(min_supports) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--min-supports: expected positive integers like 5,10,20, got {args.min_supports!r}")
    score_kinds = args.scores.split(",")
    if set(score_kinds) - {"raw", "consistent"}:  # an empty --scores splits to [""], caught here
        parser.error(f"--scores: expected raw, consistent or both (comma-separated), got {args.scores!r}")
    objectives = args.objectives.split(",")
    if set(objectives) - set(OBJECTIVES):  # an empty --objectives splits to [""], caught here
        parser.error(f"--objectives: expected some of {', '.join(OBJECTIVES)} (comma-separated), got {args.objectives!r}")
    decodings = args.decodings.split(",")
    if set(decodings) - {"plain", "at_least_one"}:
        parser.error(f"--decodings: expected plain, at_least_one or both (comma-separated), got {args.decodings!r}")
    if not (args.data / "train.tsv").exists():
        print(f"SKIPPED: no data at {args.data} (expected train.tsv, dev.tsv, test.tsv; see ../shared/README.md)")
        return 0
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    from dataset_script import load_patent_splits

    from thmm.data import cut_splits, training_node_counts

    all_splits = load_patent_splits(str(args.data), scheme=args.scheme)
    tables = {}
    for name in args.models.split(","):
        settings = saved_run_settings(results, name) if name in NEURAL else None
        if settings is None:
            parser.error(f"--models: {name!r} is not a neural model with results in {results_path}")
        splits = cut_splits(dict(all_splits), settings.get("depth") or 3)  # the labels at the run's depth
        if settings.get("max_train_samples"):  # the training documents the run saw, for the bands' counts
            splits["train"] = splits["train"].select(range(min(settings["max_train_samples"], len(splits["train"]))))
        run = run_probabilities(settings, args, splits, args.out / "runs" / name)
        frequency = training_node_counts(run["taxonomy"], splits["train"]) if args.frequency_bands else None
        tables[name] = compare(run["probs"], run["references"], run["taxonomy"], args.scheme, objectives,
                               min_supports, args.seed, score_kinds, decodings, frequency)
        print(render({name: tables[name]}), flush=True)
    (args.out / "thresholds.json").write_text(json.dumps(tables, indent=1))
    report = render(tables, results.get("svm"))
    (args.out / "thresholds.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
