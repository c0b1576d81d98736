"""Small dev sets: does a remedy keep the fusion weight and the thresholds from overfitting 100 dev documents?

    python bench/small_dev.py --out bench/results/i33-small --models tmm-mean,thmm-mean --max-train-samples 1000

Each named model was trained (with lexical fusion) by ``bench/quality.py --out OUT``. Its saved heads
score dev and test once, and the word-piece SVMs of lexical fusion are fitted once on its training
documents (``thmm.lexical``). Then ``--subsets`` times, a random ``--dev-size`` documents of dev play
the whole dev set: the Platt scaling, the fusion weight and the thresholds are chosen on them by each
procedure below, and the result is scored on the rest of dev (held out: the number to choose a
procedure by) and on test (reported, not chosen by). Procedures, ``WEIGHT-RULE/GRANULARITY``:

- weight rule ``cv``: the package's (``choose_fusion_weight``: two-fold CV on dev, one random halving);
  ``cv5``: the mean CV objective over five random halvings (a smoother estimate of the same thing);
- granularity ``node`` (the default), ``level`` or ``global``: what gets its own threshold, for the
  weight's CV and for the final thresholds alike.

Writes ``OUT/small_dev_SIZE.json`` and ``OUT/small_dev_SIZE.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from quality import DEFAULT_DATA, run_probabilities, saved_run_settings

from thmm.arguments import TrainingArguments
from thmm.data import label_targets, tokenize_split
from thmm.evaluation import evaluate_probabilities, evaluation_taxonomy
from thmm.lexical import calibrate, choose_fusion_weight, fit_lexical_scorer, token_counts
from thmm.thresholds import NODE_MIN_SUPPORT, tune_thresholds
from modeling_thmm import fuse_lexical_logits

PROCEDURES = ("cv/node", "cv5/node", "cv/level", "cv/global", "cv5/global")
SCORES = ("f1_mean", "macro_f1", "micro_f1")


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lexical_decisions(splits, run: dict, max_length: int, max_train_documents: int, seed: int) -> dict:
    """The fusion SVMs' decision values on dev and test, fitted on the training word-pieces as
    ``thmm.lexical.fit_fusion`` fits them."""
    tokenizer, taxonomy = run["tokenizer"], run["taxonomy"]

    def counts(name):
        tokens = tokenize_split(splits[name], tokenizer, max_length, name)
        ids = tokens.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
        return token_counts(ids, len(tokenizer), tokenizer.all_special_ids)

    train_refs = [list(x) for x in splits["train"]["labels"]]
    if max_train_documents and len(train_refs) > max_train_documents:
        raise SystemExit("small_dev.py assumes the fusion SVMs saw every training document")
    fit = fit_lexical_scorer(counts("train"), label_targets(taxonomy, train_refs))
    return {name: fit.decisions(counts(name)) for name in ("validation", "test")}


def choose(procedure: str, head_logits, decisions, refs, taxonomy, scheme, objective) -> tuple[float, object]:
    """A procedure's fusion weight and thresholds from one small dev set."""
    rule, granularity = procedure.split("/")
    scale, shift = calibrate(decisions, label_targets(taxonomy, refs))
    seeds = range(5) if rule == "cv5" else (0,)
    cvs = [choose_fusion_weight(head_logits, decisions, refs, taxonomy, scheme, objective, granularity,
                                NODE_MIN_SUPPORT, scale, shift, seed=seed, per_level=False).cv_dev
           for seed in seeds]  # the procedures compare one weight for all nodes, as measured
    cv = {w: float(np.mean([c[w] for c in cvs])) for w in cvs[0]}
    weight = max(cv, key=lambda w: (cv[w], -w))
    probs = sigmoid(fuse_lexical_logits(head_logits, decisions, weight, scale, shift))
    tuned = tune_thresholds(probs, refs, taxonomy, objective, evaluation_taxonomy(taxonomy, refs, scheme), granularity,
                            NODE_MIN_SUPPORT)
    return weight, tuned.thresholds, (scale, shift)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--out", type=Path, required=True, help="a bench/quality.py --out folder")
    parser.add_argument("--models", default="tmm-mean,thmm-mean")
    parser.add_argument("--max-train-samples", type=int, default=None, help="as the models were trained")
    parser.add_argument("--dev-size", type=int, default=100, help="documents in each small dev set")
    parser.add_argument("--subsets", type=int, default=10, help="small dev sets drawn (seeds 0, 1, ...)")
    parser.add_argument("--objective", default=TrainingArguments.threshold_objective)
    parser.add_argument("--procedures", default=",".join(PROCEDURES), help=f"comma-separated, of {', '.join(PROCEDURES)}")
    args = parser.parse_args(argv)
    procedures = args.procedures.split(",")
    if set(procedures) - set(PROCEDURES):
        parser.exit(2, f"error: --procedures: choose from {', '.join(PROCEDURES)}\n")
    if args.dev_size < 4 or args.subsets < 1:
        parser.exit(2, "error: --dev-size must be at least 4 and --subsets at least 1\n")

    from dataset_script import load_patent_splits

    splits = load_patent_splits(str(args.data), scheme=args.scheme)
    if args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    results = json.loads((args.out / "results.json").read_text())
    refs = {s: [list(x) for x in splits[s]["labels"]] for s in ("validation", "test")}
    if args.dev_size >= len(refs["validation"]):
        parser.exit(2, f"error: --dev-size {args.dev_size} leaves no held-out dev documents\n")
    table = {}
    for name in args.models.split(","):
        settings = saved_run_settings(results, name)
        if settings is None:
            parser.exit(2, f"error: --models: no finished {name!r} under {args.out}\n")
        run = run_probabilities(settings, args, splits, args.out / "runs" / name)
        taxonomy = run["taxonomy"]
        decisions = lexical_decisions(splits, run, settings["max_length"],
                                      TrainingArguments.lexical_max_train_documents, 0)
        test_tax = run["eval_taxonomy"]["test"]
        rows = {p: {"weights": [], "held_out": {s: [] for s in SCORES}, "test": {s: [] for s in SCORES}}
                for p in procedures}
        for subset in range(args.subsets):
            order = np.random.default_rng(1000 + subset).permutation(len(refs["validation"]))
            small, rest = np.sort(order[: args.dev_size]), np.sort(order[args.dev_size :])
            small_refs = [refs["validation"][i] for i in small]
            rest_refs = [refs["validation"][i] for i in rest]
            rest_tax = evaluation_taxonomy(taxonomy, rest_refs, args.scheme)
            for procedure in procedures:
                weight, thresholds, (scale, shift) = choose(procedure, run["logits"]["validation"][small],
                                                            decisions["validation"][small], small_refs, taxonomy,
                                                            args.scheme, args.objective)
                fused = {s: sigmoid(fuse_lexical_logits(run["logits"][s], decisions[s], weight, scale, shift))
                         for s in ("validation", "test")}
                held = evaluate_probabilities(fused["validation"][rest], rest_refs, taxonomy, thresholds, rest_tax,
                                              with_scores=False)
                test = evaluate_probabilities(fused["test"], refs["test"], taxonomy, thresholds, test_tax,
                                              with_scores=False)
                rows[procedure]["weights"].append(weight)
                for s in SCORES:
                    rows[procedure]["held_out"][s].append(held[s] or 0.0)
                    rows[procedure]["test"][s].append(test[s] or 0.0)
            print(f"{name} subset {subset}: " + ", ".join(
                f"{p} w={rows[p]['weights'][-1]:g} held-out {args.objective} {rows[p]['held_out'][args.objective][-1]:.4f}"
                for p in procedures), flush=True)
        table[name] = rows
    stem = f"small_dev_{args.dev_size}"
    (args.out / f"{stem}.json").write_text(json.dumps(table, indent=1))
    report = render(table, args)
    (args.out / f"{stem}.md").write_text(report)
    print(report)
    return 0


def render(table: dict, args) -> str:
    lines = [f"# small dev: {args.subsets} random dev subsets of {args.dev_size} documents (data {args.data.name}, "
             f"train {args.max_train_samples or 'all'}); mean ± std over subsets", "",
             "| model | procedure | fusion weights chosen | held-out dev f1_mean | held-out dev macro-hF1 | "
             "held-out dev micro-hF1 | test macro-hF1 | test micro-hF1 |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, rows in table.items():
        for procedure, row in rows.items():
            def cell(values):
                return f"{np.mean(values):.4f} ± {np.std(values):.4f}"
            lines.append(f"| {name} | {procedure} | {' '.join(f'{w:g}' for w in row['weights'])} | "
                         f"{cell(row['held_out']['f1_mean'])} | {cell(row['held_out']['macro_f1'])} | "
                         f"{cell(row['held_out']['micro_f1'])} | {cell(row['test']['macro_f1'])} | "
                         f"{cell(row['test']['micro_f1'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
