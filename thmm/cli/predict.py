# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
r"""Predict CPC/IPC codes for patents with a trained TMM / THMM / flat model; writes JSONL.

    thmm-predict --model runs/thmm/model --input patents.tsv --output predictions.jsonl
    thmm-predict --model runs/thmm/model --input patents.tsv --output-dir preds   # preds/predictions.jsonl
    thmm-predict --model ORG/REPO --input - --top-k 3 < titles.txt                # to stdout
    thmm-predict --model runs/thmm/model --input - --format jsonl < patents.jsonl

Input, by file suffix, and nothing else (``--format txt|tsv|jsonl|parquet`` names the format of a
file with another suffix, or of stdin; ``-`` reads text lines from stdin unless named):
  * ``.txt``: one document per line, ``title`` or ``title<TAB>abstract``; lines end at ``\n`` only
    (a ``\r`` before it is dropped; a form feed or other control character stays in its line), and
    a document's id is its line number;
  * ``.tsv``: a header with a ``title`` column, optional ``abstract`` and ``patent_id`` columns, quoted
    as the USPTO-70k release is (which works as is);
  * ``.jsonl``: one JSON object per line with ``title`` (or ``text``) and optional ``abstract``, both
    strings (a null abstract is none), and ``id`` (or ``patent_id``), a string or an integer, written
    back as it is; strict JSON (no NaN, no key twice in an object);
  * ``.parquet``: columns ``title`` (or ``text``) and optional ``abstract``, of strings, and
    ``id``/``patent_id``, of strings or integers (a ``thmm-publish`` export works as is).
A title, abstract or id holds at most 1,000,000 characters, and a line at most 64 MiB.

Output: one JSON object per document, ``{"id", "predicted": [{"code", "score", "level", "title"}],
"confidence", "truncated"}``, codes ordered by level then score, each predicted code with all its
ancestors; scores rounded to 4 decimals (``--full-precision``: unrounded). ``confidence`` is the
probability that the document's whole decision is right (calibrated scores taken as independent);
``--review-below X`` adds ``"review": true`` where it is below ``X``, and ``--explain`` gives each
code ``"evidence": [{"word", "weight"}]``, the document's words that support it most. It goes to ``--output FILE``, to
``--output-dir DIR`` as ``DIR/predictions.jsonl`` (the folder is created), or to stdout. Nothing else
is printed but errors, warnings and the count of truncated documents (``--quiet``: not that either;
``--verbose``: loading messages and progress bars too).

Streaming: the input is read, predicted and written ``--chunk-size`` documents at a time, so memory
stays constant whatever its size; a file output appears only once complete. Under
``accelerate launch --num_processes N`` the chunks are shared out among the processes, and the
output is one file, in input order, the same as one process writes (see :mod:`thmm.prediction`).

Safety: no prompt ever reads stdin (it holds the documents). A model whose tokenizer_config.json or
config.json names code of its own to run (an ``auto_map``; this package's classes load from here)
is refused unless ``--trust-remote-code`` is given.

Behaviour on awkward input: every problem is one ``error:`` line naming the file, the line (a
parquet row) and the field, with exit code 2, and an output file is then not written. A document
whose title and abstract are both empty is such an error (nothing is skipped silently); so are a
wrong type, a field over the limit, bytes that are not UTF-8 and a NUL byte. Blank lines at the end
of a ``.txt`` file are not documents. A text longer than the model's maximum length is truncated to
it (title and abstract, longest first), flagged ``"truncated": true`` and counted on stderr. Scores
that are not finite (a damaged model) stop the run.
"""

from __future__ import annotations

import argparse
import builtins
import io
import itertools
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from configuration_thmm import Thresholds, check_max_length, read_label_titles, refuse_unfinished
from thmm.cli import (
    HelpFormatter,
    add_common_options,
    check_quiet_verbose,
    description,
    library_progress,
    one_line_errors,
    path_options,
    run_cli,
)
from thmm.launch import world
from thmm.prediction import (
    CHUNK_SIZE,
    FORMATS,
    ChunkPredictor,
    InputError,
    check_finite_scores,
    check_output_file,
    chunked,
    input_name,
    iter_documents,
    print_warning,
    write_predictions,
)


def parse_threshold(value: str) -> Thresholds:
    """``0.4`` (global) or ``0.5,0.4,0.3`` (one per level), each a probability."""
    import argparse

    try:
        return Thresholds.parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("global_threshold: ", "")) from None


PREDICTIONS_FILE = "predictions.jsonl"  # what --output-dir DIR holds


