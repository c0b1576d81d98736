# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Publish a patent data set as parquet shards with a dataset card (and optionally push it to the Hub).

    thmm-publish --output-dir DIR [--dataset D] [--dataset-config uspto70k|wipo_alpha] [--upsample]
    thmm-publish --output-dir DIR --dataset D --push-to-hub --hub-model-id ORG/NAME [--hub-private]

builds the data with :class:`~dataset_script.builder.Uspto70k`, then writes::

    DIR/README.md                          dataset card: YAML configs/data_files, dataset_info, licence,
                                           citation and label statistics
    DIR/data/{split}-00000-of-0000N.parquet
    DIR/stats.json, DIR/label_distribution.png
    DIR/.thmm-output.json                  the marker: what thmm-publish wrote here (thmm.outputs)

``load_dataset(DIR)`` (or ``load_dataset(REPO_ID)`` after the push) returns exactly the built rows,
in the same order, with the same features.

``DIR`` must be new, empty, or an earlier ``thmm-publish`` output (it has the marker); anything else is
refused before the build. The export is built in a temporary sibling folder and moved into place only
when complete; in an earlier output only the files the marker lists are replaced or removed (stale
shards included), and files a user added stay (and are not pushed).

Old spellings still work for one release, with a warning naming the new one: ``--out`` (now
``--output-dir``), ``--data-dir`` (``--dataset``), ``--config NAME`` (``--dataset-config``),
``--private`` (``--hub-private``) and ``--push-to-hub REPO`` (``--push-to-hub --hub-model-id REPO``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from thmm.cli import one_line_errors
from thmm.hub import CITATION_BIBTEX, upload_folder
from thmm.outputs import check_output_dir, staged_output_dir

from .builder import Uspto70k
from .stats import format_markdown, label_statistics, plot_label_distribution

__all__ = ["export_splits", "publish", "main"]

logger = logging.getLogger(__name__)

_LICENSE_IDS = {"CC BY 4.0": "cc-by-4.0"}
# Hub licence ids a card may name as they are (the usual ones for data); any other is "other" with its name.
HUB_LICENSES = frozenset({"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                          "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "cc0-1.0", "odc-by", "odbl", "pddl", "cdla-permissive-2.0",
                          "cdla-sharing-1.0", "gpl-3.0", "bsd-3-clause", "unknown", "other"})
COMMAND = "thmm-publish"
# What an export writes (relative glob patterns): a file of these that thmm did not write is refused.
EXPORT_FILES = ("README.md", "data/*.parquet", "stats.json", "label_distribution.png")
LOCAL_DESCRIPTION = """\
Patents (title, abstract) with their subclass labels, in the format of the USPTO-70k release of Pujari et al.
(ECIR 2021). `labels` are the subclass codes as given in the source files; `sections` and `classes` are their
ancestors (level 1 and 2 of the hierarchy).
"""


def _license_id(license: str | None) -> str:
    """Hub licence identifier for the card's YAML: ``"CC BY 4.0"`` -> ``"cc-by-4.0"``; unknown -> ``"unknown"``."""
    if not license:
        return "unknown"
    if license in HUB_LICENSES:
        return license
    return _LICENSE_IDS.get(license, "other")


def _other_license(info: datasets.DatasetInfo) -> dict:
    """``license_name``/``license_link`` that the Hub expects with ``license: other``."""
    fields = {"license_name": re.sub(r"[^a-z0-9]+", "-", info.license.lower()).strip("-")}
    return {**fields, "license_link": info.homepage} if info.homepage else fields


def check_shard_rows(max_shard_rows) -> None:
    """A ValueError naming ``max_shard_rows`` unless it is an integer of at least 1, before any work."""
    if not isinstance(max_shard_rows, int) or isinstance(max_shard_rows, bool) or max_shard_rows < 1:
        raise ValueError(f"max_shard_rows: must be an integer of at least 1 (got {max_shard_rows!r})")


def check_license(license) -> None:
    """A ValueError naming ``license`` unless it is ``None`` or one line of text (a Hub id such as
    ``cc-by-4.0``, or a licence's name)."""
    if license is not None and (not isinstance(license, str) or not license.strip()
                                or any(ch in license for ch in "\r\n")):
        raise ValueError(f"--license: must be a licence id such as cc-by-4.0, on one line (got {license!r})")


def _size_category(n: int) -> str:
    for bound, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]:
        if n < bound:
            return name
    return "n>1M"


