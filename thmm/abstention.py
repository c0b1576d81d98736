# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Classify the surest documents, route the rest to a person: precision and recall versus coverage.

Each document's confidence is the probability that its whole decision is right
(``THMMForHierarchicalClassification.document_confidence``). At coverage ``c`` the model keeps the
``ceil(c * N)`` most confident documents (ties in document order) and the metric is computed on
those alone; the rest would be reviewed by hand. The test report shows the curve (a PNG beside the
per-level plot) and a table.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .evaluation import evaluate_probabilities

__all__ = ["COVERAGES", "check_coverage", "coverage_curve", "format_coverage_table", "plot_coverage"]

#: the coverages of the report's table and plot
COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_KEYS = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1")


def check_coverage(value, option: str) -> float:
    """``value`` as a coverage in (0, 1], else a ValueError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{option}: must be a coverage in (0, 1] (got {value!r})")
    return float(value)


def coverage_curve(probs, references, taxonomy, thresholds, eval_taxonomy, confidence,
                   coverages=COVERAGES) -> list[dict]:
    """One row per coverage: ``{"coverage", "documents", "min_confidence", micro/macro P/R/F1}`` of the
    ``ceil(coverage * N)`` most confident documents, decoded at ``thresholds``."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if len(confidence) != len(references):
        raise ValueError(f"{len(confidence)} confidences for {len(references)} documents")
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for coverage in coverages:
        kept = order[: max(1, math.ceil(check_coverage(coverage, "coverage") * len(order)))]
        results = evaluate_probabilities(np.asarray(probs)[kept], [references[i] for i in kept], taxonomy, thresholds,
                                         eval_taxonomy, with_scores=False)
        rows.append({"coverage": float(coverage), "documents": int(len(kept)),
                     "min_confidence": float(confidence[kept].min()), **{k: results[k] for k in _KEYS}})
    return rows


def format_coverage_table(rows: list[dict], digits: int = 4) -> str:
    """The markdown section of the test report."""
    def cell(value):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["### Coverage: classify the surest documents, route the rest", "",
             "Documents kept by decreasing confidence (the probability that the whole decision is right).", "",
             "| Coverage | Documents | Min. confidence | Micro P | Micro R | Micro F1 | Macro P | Macro R | Macro F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['coverage']:.0%} | {row['documents']} | {cell(row['min_confidence'])} | "
                     + " | ".join(cell(row[k]) for k in _KEYS) + " |")
    return "\n".join(lines) + "\n"


def plot_coverage(rows: list[dict], path) -> Path:
    """Micro and macro hP / hR against coverage (PNG)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.subplots()
    x = [row["coverage"] for row in rows]
    for key, style in (("micro_precision", "-o"), ("micro_recall", "--o"), ("macro_precision", "-s"),
                       ("macro_recall", "--s")):
        ax.plot(x, [np.nan if row[key] is None else row[key] for row in rows], style, ms=3,
                label=key.replace("_", " ").replace("micro", "micro-h").replace("macro", "macro-h"))
    ax.set_xlabel("coverage (share of documents classified, the surest first)")
    ax.set_ylabel("score on the kept documents")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision and recall versus coverage", fontsize=9)
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
