# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""USPTO-70k (and WIPO-alpha) as a ``datasets`` builder, plus the loader ``train.py`` uses.

datasets 5.x no longer runs dataset scripts, so the builder is a plain class that is instantiated
directly::

    builder = Uspto70k(data_dir="path/to/tsvs", cache_dir=...)  # or no data_dir: the public release
    builder.download_and_prepare()
    splits = builder.as_dataset()

and ``python -m dataset_script.publish`` turns its output into parquet + a dataset card, which
``load_dataset(<hub id or folder>)`` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import datasets
import datasets.exceptions
import pyarrow as pa
from datasets.builder import Key
from datasets.data_files import DataFilesDict, sanitize_patterns

import configuration_thmm
from thmm.hub import CITATION_BIBTEX

from . import readers, streaming, upsample
from .readers import (
    PatentDataError,
    PatentRowValidator,
    iter_patent_batches,
    iter_patent_parquet,
    read_wipo_alpha,
)
from .streaming import ROW_SCHEMA, iter_patent_tables
from .upsample import upsample_dataset, upsample_indices

__all__ = ["PatentConfig", "Uspto70k", "load_patent_splits", "local_split_files", "RELEASE_URL", "SPLIT_FILES"]

logger = logging.getLogger(__name__)

RELEASE_URL = "https://raw.githubusercontent.com/boschresearch/hierarchical_patent_classification_ecir2021/main/data/uspto-release"
HOMEPAGE = "https://github.com/boschresearch/hierarchical_patent_classification_ecir2021"
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
JSONL_SPLIT_FILES = {split: name.replace(".tsv", ".jsonl") for split, name in SPLIT_FILES.items()}
# How the files of a split are read, by suffix (dataset_script.streaming; every row checked by
# PatentRowValidator).
FILE_KINDS = {".tsv": "tsv", ".jsonl": "jsonl"}
SUMMARY_FILE = "build_summary.json"

CITATION = CITATION_BIBTEX + "\n"
WIPO_CITATION = """\
@article{fall2003automated,
  title   = {Automated Categorization in the International Patent Classification},
  author  = {Fall, Caspar J. and T{\\"o}rcsv{\\'a}ri, Atilla and Benzineb, Karim and Karetka, Gabor},
  journal = {SIGIR Forum},
  volume  = {37},
  number  = {1},
  pages   = {10--25},
  year    = {2003}
}
"""
DESCRIPTION = """\
USPTO-70k: 70,000 US patents (title, abstract) with their CPC subclass labels, released with Pujari et al.,
"A Multi-Task Approach to Neural Multi-Label Hierarchical Patent Classification using Transformers"
(ECIR 2021). Train: 50,000 patents granted 2006-2017; validation (dev): 10,000 from 2018; test: 10,000
from 2019. `labels` are the subclass codes as released; `sections` and `classes` are their ancestors
(level 1 and 2 of the CPC hierarchy).
"""
WIPO_DESCRIPTION = """\
WIPO-alpha: English patent applications (title, abstract) with their main and secondary IPC codes cut to
the subclass; the validation split is a deterministic hold-out from the WIPO-alpha training set.
"""

FEATURES = datasets.Features(
    {
        "patent_id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "abstract": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("string")),
        "sections": datasets.List(datasets.Value("string")),
        "classes": datasets.List(datasets.Value("string")),
    }
)


