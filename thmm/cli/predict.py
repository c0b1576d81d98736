# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Predict CPC/IPC codes for patents with a trained TMM / THMM / flat model; writes JSONL.

    thmm-predict --model runs/thmm/model --input patents.tsv --output predictions.jsonl
    thmm-predict --model ORG/REPO --input - --top-k 3 < titles.txt

Input, by file extension (``-`` reads text lines from stdin):
  * ``.txt``: one document per line, ``title`` or ``title<TAB>abstract``;
  * ``.tsv``: a header with a ``title`` column, optional ``abstract`` and ``patent_id`` columns
    (the USPTO-70k release format works as is);
  * ``.jsonl``: one object per line with ``title`` (or ``text``), optional ``abstract`` and ``id``/``patent_id``;
  * ``.parquet``: columns ``title`` (or ``text``), optional ``abstract`` and ``id``/``patent_id``
    (a ``thmm-publish`` export works as is).

Output: one JSON object per document, ``{"id", "predicted": [{"code", "score", "level", "title"}],
"truncated"}``, codes ordered by level then score, each predicted code with all its ancestors.

Streaming: the input is read, predicted and written ``--chunk-size`` documents at a time, so memory
stays constant whatever its size; a file output appears only once complete. Under
``accelerate launch --num_processes N`` the chunks are shared out among the processes, and the
output is one file, in input order, the same as one process writes (see :mod:`thmm.prediction`).

Behaviour on awkward input: a document whose title and abstract are both empty is an error naming
its line (nothing is skipped silently); blank lines at the end of a ``.txt`` file are not documents;
a text longer than the model's maximum length is truncated to it (title and abstract, longest
first), flagged ``"truncated": true`` and counted on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import torch

from configuration_thmm import Thresholds, check_max_length, read_label_titles
from thmm.cli import one_line_errors, run_cli
from thmm.prediction import CHUNK_SIZE, ChunkPredictor, InputError, chunked, iter_documents, world, write_predictions


def parse_threshold(value: str) -> Thresholds:
    """``0.4`` (global) or ``0.5,0.4,0.3`` (one per level), each a probability."""
    import argparse

    try:
        return Thresholds.parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("global_threshold: ", "")) from None


def main(argv=None) -> int:
    parser = one_line_errors(argparse.ArgumentParser(description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--model", required=True, help="a trained model directory or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt, .tsv, .jsonl or .parquet file, or - for stdin")
    parser.add_argument("--output", default="-", help="JSONL output file (default: stdout)")
    parser.add_argument("--top-k", type=int, default=None, help="predict the K best leaf codes instead of thresholding")
    parser.add_argument("--threshold", type=parse_threshold, default=None,
                        help="global threshold, or one per level like 0.5,0.4,0.3, for every node "
                             "(default: the model's tuned ones, per node where it has them)")
    parser.add_argument("--at-least-one", action="store_true", help="give every document its best leaf code at least")
    parser.add_argument("--consistent-scores", action=argparse.BooleanOptionalAction, default=None,
                        help="cap each node's score by its ancestors' (no child above its parent) before decoding; "
                             "default: the model's config.consistent_scores")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE,
                        help="documents read, predicted and written at a time (memory stays constant)")
    parser.add_argument("--max-length", type=int, default=None, help="word-pieces per document (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--label-titles", default=None, help="code<TAB>title file to name the codes")
    parser.add_argument("--verbose", action="store_true", help="show loading messages and progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k: must be at least 1 (got {args.top_k})")
    for option in ("batch_size", "chunk_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')}: must be at least 1 (got {getattr(args, option)})")
    if args.max_length is not None:
        try:
            check_max_length(args.max_length, "--max-length")
        except ValueError as err:
            parser.error(str(err))
    if args.output != "-":
        check_writable(args.output, "--output")

    import transformers
    from transformers import AutoTokenizer

    from modeling_thmm import THMMForHierarchicalClassification

    if not args.verbose:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    # Batches come in every length up to --max-length, and oneDNN's cache of CPU kernels per shape made a
    # long run's memory creep up (+80 MB over 30k documents with a tiny model); without it, it stays flat.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    rank, processes = world()
    if processes > 1 and args.input == "-":
        raise InputError("--input -: stdin cannot be shared by several processes; give a file")
    chunks = chunked(iter_documents(args.input), args.chunk_size)
    first = next(chunks)  # the first chunk is read and checked before the model loads
    check_model_location(args.model)
    state = None
    if processes > 1:  # accelerate launch: DDP processes (gloo on CPUs when there is no CUDA)
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
    if args.device != "auto":
        device = args.device
    else:
        device = state.device if state else ("cuda" if torch.cuda.is_available() else "cpu")
    model = THMMForHierarchicalClassification.from_pretrained(args.model).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    positions = getattr(model.config.encoder_config, "max_position_embeddings", None)
    if args.max_length and positions and args.max_length > positions:
        raise InputError(f"--max-length: {args.max_length} exceeds the encoder's {positions} positions")
    if args.threshold is not None:
        args.threshold.for_nodes(model.taxonomy)  # one value per level, before any inference
    if args.label_titles:
        titles = read_label_titles(args.label_titles)
        model.config.label_titles = {c: titles[c] for c in model.taxonomy.nodes if c in titles}
    max_length = args.max_length or model.config.max_length
    predict = ChunkPredictor(model, tokenizer, max_length, args.batch_size)

    def predict_lines(docs):
        probs, truncated = predict(docs)
        records = model.label_records(probs, threshold=args.threshold, top_k=args.top_k,
                                      at_least_one=args.at_least_one, consistent=args.consistent_scores)
        lines = [json.dumps({"id": doc["id"], "predicted": predicted, "truncated": bool(cut)}) + "\n"
                 for doc, predicted, cut in zip(docs, records, truncated)]
        return lines, int(truncated.sum())

    documents, truncated = write_predictions(itertools.chain([first], chunks), predict_lines, args.output, state)
    if truncated and rank == 0:
        print(f"note: {truncated} of {documents} documents were truncated to {max_length} word-pieces",
              file=sys.stderr)
    return 0


def check_model_location(model: str) -> None:
    """A local path that does not exist is reported as such, not as a malformed Hub repo id."""
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_local and not path.exists():
        raise InputError(f"--model {model}: no such directory")
    if path.exists() and not (path / "config.json").is_file():
        raise InputError(f"--model {model}: not a saved model (no config.json)")


def check_writable(path: str, option: str) -> None:
    """Fail before any work when an output file cannot be written."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(target if target.exists() else parent, os.W_OK):
        raise InputError(f"{option} {path}: not writable")


def cli(argv=None) -> int:
    """``thmm-predict``."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
