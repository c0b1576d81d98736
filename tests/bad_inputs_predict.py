"""``thmm-predict`` rows of the bad-input table (``test_bad_inputs.py``): the input formats, each
read one strict way; the options, checked before any work; the model folder (code it names, its
tokenizer, non-finite scores). Each row's input file is written under the case's ``tmp``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bad_input_table import Case
from configuration_thmm import UNFINISHED_MARKER
from thmm.prediction import MAX_FIELD_CHARS

LIMIT = f"limit of {MAX_FIELD_CHARS:,}"
TOO_LONG = "x" * (MAX_FIELD_CHARS + 1)
SUPPORTED = ".txt, .tsv, .jsonl, .parquet"
TSV_HEADER = "patent_id\ttitle\tabstract\n"


def predict_on(name: str, content, *extra, model=None):
    """argv for thmm-predict on a file ``name`` of ``content`` (text as is, line ends kept, or bytes)."""

    def make(env):
        path = env.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return ["--model", str(model(env) if model else env.sources["model"]), "--input", str(path), *extra]

    return make


def jsonl(*objects: str):
    return predict_on("documents.jsonl", "".join(line + "\n" for line in objects))


def parquet(name: str, **columns):
    def make(env):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = env.tmp / name
        pq.write_table(pa.table(columns), path)
        return ["--model", str(env.sources["model"]), "--input", str(path)]

    return make


def output_argv(make):
    """``make``'s argv writing to ``{tmp}/out.jsonl`` (checked by :func:`no_output`)."""
    return lambda env: [*make(env), "--output", str(env.tmp / "out.jsonl")]


def no_output(env):
    assert not (env.tmp / "out.jsonl").exists()
    assert not list(env.tmp.glob(".out.jsonl*")), "a partial output was left"


RECORD = '{"id": 1, "predicted": []}\n'  # a record as thmm-predict writes it


def user_file(env, content: str) -> Path:
    path = env.tmp / "notes.jsonl"
    path.write_text(content, encoding="utf-8")
    return path


def user_file_kept(env, content: str) -> None:
    assert (env.tmp / "notes.jsonl").read_text(encoding="utf-8") == content


def not_made(folder: Path) -> None:
    assert not folder.exists(), "a folder made for the output was left after the error"


def predicted_ids(*ids):
    def check(env):
        lines = (env.tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["id"] for line in lines] == list(ids)

    return check


