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
from datasets.data_files import DataFilesDict, sanitize_patterns

import configuration_thmm
from thmm.hub import CITATION_BIBTEX

from . import readers, upsample
from .readers import PatentDataError, read_patent_tsv, read_wipo_alpha
from .upsample import upsample_dataset, upsample_indices

__all__ = ["PatentConfig", "Uspto70k", "load_patent_splits", "RELEASE_URL", "SPLIT_FILES"]

logger = logging.getLogger(__name__)

RELEASE_URL = "https://raw.githubusercontent.com/boschresearch/hierarchical_patent_classification_ecir2021/main/data/uspto-release"
HOMEPAGE = "https://github.com/boschresearch/hierarchical_patent_classification_ecir2021"
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
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


def _sha256_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def _local_path(url_or_path: str) -> str | None:
    """The local path behind a plain path or a ``file://`` URL; ``None`` for remote URLs."""
    if url_or_path.startswith("file://"):
        return url_or_path[len("file://") :]
    return None if "://" in url_or_path else url_or_path


class Uspto70k(datasets.GeneratorBasedBuilder):
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
        self._summary: dict[str, dict] = {}
        self._wipo_splits: dict[str, list[dict]] | None = None

    @classmethod
    def _source_fingerprint(cls, kwargs: dict) -> str:
        """Hash of the reader code and of the local input files (see the class docstring)."""
        defaults = cls.builder_configs.get(kwargs.get("config_name") or cls.DEFAULT_CONFIG_NAME, PatentConfig())
        option = lambda name: kwargs.get(name) or getattr(defaults, name)  # noqa: E731
        h = hashlib.sha256()
        for module in (readers, upsample, configuration_thmm):
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
            sources = [os.path.join(kwargs["data_dir"], name) for name in SPLIT_FILES.values()]
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
            return {split: list(config.data_files[split]) for split in SPLIT_FILES if split in config.data_files}
        if config.data_dir:
            sources = {split: [os.path.join(config.data_dir, name)] for split, name in SPLIT_FILES.items()}
            missing = [files[0] for files in sources.values() if not os.path.isfile(files[0])]
            if missing:
                raise FileNotFoundError(
                    f"data_dir {config.data_dir} lacks {missing}; expected {', '.join(SPLIT_FILES.values())} "
                    "in the USPTO-70k release format"
                )
            return sources
        return {split: [f"{config.base_url.rstrip('/')}/{name}"] for split, name in SPLIT_FILES.items()}

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

    def _read_tsv_split(self, sources: list[str], files: list[str]) -> tuple[list[dict], dict]:
        config, rows = self.config, []
        counts = {"rows_read": 0, "dropped_empty_labels": 0, "dropped_duplicate_ids": 0}
        first_source: dict[str, str] = {}
        for source, file in zip(sources, files, strict=True):
            report: dict = {}
            try:
                part = read_patent_tsv(
                    file,
                    config.scheme,
                    empty_labels=config.empty_labels,
                    duplicate_ids=config.duplicate_ids,
                    report=report,
                )
            except PatentDataError as err:
                if os.path.abspath(file) == os.path.abspath(_local_path(source) or ""):
                    raise
                # Name the URL the user knows, not the download cache's hashed file name.
                raise PatentDataError(
                    source, err.line, err.field, f"{err.problem} (downloaded copy: {file})"
                ) from None
            for key in counts:
                counts[key] += report[key]
            if len(files) > 1 and config.duplicate_ids != "keep":  # the reader checks within one file only
                for row in part:
                    if row["patent_id"] in first_source:
                        raise PatentDataError(
                            source,
                            None,
                            "patent_id",
                            f"patent_id {row['patent_id']!r} is also in {first_source[row['patent_id']]}",
                        )
                    first_source[row["patent_id"]] = source
            rows.extend(part)
        return rows, counts

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

    def _generate_examples(self, split: str, sources: list[str] | None = None, files: list[str] | None = None):
        config = self.config
        if config.source == "wipo_alpha":
            rows = self._read_wipo_split(split)
            summary = {"rows_read": len(rows), "dropped_empty_labels": 0, "dropped_duplicate_ids": 0}
        else:
            rows, summary = self._read_tsv_split(sources, files)
        added = 0
        if split == "train" and config.upsample:
            extra = upsample_indices([r["labels"] for r in rows], min_count=config.min_label_count, seed=config.seed)
            rows, added = rows + [rows[i] for i in extra], len(extra)
            logger.info(
                "up-sampling added %d training rows (every label now occurs >= %d times)",
                added,
                config.min_label_count,
            )
        self._summary[split] = {**summary, "upsampled_rows_added": added, "rows": len(rows)}
        yield from enumerate(rows)  # key: the row's position

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