def main(argv=None) -> int:
    parser = one_line_errors(argparse.ArgumentParser(prog="thmm-predict", description=description(__doc__),
                                                     formatter_class=HelpFormatter))
    parser.add_argument("--model", required=True, help="a trained model directory or Hub repo id")
    parser.add_argument("--input", required=True, help=".txt, .tsv, .jsonl or .parquet file, or - for stdin")
    parser.add_argument("--format", choices=list(FORMATS.values()), default=None,
                        help="the input's format, whatever its suffix (default: by suffix; txt for stdin)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--output", default="-", metavar="FILE", help="JSONL output file, or - for stdout "
                                                                      "(default: stdout)")
    output.add_argument("--output-dir", metavar="DIR", help=f"write DIR/{PREDICTIONS_FILE} (DIR is created)")
    parser.add_argument("--top-k", type=int, default=None, help="predict the K best leaf codes instead of thresholding")
    parser.add_argument("--threshold", type=parse_threshold, default=None,
                        help="global threshold, or one per level like 0.5,0.4,0.3, for every node "
                             "(default: the model's tuned ones, per node where it has them)")
    parser.add_argument("--at-least-one", action="store_true", help="give every document its best leaf code at least")
    parser.add_argument("--consistent-scores", action=argparse.BooleanOptionalAction, default=None,
                        help="cap each node's score by its ancestors' (no child above its parent) before decoding; "
                             "default: the model's config.consistent_scores")
    parser.add_argument("--review-below", type=float, default=None, metavar="CONFIDENCE",
                        help="flag (\"review\": true) each document whose confidence, the probability that its "
                             "whole decision is right, is below this value in [0, 1]: the ones to send to a person")
    parser.add_argument("--explain", action="store_true",
                        help="give each predicted code its \"evidence\": the words of the document that support it "
                             "most (gradient x input of the heads plus the lexical scorer's TF-IDF x SVM weights)")
    parser.add_argument("--full-precision", action="store_true",
                        help="write the scores unrounded (default: rounded to 4 decimals)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per forward pass (default: 32)")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE,
                        help="documents read, predicted and written at a time (memory stays constant)")
    parser.add_argument("--max-length", type=int, default=None, help="word-pieces per document (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps, where this machine has it")
    parser.add_argument("--label-titles", default=None, help="code<TAB>title file to name the codes")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run code that the model's folder or repo names in an auto_map (a custom tokenizer); "
                             "without it such a model is refused")
    add_common_options(parser)
    args = parser.parse_args(argv)
    check_quiet_verbose(parser, args)
    path_options(parser, args, ("model", "input", "output", "output_dir", "label_titles"))
    for problem in option_problems(args):
        parser.error(problem)
    if args.output_dir is not None:
        args.output = output_dir_file(args.output_dir)
    if args.output != "-" and (args.output_dir is None or Path(args.output_dir).is_dir()):
        check_output_file(args.output, "--output" if args.output_dir is None else "--output-dir", "thmm-predict",
                          is_prediction_record)
    titles = None
    if args.label_titles:  # read before the model loads: a bad file is named at once
        try:
            titles = read_label_titles(args.label_titles)
        except OSError as err:
            raise InputError(f"--label-titles {args.label_titles}: {err.strerror or err}") from None
    # the format and the file are checked here, nothing read; a field not read is reported by one process
    documents = iter_documents(args.input, args.format, warn=print_warning if world()[0] == 0 else None)

    import transformers

    if not args.verbose:  # a model's loading messages
        transformers.utils.logging.set_verbosity_error()
    library_progress(args.verbose, args.quiet)  # downloads on a terminal; loading bars with --verbose only
    # Batches come in every length up to --max-length, and oneDNN's cache of CPU kernels per shape made a
    # long run's memory creep up (+80 MB over 30k documents with a tiny model); without it, it stays flat.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    rank, processes = world()
    if processes > 1 and args.input == "-":
        raise InputError("--input -: stdin cannot be shared by several processes; give a file")
    check_model_location(args.model)
    refuse_unfinished(args.model)  # as from_pretrained does, but before the checks of its files below
    if not args.trust_remote_code:
        refuse_model_code(args.model)
    check_tokenizer_files(args.model)
    chunks = chunked(documents, args.chunk_size)
    first = next(chunks)  # the first chunk is read and checked before the model loads
    state = None
    if processes > 1:  # accelerate launch: DDP processes (gloo on CPUs when there is no CUDA)
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
    if args.device != "auto":
        device = args.device
    else:
        device = state.device if state else ("cuda" if torch.cuda.is_available() else "cpu")
    with no_prompts():
        model = load_model(args.model, args.trust_remote_code).to(device).eval()
        tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    if hasattr(model, "check_tokenizer"):  # the tokenizer's ids must fit the model's embeddings
        model.check_tokenizer(tokenizer)
    positions = getattr(model.config.encoder_config, "max_position_embeddings", None)
    if args.max_length and positions and args.max_length > positions:
        raise InputError(f"--max-length: {args.max_length} exceeds the encoder's {positions} positions")
    if args.threshold is not None:
        try:
            args.threshold.for_nodes(model.taxonomy)  # one value per level, before any inference
        except ValueError as err:
            raise InputError(f"--threshold: {err}") from None
    if titles is not None:
        model.config.label_titles = {c: titles[c] for c in model.taxonomy.nodes if c in titles}
    max_length = args.max_length or model.config.max_length
    scores_confidence = hasattr(model, "document_confidence")
    if (args.review_below is not None or args.explain) and not scores_confidence:
        raise InputError(f"--{'explain' if args.explain else 'review-below'}: {args.model} is not a THMM model")
    if args.explain:
        from explain_thmm import explain_document
    from decoding_thmm import DEFAULT_DECIMALS, rounded

    predict = ChunkPredictor(model, tokenizer, max_length, args.batch_size)
    rounding = score_rounding(model, args.full_precision)
    source = input_name(args.input)

    def predict_lines(docs):
        probs, truncated = predict(docs)
        check_finite_scores(probs, docs, source, args.model)
        decision = {"threshold": args.threshold, "top_k": args.top_k, "at_least_one": args.at_least_one,
                    "consistent": args.consistent_scores}
        records = model.label_records(probs, **decision, **rounding)
        confidences = model.document_confidence(probs, **decision) if scores_confidence else [None] * len(docs)
        lines = []
        for doc, predicted, confidence, cut in zip(docs, records, confidences, truncated):
            if args.explain:
                evidence = explain_document(model, tokenizer, doc["title"], doc["abstract"],
                                            [r["code"] for r in predicted], max_length=max_length)
                for record in predicted:
                    record["evidence"] = evidence[record["code"]]
            line = {"id": doc["id"], "predicted": predicted}
            if confidence is not None:
                line["confidence"] = rounded(confidence, rounding.get("decimals", DEFAULT_DECIMALS))
            if args.review_below is not None:
                line["review"] = bool(confidence < args.review_below)
            lines.append(json.dumps({**line, "truncated": bool(cut)}, allow_nan=False) + "\n")
        return lines, int(truncated.sum())

    documents, truncated = write_predictions(itertools.chain([first], chunks), predict_lines, args.output, state)
    if truncated and rank == 0 and not args.quiet:
        print(f"note: {truncated} of {documents} documents were truncated to {max_length} word-pieces",
              file=sys.stderr)
    return 0


