# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Hugging Face Hub helpers shared by the model push (``train.py --push-to-hub``) and the data set
publisher (``dataset_script.publish``): the one citation of the paper and the one upload helper."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["CITATION_BIBTEX", "upload_folder"]

logger = logging.getLogger("thmm.hub")

# The paper this package implements; the model card, the dataset card fallback and README.md cite it.
# tests/test_model_card.py checks that README.md's ```bibtex block is this text.
CITATION_BIBTEX = r"""@inproceedings{pujari2021multitask,
  title     = {A Multi-Task Approach to Neural Multi-Label Hierarchical Patent Classification using Transformers},
  author    = {Pujari, Subhash Chandra and Friedrich, Annemarie and Str{\"o}tgen, Jannik},
  booktitle = {Advances in Information Retrieval -- 43rd European Conference on IR Research, ECIR 2021},
  series    = {Lecture Notes in Computer Science},
  volume    = {12656},
  pages     = {513--528},
  publisher = {Springer},
  year      = {2021},
  doi       = {10.1007/978-3-030-72113-8_34}
}"""


def upload_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    commit_message: str = "Upload THMM patent classifier",
    delete_patterns: list[str] | None = None,
    api=None,
) -> str:
    """Create the Hub repository ``repo_id`` if needed (``exist_ok``) and upload ``folder`` to it in one
    commit; returns the commit URL.

    Args:
        repo_type: ``"model"`` or ``"dataset"``.
        private: visibility of a newly created repository (an existing one keeps its own).
        delete_patterns: remote files to delete in the same commit (e.g. ``["data/*.parquet"]`` so
            that a re-upload with fewer shards leaves no stale ones behind).
        api: a :class:`huggingface_hub.HfApi` (e.g. one built with a token); default ``HfApi()``.
    """
    if api is None:
        import huggingface_hub

        api = huggingface_hub.HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        commit_message=commit_message,
        delete_patterns=delete_patterns,
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("uploaded %s to %s %s: %s", Path(folder).name, repo_type, repo_id, url)
    return url
