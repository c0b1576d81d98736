"""Are the explanations faithful? Delete a code's top-3 evidence words, or 3 random words of the same
document, and compare how much the code's score drops (issue 34's test, on dronesr dev).

    python bench/faithfulness.py --model /tmp/thmm-active-learning/suggest-round4/run/model
    python bench/faithfulness.py --model runs/mine/model --documents 500 --seed 0

For each of the first ``--documents`` dev patents with at least 6 words, every code the model predicts
(``at_least_one``: a patent with none gets its best leaf) is explained (``explain_thmm.explain_document``,
the words the pipeline's ``explain=True`` gives); the patent is scored again with that code's top-3 words
deleted (every occurrence), and with 3 distinct words drawn at random from the patent (seeded). A
patent's drop is the mean over its predicted codes of (score before - score after), on the model's
calibrated, fused scores. The test passes when the mean top-3 drop exceeds the mean random drop and
the top-3 drop is the larger in at least 70% of the patents.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dronesr"
TOKEN = re.compile(r"\w+|[^\w\s]")  # as BERT's basic tokenizer splits: words and single punctuation marks


def without(text: str, words: set[str]) -> str:
    """``text`` without every occurrence of ``words`` (case-insensitive), the rest joined by spaces."""
    return " ".join(t for t in TOKEN.findall(text) if t.lower() not in words)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON with the per-patent drops")
    args = parser.parse_args(argv)
    if not (args.data / "dev.tsv").exists():
        sys.exit(f"no dronesr data at {args.data}; nothing measured")

    import torch
    from transformers import AutoTokenizer

    from explain_thmm import document_words, explain_document
    from modeling_thmm import THMMForHierarchicalClassification

    torch.manual_seed(args.seed)
    model = THMMForHierarchicalClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rng = np.random.default_rng(args.seed)
    with open(args.data / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    documents = []
    for r in rows:
        words = sorted({w.lower() for w, _ in document_words(tokenizer, r["title"], "", model.config.max_length)[1]})
        if len(words) >= 6:
            documents.append((r["title"], words))
        if len(documents) == args.documents:
            break
    titles = [t for t, _ in documents]
    probs = model.predict_proba(tokenizer, titles, batch_size=128)
    records = model.label_records(probs, at_least_one=True, decimals=None)
    variants, plan = [], []  # plan: (document, node, top-3 variant index, random variant index)
    top_sizes = []
    for d, ((title, words), codes) in enumerate(zip(documents, records)):
        codes = [r["code"] for r in codes]
        evidence = explain_document(model, tokenizer, title, "", codes, top_words=3)
        for code in codes:
            top = {e["word"].lower() for e in evidence[code]}
            top_sizes.append(len(top))
            random_words = set(rng.choice(words, size=3, replace=False).tolist())
            variants += [without(title, top), without(title, random_words)]
            plan.append((d, model.taxonomy.index(code), len(variants) - 2, len(variants) - 1))
    variants = [v if v.strip() else "[UNK]" for v in variants]  # a patent left empty: as unknown text
    after = model.predict_proba(tokenizer, variants, batch_size=128)
    top_drop = np.zeros(len(documents))
    random_drop = np.zeros(len(documents))
    count = np.zeros(len(documents))
    for d, node, top_index, random_index in plan:
        top_drop[d] += probs[d, node] - after[top_index, node]
        random_drop[d] += probs[d, node] - after[random_index, node]
        count[d] += 1
    top_drop, random_drop = top_drop / count, random_drop / count
    wins = float(np.mean(top_drop > random_drop))
    result = {"documents": len(documents), "codes": len(plan), "mean_top3_drop": float(top_drop.mean()),
              "mean_random3_drop": float(random_drop.mean()), "share_top3_larger": wins,
              "codes_with_fewer_than_3_evidence_words": int(sum(s < 3 for s in top_sizes)),
              "passes": bool(top_drop.mean() > random_drop.mean() and wins >= 0.7)}
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps({**result, "top3_drops": top_drop.tolist(),
                                           "random3_drops": random_drop.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
