# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""One linear SVM per taxonomy node on a shared sparse matrix: the fit behind lexical fusion and the
SVM baselines.

The nodes are fitted by joblib worker processes, which import this module to run
:func:`fit_node_svm`. It imports numpy, scikit-learn and joblib only (no torch, no transformers), so
each worker holds about 110 MB of its own memory rather than the 350 MB an import of
:mod:`thmm.lexical` costs (docs/benchmarks.md, "Issue 35").
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SVM_C = 1.0  # the TwistBytes baseline's
# liblinear's dual coordinate descent with a stopping tolerance of 1e-3 (scikit-learn's default: 1e-4 and,
# above as many documents as word-pieces, the primal solver): on 50k-200k title+abstract documents it fits
# a node in 0.58-0.67x the time, with the same decisions at -0.25 on 99.998% or more of the (node,
# document) pairs (bench/svm_solvers.py; docs/benchmarks.md, "Issue 35"). liblinear's own default is 0.1.
SVM_SOLVER = {"dual": True, "tol": 1e-3}


def fit_node_svm(X, y, C: float = SVM_C, max_negatives: int = 0, seed: int = 0,
                 node: int = 0) -> tuple[np.ndarray | None, float]:
    """One node's ``LinearSVC`` on ``X``: ``(coef, intercept)``; ``(None, +-1)`` for a node every (or
    no) training document carries, which scores that constant. With ``max_negatives`` it is fitted on
    all the positives and a random sample of the negatives (:func:`node_training_rows`), each sampled
    negative weighing for those left out, so that the hinge loss it minimises is an unbiased estimate
    of the whole training set's."""
    from sklearn.svm import LinearSVC

    if y.min() == y.max():
        return None, (1.0 if y[0] else -1.0)
    weights = None
    rows = node_training_rows(y, max_negatives, seed, node)  # drawn here: a worker is sent y, not the rows
    if rows is not None:  # it keeps exactly max_negatives of them
        weights = np.where(y[rows], 1.0, (y.size - np.count_nonzero(y)) / max_negatives)
        X, y = X[rows], y[rows]
    clf = LinearSVC(C=C, random_state=0, **SVM_SOLVER).fit(X, y, sample_weight=weights)  # liblinear shuffles: seeded
    return clf.coef_.ravel().astype(np.float32), float(clf.intercept_[0])


def node_training_rows(y: np.ndarray, max_negatives: int, seed: int, node: int) -> np.ndarray | None:
    """The documents a node's SVM is fitted on: every positive and at most ``max_negatives`` random
    negatives (seeded by ``seed`` and ``node``, so a fit repeats), in document order; ``None`` (all of
    them) when it has no more negatives than that or ``max_negatives`` is 0."""
    negatives = y.size - int(np.count_nonzero(y))
    if not max_negatives or negatives <= max_negatives or negatives == y.size:
        return None
    keep = np.flatnonzero(~y.astype(bool))
    keep = np.random.default_rng([seed, node]).choice(keep, max_negatives, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(y), keep]))


def svm_jobs(n_jobs: int | None = None) -> int:
    """The processes :func:`fit_node_svms` fits with: ``n_jobs``, or by default the CPUs, at most 8."""
    return n_jobs or min(os.cpu_count() or 1, 8)


def file_backed(array, folder: str | os.PathLike, name: str):
    """``array`` (numpy, or a CSR matrix: its three arrays) written to ``.npy`` files in ``folder`` and
    mapped back read-only, in the same memory order. Worker processes then map the same file pages
    (joblib passes an array backed by a ``np.memmap``, or a slice of one, by its file name), and the
    caller can drop its in-memory copy: at 200k documents the SVMs' training matrix is 240 MB,
    which the parent held beside the copy joblib wrote to shared memory for the workers. The files
    are clean page cache, which the kernel may drop, not anonymous memory."""
    import scipy.sparse as sp

    def mapped(values, path):
        np.save(path, values)  # written with write(2): none of it is mapped into this process yet
        return np.load(path, mmap_mode="r")

    if not sp.issparse(array):
        return mapped(array, Path(folder) / f"{name}.npy")
    parts = {part: mapped(getattr(array, part), Path(folder) / f"{name}.{part}.npy")
             for part in ("data", "indices", "indptr")}
    matrix = sp.csr_matrix(array.shape, dtype=array.dtype)  # the arrays set directly: the constructor would copy them
    matrix.data, matrix.indices, matrix.indptr = parts["data"], parts["indices"], parts["indptr"]
    return matrix


