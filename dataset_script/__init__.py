# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Patent classification data for the (T)HMM models: USPTO-70k (Pujari et al., ECIR 2021) and WIPO-alpha.

- :class:`Uspto70k`: the ``datasets`` builder (splits ``train``/``validation``/``test``).
- :func:`load_patent_splits`: one call from a release, a TSV folder, a published folder or a Hub id.
- :func:`read_patent_tsv`, :func:`read_patent_jsonl`, :func:`read_wipo_alpha`: the strict readers; every
  format (parquet too) checks its rows with :class:`PatentRowValidator`.
- :mod:`dataset_script.streaming`: large TSV and JSONL files into Arrow a byte range at a time, by
  several processes, with the rows and errors of the line-by-line readers.
- ``python -m dataset_script.publish`` / ``python -m dataset_script.stats``: parquet + card, statistics.
"""

from .builder import RELEASE_URL, PatentConfig, Uspto70k, load_patent_splits, local_split_files
from .readers import (
    MAX_FIELD_CHARS,
    PatentDataError,
    PatentRowValidator,
    parse_label_list,
    read_patent_jsonl,
    read_patent_tsv,
    read_wipo_alpha,
)
from .upsample import upsample_dataset, upsample_indices

__all__ = [
    "MAX_FIELD_CHARS",
    "RELEASE_URL",
    "PatentConfig",
    "PatentDataError",
    "PatentRowValidator",
    "Uspto70k",
    "load_patent_splits",
    "local_split_files",
    "parse_label_list",
    "read_patent_jsonl",
    "read_patent_tsv",
    "read_wipo_alpha",
    "upsample_dataset",
    "upsample_indices",
]
