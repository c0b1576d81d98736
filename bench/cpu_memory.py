"""An epoch's peak memory and time on a CPU by allocator set-up: glibc's default, a fixed mmap
threshold on 4 KiB pages, torch's huge pages with micro-batches of 64, 32 and 16 MiB, and AdamW's
moments in a temporary file between steps.

    python bench/cpu_memory.py                                   # bench/scale.py's 20k TSV corpus and tiny encoder
    python bench/cpu_memory.py --dataset DIR --encoder DIR --documents 10240

Each set-up is one ``thmm-train`` epoch in a process of its own (``--batch-size 512``, no lexical
fusion, ``--documents`` training and 256 dev and test documents), run one after the other; the
process's VmRSS is sampled every 50 ms. The set-ups:

- **glibc's default**: ``THP_MEM_ALLOC_ENABLE=0`` (no huge pages), glibc's dynamic mmap threshold,
  64 MiB micro-batches: ``thmm-train``'s behaviour before huge pages;
- **fixed threshold, 4 KiB pages**: the same with ``MALLOC_MMAP_THRESHOLD_=131072``;
- **huge pages, 64 / 32 / 16 MiB**: ``THP_MEM_ALLOC_ENABLE=1``, so ``thmm-train`` fixes the threshold;
  32 MiB is its default there, 16 MiB ``--low-cpu-memory``'s, 64 MiB set through
  ``thmm.trainer.HUGE_PAGE_MICRO_BATCH_ELEMENTS``;
- **moments in a file**: the default set-up with AdamW's moments in a temporary file between steps, as
  ``--low-cpu-memory`` keeps them (``thmm.trainer.offload_moments`` told so), but its 32 MiB micro-batches:
  what the file costs alone. ``--low-cpu-memory``'s row has both.

Reported: the epoch's seconds (``summary.json``), its ratio to glibc's default, whether the moments were
in a file (only parameters of 1M elements or more go there), the run's peak RSS and its system and user
CPU seconds. Needs a kernel with transparent huge pages for the last three rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALE_WORK = Path.home() / "thmm-bench" / "scale"  # bench/scale.py's default --work
SETUPS = {  # name: (environment, micro-batch elements on huge pages or None, extra thmm-train options, moments in a file)
    "glibc's default (4 KiB pages, dynamic threshold, 64 MiB)": ({"THP_MEM_ALLOC_ENABLE": "0"}, None, [], False),
    "fixed threshold, 4 KiB pages, 64 MiB": ({"THP_MEM_ALLOC_ENABLE": "0", "MALLOC_MMAP_THRESHOLD_": "131072"}, None, [],
                                             False),
    "huge pages, fixed threshold, 64 MiB": ({"THP_MEM_ALLOC_ENABLE": "1"}, 2**24, [], False),
    "huge pages, fixed threshold, 32 MiB (default)": ({"THP_MEM_ALLOC_ENABLE": "1"}, None, [], False),
    "huge pages, fixed threshold, 32 MiB, moments in a file": (
        {"THP_MEM_ALLOC_ENABLE": "1"}, None, [], True),
    "huge pages, fixed threshold, 16 MiB, moments in a file (--low-cpu-memory)": (
        {"THP_MEM_ALLOC_ENABLE": "1"}, None, ["--low-cpu-memory"], False),
}


def run_setup(opts: dict) -> dict:
    """In the child: one epoch, its peak VmRSS sampled every 50 ms and its CPU seconds."""
    from thmm.cli import train  # first, as in the command (torch reads THP_MEM_ALLOC_ENABLE at its first tensor)

    import thmm.trainer
    from thmm.cpu_memory import torch_uses_huge_pages

    if opts["huge_page_elements"]:
        thmm.trainer.HUGE_PAGE_MICRO_BATCH_ELEMENTS = opts["huge_page_elements"]
    decided, offload_moments = [], thmm.trainer.offload_moments

    def decide(args, accelerator, model, *rest):  # --low-cpu-memory's decision, for the set-up that asks for it alone
        if opts["offload_moments"]:
            args = dataclasses.replace(args, low_cpu_memory=True)
        decided.append(offload_moments(args, accelerator, model, *rest))
        return decided[-1]

    thmm.trainer.offload_moments = decide
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.wait(0.05):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = os.times()
    code = train.main(["--dataset", opts["dataset"], "--scheme", opts["scheme"], "--encoder", opts["encoder"],
                       "--batch-size", "512", "--epochs", "1", "--output-dir", opts["output"], "--quiet",
                       "--no-lexical-fusion", "--max-train-samples", str(opts["documents"]),
                       "--max-eval-samples", "256", "--max-length", str(opts["max_length"]), *opts["extra"]])
    cpu1 = os.times()
    stop.set()
    sampler.join()
    if code != 0:
        return {"code": code}
    summary = json.loads((Path(opts["output"]) / "metrics" / "summary.json").read_text())
    return {"code": code, "epoch_s": summary["train_seconds"][0], "peak_rss": peak[0],
            "system_s": cpu1.system - cpu0.system, "user_s": cpu1.user - cpu0.user,
            "huge_pages": torch_uses_huge_pages(), "moments_in_file": any(decided)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SCALE_WORK / "docs_20000_tsv",
                        help="a thmm-train --dataset (default: bench/scale.py's 20,000-document TSV corpus)")
    parser.add_argument("--encoder", type=Path, default=SCALE_WORK / "tiny-encoder",
                        help="a thmm-train --encoder (default: bench/scale.py's tiny encoder)")
    parser.add_argument("--scheme", default="cpc")
    parser.add_argument("--documents", type=int, default=10240, help="training documents (20 steps of 512)")
    parser.add_argument("--max-length", type=int, default=256, help="thmm-train --max-length")
    parser.add_argument("--setups", default=",".join(str(i) for i in range(len(SETUPS))),
                        help="which set-ups, by index (0 = glibc's default, the ratios' base)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:  # a child
        print(json.dumps(run_setup(json.loads(args.step))))
        return 0
    if args.documents <= 0:
        parser.error(f"--documents {args.documents}: must be positive")
    for option, path in (("--dataset", args.dataset), ("--encoder", args.encoder)):
        if not path.is_dir():
            print(f"skipped: {option} {path} is not a folder (make it with bench/scale.py, or name one)")
            return 0
    try:
        chosen = [list(SETUPS)[int(i)] for i in args.setups.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--setups {args.setups}: indices from 0 to {len(SETUPS) - 1}, comma-separated")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, name in enumerate(chosen):
            env, elements, extra, offload = SETUPS[name]
            opts = {"dataset": str(args.dataset), "encoder": str(args.encoder), "scheme": args.scheme,
                    "documents": args.documents, "max_length": args.max_length, "output": str(Path(scratch) / f"run{i}"),
                    "huge_page_elements": elements, "extra": extra, "offload_moments": offload}
            base = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_")}
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--step", json.dumps(opts)],
                                 capture_output=True, text=True, env={**base, **env, "PYTHONPATH": str(ROOT)})
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            results[name] = {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t0}
            print(f"{name}: {results[name]}", flush=True)
    base = results.get(list(SETUPS)[0], {}).get("epoch_s")
    lines = [f"One epoch of {args.documents:,} documents at batch 512 ({args.dataset.name}), one set-up at a time, "
             f"load average {os.getloadavg()[0]:.1f} at the end:", "",
             "| set-up | torch on huge pages | epoch (s) | vs glibc's default | AdamW's moments in a file | peak RSS GB | "
             "system CPU s | user CPU s |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for name, r in results.items():
        if r["code"] != 0:
            lines.append(f"| {name} | thmm-train exited {r['code']} | | | | | | |")
            continue
        ratio = f"{r['epoch_s'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {name} | {'yes' if r['huge_pages'] else 'no'} | {r['epoch_s']:.1f} | {ratio} | "
                     f"{'yes' if r['moments_in_file'] else 'no'} | {r['peak_rss'] / 1e9:.2f} | {r['system_s']:.0f} | "
                     f"{r['user_s']:.0f} |")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