def export_splits(
    splits: datasets.DatasetDict,
    out_dir: str | Path,
    *,
    config_name: str = "uspto70k",
    info: datasets.DatasetInfo | None = None,
    pretty_name: str = "USPTO-70k",
    source: str | None = None,
    build_summary: dict | None = None,
    max_shard_rows: int = 100_000,
    stats: bool = True,
    option: str = "out_dir",
) -> dict:
    """Write ``splits`` as parquet shards plus ``README.md`` (and the statistics) to ``out_dir``.

    ``out_dir`` must be new, empty or an earlier export (:mod:`thmm.outputs`; ``option`` names it in a
    refusal). The export is built in a temporary sibling folder and moved into place when complete;
    the shards an earlier export wrote and this one does not are removed, so that the
    ``data/{split}-*.parquet`` patterns never pick up a stale one. Files the package did not write stay.

    Returns a summary: the folder, the rows per split and the files written.
    """
    check_shard_rows(max_shard_rows)
    out_dir = Path(out_dir)
    with staged_output_dir(out_dir, option, COMMAND, EXPORT_FILES) as staging:
        files = _write_export(splits, staging, config_name, info, pretty_name, source, build_summary,
                              max_shard_rows, stats)
    return {
        "out_dir": str(out_dir),
        "config": config_name,
        "rows": {split: len(d) for split, d in splits.items()},
        "files": files,
        "build_summary": build_summary or {},
    }


def _write_export(splits, out_dir: Path, config_name, info, pretty_name, source, build_summary, max_shard_rows,
                  stats) -> list[str]:
    """The export's files in ``out_dir`` (a fresh folder); returns their relative paths."""
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    info = info or datasets.DatasetInfo()
    files, split_infos, download_size = [], datasets.SplitDict(), 0
    for split, dataset in splits.items():
        num_shards = max(1, math.ceil(len(dataset) / max_shard_rows))
        for index in range(num_shards):
            path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            dataset.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(path))
            files.append(path.relative_to(out_dir).as_posix())
            download_size += path.stat().st_size
        split_infos.add(datasets.SplitInfo(name=split, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))

    report = label_statistics(splits) if stats else None
    if report is not None:
        (out_dir / "stats.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        plot_label_distribution(report, out_dir / "label_distribution.png")
        files += ["stats.json", "label_distribution.png"]

    features = next(iter(splits.values())).features
    card_info = datasets.DatasetInfo(
        features=features,
        splits=split_infos,
        download_size=download_size,
        dataset_size=sum(s.num_bytes for s in split_infos.values()),
    )
    license_id = _license_id(info.license)
    card_data = DatasetCardData(
        language=["en"],
        license=license_id,
        pretty_name=pretty_name,
        size_categories=[_size_category(sum(len(d) for d in splits.values()))],
        task_categories=["text-classification"],
        task_ids=["multi-label-classification"],
        tags=["patents", "cpc", "ipc", "hierarchical-classification"],
        **(_other_license(info) if license_id == "other" else {}),
    )
    copies = {split: s["upsampled_rows_added"] for split, s in (build_summary or {}).items()
              if s.get("upsampled_rows_added")}
    if copies:  # the loader's check then knows these last rows repeat patents on purpose
        card_data.thmm = {"upsampled_rows_added": copies}
    MetadataConfigs(
        {
            config_name: {
                "default": True,
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in splits],
            }
        }
    ).to_dataset_card_data(card_data)
    DatasetInfosDict({config_name: card_info}).to_dataset_card_data(card_data)
    card = DatasetCard(
        "---\n" + str(card_data) + "\n---\n" + _card_body(splits, info, pretty_name, source, report, build_summary)
    )
    card.save(out_dir / "README.md")
    files.insert(0, "README.md")
    return files


def _card_body(splits, info, pretty_name, source, report, build_summary) -> str:
    """The markdown part of the dataset card."""
    split_names = ", ".join(f"`{s}` ({len(d):,})" for s, d in splits.items())
    parts = [
        f"# {pretty_name}\n",
        (info.description or "").strip() + "\n",
        f"- **Source:** {source or 'see homepage'}",
        f"- **Homepage:** {info.homepage or '-'}",
        f"- **Licence:** {info.license or 'unknown (see source)'}",
        f"- **Splits:** {split_names}\n",
        "## Usage\n",
        '```python\nfrom datasets import load_dataset\n\nsplits = load_dataset("<this repo id or folder>")\n```\n',
        "## Fields\n",
        "- `patent_id` (string), `title` (string), `abstract` (string; may be empty)",
        "- `labels` (list of string): subclass codes, e.g. `A43B`, in the released order",
        "- `sections`, `classes` (list of string): the labels' sorted unique ancestors at level 1 (`A`) "
        "and level 2 (`A43`) of the hierarchy\n",
    ]
    upsampled = (build_summary or {}).get("train", {}).get("upsampled_rows_added", 0)
    if upsampled:
        parts.append(
            f"The training split is **up-sampled** (Pujari et al., 2021): {upsampled:,} copies of training patents "
            "with infrequent labels were appended so that every label occurs at least 10 times; validation and "
            "test are as released.\n"
        )
    if report is not None:
        parts += [
            "## Label statistics\n",
            format_markdown(report) + "\n",
            "![Label frequency by rank](label_distribution.png)\n",
        ]
    parts += ["## Citation\n", "```bibtex\n" + (info.citation or CITATION_BIBTEX).strip() + "\n```\n"]
    return "\n".join(parts)