def score_rounding(model, full_precision: bool) -> dict:
    """``label_records``' ``decimals`` argument: ``None`` (unrounded) with ``--full-precision``, else
    its default (4 decimals); nothing for a model class whose ``label_records`` has no such argument."""
    import inspect

    if "decimals" not in inspect.signature(model.label_records).parameters:
        return {}
    return {"decimals": None} if full_precision else {}


def output_dir_file(folder: str) -> str:
    """``--output-dir DIR``: the path of its predictions file, once the folder is known to be creatable
    (it is created only when the predictions are written)."""
    path = Path(folder)
    if not folder.strip():
        raise InputError("--output-dir: empty path")
    if path.exists() and not path.is_dir():
        raise InputError(f"--output-dir {folder}: is a file, not a folder")
    if path.is_symlink() and not path.exists():
        raise InputError(f"--output-dir {folder}: a link to {os.readlink(path)}, which does not exist")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"--output-dir {folder}: {probe} is not a writable directory")
    return str(path / PREDICTIONS_FILE)


def option_problems(args) -> list[str]:
    """What is wrong with the numeric options and ``--device``, checked before any work (an int
    option is finite by its type; ``--threshold`` and ``--max-length`` are checked by theirs)."""
    problems = []
    if args.top_k is not None and args.top_k < 1:
        problems.append(f"--top-k: must be at least 1 (got {args.top_k})")
    if args.top_k is not None:  # --top-k decides alone
        for option, given in (("--threshold", args.threshold is not None), ("--at-least-one", args.at_least_one)):
            if given:
                problems.append(f"--top-k and {option}: choose one (--top-k predicts the best leaf codes whatever "
                                f"their scores, so {option} would be ignored)")
    for option in ("batch_size", "chunk_size"):
        if getattr(args, option) < 1:
            problems.append(f"--{option.replace('_', '-')}: must be at least 1 (got {getattr(args, option)})")
    if args.max_length is not None:
        try:
            check_max_length(args.max_length, "--max-length")
        except ValueError as err:
            problems.append(str(err))
    if args.review_below is not None:
        from calibration_thmm import check_review_below

        try:
            check_review_below(args.review_below, "--review-below")
        except ValueError as err:
            problems.append(str(err))
    if (problem := device_problem(args.device)) is not None:
        problems.append(problem)
    return problems


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be used on this machine (None if it can): one of ``auto``, ``cpu``,
    ``cuda``/``cuda:N`` for a GPU this machine has, and ``mps`` where torch has it."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = torch.backends.mps.is_available()
    gpu = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("auto", "cpu") or (device == "mps" and mps) or (gpu and cuda and int(gpu[1] or 0) < cuda):
        return None
    allowed = ["auto", "cpu"] + (["cuda", f"cuda:N for N < {cuda}"] if cuda else []) + (["mps"] if mps else [])
    where = "this machine" if cuda else "this machine, which has no CUDA device"
    return f"--device: must be {', '.join(allowed[:-1])} or {allowed[-1]} on {where} (got {device!r})"


