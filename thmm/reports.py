# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""What a finished run writes besides the model: the model card, the dev/test metric reports (JSON,
markdown, per-level plot), the run summary and the test predictions."""

from __future__ import annotations

import json
from pathlib import Path

from .hierarchical_metrics import write_report

from .selection import SELECTION_METRICS


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def write_run_outputs(trainer, final_model, model_dir: Path) -> dict:
    """Everything under ``OUTPUT_DIR`` for a trained, tuned :class:`~thmm.trainer.Trainer` (the model
    card into ``model_dir``, where the model is being saved); returns the summary."""
    from .model_card import build_model_card, card_thresholds, hub_repo_id, threshold_tuning_info, usage_path

    args, results, state = trainer.args, trainer.results, trainer.state
    output_dir = Path(args.output_dir)
    thresholds = trainer.tuned.to_dict() if trainer.tuned is not None else trainer.thresholds.to_dict()
    repo_id = hub_repo_id(args)  # the card is written before the push: its snippet loads the repo
    card = build_model_card(
        head_type=args.head_type, doc_representation=args.doc_representation, encoder=args.encoder,
        freeze_encoder=args.freeze_encoder, frozen_lower_layers=args.freeze_lower_layers, dataset=args.dataset,
        dataset_config=getattr(args, "dataset_config", None),
        upsample=args.upsample, scheme=args.scheme, taxonomy=trainer.taxonomy,
        training={"batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "head_learning_rate": args.head_learning_rate, "max_length": args.max_length,
                  "epochs": args.epochs, "patience": args.patience, "seed": args.seed,
                  "selection_metric": SELECTION_METRICS[args.selection_metric][0]},
        # what the saved config.json decides with, and how it was tuned
        thresholds=card_thresholds(final_model.config, thresholds.get("objective")),
        threshold_tuning=threshold_tuning_info(args, trainer.references["validation"], trainer.taxonomy,
                                               trainer.eval_taxonomy["validation"]),
        test_metrics=results["test"], epochs_run=len(state["history"]), best_epoch=trainer.best_epoch,
        model_name=repo_id.rsplit("/", 1)[-1] if repo_id else output_dir.name,
        repo_id=repo_id, model_path=usage_path(trainer.run.model),
        lexical_fusion=trainer.lexical.to_dict() if trainer.lexical is not None else None,
    )
    card.save(model_dir / "README.md")

    metrics_dir = output_dir / "metrics"
    write_report({"dev": results["validation"]}, metrics_dir, name="dev_metrics")
    write_report({"test": results["test"], f"test (threshold {args.threshold})": results["test_default"]},
                 metrics_dir, name="test_metrics")
    coverage = write_confidence_reports(trainer, final_model, metrics_dir)
    summary = {"thresholds": thresholds, "best_epoch": trainer.best_epoch, "history": state["history"],
               "stopped_early": state["selection"]["stop"], "dev": results["validation"], "test": results["test"],
               f"test_at_{args.threshold}": results["test_default"],
               "test_consistent_scores": results["test_consistent"],
               "test_at_least_one": results["test_at_least_one"],
               "train_seconds_per_epoch": _mean(state.get("train_seconds", [])),
               "train_seconds": state.get("train_seconds", []),
               # the cache's folder name (its content key) in the cache folder, never a local path
               "frozen_encoder_cache": trainer.cache_dir.name if trainer.cache_dir else None,
               "frozen_encoder_cache_hit": trainer.cache_hit}
    summary["test_coverage"] = coverage
    if trainer.temperatures is not None:
        summary["calibration"] = {"method": trainer.args.calibration, "temperatures": trainer.temperatures,
                                  "shifts": trainer.shifts,
                                  "dev_uncalibrated": trainer.results_uncalibrated["validation"],
                                  "test_uncalibrated": trainer.results_uncalibrated["test"]}
    if trainer.lexical is not None:
        summary["lexical_fusion"] = trainer.lexical.to_dict()
        summary["test_heads_only"] = results["test_heads_only"]
    (metrics_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    write_test_predictions(output_dir / "test_predictions.jsonl", trainer.splits["test"]["patent_id"],
                           trainer.references["test"], final_model.label_records(trainer.probs["test"]),
                           final_model.document_confidence(trainer.probs["test"]))
    return summary


def write_confidence_reports(trainer, final_model, metrics_dir: Path) -> list[dict]:
    """The test report's coverage table (appended to ``test_metrics.md``) and plot
    (``test_metrics_coverage.png``), and the dev/test reliability diagram
    (``test_metrics_reliability.png``); returns the coverage rows."""
    from .abstention import coverage_curve, format_coverage_table, plot_coverage
    from .calibration import plot_reliability
    from .data import label_targets

    probs, references, taxonomy = trainer.probs, trainer.references, trainer.taxonomy
    confidence = final_model.document_confidence(probs["test"])
    rows = coverage_curve(probs["test"], references["test"], taxonomy, final_model.config.thresholds,
                          trainer.eval_taxonomy["test"], confidence)
    with open(metrics_dir / "test_metrics.md", "a", encoding="utf-8") as f:
        f.write("\n" + format_coverage_table(rows))
    plot_coverage(rows, metrics_dir / "test_metrics_coverage.png")
    plot_reliability({split: (probs[key], label_targets(taxonomy, references[key]))
                      for split, key in (("dev", "validation"), ("test", "test"))}, taxonomy,
                     metrics_dir / "test_metrics_reliability.png")
    return rows


def write_test_predictions(path: Path, ids, gold, records, confidences=None) -> None:
    """``test_predictions.jsonl``: per test document, ``{"id", "labels", "predicted", "confidence"}``,
    the schema of ``thmm-predict`` (the id under the same key and of its input type, the records of
    ``label_records``: scores that obey the hierarchy, rounded to 4 places, the document confidence
    rounded likewise) plus the gold ``labels``; no ``confidence`` when ``confidences`` is ``None``."""
    confidences = [None] * len(records) if confidences is None else [round(float(c), 4) for c in confidences]
    with open(path, "w", encoding="utf-8") as f:
        for ident, labels, predicted, confidence in zip(ids, gold, records, confidences, strict=True):
            line = {"id": ident, "labels": labels, "predicted": predicted}
            if confidence is not None:
                line["confidence"] = confidence
            f.write(json.dumps(line, allow_nan=False) + "\n")
