"""What the heads cost below the subclass: parameters and training-step time of each candidate design.

    python bench/deep_heads.py --data ../shared/data/dronesr-groups    # the dronesr-groups taxonomies

For the taxonomy of the training labels at depth 3, 4 and 5, and TMM and THMM, one forward and
backward pass of the heads alone (no encoder: a frozen-encoder epoch is this, once per batch) on a
batch of 64 random 384-d document vectors (MiniLM's width), median of ``--repeats`` after a warm-up:

- ``paper``: the paper's per-node heads at every level (``head_hidden_size`` 256), the depth-3 model's
  design (beyond depth 3: parameters only, counted, since they would not fit the budget);
- ``shared``: per-node heads for levels 1-3, then hidden layers shared by each deeper level with one
  output row per node (THMM: one hidden state per parent), ``--deep-head-hidden-size`` 128 (the default);
- ``per_node``: per-node heads for levels 1-3, then the paper's per-node heads 16 wide (the low-rank
  candidate).

Prints a markdown table; ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAPER_HIDDEN = 256


def paper_parameters(level_sizes, in_features: int, hidden: int, parent_links: bool) -> int:
    """Parameters of the paper's per-node heads over levels of these sizes (counted, not built)."""
    per_node = in_features * hidden + hidden + hidden * hidden + hidden + hidden + 1
    total = sum(level_sizes) * per_node
    if parent_links:
        total += sum(level_sizes[1:]) * hidden * hidden
    return total


def step_ms(heads, in_features: int, batch: int, repeats: int) -> float:
    doc = torch.randn(batch, in_features)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        heads(doc).sum().backward()
        heads.zero_grad(set_to_none=True)
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dronesr-groups")
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-features", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depths", default="3,4,5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "train.tsv").exists():
        print(f"SKIPPED: no data at {args.data}")
        return 0
    from dataset_script.readers import read_patent_tsv
    from heads_thmm import HierarchicalHeads
    from taxonomy_thmm import Taxonomy, cut_labels

    torch.manual_seed(0)
    labels = [row["labels"] for row in read_patent_tsv(args.data / "train.tsv", scheme=args.scheme)]
    rows = []
    for depth in [int(d) for d in args.depths.split(",")]:
        taxonomy = Taxonomy.from_codes({c for codes in labels for c in cut_labels(codes, depth)}, args.scheme, depth)
        sizes = [s.stop - s.start for s in taxonomy.level_slices]
        for head_type in ("tmm", "thmm"):
            links = head_type == "thmm"
            designs = [("paper", None, PAPER_HIDDEN)] if depth == 3 else [
                ("paper", None, PAPER_HIDDEN), ("shared", "shared", 128), ("per_node", "per_node", 16)]
            for name, deep, width in designs:
                row = {"depth": depth, "nodes": len(taxonomy), "head_type": head_type, "design": name,
                       "deep_hidden": width if depth > 3 else None}
                if name == "paper" and depth > 3:
                    row |= {"parameters": paper_parameters(sizes, args.in_features, PAPER_HIDDEN, links), "ms": None}
                else:
                    heads = HierarchicalHeads(taxonomy, args.in_features, PAPER_HIDDEN, 0.25, links,
                                              deep_heads=deep or "shared", deep_hidden_size=width)
                    for module in heads.modules():
                        if hasattr(module, "reset_parameters") and module is not heads:
                            module.reset_parameters()
                    row |= {"parameters": sum(p.numel() for p in heads.parameters()),
                            "ms": step_ms(heads, args.in_features, args.batch, args.repeats)}
                rows.append(row)
                print(row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nheads alone, forward + backward on a batch of {args.batch} {args.in_features}-d document vectors, "
          f"median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| depth | nodes | heads | design below the subclass | parameters | MB (fp32) | ms per batch |")
    print("|---:|---:|---|---|---:|---:|---:|")
    for r in rows:
        design = r["design"] + (f" ({r['deep_hidden']} wide)" if r["deep_hidden"] and r["design"] != "paper" else "")
        ms = f"{r['ms']:.1f}" if r["ms"] is not None else "not built"
        print(f"| {r['depth']} | {r['nodes']:,} | {r['head_type']} | {design} | {r['parameters']:,} | "
              f"{r['parameters'] * 4 / 2**20:.0f} | {ms} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
