"""Vectorized per-level heads against a naive per-node ``nn.ModuleList``, at CPC size.

    python bench/heads.py                 # CPU, TMM and THMM, batch 64, input 768
    python bench/heads.py --device cuda   # on a GPU

CPC size: 9 sections, 136 classes, 674 subclasses (819 heads). Each variant runs forward+backward
on the same weights and inputs; times are medians after warm-up, and peak memory is measured in a
fresh subprocess per variant (CPU: peak RSS growth over the resident weights, with glibc told to
return every freed block of 64 KiB or more to the OS so that RSS tracks live tensors; GPU: peak
allocated). ``--batches 64,8,1`` sweeps batch sizes: at batch 64 the heads are compute-bound on a
CPU (both variants do the same FLOPs); at small batches the per-module Python overhead dominates.

``--relu-dropout`` adds a second table: the vectorized heads with ``heads_thmm.relu_dropout`` (ReLU and
dropout keeping only their output for the backward pass) against autograd's composition
``dropout(relu(x))``, which keeps three tensors as large (issue 35). ``--keep-gradients`` accumulates
the gradients over the steps, as micro-batches do, so that the peak is the activations' and the new
gradients' above the weights and their gradients, not that of gradients allocated afresh each step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from configuration_thmm import Taxonomy
from modeling_thmm import HierarchicalHeads

CPC_SHAPE = (9, 136, 674)


def cpc_sized_taxonomy(sections: int = 9, classes: int = 136, subclasses: int = 674) -> Taxonomy:
    """A taxonomy with the CPC's level sizes (synthetic codes, spread evenly over parents)."""
    letters = "ABCDEFGHY"[:sections]
    class_codes = [f"{letters[i % sections]}{10 + i // sections:02d}" for i in range(classes)]
    sub_letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    sub_codes = [f"{class_codes[i % classes]}{sub_letters[i // classes]}" for i in range(subclasses)]
    return Taxonomy.from_codes(sub_codes)


class NaiveHeads(nn.Module):
    """One ``nn.Sequential`` per node, called in a Python loop (the straightforward port)."""

    def __init__(self, taxonomy: Taxonomy, in_features: int, hidden: int, dropout: float, parent_links: bool):
        super().__init__()
        self.taxonomy, self.parent_links = taxonomy, parent_links
        levels = taxonomy.levels
        self.first = nn.ModuleList(
            nn.Linear(in_features + (hidden if parent_links and levels[i] > 1 else 0), hidden) for i in range(len(taxonomy))
        )
        self.rest = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
            for _ in range(len(taxonomy))
        )
        self.out = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(len(taxonomy)))
        self.parents = taxonomy.parent_index.tolist()

    def forward(self, doc):
        hidden, logits = [None] * len(self.first), []
        for i, (first, rest, out) in enumerate(zip(self.first, self.rest, self.out)):
            x = doc
            if self.parent_links and self.parents[i] >= 0:
                x = torch.cat([doc, hidden[self.parents[i]]], dim=1)
            hidden[i] = rest(first(x))
            logits.append(out(hidden[i]))
        return torch.cat(logits, dim=1)


def build(variant: str, head_type: str, taxonomy: Taxonomy, in_features: int, hidden: int = 256):
    links = head_type == "thmm"
    if variant == "autograd-relu-dropout":  # the vectorized heads, with autograd's ReLU and dropout
        import heads_thmm

        heads_thmm.relu_dropout = lambda x, dropout: dropout(nn.functional.relu(x))
        variant = "vectorized"
    if variant == "vectorized":
        heads = HierarchicalHeads(taxonomy, in_features, hidden, 0.25, parent_links=links)
        for level in heads.levels:
            level.reset_parameters()
        return heads
    return NaiveHeads(taxonomy, in_features, hidden, 0.25, parent_links=links)