def _is_parquet_export(path: Path) -> bool:
    return (path / "README.md").is_file() and any(path.rglob("*.parquet"))


def _load_parquet_export(path: Path, cache_dir):
    """``load_dataset`` on a local parquet export, without pyarrow's read-ahead of whole row groups
    (``pre_buffer``): it roughly halves the anonymous memory of loading a 1M-document export (752
    against 357 MB, ``bench/scale.py``) and the rows are the same."""
    import pyarrow.dataset

    return datasets.load_dataset(str(path), cache_dir=cache_dir,
                                 fragment_scan_options=pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False))


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

    Args:
        source:
            - ``None``: the public USPTO-70k release, downloaded by :class:`Uspto70k`;
            - a folder with ``train.tsv``, ``dev.tsv``, ``test.tsv`` (release format): built by
              :class:`Uspto70k` with ``data_dir`` (with ``config_name="wipo_alpha"``: a WIPO-alpha folder);
            - a folder written by ``python -m dataset_script.publish`` (``README.md`` + parquet):
              ``load_dataset(folder)``;
            - any other string: a Hugging Face Hub dataset id, ``load_dataset(source)``. Strings that
              look like paths (:func:`configuration_thmm.looks_like_local_path`: starting with ``/``,
              ``.`` or ``~``, with more than one ``/``, or whose first part exists) are always local paths.
        scheme: ``"cpc"`` or ``"ipc"``: how label codes are validated when building from TSVs.
        upsample: up-sample infrequent training labels to ``min_label_count`` (the paper's
            preprocessing; see :mod:`dataset_script.upsample`). Only train changes; the number of added
            rows is logged. On an already up-sampled export it adds nothing.
        cache_dir: the ``datasets`` cache folder.
        config_name, min_label_count, seed, **builder_kwargs: passed to :class:`Uspto70k` (e.g.
            ``base_url``, ``empty_labels``, ``duplicate_ids``, ``data_files``).
    """
    data_dir = None
    if source is not None:
        source = os.fspath(source)
        path = Path(source).expanduser()
        if path.is_dir() and _is_parquet_export(path):
            splits = _load_parquet_export(path, cache_dir)
            return _finish_loaded(splits, str(path), upsample, min_label_count, seed)
        if path.is_dir():
            missing = [name for name in SPLIT_FILES.values() if not (path / name).is_file()]
            if config_name != "wipo_alpha" and missing:
                raise FileNotFoundError(
                    f"{source} has no {', '.join(missing)}: expected train.tsv, dev.tsv and test.tsv (release format) "
                    "or a folder exported by dataset_script.publish (README.md + parquet)"
                )
            data_dir = str(path)
        elif path.exists():
            raise FileNotFoundError(
                f"{source} is not a folder with train.tsv/dev.tsv/test.tsv nor one exported by dataset_script.publish"
            )
        elif configuration_thmm.looks_like_local_path(source):
            raise FileNotFoundError(f"{source}: no such directory")
        else:
            splits = datasets.load_dataset(source, cache_dir=cache_dir)
            return _finish_loaded(splits, source, upsample, min_label_count, seed)

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


def _finish_loaded(splits, name: str, upsample: bool, min_label_count: int, seed: int) -> datasets.DatasetDict:
    if "validation" not in splits and "dev" in splits:
        splits["validation"] = splits.pop("dev")
    missing = [split for split in SPLIT_FILES if split not in splits]
    if missing:
        raise ValueError(f"{name} has splits {list(splits)}; expected {list(SPLIT_FILES)}")
    splits = datasets.DatasetDict({split: splits[split] for split in SPLIT_FILES})
    if upsample:
        splits["train"], added = upsample_dataset(splits["train"], min_count=min_label_count, seed=seed)
        logger.info("up-sampling added %d training rows to %s", added, name)
    return splits