def with_code(env, filename: str, auto_map: dict) -> Path:
    """A copy of the saved model whose ``filename`` names code in the folder that would leave a marker."""
    env.copy("model")
    marker = env.tmp / "code-ran"
    (env.model / "custom_code.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    path = env.model / filename
    path.write_text(json.dumps({**json.loads(path.read_text()), "auto_map": auto_map}))
    return env.model


def code_did_not_run(env):
    assert not (env.tmp / "code-ran").exists()


def without_files(env, *names) -> Path:
    env.copy("model")
    for name in names:
        (env.model / name).unlink()
    return env.model


def nan_weights(env) -> Path:
    env.copy("model")
    weights = load_file(env.model / "model.safetensors")
    weights["heads.levels.0.bias_out"][0] = float("nan")
    save_file(weights, env.model / "model.safetensors", metadata={"format": "pt"})
    return env.model


def unfinished(env) -> Path:
    """A copy of the saved model marked as an unfinished run's, with no tokenizer (as the trainer may leave it)."""
    without_files(env, "tokenizer.json", "tokenizer_config.json")
    (env.model / UNFINISHED_MARKER).write_text(json.dumps({"reason": "before threshold tuning",
                                                           "resume": "thmm-train --resume"}))
    return env.model


CASES = {
    # ---- code named by the model folder runs only with --trust-remote-code
    "predict-remote-code-tokenizer": Case(
        "predict", predict_on("documents.txt", "y\nyes\n", model=lambda env: with_code(
            env, "tokenizer_config.json", {"AutoTokenizer": [None, "custom_code.Tokenizer"]})), 2,
        ("{model}/tokenizer_config.json", "custom_code.Tokenizer", "--trust-remote-code"), after=code_did_not_run),
    "predict-remote-code-config": Case(
        "predict", predict_on("documents.txt", "shoe\n", model=lambda env: with_code(
            env, "config.json", {"AutoConfig": "custom_code.Config", "AutoModel": "custom_code.Model"})), 2,
        ("{model}/config.json", "custom_code.Config", "--trust-remote-code"), after=code_did_not_run),
    # ---- the format: a known suffix or --format, nothing guessed
    "predict-suffix-csv": Case(
        "predict", predict_on("documents.csv", "title,abstract\nshoe,sole\n"), 2,
        ("{tmp}/documents.csv", "suffix '.csv'", SUPPORTED, "--format")),
    "predict-suffix-json": Case(
        "predict", predict_on("documents.json", '[{"title": "shoe"}]\n'), 2,
        ("{tmp}/documents.json", "suffix '.json'", SUPPORTED, "--format")),
    "predict-suffix-none": Case(
        "predict", predict_on("documents", "shoe\n"), 2, ("{tmp}/documents", "no suffix", SUPPORTED, "--format")),
    "predict-format-unknown": Case(
        "predict", predict_on("documents.txt", "shoe\n", "--format", "csv"), 2, ("--format", "'csv'", "jsonl")),
    "predict-format-parquet-stdin": Case(
        "predict", lambda env: ["--model", str(env.sources["model"]), "--input", "-", "--format", "parquet"], 2,
        ("--input -", "parquet", "stdin")),
    "predict-format-named": Case(
        "predict", output_argv(predict_on("documents.csv", TSV_HEADER + "P1\tshoe\tsole\n", "--format", "tsv")), 0,
        after=predicted_ids("P1")),
    # ---- .txt: lines end at \n only, so the ids (line numbers) stay right
    "predict-txt-splits-on-newline-only": Case(
        "predict", output_argv(predict_on(
            "documents.txt", "shoe\x0csole\x0bheel\x1c\x1d\x1e\x85boot\u2028lace\u2029upper\r\nradio\r\nnetwork\n")), 0,
        after=predicted_ids(1, 2, 3)),
    "predict-txt-not-utf8": Case(
        "predict", predict_on("documents.txt", "shoe\nchaussure à talon\n".encode("latin-1")), 2,
        ("{tmp}/documents.txt, line 2: not UTF-8",)),
    "predict-txt-nul-byte": Case(
        "predict", predict_on("documents.txt", b"shoe\nra\0dio\n"), 2, ("{tmp}/documents.txt, line 2: a NUL byte",)),
    "predict-txt-utf16": Case(
        "predict", predict_on("documents.txt", "shoe\nradio\n".encode("utf-16-le")), 2,
        ("{tmp}/documents.txt, line 1: a NUL byte", "UTF-16")),
    "predict-txt-field-too-long": Case(
        "predict", predict_on("documents.txt", f"shoe\n{TOO_LONG}\n"), 2,
        ("{tmp}/documents.txt, line 2, field 'title'", LIMIT)),
    # ---- .tsv
    "predict-tsv-150k-abstract": Case(
        "predict", predict_on("documents.tsv", TSV_HEADER + "P1\tshoe\t" + "sole " * 30_000 + "\n"), 0,
        ("1 of 1 documents were truncated",)),
    "predict-tsv-field-too-long": Case(
        "predict", predict_on("documents.tsv", TSV_HEADER + f"P1\tshoe\t{TOO_LONG}\n"), 2,
        ("{tmp}/documents.tsv, line 2, field 'abstract'", LIMIT)),
    "predict-tsv-bad-quoting": Case(
        "predict", predict_on("documents.tsv", TSV_HEADER + 'P1\t"Smart" shoe\tsole\n'), 2,
        ("{tmp}/documents.tsv, line 2", "quoting")),
    "predict-tsv-title-twice": Case(
        "predict", predict_on("documents.tsv", "patent_id\ttitle\ttitle\nP1\tshoe\tboot\n"), 2,
        ("{tmp}/documents.tsv, line 1, field 'title'", "twice")),
    "predict-tsv-not-utf8": Case(
        "predict", predict_on("documents.tsv", (TSV_HEADER + "P1\tchaussure à talon\t\n").encode("latin-1")), 2,
        ("{tmp}/documents.tsv, line 2: not UTF-8",)),
    "predict-tsv-nul-byte": Case(
        "predict", predict_on("documents.tsv", (TSV_HEADER + "P1\tsh\0oe\t\n").encode()), 2,
        ("{tmp}/documents.tsv, line 2: a NUL byte",)),
    # ---- .jsonl: strict JSON, titles and abstracts strings, ids strings or integers
    "predict-jsonl-title-number": Case(
        "predict", jsonl('{"title": "shoe"}', '{"title": 42}'), 2,
        ("{tmp}/documents.jsonl, line 2, field 'title': must be a string (got a number: 42)",)),
    "predict-jsonl-title-list": Case(
        "predict", jsonl('{"title": ["shoe"]}'), 2, ("line 1, field 'title': must be a string (got a list",)),
    "predict-jsonl-title-bool": Case(
        "predict", jsonl('{"title": true}'), 2, ("line 1, field 'title': must be a string (got a boolean",)),
    "predict-jsonl-title-null": Case(
        "predict", jsonl('{"title": null, "abstract": "a sole"}'), 2,
        ("line 1, field 'title': must be a string (got null)",)),
    "predict-jsonl-text-object": Case(
        "predict", jsonl('{"text": {"en": "shoe"}}'), 2, ("line 1, field 'text': must be a string (got an object",)),
    "predict-jsonl-abstract-number": Case(
        "predict", jsonl('{"title": "shoe", "abstract": 1.5}'), 2, ("line 1, field 'abstract': must be a string",)),
    "predict-jsonl-id-float": Case(
        "predict", jsonl('{"id": 1.5, "title": "shoe"}'), 2,
        ("line 1, field 'id': must be a string or an integer (got a number: 1.5)",)),
    "predict-jsonl-patent-id-bool": Case(
        "predict", jsonl('{"patent_id": false, "title": "shoe"}'), 2,
        ("line 1, field 'patent_id': must be a string or an integer (got a boolean",)),
    "predict-jsonl-duplicate-key": Case(
        "predict", jsonl('{"title": "shoe", "title": "radio"}'), 2,
        ("{tmp}/documents.jsonl, line 1: invalid JSON", "'title' appears twice")),
    "predict-jsonl-nan": Case(
        "predict", jsonl('{"title": "shoe", "score": NaN}'), 2, ("line 1: invalid JSON (NaN is not JSON)",)),
    "predict-jsonl-title-and-text": Case(
        "predict", jsonl('{"title": "shoe", "text": "radio"}'), 2, ("line 1, fields 'title' and 'text': give one",)),
    "predict-jsonl-id-and-patent-id": Case(
        "predict", jsonl('{"id": 1, "patent_id": "P1", "title": "shoe"}'), 2,
        ("line 1, fields 'id' and 'patent_id': give one",)),
    "predict-jsonl-not-an-object": Case(
        "predict", jsonl('["shoe"]'), 2, ("line 1: expected a JSON object (got a list",)),
    "predict-jsonl-deeply-nested": Case(
        "predict", jsonl("[" * 100_000), 2, ("line 1: invalid JSON",)),
    "predict-jsonl-lone-surrogate": Case(
        "predict", jsonl('{"title": "shoe \\ud800"}'), 2, ("line 1, field 'title': holds a lone surrogate",)),
    "predict-jsonl-nul-escape": Case(
        "predict", jsonl('{"title": "shoe", "abstract": "a\\u0000b"}'), 2, ("line 1, field 'abstract': holds a NUL",)),
    "predict-jsonl-field-too-long": Case(
        "predict", jsonl(json.dumps({"title": "shoe", "abstract": TOO_LONG})), 2, ("line 1, field 'abstract'", LIMIT)),
    "predict-jsonl-not-utf8": Case(
        "predict", predict_on("documents.jsonl", '{"title": "chaussure à talon"}\n'.encode("latin-1")), 2,
        ("{tmp}/documents.jsonl, line 1: not UTF-8",)),
    "predict-jsonl-ids-keep-their-type": Case(
        "predict", output_argv(jsonl('{"id": 7, "title": "shoe"}', '{"id": "7", "title": "radio"}',
                                     '{"title": "sole"}')), 0, after=predicted_ids(7, "7", 3)),
    # ---- .parquet: typed columns
    "predict-parquet-title-integers": Case(
        "predict", parquet("documents.parquet", title=[1, 2]), 2,
        ("{tmp}/documents.parquet, column 'title': must hold strings (got int64)",)),
    "predict-parquet-abstract-binary": Case(
        "predict", parquet("documents.parquet", title=["shoe"], abstract=[b"sole"]), 2,
        ("column 'abstract': must hold strings (got binary)",)),
    "predict-parquet-id-floats": Case(
        "predict", parquet("documents.parquet", id=[1.5], title=["shoe"]), 2,
        ("column 'id': must hold strings or integers (got double)",)),
    "predict-parquet-title-null": Case(
        "predict", parquet("documents.parquet", title=["shoe", None], abstract=["a sole", "a radio"]), 2,
        ("{tmp}/documents.parquet, row 2, field 'title': must be a string (got null)",)),
    "predict-parquet-title-and-text": Case(
        "predict", parquet("documents.parquet", title=["shoe"], text=["radio"]), 2,
        ("columns 'title' and 'text': give one",)),
    "predict-parquet-field-too-long": Case(
        "predict", parquet("documents.parquet", title=["shoe", TOO_LONG]), 2, ("row 2, field 'title'", LIMIT)),
    # ---- options, before any work
    "predict-device-unknown": Case(
        "predict", lambda env: env.predict_argv("--device", "banana"), 2, ("--device: must be auto", "'banana'")),
    "predict-device-meta": Case(
        "predict", lambda env: env.predict_argv("--device", "meta"), 2, ("--device: must be auto", "'meta'")),
    "predict-device-cuda-absent": Case(
        "predict", lambda env: env.predict_argv("--device", "cuda:99"), 2,
        ("--device: must be auto", "'cuda:99'")),
    "predict-top-k-0": Case(
        "predict", lambda env: env.predict_argv("--top-k", "0"), 2, ("--top-k: must be at least 1 (got 0)",)),
    "predict-top-k-fraction": Case("predict", lambda env: env.predict_argv("--top-k", "1.5"), 2, ("--top-k", "'1.5'")),
    "predict-batch-size-0": Case(
        "predict", lambda env: env.predict_argv("--batch-size", "0"), 2, ("--batch-size: must be at least 1 (got 0)",)),
    "predict-batch-size-inf": Case(
        "predict", lambda env: env.predict_argv("--batch-size", "inf"), 2, ("--batch-size", "'inf'")),
    "predict-chunk-size-negative": Case(
        "predict", lambda env: env.predict_argv("--chunk-size", "-4"), 2,
        ("--chunk-size: must be at least 1 (got -4)",)),
    # ---- the model folder: its tokenizer, its scores
    "predict-model-without-tokenizer": Case(
        "predict", lambda env: env.predict_argv(model=without_files(env, "tokenizer.json", "tokenizer_config.json")), 2,
        ("--model {model}: no tokenizer", "tokenizer_config.json", "tokenizer.json")),
    "predict-model-tokenizer-without-vocabulary": Case(
        "predict", lambda env: env.predict_argv(model=without_files(env, "tokenizer.json")), 2,
        ("--model {model}: no tokenizer", "a vocabulary file", "tokenizer.json, vocab.txt")),
    "predict-model-unfinished": Case(
        "predict", output_argv(lambda env: env.predict_argv(model=unfinished(env))), 2,
        ("{model}: an unfinished training run's model (before threshold tuning)", "thmm-train --resume"),
        after=no_output),
    "predict-nan-weights": Case(  # refused at load or at the first score, and nothing written either way
        "predict", output_argv(lambda env: env.predict_argv(model=nan_weights(env))), 2, ("{model}",), after=no_output),
    # ---- review flags (issue 34): a confidence in [0, 1]
    "predict-review-below-above-1": Case(
        "predict", lambda env: env.predict_argv("--review-below", "1.5"), 2,
        ("--review-below: must be a confidence between 0 and 1 (got 1.5)",)),
    "predict-review-below-nan": Case(
        "predict", lambda env: env.predict_argv("--review-below", "nan"), 2, ("--review-below: must be a confidence",)),
    # ---- field names: a near miss of a field that is read would lose it; another field is reported, once
    "predict-tsv-field-near-miss": Case(
        "predict", output_argv(predict_on("documents.tsv", "patent_id\ttitle\tAbstract\nP1\tshoe\tsole\n")), 2,
        ("{tmp}/documents.tsv, line 1 (the header), field 'Abstract'", "did you mean 'abstract'"), after=no_output),
    "predict-jsonl-field-near-miss": Case(
        "predict", output_argv(jsonl('{"title": "shoe"}', '{"title": "boot", "abstract ": "sole"}')), 2,
        ("{tmp}/documents.jsonl, line 2, field 'abstract '", "did you mean 'abstract'"), after=no_output),
    "predict-parquet-field-near-miss": Case(
        "predict", output_argv(parquet("documents.parquet", Title=["shoe"])), 2,
        ("{tmp}/documents.parquet, columns, field 'Title'", "did you mean 'title'"), after=no_output),
    "predict-tsv-unread-field-reported": Case(
        "predict", output_argv(predict_on("documents.tsv", "id\ttitle\tclaims\nUS1\tshoe\t1. A sole\n")), 0,
        ("warning: {tmp}/documents.tsv, line 1 (the header): field 'claims' is not read",),
        after=predicted_ids("US1")),  # and an 'id' column names the documents, as in JSONL and parquet
    "predict-jsonl-unread-field-reported": Case(
        "predict", output_argv(jsonl('{"title": "shoe", "claims": "x"}', '{"title": "boot", "claims": "y"}')), 0,
        ("warning: {tmp}/documents.jsonl, line 1: field 'claims' is not read",), after=predicted_ids(1, 2)),
    # ---- decoding options that would be ignored
    "predict-top-k-with-threshold": Case(
        "predict", lambda env: env.predict_argv("--top-k", "1", "--threshold", "0.9"), 2,
        ("--top-k and --threshold: choose one",)),
    "predict-top-k-with-at-least-one": Case(
        "predict", lambda env: env.predict_argv("--top-k", "1", "--at-least-one"), 2,
        ("--top-k and --at-least-one: choose one",)),
    "predict-threshold-per-level-count": Case(
        "predict", output_argv(lambda env: env.predict_argv("--threshold", "0.5,0.4")), 2,
        ("--threshold: expected one threshold per level (3)",), after=no_output),
    "predict-label-titles-missing": Case(
        "predict", output_argv(lambda env: env.predict_argv("--label-titles", str(env.tmp / "titles.tsv"))), 2,
        ("--label-titles {tmp}/titles.tsv: No such file or directory",), after=no_output),
    # ---- the output: only the command's own records are replaced; a failed write names it, and leaves nothing
    "predict-output-blank-first-line": Case(
        "predict", lambda env: [*env.predict_argv(), "--output", str(user_file(env, "\nmy notes\n"))], 2,
        ("--output {tmp}/notes.jsonl", "not a thmm-predict output"), after=lambda env: user_file_kept(env, "\nmy notes\n")),
    "predict-output-record-above-notes": Case(
        "predict", lambda env: [*env.predict_argv(), "--output", str(user_file(env, RECORD + "my notes\n"))], 2,
        ("--output {tmp}/notes.jsonl", "not a thmm-predict output"),
        after=lambda env: user_file_kept(env, RECORD + "my notes\n")),
    "predict-output-dir-left-out-on-error": Case(
        "predict", lambda env: [*predict_on("documents.txt", "shoe\n\nboot\n")(env), "--output-dir",
                                str(env.tmp / "new" / "sub")], 2,
        ("{tmp}/documents.txt, line 2", "empty document"), after=lambda env: not_made(env.tmp / "new")),
}

if Path("/dev/full").exists():
    CASES["predict-output-disk-full"] = Case(
        "predict", lambda env: [*env.predict_argv(), "--output", "/dev/full"], 2,
        ("--output /dev/full: could not be written (No space left on device)",))

if not torch.cuda.is_available():
    CASES["predict-device-cuda-without-cuda"] = Case(
        "predict", lambda env: env.predict_argv("--device", "cuda"), 2, ("--device", "no CUDA device", "'cuda'"))

CASES["predict-txt-invisible-document"] = Case(
    "predict", output_argv(predict_on("documents.txt", "shoe\n\u200b\nboot\n")), 2,
    ("{tmp}/documents.txt, line 2", "empty document"), after=no_output)

CASES.update({
    "predict-output-empty-path": Case(
        "predict", lambda env: [*env.predict_argv(), "--output", ""], 2, ("--output: empty path",)),
    "predict-label-titles-empty-path": Case(
        "predict", lambda env: [*env.predict_argv(), "--label-titles", ""], 2, ("--label-titles: empty path",)),
    "predict-tsv-empty-id": Case(
        "predict", output_argv(predict_on("documents.tsv", "id\ttitle\n\tshoe\n")), 2,
        ("{tmp}/documents.tsv, line 2, field 'id': empty",), after=no_output),
    "predict-option-abbreviated": Case(  # options as spelled: --thresh is no --threshold
        "predict", lambda env: [*env.predict_argv(), "--thresh", "0.5"], 2, ("unrecognized arguments: --thresh",)),
})