def timed(fn, sync, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn`` after ``warmup`` untimed ones (``sync`` before each clock read)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(variant: str, head_type: str, device: str, batch: int, in_features: int, steps: int, warmup: int,
            keep_gradients: bool = False) -> dict:
    torch.manual_seed(0)
    taxonomy = cpc_sized_taxonomy()
    heads = build(variant, head_type, taxonomy, in_features).to(device).train()
    doc = torch.randn(batch, in_features, device=device)
    target = (torch.rand(batch, len(taxonomy), device=device) < 0.01).float()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        if not keep_gradients:
            heads.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(heads(doc), target)
        loss.backward()

    timed(step, sync, warmup, 0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        if not keep_gradients:
            heads.zero_grad(set_to_none=True)
        base = _rss_bytes()
    times = timed(step, sync, 0, steps)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "variant": variant,
        "head_type": head_type,
        "median_s": statistics.median(times),
        "peak_mem_mb": max(peak, 0) / 2**20,
        "params": sum(p.numel() for p in heads.parameters()),
        "heads": len(taxonomy),
    }


def run(device: str = "cpu", batch: int = 64, in_features: int = 768, steps: int = 5, warmup: int = 2,
        head_types=("tmm", "thmm"), variants=("vectorized", "naive"), keep_gradients: bool = False) -> list[dict]:
    """Each variant in its own process, so that peak memory is not shared between them."""
    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for head_type in head_types:
        for variant in variants:
            cmd = [sys.executable, __file__, "--one", variant, head_type, "--device", device, "--batch", str(batch),
                   "--in-features", str(in_features), "--steps", str(steps), "--warmup", str(warmup)]
            cmd += ["--keep-gradients"] if keep_gradients else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["batch"] = batch
            rows.append(row)
    return rows


def gemm_roofline(device: str, batch: int, in_features: int, taxonomy: Taxonomy, hidden: int = 256) -> dict:
    """GFLOP/s of a bare GEMM of the largest level's first-layer shape, and the heads' FLOPs per
    step: the context for the timings (both variants do the same arithmetic)."""
    sizes = [s.stop - s.start for s in taxonomy.level_slices]
    a = torch.randn(batch, in_features, device=device)
    b = torch.randn(in_features, max(sizes) * hidden, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seconds = statistics.median(timed(lambda: a @ b, sync, 2, 5))
    # forward + weight gradients of every layer, + input gradients of the layers after the first
    first, second = in_features * hidden, hidden * hidden
    flops = sum(2 * batch * n * (2 * first + 3 * second + 3 * hidden) for n in sizes)
    return {"gemm_gflops": 2 * batch * in_features * b.shape[1] / seconds / 1e9, "step_gflop": flops / 1e9}


def format_table(rows: list[dict], slow: str = "naive", fast: str = "vectorized", names=("naive", "vectorized")) -> str:
    """One row per batch size and head type: ``slow`` against ``fast`` (two variants of ``rows``)."""
    lines = [
        f"| batch | heads | {names[0]} fwd+bwd (ms) | {names[1]} fwd+bwd (ms) | speed-up | {names[0]} peak (MiB) "
        f"| {names[1]} peak (MiB) | memory {names[0]}/{names[1]} |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, head_type in dict.fromkeys((r["batch"], r["head_type"]) for r in rows):
        pick = {r["variant"]: r for r in rows if r["head_type"] == head_type and r["batch"] == batch}
        b, a = pick[fast], pick[slow]
        mem = a["peak_mem_mb"] / b["peak_mem_mb"] if b["peak_mem_mb"] else float("nan")
        lines.append(
            f"| {batch} | {head_type.upper()} | {a['median_s'] * 1e3:.1f} | {b['median_s'] * 1e3:.1f} | "
            f"{a['median_s'] / b['median_s']:.2f}x | {a['peak_mem_mb']:.0f} | {b['peak_mem_mb']:.0f} | {mem:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="64", help="comma-separated batch sizes, e.g. 64,8,1")
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--in-features", type=int, default=768)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--head-types", default="tmm,thmm")
    parser.add_argument("--relu-dropout", action="store_true",
                        help="also the heads' lean ReLU-dropout against autograd's composition")
    parser.add_argument("--keep-gradients", action="store_true", help="accumulate the gradients over the steps")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "HEAD_TYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.device, args.batch, args.in_features, args.steps,
                                 args.warmup, args.keep_gradients)))
        return
    rows = []
    variants = ("vectorized", "naive", "autograd-relu-dropout") if args.relu_dropout else ("vectorized", "naive")
    for batch in (int(b) for b in args.batches.split(",")):
        rows += run(args.device, batch, args.in_features, args.steps, args.warmup, args.head_types.split(","), variants,
                    args.keep_gradients)
    print(f"# heads benchmark: {rows[0]['heads']} heads (CPC size {CPC_SHAPE}), input {args.in_features}, "
          f"{rows[0]['params'] / 1e6:.0f}M (TMM) parameters; medians of {args.steps} steps after {args.warmup} warm-up")
    print(f"# device {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}")
    for batch in dict.fromkeys(r["batch"] for r in rows):
        roof = gemm_roofline(args.device, batch, args.in_features, cpc_sized_taxonomy())
        fast = next((r for r in rows if r["batch"] == batch and r["variant"] == "vectorized" and r["head_type"] == "tmm"),
                    None)
        line = f"# batch {batch}: a bare GEMM of the first layer's shape runs at {roof['gemm_gflops']:.1f} GFLOP/s"
        if fast:
            line += (f"; TMM heads do {roof['step_gflop']:.1f} GFLOP per fwd+bwd step, "
                     f"{roof['step_gflop'] / fast['median_s']:.1f} GFLOP/s vectorized")
        print(line)
    print(f"# command: python bench/heads.py {' '.join(sys.argv[1:])}".rstrip())
    print(format_table(rows))
    if args.relu_dropout:
        print("\n# the vectorized heads: autograd's dropout(relu(x)) against heads_thmm.relu_dropout")
        print(format_table(rows, "autograd-relu-dropout", "vectorized", ("autograd's", "lean")))


if __name__ == "__main__":
    main()
