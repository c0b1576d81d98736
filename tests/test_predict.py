"""predict.py: input formats, output records, truncation, and clear errors on bad input."""

import json

import pytest

from thmm.cli import predict
from conftest import save_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    model = tiny_model(max_length=16, label_titles={"H04W": "WIRELESS COMMUNICATION NETWORKS"})
    return save_model_dir(model, tiny_tokenizer, tmp_path_factory.mktemp("predict-model"))


def run(model_dir, tmp_path, *extra, capsys=None):
    out = tmp_path / "out.jsonl"
    code = predict.cli(["--model", str(model_dir), "--output", str(out), *extra])
    return code, [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else None


def test_tsv_jsonl_and_txt_inputs_agree(model_dir, tmp_path):
    tsv = tmp_path / "in.tsv"
    tsv.write_text("patent_id\ttitle\tabstract\tlabels\nP1\tshoe sole\tan insole\t['A43B']\nP2\tradio network\t\t['H04W']\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": "P1", "title": "shoe sole", "abstract": "an insole"}\n{"patent_id": "P2", "text": "radio network"}\n')
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\tan insole\nradio network\n")
    results = {}
    for path in (tsv, jsonl, txt):
        code, records = run(model_dir, tmp_path, "--input", str(path), "--threshold", "0")
        assert code == 0
        results[path.suffix] = records
    assert [r["id"] for r in results[".tsv"]] == ["P1", "P2"] == [r["id"] for r in results[".jsonl"]]
    assert [r["id"] for r in results[".txt"]] == [1, 2]
    for a, b, c in zip(results[".tsv"], results[".jsonl"], results[".txt"]):
        assert a["predicted"] == b["predicted"] == c["predicted"]
    first = results[".tsv"][0]["predicted"]
    assert {p["code"] for p in first} == {"A", "B", "H", "Y", "A43", "A47", "B41", "H01", "H04", "Y10", "A43B", "A43C",
                                          "A47J", "B41F", "H01M", "H04L", "H04W", "Y10T"}  # threshold 0: every node
    wireless = next(p for p in first if p["code"] == "H04W")
    assert wireless["title"] == "WIRELESS COMMUNICATION NETWORKS" and wireless["level"] == 3


def test_top_k_and_per_level_thresholds(model_dir, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\nradio\n")
    code, records = run(model_dir, tmp_path, "--input", str(txt), "--top-k", "2")
    assert code == 0 and all(sum(p["level"] == 3 for p in r["predicted"]) == 2 for r in records)
    code, records = run(model_dir, tmp_path, "--input", str(txt), "--threshold", "1.0,1.0,1.0")
    assert code == 0 and all(r["predicted"] == [] for r in records)
    code, _ = run(model_dir, tmp_path, "--input", str(txt), "--threshold", "0.5,0.5")
    assert code == 2


def test_long_input_is_truncated_and_reported(model_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe\n" + "battery cell electrode " * 30 + "\n")
    code, records = run(model_dir, tmp_path, "--input", str(txt))
    assert code == 0
    assert [r["truncated"] for r in records] == [False, True]
    assert "1 of 2 documents were truncated to 16 word-pieces" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("empty.txt", "shoe\n\t\nradio\n", "line 2, fields 'title' and 'abstract': empty document"),
        ("bad.jsonl", '{"title": "shoe"}\n{"title": \n', "line 2: invalid JSON"),
        ("notitle.jsonl", '{"abstract": "x"}\n', "line 1, field 'title': missing"),
        ("nohead.tsv", "patent_id\tabstract\nP1\tx\n", "line 1: the header needs a 'title' column"),
        ("ragged.tsv", "patent_id\ttitle\nP1\tshoe\textra\n", "line 2: 3 fields, the header has 2"),
    ],
)
def test_bad_input_errors_name_file_and_line(model_dir, tmp_path, capsys, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    code, _ = run(model_dir, tmp_path, "--input", str(path))
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and name in err


def test_non_utf8_input(model_dir, tmp_path, capsys):
    path = tmp_path / "latin.txt"
    path.write_bytes("shoe\nchaussure à talon\n".encode("latin-1"))
    code, _ = run(model_dir, tmp_path, "--input", str(path))
    err = capsys.readouterr().err
    assert code == 2 and "latin.txt, line 2: not UTF-8" in err


def test_blank_last_lines_of_a_txt_file_are_not_documents(model_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\nradio\n\n  \n")
    code, records = run(model_dir, tmp_path, "--input", str(txt))
    assert code == 0 and [r["id"] for r in records] == [1, 2]
    assert capsys.readouterr().err == ""  # quiet by default: no loading bars or warnings


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--threshold", "2", "must be a probability"),
        ("--threshold", "nan", "must be a probability"),
        ("--threshold", "-1", "must be a probability"),
        ("--threshold", "0.5,x", "--threshold"),
        ("--max-length", "0", "--max-length: must be at least 8"),
        ("--max-length", "100000", "--max-length: 100000 exceeds the encoder's 128 positions"),
        ("--top-k", "0", "--top-k: must be at least 1"),
    ],
)
def test_bad_options_exit_2_naming_the_option(model_dir, tmp_path, capsys, option, value, fragment):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\n")
    with pytest.raises(SystemExit) as exited:  # argparse's own exit for option errors
        code, _ = run(model_dir, tmp_path, "--input", str(txt), option, value)
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and fragment in err and "Traceback" not in err


def test_missing_model_and_unwritable_output_fail_before_inference(model_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\n")
    assert predict.cli(["--model", str(tmp_path / "nope"), "--input", str(txt)]) == 2
    assert f"--model {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    assert predict.cli(["--model", str(model_dir), "--input", str(txt),
                        "--output", str(tmp_path / "missing" / "out.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- streaming (chunks), parquet, and several processes --------------------------------------------


def quickstart_documents(n):
    from conftest import QUICKSTART_DATA
    from dataset_script import read_patent_tsv

    return [{"id": r["patent_id"], "title": r["title"], "abstract": r["abstract"]}
            for r in read_patent_tsv(QUICKSTART_DATA / "test.tsv")[:n]]


def test_output_matches_the_whole_input_predict_proba_path(model_dir, tmp_path, tiny_tokenizer):
    """One chunk holding the whole input gives byte for byte what predicting the whole list at once gave
    (model.predict_proba on encode_documents' ids, the path before streaming)."""
    from modeling_thmm import THMMForHierarchicalClassification

    docs = quickstart_documents(40)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    code, _ = run(model_dir, tmp_path, "--input", str(path), "--batch-size", "8")
    assert code == 0
    model = THMMForHierarchicalClassification.from_pretrained(model_dir).eval()
    probs, truncated = model.predict_proba(tiny_tokenizer, [d["title"] for d in docs], [d["abstract"] for d in docs],
                                           batch_size=8, return_truncated=True)
    expected = "".join(json.dumps({"id": d["id"], "predicted": p, "confidence": round(float(c), 4), "truncated": t})
                       + "\n" for d, p, c, t in zip(docs, model.label_records(probs), model.document_confidence(probs),
                                                     truncated))
    assert (tmp_path / "out.jsonl").read_text() == expected


def test_parquet_input_and_small_chunks_agree_with_tsv(model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = quickstart_documents(9)
    pq.write_table(pa.table({"patent_id": [d["id"] for d in docs], "title": [d["title"] for d in docs],
                             "abstract": [d["abstract"] for d in docs]}), tmp_path / "in.parquet")
    tsv = tmp_path / "in.tsv"
    tsv.write_text("patent_id\ttitle\tabstract\n" + "".join(f"{d['id']}\t{d['title']}\t{d['abstract']}\n" for d in docs))
    _, from_tsv = run(model_dir, tmp_path, "--input", str(tsv))
    for chunk in ("1024", "4", "1"):
        code, records = run(model_dir, tmp_path, "--input", str(tmp_path / "in.parquet"), "--chunk-size", chunk)
        assert code == 0 and [r["id"] for r in records] == [d["id"] for d in docs]
        for a, b in zip(records, from_tsv):
            assert [p["code"] for p in a["predicted"]] == [p["code"] for p in b["predicted"]]
            assert a["truncated"] == b["truncated"]
            assert all(abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(a["predicted"], b["predicted"]))


def test_parquet_errors_name_the_file_and_row(model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"title": ["shoe", " ", "radio"], "abstract": ["", None, ""]}), tmp_path / "empty.parquet")
    pq.write_table(pa.table({"abstract": ["x"]}), tmp_path / "notitle.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    for name, fragment in (("empty.parquet", "empty.parquet, row 2, fields 'title' and 'abstract': empty document"),
                           ("notitle.parquet", "notitle.parquet: the parquet file needs a 'title' column"),
                           ("broken.parquet", "broken.parquet: not a readable parquet file")):
        code, _ = run(model_dir, tmp_path, "--input", str(tmp_path / name))
        assert code == 2 and fragment in capsys.readouterr().err


def test_blank_lines_across_chunk_boundaries(model_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\n\n\nradio\n")
    code, _ = run(model_dir, tmp_path, "--input", str(txt), "--chunk-size", "1")
    assert code == 2 and "in.txt, line 2, fields 'title' and 'abstract': empty document" in capsys.readouterr().err
    txt.write_text("shoe sole\nradio\n" + "\n  \n\t\n" * 3)
    code, records = run(model_dir, tmp_path, "--input", str(txt), "--chunk-size", "1")
    assert code == 0 and [r["id"] for r in records] == [1, 2]


def test_streaming_predicts_chunks_as_they_are_read_and_leaves_no_partial_output(monkeypatch, model_dir, tmp_path,
                                                                                 capsys):
    """A bad line near the end is found after earlier chunks were predicted (the input is never read
    whole), and the output file is not created: a file output appears only once complete."""
    from thmm import prediction

    calls, real = [], prediction.ChunkPredictor.__call__

    def counted(self, docs):
        calls.append(len(docs))
        return real(self, docs)

    monkeypatch.setattr(prediction.ChunkPredictor, "__call__", counted)
    path = tmp_path / "in.jsonl"
    path.write_text('{"title": "shoe"}\n' * 5 + '{"title": \n')
    code, records = run(model_dir, tmp_path, "--input", str(path), "--chunk-size", "2")
    assert code == 2 and "in.jsonl, line 6: invalid JSON" in capsys.readouterr().err
    assert calls == [2, 2] and records is None and not list(tmp_path.glob(".out.jsonl*"))


def test_reading_is_lazy(tmp_path):
    from thmm.prediction import chunked, iter_documents

    path = tmp_path / "in.txt"
    path.write_text("shoe\n" * 10 + "\n" + "radio\n")
    chunks = chunked(iter_documents(str(path)), 4)
    assert [d["id"] for d in next(chunks)] == [1, 2, 3, 4]  # read before the bad line 11 is reached
    with pytest.raises(ValueError, match="line 11, fields 'title' and 'abstract': empty document"):
        list(chunks)


@pytest.mark.slow
def test_two_processes_write_one_output_in_input_order(model_dir, tmp_path, monkeypatch, one_distributed_run_at_a_time):
    # --multi_gpu selects Accelerate's torchrun launcher; without CUDA the processes use gloo on CPUs.
    import sys

    from conftest import REPO_ROOT, run_command

    docs = quickstart_documents(7)  # chunks of 2: 2, 2, 2, 1 documents; process 0 gets chunks 0 and 2
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = ["--model", model_dir, "--input", path, "--chunk-size", "2", "--batch-size", "2"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29523"]
    two = run_command([REPO_ROOT / "predict.py", *common, "--output", tmp_path / "two.jsonl"], launcher=launcher)
    assert two.returncode == 0, two.stderr[-3000:]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for each process
    one = run_command([REPO_ROOT / "predict.py", *common, "--output", tmp_path / "one.jsonl"])
    assert one.returncode == 0, one.stderr[-3000:]
    output = (tmp_path / "two.jsonl").read_text()
    assert [json.loads(line)["id"] for line in output.splitlines()] == [d["id"] for d in docs]  # each once, in order
    assert output == (tmp_path / "one.jsonl").read_text()
    # counted over both processes, reported once
    assert two.stderr.count("documents were truncated") == 1 and "7 of 7 documents were truncated" in two.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".thmm-predict-")]  # part files removed


def test_consistent_scores_option(model_dir, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("shoe sole\nwireless packet radio network\nlithium battery cell\n")
    code, records = run(model_dir, tmp_path, "--input", str(txt), "--threshold", "0.0", "--consistent-scores")
    assert code == 0
    for record in records:
        score = {p["code"]: p["score"] for p in record["predicted"]}
        assert all(len(c) == 1 or score[c] <= score[c[:1] if len(c) == 3 else c[:3]] for c in score)
    code, raw = run(model_dir, tmp_path, "--input", str(txt), "--threshold", "0.0", "--no-consistent-scores")
    assert code == 0 and [r["id"] for r in raw] == [r["id"] for r in records]


# ---- one strict path per format: what still works ---------------------------------------------------


def test_txt_lines_end_at_newline_only(model_dir, tmp_path):
    """Form feeds, vertical tabs, \\x1c-\\x1e, NEL and the Unicode separators stay in their line (str.splitlines
    would split there and shift every later id); a CRLF's \\r is dropped."""
    from thmm.prediction import iter_documents

    txt = tmp_path / "in.txt"
    txt.write_text("shoe\x0csole\x0bheel\x1c\x1d\x1e\x85boot\u2028lace\u2029upper\tan insole\r\nradio\r\nnetwork\n",
                   encoding="utf-8", newline="")
    docs = list(iter_documents(str(txt)))
    assert [(d["id"], d["title"], d["abstract"]) for d in docs] == [
        (1, "shoe\x0csole\x0bheel\x1c\x1d\x1e\x85boot\u2028lace\u2029upper", "an insole"), (2, "radio", ""),
        (3, "network", "")]
    code, records = run(model_dir, tmp_path, "--input", str(txt))
    assert code == 0 and [r["id"] for r in records] == [1, 2, 3]


def test_jsonl_ids_keep_their_type(model_dir, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 7, "title": "shoe"}\n{"id": "7", "title": "radio"}\n{"title": "sole", "abstract": null}\n'
                    '{"patent_id": 12345678901234567890, "text": "boot"}\n')
    code, records = run(model_dir, tmp_path, "--input", str(path))
    assert code == 0 and [r["id"] for r in records] == [7, "7", 3, 12345678901234567890]


@pytest.mark.parametrize("input_format, text", [
    ("tsv", "patent_id\ttitle\tabstract\nP1\tshoe sole\tan insole\nP2\tradio network\t\n"),
    ("jsonl", '{"id": "P1", "title": "shoe sole", "abstract": "an insole"}\n{"id": "P2", "title": "radio network"}\n'),
    ("txt", "shoe sole\tan insole\nradio network\n"),
])
def test_format_option_reads_stdin_and_any_suffix(model_dir, tmp_path, monkeypatch, input_format, text):
    import io
    import sys

    ids = [1, 2] if input_format == "txt" else ["P1", "P2"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    code, from_stdin = run(model_dir, tmp_path, "--input", "-", "--format", input_format, "--threshold", "0")
    assert code == 0 and [r["id"] for r in from_stdin] == ids
    other = tmp_path / "documents.export"  # a suffix of no format: --format says which
    other.write_text(text)
    code, from_file = run(model_dir, tmp_path, "--input", str(other), "--format", input_format, "--threshold", "0")
    assert code == 0 and from_file == from_stdin


def test_tsv_fields_longer_than_csv_default_limit(model_dir, tmp_path):
    """A 150 KB abstract is read (csv's own limit is 131072), and csv's process-wide limit is put back."""
    import csv

    limit = csv.field_size_limit()
    tsv = tmp_path / "in.tsv"
    tsv.write_text("patent_id\ttitle\tabstract\nP1\tshoe\t" + "sole " * 30_000 + "\nP2\tradio\t\n")
    code, records = run(model_dir, tmp_path, "--input", str(tsv))
    assert code == 0 and [(r["id"], r["truncated"]) for r in records] == [("P1", True), ("P2", False)]
    assert csv.field_size_limit() == limit


def test_tsv_quoted_fields_as_in_the_release_format(tmp_path):
    from thmm.prediction import iter_documents

    tsv = tmp_path / "in.tsv"
    tsv.write_text('patent_id\ttitle\tabstract\nP1\t"A ""smart"" shoe"\t"two\nlines"\nP2\t5" disk\t\n')
    docs = list(iter_documents(str(tsv)))
    assert [(d["id"], d["title"], d["abstract"], d["where"]) for d in docs] == [
        ("P1", 'A "smart" shoe', "two\nlines", "line 2"), ("P2", '5" disk', "", "line 4")]


def test_parquet_integer_ids_and_dictionary_strings(model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array([3, 1], pa.int32()),
                             "title": pa.array(["shoe sole", "radio"]).dictionary_encode(),
                             "abstract": pa.array(["an insole", None], pa.large_string())}), tmp_path / "in.parquet")
    code, records = run(model_dir, tmp_path, "--input", str(tmp_path / "in.parquet"))
    assert code == 0 and [r["id"] for r in records] == [3, 1]


def test_help_documents_formats_limits_and_options(capsys):
    from thmm.prediction import MAX_FIELD_CHARS, MAX_LINE_BYTES, SUFFIXES

    with pytest.raises(SystemExit):
        predict.cli(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {MAX_FIELD_CHARS:,} characters" in text and f"at most {MAX_LINE_BYTES // 2**20} MiB" in text
    assert all(f"* {suffix}: " in text for suffix in SUFFIXES)  # --help shows the docstring without reST marks
    assert "--format" in text and "--trust-remote-code" in text


# ---- the model's side: scores, tokenizer, device -----------------------------------------------------


def test_nonfinite_scores_stop_and_leave_no_output(model_dir, tmp_path, monkeypatch, capsys):
    """Scores that are not finite name the model and the first such document; no file is written."""
    import numpy as np

    from thmm import prediction

    real = prediction.ChunkPredictor.__call__

    def nan_for_radio(self, docs):
        probs, truncated = real(self, docs)
        probs[[d["title"] == "radio" for d in docs], 2] = np.nan
        return probs, truncated

    monkeypatch.setattr(prediction.ChunkPredictor, "__call__", nan_for_radio)
    txt = tmp_path / "in.txt"
    txt.write_text("shoe\nsole\nradio\nboot\n")
    code, records = run(model_dir, tmp_path, "--input", str(txt), "--chunk-size", "2")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --model {model_dir}: non-finite scores for {txt}, line 3 (id 3)")
    assert records is None and not list(tmp_path.glob(".out.jsonl*"))


def test_tokenizer_is_checked_against_the_model(model_dir, tmp_path, monkeypatch, capsys):
    from modeling_thmm import THMMForHierarchicalClassification

    def refuse(self, tokenizer):
        raise ValueError(f"{model_dir}: the tokenizer does not fit")

    monkeypatch.setattr(THMMForHierarchicalClassification, "check_tokenizer", refuse, raising=False)
    txt = tmp_path / "in.txt"
    txt.write_text("shoe\n")
    code, records = run(model_dir, tmp_path, "--input", str(txt))
    assert code == 2 and capsys.readouterr().err == f"error: {model_dir}: the tokenizer does not fit\n"


def test_device_problems(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert [predict.device_problem(d) for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1")] == [None] * 5
    assert predict.device_problem("cuda:2") == ("--device: must be auto, cpu, cuda or cuda:N for N < 2 on this machine "
                                                "(got 'cuda:2')")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert predict.device_problem("mps") is None
    assert predict.device_problem("meta") == ("--device: must be auto, cpu, cuda, cuda:N for N < 2 or mps on this "
                                              "machine (got 'meta')")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "mps", "meta", "banana", "cuda:x", ""):
        assert predict.device_problem(device) == ("--device: must be auto or cpu on this machine, which has no CUDA "
                                                  f"device (got {device!r})")


def test_an_output_file_has_no_name_until_complete_then_keeps_its_mode_and_link(tmp_path, monkeypatch):
    """On Linux the output is an unnamed file (O_TMPFILE) linked into place at the end, not copied there;
    it replaces the file a link leads to, and keeps the mode of the file it replaces."""
    import os
    import stat

    from thmm import prediction

    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    real.write_text('{"id": 1, "predicted": []}\n')
    real.chmod(0o600)
    link.symlink_to(real.name)
    monkeypatch.setattr(prediction.os, "pread", lambda *a: pytest.fail("copied, not linked"))
    with prediction.open_output(str(link)) as out:
        out.write('{"id": 2, "predicted": []}\n')
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real.jsonl"]  # nothing named yet
    assert link.is_symlink() and real.read_text() == '{"id": 2, "predicted": []}\n'
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real.jsonl"]
