"""Tests of dataset_script.streaming: TSV and JSON Lines files read a byte range at a time (by worker
processes or in this one) give the rows and the errors of the line-by-line readers, wherever the
ranges cut the file: inside a quoted value that spans lines, inside a multi-byte character, between
a patent and its repeat."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import dataset_script.streaming as streaming
from dataset_script import PatentDataError, load_patent_splits
from dataset_script.readers import PatentRowValidator, iter_patent_jsonl, iter_patent_tsv
from dataset_script.streaming import iter_patent_tables

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dataset"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADER = "patent_id\ttitle\tabstract\tlabels\n"
LINE_READERS = {"tsv": iter_patent_tsv, "jsonl": iter_patent_jsonl}


def outcome(read, **policies):
    """``(rows, counts)`` or ``(error message, line, field)`` of a reader call."""
    validator = PatentRowValidator("cpc", **policies)
    try:
        rows = read(validator)
    except PatentDataError as err:
        return str(err), err.line, err.field
    return rows, validator.counts


def by_lines(path, kind, **policies):
    return outcome(lambda v: [row for row in LINE_READERS[kind](path, v) if row is not None], **policies)


def by_ranges(path, kind, processes, chunk_bytes, **policies):
    def read(validator):
        tables = list(iter_patent_tables(path, kind, validator, processes=processes, chunk_bytes=chunk_bytes))
        return pa.concat_tables(tables).to_pylist() if tables else []
    return outcome(read, **policies)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def tsv_row(patent_id, title, abstract="An abstract.", labels="['A43B']"):
    return f"{patent_id}\t{title}\t{abstract}\t{labels}\n"


def jsonl_row(patent_id, title, abstract="An abstract.", labels=("A43B",), **more):
    return json.dumps({"patent_id": patent_id, "title": title, "abstract": abstract, "labels": list(labels), **more},
                      ensure_ascii=False) + "\n"


# A quoted value over three lines with "" escapes, multi-byte characters of 2, 3 and 4 bytes, a CRLF line
MIXED_TSV = HEADER + tsv_row("1", "Sole", "Schuh\u00e9 \u65e5\u672c \U0001F45F") + \
    tsv_row("2", '"A heel\nover ""three""\nlines"', "x") + tsv_row("3", "Lace", "caf\u00e9").replace("\n", "\r\n") + \
    tsv_row("4", "Last", '"quoted\ttab"', "['A43B', 'Y10T']")
MIXED_JSONL = jsonl_row("1", "Sole \u65e5\u672c \U0001F45F") + jsonl_row("2", "A heel\u2028still the title") + \
    jsonl_row("3", "Lace", "caf\u00e9").replace("\n", "\r\n") + jsonl_row("4", "Last", labels=("A43B", "Y10T"))


@pytest.mark.parametrize("kind, text", [("tsv", MIXED_TSV), ("jsonl", MIXED_JSONL)])
def test_every_cut_gives_the_same_rows(tmp_path, kind, text):
    """Every range size from 1 byte to the file's: the cuts fall inside the quoted value that spans
    lines, inside each multi-byte character and between the CR and LF of a CRLF."""
    path = write(tmp_path / f"mixed.{kind}", text)
    expected = by_lines(path, kind)
    assert len(expected[0]) == 4
    for chunk_bytes in range(1, len(text.encode()) + 2):
        assert by_ranges(path, kind, 1, chunk_bytes) == expected, chunk_bytes


def test_worker_processes_give_the_same_rows(tmp_path):
    rows = [tsv_row(f"P{i}", f'"Title {i}\nwith \u00e9"' if i % 7 == 0 else f"Title {i} \u65e5", f"Abstract {i}")
            for i in range(300)]
    path = write(tmp_path / "many.tsv", HEADER + "".join(rows))
    expected = by_lines(path, "tsv")
    for chunk_bytes in (5, 97, 1000):
        assert by_ranges(path, "tsv", 2, chunk_bytes) == expected


def fixture_files():
    files = sorted((FIXTURES / "bad").glob("*.tsv")) + sorted((FIXTURES / "release").glob("*.tsv"))
    real = SHARED_DATA / "uspto-debug"
    return files + (sorted(real.glob("*.tsv")) if real.is_dir() else [])


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixtures_same_rows_and_errors(path):
    """The strict cases (one error each, named by file, line and field) and the release-format files,
    the real uspto-debug split included when ../shared holds it."""
    expected = by_lines(path, "tsv")
    for processes, chunk_bytes in ((1, 3), (2, 11), (2, 200)):
        assert by_ranges(path, "tsv", processes, chunk_bytes) == expected


def test_real_uspto_debug_read_by_ranges():
    folder = SHARED_DATA / "uspto-debug"
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is absent (it lives in ../shared beside the repo)")
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        rows, counts = by_ranges(folder / name, "tsv", 2, 64)
        assert counts["rows"] == len(rows) == 10 and by_lines(folder / name, "tsv") == (rows, counts)


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
@pytest.mark.parametrize("policy", ["error", "drop", "keep"])
def test_a_repeat_in_a_later_range_names_the_first_line(tmp_path, kind, policy):
    row = tsv_row if kind == "tsv" else jsonl_row
    text = (HEADER if kind == "tsv" else "") + row("A", "First") + row("B", "Other") + row("C", "x") + \
        row("A", "Again") + row("D", "Last")
    path = write(tmp_path / f"repeat.{kind}", text)
    expected = by_lines(path, kind, duplicate_ids=policy)
    line = 5 if kind == "tsv" else 4
    if policy == "error":
        assert expected[1:] == (line, "patent_id") and f"already appears on line {line - 3}" in expected[0]
    for chunk_bytes in (1, 7, 40):
        assert by_ranges(path, kind, 2, chunk_bytes, duplicate_ids=policy) == expected


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
def test_errors_name_the_exact_line_after_a_multi_line_value(tmp_path, kind):
    if kind == "tsv":
        text = HEADER + tsv_row("1", '"two\nlines"') + tsv_row("2", "t") + tsv_row("3", "t", labels="['a43b']")
        line, field = 5, "labels"
    else:
        text = jsonl_row("1", "t") + jsonl_row("2", "t") + '[1, 2]\n'
        line, field = 3, None
    path = write(tmp_path / f"bad.{kind}", text)
    expected = by_lines(path, kind)
    assert expected[1:] == (line, field), expected
    for processes, chunk_bytes in ((1, 1), (2, 9), (2, 1000)):
        assert by_ranges(path, kind, processes, chunk_bytes) == expected


@pytest.mark.parametrize("text, line, fragment", [
    (HEADER + tsv_row("1", "t") + "2\tt\tcaf\xe9\t['A43B']\n", 3, "are not valid UTF-8"),
    (HEADER + tsv_row("1", "t") + tsv_row("2", "t\rx"), 3, "carriage return"),
    ((HEADER + tsv_row("1", "t")).replace("\n", "\r"), 1, "carriage return"),
    (HEADER + tsv_row("1", "t") + '2\t"unclosed\tx\t[\'A43B\']\n' + tsv_row("3", "t"), 3, "bad CSV quoting"),
    (HEADER + tsv_row("1", "t") + "\n" + tsv_row("2", "t"), 3, "empty line"),
])
def test_file_level_errors_in_a_later_range(tmp_path, text, line, fragment):
    path = tmp_path / "bad.tsv"
    path.write_bytes(text.encode("utf-8", "surrogateescape").replace("caf\xe9".encode(), b"caf\xe9"))
    expected = by_lines(path, "tsv")
    assert expected[1] == line and fragment in expected[0], expected
    for chunk_bytes in (1, 6, 30):
        assert by_ranges(path, "tsv", 2, chunk_bytes) == expected


def test_derived_fields_are_checked_after_the_id(tmp_path):
    """A row whose sections contradict its labels: under duplicate_ids="drop" a repeat is dropped
    before its fields are compared (as the line reader does); otherwise the sections are named."""
    text = jsonl_row("1", "t") + jsonl_row("2", "t") + jsonl_row("1", "again", sections=["B"])
    path = write(tmp_path / "late.jsonl", text)
    for policy in ("drop", "keep"):
        expected = by_lines(path, "jsonl", duplicate_ids=policy)
        for chunk_bytes in (1, 20):
            assert by_ranges(path, "jsonl", 2, chunk_bytes, duplicate_ids=policy) == expected
    assert by_lines(path, "jsonl", duplicate_ids="drop")[1]["dropped_duplicate_ids"] == 1
    assert by_lines(path, "jsonl", duplicate_ids="keep")[2] == "sections"


@pytest.mark.parametrize("kind, text, message", [
    ("tsv", HEADER, "no documents (only a header)"),
    ("jsonl", "", "no documents (an empty file)"),
])
def test_no_documents(tmp_path, kind, text, message):
    path = write(tmp_path / f"empty.{kind}", text)
    assert by_ranges(path, kind, 2, 4) == by_lines(path, kind) == (f"{path}: {message}", None, None)


def test_empty_labels_dropped_in_workers_are_counted(tmp_path):
    text = HEADER + tsv_row("1", "t") + tsv_row("2", "t", labels="[]") + tsv_row("3", "t")
    path = write(tmp_path / "empty_labels.tsv", text)
    rows, counts = by_ranges(path, "tsv", 2, 5, empty_labels="drop")
    assert [r["patent_id"] for r in rows] == ["1", "3"] and (rows, counts) == by_lines(path, "tsv", empty_labels="drop")
    assert counts == {"rows_read": 3, "dropped_empty_labels": 1, "dropped_duplicate_ids": 0, "rows": 2}


def test_options_are_checked(tmp_path):
    path = write(tmp_path / "a.tsv", HEADER + tsv_row("1", "t"))
    with pytest.raises(ValueError, match="processes must be at least 1"):
        list(iter_patent_tables(path, "tsv", PatentRowValidator(), processes=0))
    with pytest.raises(ValueError, match="chunk_bytes must be at least 1"):
        list(iter_patent_tables(path, "tsv", PatentRowValidator(), chunk_bytes=0))


def test_builder_reads_by_ranges_in_worker_processes(tmp_path, monkeypatch):
    """load_patent_splits through the builder with small ranges and two processes: the rows of the
    default build, and an error that names the file, line and field."""
    release = FIXTURES / "release"
    expected = load_patent_splits(release, cache_dir=str(tmp_path / "a"))
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 50)
    splits = load_patent_splits(release, cache_dir=str(tmp_path / "b"), reader_processes=2)
    for split in expected:
        assert splits[split].to_list() == expected[split].to_list()
    shutil.copytree(release, tmp_path / "data")
    shutil.copy(FIXTURES / "bad" / "label_unquoted.tsv", tmp_path / "data" / "train.tsv")
    with pytest.raises(PatentDataError, match=r"train\.tsv, line 3, field 'labels'"):
        load_patent_splits(tmp_path / "data", cache_dir=str(tmp_path / "c"), reader_processes=2)
