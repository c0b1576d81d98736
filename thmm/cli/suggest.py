# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
r"""Rank unlabelled patents by how much labelling them should help a trained model (active learning).

    thmm-suggest --model runs/thmm/model --input unlabelled.tsv --n 500 --output to_label.jsonl
    thmm-suggest --model runs/thmm/model --input unlabelled.jsonl --n 50 --seed 1   # to stdout

The input is read as ``thmm-predict`` reads it (``.txt``, ``.tsv``, ``.jsonl``, ``.parquet``, ``-``;
``--format``). The model scores every document; :func:`thmm.suggest.suggest` then chooses ``--n`` of
them, greedily: uncertainty near the decision thresholds, weighted towards nodes few documents of the
pool (and of those already chosen) stand for. Ties are broken by ``--seed``: the same model, input
and seed give the same list.

Output: one JSON object per chosen document, best first, ``{"id", "rank", "score"}``, to ``--output
FILE`` (written whole, or not at all; an existing file is replaced only when it is an earlier
``thmm-suggest`` output) or to stdout. Label them, add them to the training set, and continue
training with ``thmm-train --resume-from-model MODEL ...``.
"""

from __future__ import annotations

import argparse
import json
import sys

from thmm.cli import (HelpFormatter, add_common_options, check_quiet_verbose, description, library_progress,
                      one_line_errors, path_options, run_cli)
from thmm.prediction import (CHUNK_SIZE, FORMATS, InputError, check_finite_scores, check_output_file, chunked,
                             input_name, iter_documents, open_output)


def is_suggest_record(record: dict) -> bool:
    """Whether a JSON line is one this command writes (an output of only these may be replaced)."""
    return set(record) == {"id", "rank", "score"}


def main(argv=None) -> int:
    from thmm.cli.predict import check_model_location, check_tokenizer_files, load_tokenizer, no_prompts

    parser = one_line_errors(argparse.ArgumentParser(prog="thmm-suggest", description=description(__doc__),
                                                     formatter_class=HelpFormatter))
    parser.add_argument("--model", required=True, help="a trained model directory or Hub repo id")
    parser.add_argument("--input", required=True, help="the unlabelled patents: .txt, .tsv, .jsonl or .parquet "
                                                       "file, or - for stdin")
    parser.add_argument("--format", choices=list(FORMATS.values()), default=None,
                        help="the input's format, whatever its suffix (default: by suffix; txt for stdin)")
    parser.add_argument("--n", type=int, required=True, help="how many patents to suggest (at least 1)")
    parser.add_argument("--seed", type=int, default=0, help="breaks ties between equal scores (default: 0)")
    parser.add_argument("--output", default="-", metavar="FILE", help="JSONL output file, or - for stdout")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per forward pass (default: 32)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run code that the model's folder or repo names in an auto_map")
    add_common_options(parser)
    args = parser.parse_args(argv)
    check_quiet_verbose(parser, args)
    path_options(parser, args, ("model", "input", "output"))
    for option, value in (("--n", args.n), ("--batch-size", args.batch_size)):
        if value < 1:
            parser.error(f"{option}: must be at least 1 (got {value})")
    if args.seed < 0:  # numpy's generator takes no negative seed; found before any work
        parser.error(f"--seed: must be at least 0 (got {args.seed})")
    if args.output != "-":
        check_output_file(args.output, "--output", "thmm-suggest", is_suggest_record)
    documents = iter_documents(args.input, args.format)

    import numpy as np
    import transformers

    from thmm.cli.predict import device_problem, load_model, refuse_model_code
    from thmm.prediction import ChunkPredictor
    from thmm.suggest import suggest

    if (problem := device_problem(args.device)) is not None:
        parser.error(problem)
    if not args.verbose:
        transformers.utils.logging.set_verbosity_error()
    library_progress(args.verbose, args.quiet)  # loading bars with --verbose only, as thmm-predict
    check_model_location(args.model)
    if not args.trust_remote_code:
        refuse_model_code(args.model)
    check_tokenizer_files(args.model)
    with no_prompts():
        model = load_model(args.model, args.trust_remote_code).to(args.device).eval()
        tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    model.check_tokenizer(tokenizer)
    predict = ChunkPredictor(model, tokenizer, model.config.max_length, args.batch_size)
    source = input_name(args.input)
    ids, parts = [], []
    for docs in chunked(documents, CHUNK_SIZE):
        probs, _ = predict(docs)
        check_finite_scores(probs, docs, source, args.model)
        parts.append(probs)
        ids.extend(doc["id"] for doc in docs)
    probabilities = np.concatenate(parts) if parts else np.zeros((0, len(model.taxonomy)), dtype=np.float32)
    if args.n > len(ids):
        raise InputError(f"--n: {args.n} patents asked for, but {source} holds only {len(ids)}")
    scores = model.scores_for_decoding(probabilities)
    chosen, values = suggest(scores, model.taxonomy.node_thresholds(model.config.thresholds), args.n, args.seed)
    lines = [json.dumps({"id": ids[i], "rank": rank, "score": round(float(v), 6)}) + "\n"
             for rank, (i, v) in enumerate(zip(chosen, values), start=1)]
    with open_output(args.output) as out:  # the output appears whole, or not at all
        out.writelines(lines)
    return 0


def cli(argv=None) -> int:
    """``thmm-suggest``."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
