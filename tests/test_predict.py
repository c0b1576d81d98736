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