def _folder_name(path) -> str:
    """A local folder as a card names it: its own name (``.`` resolved first), never its path."""
    return Path(path).expanduser().resolve().name or "local"


def _default_pretty_name(builder, data_dir) -> str:
    if builder.config.source == "wipo_alpha":
        return "WIPO-alpha"
    if data_dir:
        return f"{_folder_name(data_dir)} (USPTO-70k format)"
    return "Patent classification data (USPTO-70k format)" if builder.config.data_files else "USPTO-70k"


def publish(
    out_dir: str | Path,
    *,
    data_dir: str | None = None,
    config_name: str = "uspto70k",
    upsample: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
    token: str | None = None,
    cache_dir: str | None = None,
    pretty_name: str | None = None,
    license: str | None = None,
    max_shard_rows: int = 100_000,
    stats: bool = True,
    option: str = "out_dir",
    **builder_kwargs,
) -> dict:
    """Build with :class:`Uspto70k`, export to ``out_dir`` (see :func:`export_splits`), optionally push.

    ``builder_kwargs`` are :class:`~dataset_script.builder.PatentConfig` options (``scheme``,
    ``base_url``, ``empty_labels``, ...). Local TSVs (``data_dir``/``data_files``) are not described as the
    USPTO-70k release and get licence ``unknown`` unless ``license`` (e.g. ``"cc-by-4.0"``) is given.
    Returns the export summary, with the builder's
    ``build_summary`` (rows read, dropped by explicit options, up-sampled rows added) and, after a
    push, ``repo_id`` and ``commit_url``. The push (:func:`thmm.hub.upload_folder`) uploads the files
    the export wrote (not the marker, nor files a user added to the folder) and deletes old
    ``data/*.parquet`` shards on the Hub in the same commit, so a re-publish with fewer shards leaves
    no stale ones behind.

    ``out_dir`` is checked before the build (:func:`thmm.outputs.check_output_dir`; ``option`` names it
    in a refusal): nothing is built, written or deleted for a folder the export may not use.
    """
    check_output_dir(out_dir, option, COMMAND, EXPORT_FILES)
    check_shard_rows(max_shard_rows)  # before the build, which takes minutes on a large set
    check_license(license)
    options = {k: v for k, v in {"upsample": upsample or None, **builder_kwargs}.items() if v is not None}
    builder = Uspto70k(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **options)
    builder.download_and_prepare()
    built = builder.as_dataset()
    splits = datasets.DatasetDict({split: built[split] for split in ("train", "validation", "test") if split in built})
    info = builder.info.copy()
    local_url = builder.config.source == "tsv" and "://" not in builder.config.base_url
    if builder.config.source == "tsv" and (data_dir or builder.config.data_files or local_url):
        # Local TSVs may hold any patents (e.g. dronesr): do not describe or license them as the release,
        # and name their folder, never its path (a --base-url that is a folder too).
        folder = data_dir or (builder.config.base_url if local_url else None)
        source = f"local files in `{_folder_name(folder)}/`" if folder else "local data files"
        info.description, info.license, info.homepage = LOCAL_DESCRIPTION, None, None
    elif builder.config.source == "tsv" and builder.config.base_url.startswith("file://"):
        # the release's files from a local copy (as the tests download them): its folder, not its path
        source = f"a local copy of the release files in `{_folder_name(builder.config.base_url[len('file://'):])}/`"
    else:
        source = (
            builder.config.base_url if builder.config.source == "tsv" else f"local WIPO-alpha copy ({info.homepage})"
        )
    if license is not None:
        info.license = license
    summary = export_splits(
        splits,
        out_dir,
        config_name=config_name,
        info=info,
        pretty_name=pretty_name or _default_pretty_name(builder, data_dir),
        source=source,
        build_summary=builder.build_summary,
        max_shard_rows=max_shard_rows,
        stats=stats,
        option=option,
    )
    if push_to_hub:
        summary["repo_id"] = push_to_hub
        with _only(Path(out_dir), summary["files"]) as folder:
            summary["commit_url"] = upload_folder(
                folder,
                push_to_hub,
                repo_type="dataset",
                private=private,
                commit_message="Publish patent classification splits (dataset_script.publish)",
                delete_patterns=["data/*.parquet"],
                api=HfApi(token=token),
            )
    return summary


