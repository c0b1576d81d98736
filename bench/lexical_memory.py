"""Peak memory of the lexical scorer's word-piece counts: ``thmm.lexical.token_counts`` (CSR built from
the Arrow list offsets, int32 ids, float32 ones) against a COO construction of int64 rows and float64
ones (what it did before, kept here as the reference).

    python bench/lexical_memory.py --documents 200000 --length 143

Each method runs in a fresh process on the same synthetic Arrow column (``--documents`` rows of
``--length`` random ids of MiniLM's 30,522-piece vocabulary, 1,000-row chunks as ``datasets`` stores
them). Reported: the peak RSS above the process's RSS once the column is built (``ru_maxrss``), the
seconds, and whether both give the same matrix (its checksum).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 30522
IGNORED = (0, 101, 102)  # [PAD], [CLS], [SEP]: what fit_fusion passes as the special tokens


def column(documents: int, length: int):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    chunks = []
    for start in range(0, documents, 1000):
        rows = min(1000, documents - start)
        ids = rng.integers(0, VOCAB, size=rows * length, dtype=np.int64)
        offsets = np.arange(rows + 1, dtype=np.int32) * length
        chunks.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)))
    return pa.chunked_array(chunks)


def coo_counts(input_ids, vocab_size, ignored_ids):
    """The earlier construction: one COO matrix of int64 rows and float64 ones over the combined column."""
    import pyarrow.compute as pc
    import scipy.sparse as sp

    input_ids = input_ids.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(input_ids), 0).to_numpy(zero_copy_only=False)
    ids = pc.list_flatten(input_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    keep = ~np.isin(ids, np.asarray(ignored_ids, dtype=np.int64))
    rows, ids = rows[keep], ids[keep]
    counts = sp.csr_matrix((np.ones(ids.size), (rows, ids)), shape=(len(lengths), vocab_size))
    counts.sum_duplicates()
    return counts


def measure(method: str, documents: int, length: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from thmm.lexical import token_counts

    input_ids = column(documents, length)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    build = token_counts if method == "token_counts" else coo_counts
    counts = build(input_ids, VOCAB, IGNORED)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = float(np.asarray(counts.sum(axis=0)).ravel() @ np.arange(VOCAB, dtype=np.float64))
    return {"method": method, "seconds": round(seconds, 2), "peak_above_input_mib": round((peak - before) / 1024, 1),
            "nonzeros": int(counts.nnz), "checksum": checksum}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=143, help="word-pieces per document")
    parser.add_argument("--method", choices=("token_counts", "coo"), help=argparse.SUPPRESS)  # one child's job
    args = parser.parse_args(argv)
    if args.method:
        print(json.dumps(measure(args.method, args.documents, args.length)))
        return 0
    rows = []
    for method in ("coo", "token_counts"):
        out = subprocess.run([sys.executable, __file__, "--method", method, "--documents", str(args.documents),
                              "--length", str(args.length)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.documents:,} documents of {args.length} word-pieces")
    print("| construction | peak MiB above the input | seconds | non-zeros |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['peak_above_input_mib']:,} | {row['seconds']} | {row['nonzeros']:,} |")
    print("same matrix:", rows[0]["nonzeros"] == rows[1]["nonzeros"] and rows[0]["checksum"] == rows[1]["checksum"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
