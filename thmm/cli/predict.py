# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Predict CPC/IPC codes for patents with a trained TMM / THMM / flat model; writes JSONL.

    thmm-predict --model runs/thmm/model --input patents.tsv --output predictions.jsonl
    thmm-predict --model ORG/REPO --input - --top-k 3 < titles.txt

Input, by file extension (``-`` reads text lines from stdin):
  * ``.txt``: one document per line, ``title`` or ``title<TAB>abstract``;
  * ``.tsv``: a header with a ``title`` column, optional ``abstract`` and ``patent_id`` columns
    (the USPTO-70k release format works as is);
  * ``.jsonl``: one object per line with ``title`` (or ``text``), optional ``abstract`` and ``id``/``patent_id``.

Output: one JSON object per document, ``{"id", "predicted": [{"code", "score", "level", "title"}],
"truncated"}``, codes ordered by level then score, each predicted code with all its ancestors.

Behaviour on awkward input: a document whose title and abstract are both empty is an error naming
its line (nothing is skipped silently); a text longer than the model's maximum length is truncated
to it (title and abstract, longest first), flagged ``"truncated": true`` and counted on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from configuration_thmm import Thresholds, check_max_length, read_label_titles
from thmm.cli import run_cli


class InputError(ValueError):
    """Unusable input; the message names the file, the line and the field."""


def read_documents(path: str) -> list[dict]:
    """``[{"id", "title", "abstract", "line"}]`` from a .txt, .tsv or .jsonl file (or ``-`` for stdin)."""
    name = "<stdin>" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"{name}, line {line}: not UTF-8 ({err.reason})") from None
    text = text.removeprefix("\ufeff")
    suffix = Path(path).suffix.lower() if path != "-" else ".txt"
    docs = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{name}, line {lineno}: invalid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{name}, line {lineno}: expected a JSON object")
            title = obj.get("title", obj.get("text"))
            if title is None:
                raise InputError(f"{name}, line {lineno}, field 'title': missing (or give 'text')")
            docs.append({"id": obj.get("id", obj.get("patent_id", lineno)), "title": str(title),
                         "abstract": str(obj.get("abstract") or ""), "line": lineno})
    elif suffix == ".tsv":
        rows = list(csv.reader(text.splitlines(), delimiter="\t"))
        if not rows or "title" not in rows[0]:
            raise InputError(f"{name}, line 1: the header needs a 'title' column (got {rows[0] if rows else []})")
        header = rows[0]
        for lineno, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise InputError(f"{name}, line {lineno}: {len(row)} fields, the header has {len(header)}")
            rec = dict(zip(header, row))
            docs.append({"id": rec.get("patent_id", lineno), "title": rec["title"],
                         "abstract": rec.get("abstract", ""), "line": lineno})
    else:
        lines = text.splitlines()
        while lines and not lines[-1].strip():  # blank lines at the end of a file are not documents
            lines.pop()
        for lineno, line in enumerate(lines, start=1):
            title, _, abstract = line.partition("\t")
            docs.append({"id": lineno, "title": title, "abstract": abstract, "line": lineno})
    for doc in docs:
        doc["title"], doc["abstract"] = doc["title"].strip(), doc["abstract"].strip()
        if not doc["title"] and not doc["abstract"]:
            raise InputError(f"{name}, line {doc['line']}, fields 'title' and 'abstract': empty document")
    if not docs:
        raise InputError(f"{name}: no documents")
    return docs


def parse_threshold(value: str) -> Thresholds:
    """``0.4`` (global) or ``0.5,0.4,0.3`` (one per level), each a probability."""
    import argparse

    try:
        return Thresholds.parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model directory or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt, .tsv or .jsonl file, or - for stdin")
    parser.add_argument("--output", default="-", help="JSONL output file (default: stdout)")
    parser.add_argument("--top-k", type=int, default=None, help="predict the K best leaf codes instead of thresholding")
    parser.add_argument("--threshold", type=parse_threshold, default=None,
                        help="global threshold, or one per level like 0.5,0.4,0.3 (default: the model's tuned ones)")
    parser.add_argument("--at-least-one", action="store_true", help="give every document its best leaf code at least")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None, help="word-pieces per document (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--label-titles", default=None, help="code<TAB>title file to name the codes")
    parser.add_argument("--verbose", action="store_true", help="show loading messages and progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k: must be at least 1 (got {args.top_k})")
    if args.batch_size < 1:
        parser.error(f"--batch-size: must be at least 1 (got {args.batch_size})")
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
    docs = read_documents(args.input)
    check_model_location(args.model)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
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
    probs, truncated = model.predict_proba(
        tokenizer, [d["title"] for d in docs], [d["abstract"] for d in docs],
        batch_size=args.batch_size, max_length=args.max_length, return_truncated=True,
    )
    records = model.label_records(probs, threshold=args.threshold, top_k=args.top_k, at_least_one=args.at_least_one)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for doc, predicted, cut in zip(docs, records, truncated):
            out.write(json.dumps({"id": doc["id"], "predicted": predicted, "truncated": cut}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if any(truncated):
        max_length = args.max_length or model.config.max_length
        print(f"note: {sum(truncated)} of {len(docs)} documents were truncated to {max_length} word-pieces",
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
    import os

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