@contextlib.contextmanager
def _only(folder: Path, files: list[str]):
    """A temporary sibling of ``folder`` holding just ``files`` (hard links, else copies), so that an
    upload takes what the export wrote and nothing a user put beside it."""
    with tempfile.TemporaryDirectory(prefix=f".thmm-upload-{folder.name}-", dir=folder.absolute().parent) as tmp:
        for name in files:
            target = Path(tmp, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / name, target)
            except OSError:
                shutil.copy2(folder / name, target)
        yield tmp


def main(argv=None) -> dict:
    from thmm.cli import (
        HelpFormatter,
        PushToHub,
        add_common_options,
        add_deprecated,
        add_dataset_options,
        check_quiet_verbose,
        description,
        library_progress,
        require,
        spelled,
    )

    parser = one_line_errors(argparse.ArgumentParser(
        prog="thmm-publish", usage="%(prog)s --output-dir DIR [--dataset DIR] [OPTIONS]",
        description=description(__doc__), formatter_class=HelpFormatter))
    parser.add_argument(
        "--output-dir", metavar="DIR",
        help="output folder (README.md, data/*.parquet, statistics): new, empty, or an earlier thmm-publish output "
             "(required)",
    )
    add_deprecated(parser, "--out", "--output-dir")
    add_dataset_options(parser, dataset_help="local train.tsv/dev.tsv/test.tsv folder (or WIPO-alpha's "
                                                      "train/ and test/); default: the public USPTO-70k release")
    parser.add_argument("--scheme", choices=["cpc", "ipc"], help="label code scheme (default: the dataset config's)")
    parser.add_argument(
        "--upsample",
        action="store_true",
        help="up-sample infrequent training labels to 10 (the paper's preprocessing)",
    )
    parser.add_argument("--push-to-hub", action=PushToHub,
                        help="upload the folder to the Hub dataset repo --hub-model-id (the old form --push-to-hub "
                             "REPO still works, with a deprecation warning)")
    parser.add_argument("--hub-model-id", metavar="ORG/NAME", help="the Hub dataset repo --push-to-hub uploads to")
    parser.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")
    add_deprecated(parser, "--private", "--hub-private", flag=True)
    parser.add_argument("--cache-dir", metavar="DIR", help="datasets cache folder")
    parser.add_argument("--base-url", help="download the release files from here instead of GitHub")
    parser.add_argument("--pretty-name", help="title of the dataset card")
    parser.add_argument(
        "--license", help="licence of local data for the card, e.g. cc-by-4.0 (default: the release's)"
    )
    add_common_options(parser)
    args = parser.parse_args(argv)
    require(parser, args, "output_dir")
    check_quiet_verbose(parser, args)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub: name the repo to upload to with --hub-model-id ORG/NAME")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # the builder's per-split counts (rows read, dropped by an option, up-sampled) are info lines: --verbose
    logging.getLogger("dataset_script").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    logging.getLogger("thmm.hub").setLevel(logging.WARNING if args.quiet else logging.INFO)
    library_progress(args.verbose, args.quiet)

    summary = publish(
        args.output_dir,
        data_dir=args.dataset,
        config_name=args.dataset_config,
        upsample=args.upsample,
        push_to_hub=args.hub_model_id if args.push_to_hub else None,
        private=args.hub_private,
        cache_dir=args.cache_dir,
        pretty_name=args.pretty_name,
        license=args.license,
        scheme=args.scheme,
        base_url=args.base_url,
        option=spelled(args, "output_dir"),
    )
    if args.verbose:
        print(json.dumps(summary, indent=1))
    if not args.quiet:
        rows = ", ".join(f"{split} {n:,}" for split, n in summary["rows"].items())
        pushed = f"; pushed to {summary['repo_id']}: {summary['commit_url']}" if summary.get("repo_id") else ""
        print(f"wrote {len(summary['files'])} files ({rows} rows) to {args.output_dir}{pushed}")
    return summary


if __name__ == "__main__":
    main()