@dataclass
class PatentConfig(datasets.BuilderConfig):
    """Options of :class:`Uspto70k`; any of them can be passed as a keyword to the builder.

    Args:
        source: ``"tsv"`` (USPTO-70k release format) or ``"wipo_alpha"`` (XML folder in ``data_dir``).
        scheme: ``"cpc"`` (sections A-H and Y, e.g. ``Y10T``) or ``"ipc"`` (A-H only).
        base_url: where ``train.tsv``/``dev.tsv``/``test.tsv`` are downloaded from when neither
            ``data_dir`` nor ``data_files`` is given (any URL the download manager takes, ``file://`` too).
        upsample: add copies of training patents with infrequent labels until every label occurs
            ``min_label_count`` times in train (the paper's preprocessing); dev and test are untouched.
        min_label_count, seed: parameters of the up-sampling (and ``seed`` of the WIPO-alpha hold-out).
        empty_labels, duplicate_ids: ``"error"`` (default), ``"keep"`` or ``"drop"``; see
            :func:`~dataset_script.readers.read_patent_tsv`. Dropped rows are counted in ``build_summary``.
        validation_fraction: WIPO-alpha only: share of its training documents held out as validation.
        language: WIPO-alpha only: the ``xml:lang`` of the title and abstract to read.
        reader_processes: processes that read a large TSV or JSONL file (0: one per core, at most 8;
            see :mod:`dataset_script.streaming`); the rows do not depend on it.
    """

    source: str = "tsv"
    scheme: str = "cpc"
    base_url: str = RELEASE_URL
    upsample: bool = False
    min_label_count: int = 10
    seed: int = 42
    empty_labels: str = "error"
    duplicate_ids: str = "error"
    validation_fraction: float = 0.1
    language: str = "EN"
    reader_processes: int = 0


def _sha256_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def _local_path(url_or_path: str) -> str | None:
    """The local path behind a plain path or a ``file://`` URL; ``None`` for remote URLs."""
    if url_or_path.startswith("file://"):
        return url_or_path[len("file://") :]
    return None if "://" in url_or_path else url_or_path


def _file_kind(source: str) -> str:
    """The format of a split file, ``"tsv"`` or ``"jsonl"``, by its suffix (of the path or URL the user gave)."""
    suffix = os.path.splitext(source.split("?", 1)[0])[1].lower()
    if suffix not in FILE_KINDS:
        raise PatentDataError(source, None, None, f"unknown file type {suffix or '(no suffix)'!r}: split files are "
                              f"{' or '.join(FILE_KINDS)} (the release's TSV format, or JSON Lines)")
    return FILE_KINDS[suffix]


EXPECTED_FOLDER = ("train.tsv, dev.tsv and test.tsv (release format), train.jsonl, dev.jsonl and test.jsonl "
                   "(JSON Lines), or a folder exported by thmm-publish (README.md + parquet)")
_FORMAT_NAMES = {"tsv": "TSV splits", "jsonl": "JSONL splits", "parquet": "a parquet export"}


def _folder_formats(folder: Path) -> dict[str, list[Path]]:
    """The training data a folder holds, by format: the TSV and JSONL split files present, and the
    parquet files under it (outside hidden folders, which ``datasets`` skips too)."""
    parquet = sorted(
        file for file in folder.rglob("*.parquet")
        if not any(part.startswith((".", "__")) for part in file.relative_to(folder).parts)
    )
    found = {
        "tsv": [folder / name for name in SPLIT_FILES.values() if (folder / name).is_file()],
        "jsonl": [folder / name for name in JSONL_SPLIT_FILES.values() if (folder / name).is_file()],
        "parquet": parquet,
    }
    return {data_format: files for data_format, files in found.items() if files}


