"""How often a finished two-process CPU run aborts on its way out, with and without ``thmm.cli``'s ending.

    python bench/distributed_exit.py --launches 60

Each launch is ``python -m torch.distributed.run --standalone --nproc_per_node 2`` of this file as a
worker that ends as ``thmm-train`` does across processes: Accelerate on CPUs (DDP over gloo), a few
``gather_object`` and ``gather`` calls, ``wait_for_everyone``, ``end_training``. Then the worker either
returns, so the interpreter finalizes as usual ("interpreter's exit"), or calls
``thmm.cli.end_distributed_process`` as every ``thmm-*`` command does at its end. The two endings
alternate, while ``--load`` busy processes keep the CPUs loaded as a CI run does: gloo's worker
threads then drop their last collectives late. A launch counts as aborted when a process died by
SIGABRT ("terminate called without an active exception"), as failed when it exited non-zero otherwise.

Prints a markdown table and writes ``OUT/distributed_exit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENDINGS = {"interpreter": "interpreter's exit", "thmm": "thmm.cli.end_distributed_process"}


def worker(ending: str) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(4, 4))
    for _ in range(3):  # what a run's evaluation and summary gather
        gather_object([accelerator.process_index])
        accelerator.gather(model(torch.ones(2, 4)).detach())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if ending == "thmm":
        from thmm.cli import end_distributed_process  # ROOT is on the launch's PYTHONPATH

        end_distributed_process(0)


def launch(ending: str, timeout: float) -> str:
    """``"ok"``, ``"aborted"`` or ``"failed"``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).resolve()), "--worker", ending]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "failed"
    if result.returncode == 0:
        return "ok"
    return "aborted" if "SIGABRT" in result.stderr or "terminate called" in result.stderr else "failed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launches", type=int, default=60, help="launches of each ending")
    parser.add_argument("--load", type=int, default=(os.cpu_count() or 1) + 1,
                        help="busy processes beside the launches (0: none)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a launch may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distributed_exit")
    parser.add_argument("--worker", choices=sorted(ENDINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.launches < 1 or args.load < 0:
        parser.error("--launches must be at least 1 and --load at least 0")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    counts = {ending: {"ok": 0, "aborted": 0, "failed": 0} for ending in ENDINGS}
    start = time.perf_counter()
    try:
        for _ in range(args.launches):
            for ending in ENDINGS:  # alternating, so both see the same load
                counts[ending][launch(ending, args.timeout)] += 1
    finally:
        for process in busy:
            process.kill()
            process.wait()
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"launches": args.launches, "load": args.load, "cpus": os.cpu_count(), "seconds": round(seconds, 1),
              "counts": counts}
    (args.out / "distributed_exit.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.launches} two-process launches of each ending, {args.load} busy processes, "
          f"{os.cpu_count()} CPUs, {seconds:.0f} s\n")
    print("| ending | launches | ok | aborted (SIGABRT) | failed otherwise |")
    print("|---|---|---|---|---|")
    for ending, label in ENDINGS.items():
        c = counts[ending]
        print(f"| {label} | {args.launches} | {c['ok']} | {c['aborted']} | {c['failed']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
