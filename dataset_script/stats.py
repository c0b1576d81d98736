# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Label statistics of patent splits: per level, distinct labels and label cardinality, plus the long tail.

    thmm-stats --dataset DIR --output-dir OUT
    thmm-stats --dataset path/to/wipo-alpha --dataset-config wipo_alpha --scheme ipc --output-dir OUT

``DIR`` is anything :func:`~dataset_script.builder.load_patent_splits` takes (a TSV folder, a
published folder, a Hub id). Writes ``OUT/stats.json``, ``OUT/stats.md`` and
``OUT/label_distribution.png`` (label frequency by rank on a log scale, as in the paper's Fig. 3), and
the marker ``OUT/.thmm-output.json``. ``OUT`` must be new, empty or an earlier ``thmm-stats`` output
(:mod:`thmm.outputs`), checked before the data are read; the files are written in a temporary sibling
folder and moved into place when complete, and files a user added to ``OUT`` stay. The old spellings
``--data-dir``, ``--out`` and ``--config NAME`` still work for one release, with a warning.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from taxonomy_thmm import LEVEL_NAMES, Taxonomy, label_depth, level_name
from thmm.outputs import check_output_dir, staged_output_dir

__all__ = ["label_statistics", "format_markdown", "plot_label_distribution", "write_report"]

COMMAND = "thmm-stats"
REPORT_FILES = ("stats.json", "stats.md", "label_distribution.png")


def label_statistics(splits: Mapping[str, Iterable], min_count: int = 10) -> dict:
    """Statistics of each split (``Dataset`` or list of row dicts with ``labels``).

    Returns ``{split: {"documents", "levels": {level: {"distinct", "cardinality"}},
    "label_frequency": {subclass: count} (most frequent first), "labels_below_min_count"}}``, with one
    entry per level of the taxonomy of all splits' labels (``section``, ``class``, ``subclass`` for
    CPC/IPC), where cardinality is the mean number of distinct labels of that level per document (a
    label counts at its own level and, through its ancestors, at every level above).
    """
    label_lists = {
        split: list(data["labels"]) if hasattr(data, "column_names") else [row["labels"] for row in data]
        for split, data in splits.items()
    }
    codes = sorted({code for lists in label_lists.values() for labels in lists for code in labels})
    # "cpc" accepts IPC codes too (IPC is CPC without section Y), so one scheme serves both.
    taxonomy = Taxonomy.from_codes(codes, "cpc", depth=label_depth(codes)) if codes else None  # group symbols too
    report = {}
    for split, lists in label_lists.items():
        n = len(lists)
        if taxonomy is None:  # no label in any split
            levels = {level_name(level): {"distinct": 0, "cardinality": 0.0} for level in LEVEL_NAMES}
            frequency = {}
        else:
            closed = taxonomy.multi_hot_ids([[taxonomy.index(code) for code in labels] for labels in lists])
            counts = closed.sum(axis=0)
            levels = {
                level_name(level): {
                    "distinct": int(np.count_nonzero(counts[cols])),
                    "cardinality": round(int(counts[cols].sum()) / n, 4) if n else 0.0,
                }
                for level, cols in enumerate(taxonomy.level_slices, start=1)
            }
            labels = taxonomy.level_slices[-1]  # the deepest level: the labels themselves
            frequency = {taxonomy.nodes[i]: int(counts[i]) for i in range(labels.start, labels.stop) if counts[i]}
        report[split] = {
            "documents": n,
            "levels": levels,
            "label_frequency": dict(sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))),
            "labels_below_min_count": sum(count < min_count for count in frequency.values()),
            "min_count": min_count,
        }
    return report


def format_markdown(report: dict) -> str:
    """A markdown table: documents, distinct labels and cardinality per level, for every split."""
    names = list(next(iter(report.values()))["levels"]) if report else [level_name(lvl) for lvl in LEVEL_NAMES]
    plurals = [level_name(level, plural=True) for level in range(1, len(names) + 1)]
    head = (
        "| split | documents | "
        + " | ".join(f"{plural} (distinct) | {name} cardinality" for name, plural in zip(names, plurals))
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(names))]
    for split, stats in report.items():
        cells = [split, f"{stats['documents']:,}"]
        for name in names:
            cells += [str(stats["levels"][name]["distinct"]), f"{stats['levels'][name]['cardinality']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    tails = ", ".join(
        f"{split}: {stats['labels_below_min_count']} of {stats['levels'][names[-1]]['distinct']}"
        for split, stats in report.items()
    )
    min_count = next(iter(report.values()))["min_count"] if report else 10
    lines += ["", f"{plurals[-1].capitalize()} occurring fewer than {min_count} times - {tails}."]
    return "\n".join(lines)