def local_split_files(folder: str | os.PathLike) -> tuple[str, dict[str, Path] | None]:
    """The format of a local data folder, ``"tsv"``, ``"jsonl"`` or ``"parquet"``, and for the first
    two its split files (``{"train": folder/"train.tsv", ...}``; ``None`` for parquet).

    A folder holding more than one format (say the release TSVs and a stale parquet export) is
    refused naming both, rather than one being picked silently; so are a folder with none and a
    TSV/JSONL folder that lacks a split file (``FileNotFoundError``)."""
    folder = Path(folder)
    found = _folder_formats(folder)
    if len(found) > 1:
        held = " and ".join(
            f"{_FORMAT_NAMES[data_format]} ({', '.join(f.relative_to(folder).as_posix() for f in files[:3])}"
            f"{', ...' if len(files) > 3 else ''})"
            for data_format, files in found.items()
        )
        raise PatentDataError(folder, None, None, f"holds {held}; it is unclear which to read: keep one format in "
                                                  "this folder (move the other files to a folder of their own)")
    if not found:
        raise FileNotFoundError(f"{folder} has no {', '.join(SPLIT_FILES.values())}: expected {EXPECTED_FOLDER}")
    (data_format,) = found
    if data_format == "parquet":
        return data_format, None
    names = SPLIT_FILES if data_format == "tsv" else JSONL_SPLIT_FILES
    missing = [name for name in names.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {', '.join(missing)}: expected {EXPECTED_FOLDER}")
    return data_format, {split: folder / name for split, name in names.items()}


class Uspto70k(datasets.ArrowBasedBuilder):
    """USPTO-70k: patents with CPC subclass labels and their section/class ancestors.

    Configs: ``"uspto70k"`` (default; the public release, or any TSVs of its format via ``data_dir``
    with ``train.tsv``/``dev.tsv``/``test.tsv``, or ``data_files={"train": ..., "validation": ...,
    "test": ...}``) and ``"wipo_alpha"`` (a local WIPO-alpha copy in ``data_dir``; see
    :func:`~dataset_script.readers.read_wipo_alpha`; validation is the ``validation_fraction`` of the
    training documents whose ``sha256(f"{seed}:{patent_id}")`` sorts first - stable whatever order the
    files are listed in).

    The cache key includes a fingerprint of the local input files' contents (stat data for the many
    WIPO-alpha files) and of this package's reader code, so a changed file is never served from a
    stale cache. Remote files are keyed by URL.
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = PatentConfig
    BUILDER_CONFIGS = [
        PatentConfig(name="uspto70k", version=VERSION, description="USPTO-70k release (CPC subclasses)"),
        PatentConfig(
            name="wipo_alpha",
            version=VERSION,
            source="wipo_alpha",
            scheme="ipc",
            description="WIPO-alpha (IPC subclasses)",
        ),
    ]
    DEFAULT_CONFIG_NAME = "uspto70k"

    def __init__(self, **kwargs):
        kwargs.setdefault("dataset_name", "uspto70k")
        if kwargs.get("data_dir"):
            kwargs["data_dir"] = os.path.abspath(os.path.expanduser(os.fspath(kwargs["data_dir"])))
        data_files = kwargs.get("data_files")
        if data_files is not None and not isinstance(data_files, DataFilesDict):
            if isinstance(data_files, dict):  # accept pathlib paths like everything else here
                data_files = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in data_files.items()}
            kwargs["data_files"] = DataFilesDict.from_patterns(
                sanitize_patterns(data_files), base_path=kwargs.get("base_path")
            )
        if kwargs.get("hash") is None:
            kwargs["hash"] = self._source_fingerprint(kwargs)
        super().__init__(**kwargs)
        processes = self.config.reader_processes  # datasets sets a named config's options as attributes
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
            raise ValueError(f"reader_processes must be 0 (one per core) or a number of processes, got {processes!r}")
        self._summary: dict[str, dict] = {}
        self._wipo_splits: dict[str, list[dict]] | None = None

    @classmethod
    def _source_fingerprint(cls, kwargs: dict) -> str:
        """Hash of the reader code and of the local input files (see the class docstring)."""
        defaults = cls.builder_configs.get(kwargs.get("config_name") or cls.DEFAULT_CONFIG_NAME, PatentConfig())
        option = lambda name: kwargs.get(name) or getattr(defaults, name)  # noqa: E731
        h = hashlib.sha256()
        for module in (readers, streaming, upsample, configuration_thmm):
            _sha256_file(h, module.__file__)
        _sha256_file(h, __file__)
        if option("source") == "wipo_alpha":
            if kwargs.get("data_dir") and os.path.isdir(kwargs["data_dir"]):
                for path in sorted(Path(kwargs["data_dir"]).rglob("*.xml")):
                    stat = path.stat()
                    h.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            return h.hexdigest()[:16]
        if kwargs.get("data_files") is not None:
            sources = [f for split in sorted(kwargs["data_files"]) for f in kwargs["data_files"][split]]
        elif kwargs.get("data_dir"):
            found = _folder_formats(Path(kwargs["data_dir"])) if os.path.isdir(kwargs["data_dir"]) else {}
            sources = [str(f) for data_format in ("tsv", "jsonl") for f in found.get(data_format, [])]
        else:
            sources = [f"{option('base_url').rstrip('/')}/{name}" for name in SPLIT_FILES.values()]
        for source in sources:
            h.update(source.encode())
            local = _local_path(source)
            if local is not None and os.path.isfile(local):
                _sha256_file(h, local)
        return h.hexdigest()[:16]

    def _info(self) -> datasets.DatasetInfo:
        if self.config.source == "wipo_alpha":
            return datasets.DatasetInfo(
                description=WIPO_DESCRIPTION,
                features=FEATURES,
                homepage="https://www.wipo.int/classifications/ipc/en/ITsupport/Categorization/dataset/",
                license="WIPO-alpha terms of use (research)",
                citation=WIPO_CITATION + "\n" + CITATION,
            )
        return datasets.DatasetInfo(
            description=DESCRIPTION, features=FEATURES, homepage=HOMEPAGE, license="CC BY 4.0", citation=CITATION
        )

    # ---- sources --------------------------------------------------------------------------------

    def _split_sources(self) -> dict[str, list[str]]:
        """Split -> the files (paths or URLs) it is read from, in order."""
        config = self.config
        if config.data_files:
            unknown = sorted(set(config.data_files) - set(SPLIT_FILES))
            if unknown:
                raise ValueError(f"data_files has split(s) {unknown}; use {list(SPLIT_FILES)}")
            sources = {split: list(config.data_files[split]) for split in SPLIT_FILES if split in config.data_files}
        elif config.data_dir:
            data_format, files = local_split_files(config.data_dir)
            if files is None:
                raise PatentDataError(
                    config.data_dir, None, None, "is a parquet export (as thmm-publish writes): read it with "
                    "load_patent_splits(folder) or datasets.load_dataset(folder); the builder reads TSV or JSONL files"
                )
            sources = {split: [str(file)] for split, file in files.items()}
        else:
            sources = {split: [f"{config.base_url.rstrip('/')}/{name}"] for split, name in SPLIT_FILES.items()}
        for source in (s for split_sources in sources.values() for s in split_sources):
            _file_kind(source)  # an unknown file type fails before anything is downloaded or read
        return sources

    def _split_generators(self, dl_manager):
        if self.config.source == "wipo_alpha":
            if not self.config.data_dir:
                raise ValueError(
                    "the wipo_alpha config reads a local WIPO-alpha copy: pass data_dir=<folder with train/ and test/>"
                )
            return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in SPLIT_FILES]
        sources = self._split_sources()
        local = dl_manager.download(sources)
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"split": split, "sources": sources[split], "files": local[split]}
            )
            for split in sources
        ]

    # ---- reading --------------------------------------------------------------------------------

    def _iter_split_tables(self, sources: list[str], files: list[str], validator: PatentRowValidator):
        """The validated rows of a split's files in order, as Arrow tables (one validator: a patent_id
        repeated in another file of the split is caught too), read by :mod:`dataset_script.streaming`."""
        for source, file in zip(sources, files, strict=True):
            try:
                yield from iter_patent_tables(file, _file_kind(source), validator, chunk_bytes=streaming.CHUNK_BYTES,
                                              processes=self.config.reader_processes or None)
            except PatentDataError as err:
                if os.path.abspath(file) == os.path.abspath(_local_path(source) or ""):
                    raise
                # Name the URL the user knows, not the download cache's hashed file name.
                raise PatentDataError(
                    source, err.line, err.field, f"{err.problem} (downloaded copy: {file})", unit=err.unit
                ) from None

    def _read_wipo_split(self, split: str) -> list[dict]:
        """Train/validation/test of WIPO-alpha; train is read once and split by a seeded hash."""
        if self._wipo_splits is None:
            config, base = self.config, Path(self.config.data_dir)
            if not 0.0 <= config.validation_fraction < 1.0:
                raise ValueError(f"validation_fraction must be in [0, 1), got {config.validation_fraction}")
            train = read_wipo_alpha(base / "train", config.scheme, language=config.language)
            test = read_wipo_alpha(base / "test", config.scheme, language=config.language)
            by_hash = sorted(train, key=lambda r: hashlib.sha256(f"{config.seed}:{r['patent_id']}".encode()).digest())
            held_out = {r["patent_id"] for r in by_hash[: round(config.validation_fraction * len(train))]}
            self._wipo_splits = {
                "train": [r for r in train if r["patent_id"] not in held_out],
                "validation": [r for r in train if r["patent_id"] in held_out],
                "test": test,
            }
        return self._wipo_splits[split]

    def _generate_tables(self, split: str, sources: list[str] | None = None, files: list[str] | None = None):
        config = self.config
        if config.source == "wipo_alpha":
            rows = self._read_wipo_split(split)
            summary = {"rows_read": len(rows), "dropped_empty_labels": 0, "dropped_duplicate_ids": 0}
            where = f"{config.data_dir} ({split} split, validation_fraction={config.validation_fraction})"
            tables = (pa.Table.from_pylist(rows[i : i + 10_000], schema=ROW_SCHEMA) for i in range(0, len(rows), 10_000))
        else:
            validator = PatentRowValidator(
                config.scheme, empty_labels=config.empty_labels, duplicate_ids=config.duplicate_ids
            )
            tables = self._iter_split_tables(sources, files, validator)
            summary = validator.counts  # complete once the rows are read
            where = ", ".join(sources)
        added = 0
        if split == "train" and config.upsample:  # an explicit option: the split is held in memory
            parts = list(tables)
            tables = [pa.concat_tables(parts) if parts else ROW_SCHEMA.empty_table()]
            extra = upsample_indices(tables[0].column("labels").to_pylist(), min_count=config.min_label_count,
                                     seed=config.seed)
            tables.append(tables[0].take(pa.array(extra, type=pa.int64())))
            added = len(extra)
            logger.info(
                "up-sampling added %d training rows (every label now occurs >= %d times)",
                added,
                config.min_label_count,
            )
        count = 0
        for index, table in enumerate(tables):
            if table.num_rows:
                count += table.num_rows
                yield Key(0, index), table
        if config.source != "wipo_alpha":
            validator.log_filters(where)
        if not count:  # datasets would only say 'Instruction "validation" corresponds to no data!' later
            dropped = summary["dropped_empty_labels"] + summary["dropped_duplicate_ids"]
            raise PatentDataError(where, None, None, f"no documents left: the explicit filter options dropped all "
                                                     f"{dropped}" if dropped else "no documents")
        self._summary[split] = {**summary, "upsampled_rows_added": added, "rows": count}

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        except datasets.exceptions.DatasetGenerationError as err:
            # datasets wraps reader errors in a generic "error while generating"; surface ours, which
            # already name the file, the line and the field.
            if isinstance(err.__cause__, PatentDataError):
                raise err.__cause__ from None
            raise
        # Kept beside the Arrow files, so that a cached build still reports what it filtered and added.
        with self._fs.open(f"{self._output_dir}/{SUMMARY_FILE}", "w") as f:
            json.dump(self._summary, f, indent=1)

    @property
    def build_summary(self) -> dict[str, dict]:
        """Per split: ``rows_read``, ``dropped_empty_labels``, ``dropped_duplicate_ids`` (explicit filter
        options), ``upsampled_rows_added`` and the final ``rows``. Available after ``download_and_prepare``."""
        if not self._summary:
            path = f"{self._output_dir}/{SUMMARY_FILE}"
            if self._fs.exists(path):
                with self._fs.open(path) as f:
                    self._summary = json.load(f)
        return dict(self._summary)


# --------------------------------------------------------------------------------------------------
# The loader train.py uses
# --------------------------------------------------------------------------------------------------


def _no_documents(where, validator: PatentRowValidator) -> PatentDataError:
    dropped = validator.counts["dropped_empty_labels"] + validator.counts["dropped_duplicate_ids"]
    if dropped:
        return PatentDataError(where, None, None,
                               f"no documents left: the explicit filter options dropped all {dropped}")
    return PatentDataError(where, None, None, "no documents")


def _declared_copies(path: Path) -> dict[str, int]:
    """Per split, the up-sampling copies a ``thmm-publish`` export declares in its card's YAML
    (``thmm: {upsampled_rows_added: {train: N}}``): the last N rows repeat earlier patents on purpose."""
    from huggingface_hub import DatasetCard

    card = path / "README.md"
    if not card.is_file():
        return {}
    declared = (DatasetCard.load(card).data.to_dict().get("thmm") or {}).get("upsampled_rows_added") or {}
    return {split: n for split, n in declared.items() if isinstance(n, int) and n > 0}


def _parquet_metadata(file: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(file)
    except (pa.ArrowException, OSError) as err:
        raise PatentDataError(file, None, None, f"not a readable parquet file ({err})") from None


def _check_parquet_export(path: Path, data_files, scheme: str, policies: dict) -> dict[str, list[int]]:
    """Every row of every split's parquet files through :class:`PatentRowValidator` (record batch by
    record batch, so memory stays bounded); returns, per split, the positions of the rows an explicit
    filter option drops. The up-sampling copies an export declares must repeat an earlier patent_id."""
    dropped, copies, first_columns = {}, _declared_copies(path), None
    for split, files in data_files.items():
        files = list(files)
        other = [f for f in files if not f.endswith(".parquet")]
        if other:
            raise PatentDataError(path, None, None, f"its {split} split lists files that are not parquet: {other[:3]}")
        metadata = [_parquet_metadata(file) for file in files]
        for file, meta in zip(files, metadata):  # datasets reads every file with the first one's columns
            columns = sorted(meta.schema.names)
            if not meta.num_rows:  # an empty file's columns do not matter (nor exist, when written from [])
                continue
            first_columns = first_columns or (file, columns)
            if columns != first_columns[1]:
                raise PatentDataError(file, None, None, f"has the columns {columns}, but {first_columns[0]} has "
                                                        f"{first_columns[1]}; all files of an export need the same")
        validator = PatentRowValidator(scheme, **policies)
        sizes = [meta.num_rows for meta in metadata]
        first_copy = sum(sizes) - copies.get(split, 0)  # position (0-based, in the split) of the first copy
        dropped[split], position = [], 0
        for file, size in zip(files, sizes):
            in_tail = split in copies and first_copy < position + size
            copies_from = max(1, first_copy - position + 1) if in_tail else None
            for row in iter_patent_parquet(file, validator, copies_from=copies_from):
                if row is None:
                    dropped[split].append(position)
                position += 1
        if not validator.counts["rows"]:
            raise _no_documents(files[0] if len(files) == 1 else f"{path} ({split} split)", validator)
        validator.log_filters(f"{path} ({split} split)")
    return dropped


def _check_loaded_splits(splits: datasets.DatasetDict, name: str, scheme: str, policies: dict) -> dict[str, list[int]]:
    """:class:`PatentRowValidator` over loaded splits (a Hub dataset: its files are not ours to name),
    Arrow batch by batch; errors name ``<name> (<split> split), row N``."""
    dropped = {}
    for split, dataset in splits.items():
        where = f"{name} ({split} split)"
        validator = PatentRowValidator(scheme, **policies)
        batches = dataset.with_format("arrow").iter(batch_size=1024)
        dropped[split] = [i for i, row in enumerate(iter_patent_batches(batches, where, validator)) if row is None]
        if not validator.counts["rows"]:
            raise _no_documents(where, validator)
        validator.log_filters(where)
    return dropped


def _load_parquet_export(path: Path, cache_dir, scheme: str, policies: dict) -> datasets.DatasetDict:
    """A local parquet export: every row checked first (:func:`_check_parquet_export`), then
    ``load_dataset``'s builder, without pyarrow's read-ahead of whole row groups (``pre_buffer``): it
    roughly halves the anonymous memory of loading a 1M-document export (752 against 357 MB,
    ``bench/scale.py``) and the rows are the same."""
    import pyarrow.dataset

    builder = datasets.load_dataset_builder(
        str(path), cache_dir=cache_dir,
        fragment_scan_options=pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False),
    )
    dropped = _check_parquet_export(path, builder.config.data_files, scheme, policies)
    builder.download_and_prepare()
    return _without_rows(builder.as_dataset(), dropped)


def _without_rows(splits: datasets.DatasetDict, dropped: dict[str, list[int]]) -> datasets.DatasetDict:
    """``splits`` less the rows an explicit filter option dropped (usually none)."""
    for split, positions in dropped.items():
        if positions:
            gone = set(positions)
            splits[split] = splits[split].select([i for i in range(len(splits[split])) if i not in gone])
    return splits


def load_patent_splits(
    source: str | os.PathLike | None = None,
    *,
    scheme: str = "cpc",
    upsample: bool = False,
    cache_dir: str | None = None,
    config_name: str = "uspto70k",
    min_label_count: int = 10,
    seed: int = 42,
    **builder_kwargs,
) -> datasets.DatasetDict:
    """Train/validation/test splits of a patent classification data set, as a ``DatasetDict``.

    Every source passes the same row checks (:class:`~dataset_script.readers.PatentRowValidator`),
    whatever its format, and an empty split is refused naming its file.

    Args:
        source:
            - ``None``: the public USPTO-70k release, downloaded by :class:`Uspto70k`;
            - a folder with ``train.tsv``, ``dev.tsv``, ``test.tsv`` (release format) or ``train.jsonl``,
              ``dev.jsonl``, ``test.jsonl`` (one JSON object per line): built by :class:`Uspto70k` with
              ``data_dir`` (with ``config_name="wipo_alpha"``: a WIPO-alpha folder);
            - a folder written by ``thmm-publish`` (``README.md`` + parquet): each parquet file checked
              row by row, then ``load_dataset(folder)``;
            - any other string: a Hub dataset id, ``load_dataset(source)``, then checked. Strings that
              look like paths (:func:`configuration_thmm.looks_like_local_path`: starting with ``/``,
              ``.`` or ``~``, with more than one ``/``, or whose first part exists) are always local paths.

            A folder holding more than one of these formats is refused (:func:`local_split_files`).
        scheme: ``"cpc"`` or ``"ipc"``: how label codes are validated.
        upsample: up-sample infrequent training labels to ``min_label_count`` (the paper's
            preprocessing; see :mod:`dataset_script.upsample`). Only train changes; the number of added
            rows is logged. On an already up-sampled export it adds nothing.
        cache_dir: the ``datasets`` cache folder.
        config_name, min_label_count, seed, **builder_kwargs: passed to :class:`Uspto70k` (e.g.
            ``base_url``, ``empty_labels``, ``duplicate_ids``, ``data_files``); ``empty_labels`` and
            ``duplicate_ids`` apply to parquet and Hub sources too.
    """
    data_dir = None
    policies = {key: builder_kwargs[key] for key in ("empty_labels", "duplicate_ids") if key in builder_kwargs}
    if source is not None:
        source = os.fspath(source)
        path = Path(source).expanduser()
        if path.is_dir() and config_name != "wipo_alpha":
            data_format, _ = local_split_files(path)
            if data_format == "parquet":
                splits = _load_parquet_export(path, cache_dir, scheme, policies)
                return _finish_loaded(splits, str(path), scheme, upsample, min_label_count, seed)
            data_dir = str(path)
        elif path.is_dir():
            data_dir = str(path)
        elif path.exists():
            raise FileNotFoundError(f"{source} is not a folder: expected one with {EXPECTED_FOLDER}")
        elif configuration_thmm.looks_like_local_path(source):
            raise FileNotFoundError(f"{source}: no such directory")
        else:
            splits = datasets.load_dataset(source, cache_dir=cache_dir)
            if "validation" not in splits and "dev" in splits:
                splits["validation"] = splits.pop("dev")
            splits = _without_rows(splits, _check_loaded_splits(splits, source, scheme, policies))
            return _finish_loaded(splits, source, scheme, upsample, min_label_count, seed)

    options = {
        "scheme": scheme,
        "upsample": upsample,
        "min_label_count": min_label_count,
        "seed": seed,
        **builder_kwargs,
    }
    defaults = Uspto70k.builder_configs[config_name]
    # Only non-default options go into the config id, which keeps cache folder names readable.
    options = {
        k: v
        for k, v in options.items()
        if k not in {f.name for f in fields(PatentConfig)} or getattr(defaults, k) != v
    }
    builder = Uspto70k(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **options)
    builder.download_and_prepare()
    for split, summary in builder.build_summary.items():
        logger.info("%s: %s", split, summary)
    built = builder.as_dataset()
    return datasets.DatasetDict({split: built[split] for split in SPLIT_FILES if split in built})


def _finish_loaded(
    splits, name: str, scheme: str, upsample: bool, min_label_count: int, seed: int
) -> datasets.DatasetDict:
    """Checked splits loaded by ``datasets``: named train/validation/test, with the builder's
    features (``sections``/``classes`` derived when the source lacks them), optionally up-sampled."""
    if "validation" not in splits and "dev" in splits:
        splits["validation"] = splits.pop("dev")
    missing = [split for split in SPLIT_FILES if split not in splits]
    if missing:
        raise ValueError(f"{name} has splits {list(splits)}; expected {list(SPLIT_FILES)}")
    splits = datasets.DatasetDict({split: _with_features(splits[split], scheme) for split in SPLIT_FILES})
    if upsample:
        splits["train"], added = upsample_dataset(splits["train"], min_count=min_label_count, seed=seed)
        logger.info("up-sampling added %d training rows to %s", added, name)
    return splits


def _with_features(dataset: datasets.Dataset, scheme: str) -> datasets.Dataset:
    """``dataset`` with exactly :data:`FEATURES`: group symbols in canonical form, the derived columns
    added when missing (the rows passed the validator, so the labels are valid codes), the types cast
    when they differ."""
    dataset = _canonical_labels(dataset, scheme)
    missing = [name for name in readers.DERIVED_COLUMNS if name not in dataset.column_names]
    if missing:
        def derive(labels):
            fields = [readers.hierarchy_fields(codes, scheme) for codes in labels]
            return {name: [f[name] for f in fields] for name in missing}

        dataset = dataset.map(derive, batched=True, input_columns=["labels"], desc="deriving sections and classes")
    dataset = dataset.select_columns(list(FEATURES))
    return dataset if dataset.features == FEATURES else dataset.cast(FEATURES)


def _canonical_labels(dataset: datasets.Dataset, scheme: str) -> datasets.Dataset:
    """``dataset`` with its group symbols as the validator stores them (``G05D1/02`` -> ``G05D 1/02``): a
    parquet export or a Hub dataset is loaded as written, in any notation the readers accept. Subclass
    codes need nothing, so only labels longer than a subclass are looked at, in Arrow."""
    import pyarrow.compute as pc

    from taxonomy_thmm import normalize_symbol

    flat = pc.list_flatten(dataset.data.column("labels"))
    longer = pc.unique(pc.filter(flat, pc.greater(pc.utf8_length(flat), 4))).to_pylist()  # each symbol once
    renamed = {code: normalize_symbol(code, scheme) for code in longer}
    renamed = {code: canonical for code, canonical in renamed.items() if canonical != code}
    if not renamed:
        return dataset
    return dataset.map(lambda labels: {"labels": [[renamed.get(code, code) for code in codes] for codes in labels]},
                       batched=True, input_columns=["labels"], desc="group symbols in canonical form")