@contextmanager
def no_prompts():
    """Nothing reads stdin while the model loads: it holds the documents, and a library's prompt
    (transformers' "run the custom code? [y/N]") would take a document line as its answer. Every
    ``trust_remote_code`` is given, so none should come; if one did, it fails instead."""

    def refuse(prompt=""):
        raise EOFError("thmm-predict answers no prompts")

    saved = builtins.input, sys.stdin
    builtins.input, sys.stdin = refuse, io.StringIO()
    try:
        yield
    finally:
        builtins.input, sys.stdin = saved


def refuse_model_code(model: str) -> None:
    """Refuse a model whose ``tokenizer_config.json`` or ``config.json`` has an ``auto_map`` naming
    code of the folder or repo, which loading it would run. This package's own classes, which a
    saved model names, are imported from here, not from the folder, so they do not count."""
    from transformers.utils import cached_file

    from configuration_thmm import THMMConfig
    from modeling_thmm import THMMForHierarchicalClassification

    own = {f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"  # "modeling_thmm.THMM...", as saved
           for cls in (THMMConfig, THMMForHierarchicalClassification)}
    for filename in ("tokenizer_config.json", "config.json"):
        path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path is None:
            continue
        try:
            auto_map = json.loads(Path(path).read_text(encoding="utf-8")).get("auto_map") or {}
        except (ValueError, AttributeError) as err:
            raise InputError(f"{model}/{filename}: not a JSON object ({err})") from None
        names = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
        code = sorted({n for v in names for n in (v if isinstance(v, (list, tuple)) else [v]) if n and n not in own})
        if code:
            raise InputError(f"{model}/{filename}: names code of the model's own to run ({', '.join(map(str, code))}); "
                             "read that code, then pass --trust-remote-code to run it")


TOKENIZER_CONFIG = "tokenizer_config.json"
# A tokenizer's vocabulary is in one of these (tokenizer.json for a fast one); without it transformers
# builds a tokenizer of the special tokens alone, which reads every word as [UNK] without a word.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


def check_tokenizer_files(model: str) -> None:
    """A local model folder must hold the tokenizer it was trained with: its config and its vocabulary."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    missing = [] if (folder / TOKENIZER_CONFIG).is_file() else [TOKENIZER_CONFIG]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append(f"a vocabulary file (one of {', '.join(VOCABULARY_FILES)})")
    if missing:
        raise InputError(f"--model {model}: no tokenizer in the folder, it lacks {' and '.join(missing)}; a model "
                         "folder holds the tokenizer it was trained with (tokenizer.save_pretrained(folder))")


def load_model(model: str, trust_remote_code: bool):
    """The model of ``--model``; where it cannot be reached or read (the Hub offline, a file missing), one
    line naming the option (a bad config field is already named by the model's own checks)."""
    from modeling_thmm import THMMForHierarchicalClassification

    try:
        return THMMForHierarchicalClassification.from_pretrained(model, trust_remote_code=trust_remote_code)
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(reason if reason.startswith(f"--model {model}") else f"--model {model}: {reason}") from None


def load_tokenizer(model: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--model {model}: cannot load its tokenizer ({reason})") from err


def check_model_location(model: str) -> None:
    """A local path that does not exist is reported as such, not as a malformed Hub repo id."""
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_local and not path.exists():
        raise InputError(f"--model {model}: no such directory")
    if path.exists() and not (path / "config.json").is_file():
        raise InputError(f"--model {model}: not a saved model (no config.json)")


def is_prediction_record(record: dict) -> bool:
    """Whether a JSON line is one this command writes (an output of only these may be replaced)."""
    return {"id", "predicted"} <= record.keys()


def cli(argv=None) -> int:
    """``thmm-predict``."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