def plot_label_distribution(report: dict, path: str | Path) -> Path:
    """PNG of subclass frequency by rank (log scale), one line per split: the long tail."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; imported here so that the package does not need it
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, stats in report.items():
        counts = list(stats["label_frequency"].values())
        if counts:
            ax.plot(range(1, len(counts) + 1), counts, label=f"{split} ({len(counts)} labels)")
    ax.set_yscale("log")
    ax.set_xlabel("label rank (subclasses, most frequent first)")
    ax.set_ylabel("documents with the label")
    ax.set_title("Label frequency by rank")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    splits: Mapping[str, Iterable], out_dir: str | Path, min_count: int = 10, *, option: str = "out_dir"
) -> dict:
    """Write ``stats.json``, ``stats.md`` and ``label_distribution.png`` to ``out_dir``; return the report.

    ``out_dir`` must be new, empty or an earlier ``thmm-stats`` output (``option`` names it in a refusal);
    the files appear together when complete (:func:`thmm.outputs.staged_output_dir`)."""
    report = label_statistics(splits, min_count=min_count)
    with staged_output_dir(out_dir, option, COMMAND, REPORT_FILES) as staging:
        (staging / "stats.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        (staging / "stats.md").write_text(format_markdown(report) + "\n", encoding="utf-8")
        plot_label_distribution(report, staging / "label_distribution.png")
    return report


def main(argv=None) -> dict:
    from thmm.cli import (
        HelpFormatter,
        add_common_options,
        add_dataset_options,
        add_deprecated,
        check_quiet_verbose,
        description,
        library_progress,
        one_line_errors,
        require,
        spelled,
    )

    parser = one_line_errors(argparse.ArgumentParser(
        prog="thmm-stats", usage="%(prog)s --output-dir DIR [--dataset DIR] [OPTIONS]",
        description=description(__doc__), formatter_class=HelpFormatter))
    add_dataset_options(parser, dataset_help="TSV or JSONL folder, a thmm-publish folder or a Hub id "
                                             "(default: the USPTO-70k release)")
    parser.add_argument(
        "--output-dir", metavar="DIR",
        help="folder for stats.json, stats.md and label_distribution.png: new, empty, or an earlier thmm-stats "
             "output (required)",
    )
    add_deprecated(parser, "--out", "--output-dir")
    parser.add_argument(
        "--scheme", choices=["cpc", "ipc"], help="code scheme (default: the dataset config's, cpc for uspto70k)"
    )
    parser.add_argument("--upsample", action="store_true", help="report the up-sampled training split")
    parser.add_argument("--cache-dir", metavar="DIR", help="datasets cache folder")
    add_common_options(parser)
    args = parser.parse_args(argv)
    require(parser, args, "output_dir")
    check_quiet_verbose(parser, args)
    import logging

    logging.getLogger("dataset_script").setLevel(logging.INFO if args.verbose else logging.WARNING)
    library_progress(args.verbose, args.quiet)

    from .builder import Uspto70k, load_patent_splits

    option = spelled(args, "output_dir")
    check_output_dir(args.output_dir, option, COMMAND, REPORT_FILES)  # before the data are read
    scheme = args.scheme or Uspto70k.builder_configs[args.dataset_config].scheme
    splits = load_patent_splits(args.dataset, scheme=scheme, upsample=args.upsample, cache_dir=args.cache_dir,
                                config_name=args.dataset_config)
    report = write_report(splits, args.output_dir, option=option)
    if not args.quiet:
        print(format_markdown(report))
        print(f"wrote {', '.join(REPORT_FILES)} to {args.output_dir}")
    return report


if __name__ == "__main__":
    main()