class shared_with_workers:
    """``with shared_with_workers(n_jobs, X, targets) as (X, targets):`` rebinds each array to its
    :func:`file_backed` copy in a temporary folder (removed on exit) when the fit runs in worker
    processes, so that the in-memory arrays are freed unless the caller holds other references.
    (A class, not ``contextlib.contextmanager``, which keeps its arguments for the whole block.)
    Where the folder cannot be written (a full or read-only temporary folder), the arrays
    themselves are used, as before, with a warning."""

    def __init__(self, n_jobs: int, *arrays):
        self._arrays, self._n_jobs, self._folder = list(arrays), n_jobs, None

    def __enter__(self) -> tuple:
        from joblib import effective_n_jobs
        from joblib.externals.loky.backend import resource_tracker

        arrays, self._arrays = self._arrays, None
        if effective_n_jobs(self._n_jobs) <= 1:  # fitted in this process (also under joblib's sequential backend)
            return tuple(arrays)
        try:
            self._folder = tempfile.TemporaryDirectory(prefix="thmm-svm-", ignore_cleanup_errors=True)
            # joblib's tracker process removes the folder if this process dies (even SIGKILLed) before __exit__
            resource_tracker.register(self._folder.name, "folder")
            for i, array in enumerate(arrays):
                arrays[i] = file_backed(array, self._folder.name, str(i))  # the in-memory one goes
            return tuple(arrays)
        except OSError as err:
            logger.warning("the SVMs' training data stay in memory (%s); they could not be written to a temporary "
                           "folder for the worker processes: %s", _size(arrays), err)
            return tuple(arrays)

    def __exit__(self, *exc) -> None:
        from joblib.externals.loky.backend import resource_tracker

        if self._folder is not None:
            self._folder.cleanup()
            resource_tracker.unregister(self._folder.name, "folder")


def _size(arrays) -> str:
    parts = []
    for a in arrays:
        parts += [a.data, a.indices, a.indptr] if hasattr(a, "indptr") else [a]
    return f"{sum(part.nbytes for part in parts) / 1e6:,.0f} MB"


def fit_node_svms(X, targets: np.ndarray, C: float = SVM_C, n_jobs: int | None = None, max_negatives: int = 0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``LinearSVC`` per column of ``targets`` (``[documents, nodes]`` 0/1) on ``X``:
    ``(coef [features, nodes], intercept [nodes])``, fitted by ``n_jobs`` processes (:func:`svm_jobs`;
    joblib memory-maps ``X`` for them, or passes it by file name when it is :func:`file_backed`).
    Not threads: liblinear draws its shuffles from one generator per process, so concurrent fits in
    one process would not repeat exactly. With ``max_negatives``, each node is fitted on all its
    positives and that many of its negatives (:func:`node_training_rows`)."""
    from joblib import Parallel, delayed

    n_jobs = svm_jobs(n_jobs)
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(fit_node_svm)(X, targets[:, j], C, max_negatives, seed, j) for j in range(targets.shape[1]))
    if n_jobs > 1:  # the idle workers would hold their memory (and outlive a killed run) for minutes
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    coef = np.stack([w if w is not None else np.zeros(X.shape[1], np.float32) for w, _ in fitted], axis=1)
    return coef, np.array([b for _, b in fitted], dtype=np.float32)
