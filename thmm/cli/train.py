# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
r"""Train and evaluate TMM / THMM / flat patent classifiers with Accelerate.

    accelerate launch -m thmm.cli.train --head-type thmm --encoder allenai/scibert_scivocab_uncased \
        --dataset DIR_OR_HUB_ID --output-dir runs/thmm-cls --mixed-precision bf16
    thmm-train --quickstart                  # offline demo: embedded patents + MiniLM, on CPU
    thmm-train --config run.yaml --epochs 3  # a JSON/YAML run file; the command line wins
    thmm-train --config run.yaml --push-to-hub --hub-model-id ORG/NAME   # and upload the model

(``python train.py`` and ``accelerate launch train.py`` in a checkout are the same command.)

Each epoch evaluates dev with the hierarchical metric; ``--selection-metric`` (default: dev macro-hF1 at
its best threshold) picks the best epoch, and a run stops early only when neither it nor dev AUPRC
improved for ``--patience`` epochs. At the end, decision thresholds are tuned on dev (globally, per
level, then per node) and stored in the saved config; the best model is saved with its tokenizer and
a model card, and test metrics are written as JSON, markdown and a per-level plot, with the test
predictions as JSONL. The log has one line per phase and a "kept epoch N of M" line (``--quiet``:
warnings and errors only; ``--verbose``: the libraries' progress bars and messages too).

Checkpoints are written every ``--checkpoint-every`` optimizer steps and at each epoch end;
``--resume`` continues from the latest one, mid-epoch included, and reaches the same weights as an
uninterrupted run with the same seed. A finished run deletes them unless ``--keep-checkpoints``.
``--freeze-encoder`` encodes each split once, caches the encoder's outputs, and trains only the heads;
``--freeze-lower-layers N`` caches the output states of the lowest N encoder layers instead, and
fine-tunes the layers above them with the heads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from thmm.cpu_memory import request_torch_huge_pages

# Before anything imports torch: torch decides at its first tensor whether large CPU tensors go on huge
# pages, which makes training's release of freed memory cheaper than glibc's default (thmm.cpu_memory).
# Training only: it is where this was measured, and prediction keeps glibc's default.
request_torch_huge_pages()

from thmm.arguments import parse_args  # noqa: E402 (after the request)
from thmm.cli import description, run_cli  # noqa: E402

QUICKSTART_EXAMPLES = [
    ("Insole with pressure sensors for gait analysis",
     "A shoe insole carries thin-film pressure sensors whose readings are sent wirelessly to a phone, "
     "where a trained neural network flags abnormal gait patterns for a physician."),
    ("Charging pad for an electric scooter battery",
     "A ground pad charges the lithium battery of a parked electric scooter inductively and stops "
     "charging when the cell temperature exceeds a limit."),
]


def print_example_predictions(model, tokenizer) -> None:
    """The quickstart's last step: predict codes for two patents the model has never seen."""
    titles, abstracts = zip(*QUICKSTART_EXAMPLES)
    for title, predicted in zip(titles, model.predict(tokenizer, titles, abstracts, at_least_one=True)):
        print(f"\n{title}")
        for p in predicted:
            print(f"  {'  ' * (p['level'] - 1)}{p['code']:<5} {p['score']:.2f}  {p['title'] or ''}")


def print_outputs(output_dir: Path) -> None:
    out = output_dir.resolve()
    print(f"\nmodel:       {out / 'model'}  (AutoModel.from_pretrained(..., trust_remote_code=True))")
    print(f"metrics:     {out / 'metrics' / 'test_metrics.md'}  (and .json, dev_metrics.*, summary.json)")
    print(f"plot:        {out / 'metrics' / 'test_metrics_per_level_f1.png'}")
    print(f"predictions: {out / 'test_predictions.jsonl'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, description=description(__doc__))  # parse (--help and --version stop here)

    from thmm.hierarchical_metrics import format_markdown
    from thmm.run_folder import resume_command
    from thmm.trainer import Trainer, finished_run_notice

    notice = finished_run_notice(args)
    if notice:
        print(notice, file=sys.stderr)
        return 0
    trainer = Trainer(args)                              # build: data, taxonomy, model, loaders
    # A stop (Ctrl-C, or SIGTERM from a scheduler: thmm.cli.stop_signals_interrupt) leaves checkpoints and
    # no model: say how to go on.
    try:
        trainer.fit()                                    # fit: epochs, checkpoints, early stopping
        trainer.tune_thresholds()                        # tune: thresholds on dev, dev/test scores
        trainer.save()                                   # save: model, card, reports, predictions
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{args.output_dir} holds no model yet; resume with: {resume_command(args)}") from None
    finally:
        trainer.run.unlock()  # the folder is free for the next run (a process's end frees it too)
    if trainer.accelerator.is_main_process and not args.quiet:
        print("\nTest set (thresholds tuned on dev):\n" + format_markdown({"test": trainer.results["test"]}))
        if args.quickstart:
            print_example_predictions(trainer.final_model, trainer.tokenizer)
        print_outputs(Path(args.output_dir))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``thmm-train``."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
