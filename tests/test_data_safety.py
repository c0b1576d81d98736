"""Safety of the data commands and readers: ``thmm-publish`` and ``thmm-stats`` never delete or
overwrite a file they did not write (:mod:`thmm.outputs`), write their folders whole or not at all,
and every training-data format passes the one row validator (the same problem gives the same
message from TSV, JSON Lines and parquet). All offline, on the fixtures under tests/fixtures/dataset."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataset_script.publish as publish_module
from dataset_script import MAX_FIELD_CHARS, PatentDataError, load_patent_splits, read_patent_jsonl, read_patent_tsv
from dataset_script.readers import iter_patent_parquet, PatentRowValidator
from thmm import cli
from thmm.outputs import (
    OUTPUT_MARKER,
    OutputDirError,
    check_output_dir,
    claim_output_dir,
    read_marker,
    record_outputs,
    staged_output_dir,
)

RELEASE = Path(__file__).resolve().parent / "fixtures" / "dataset" / "release"
HEADER = "patent_id\ttitle\tabstract\tlabels\n"

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def run(command, argv, capsys):
    """A command in process: (exit code, stdout, stderr)."""
    code = command([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the commands keep a user's files -------------------------------------------------------------


@pytest.mark.parametrize("command, extra, output_files", [
    (cli.publish, [], {"README.md", "stats.json", "label_distribution.png", "data/train-00000-of-00001.parquet",
                       "data/validation-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"}),
    (cli.stats, [], {"stats.json", "stats.md", "label_distribution.png"}),
])
def test_commands_keep_users_files_beside_and_inside_their_output(tmp_path, cache_dir, capsys, command, extra,
                                                                 output_files):
    argv = ["--out", tmp_path / "out", "--data-dir", RELEASE, "--cache-dir", cache_dir, *extra]
    (tmp_path / "sibling.txt").write_text("a user's file beside the output\n")

    # a folder holding a user's file is refused, untouched, before any work
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("a user's notes\n")
    code, _, err = run(command, argv, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: --out {tmp_path / 'out'}: the folder holds files that thmm "
                                                   "did not write (notes.txt)")
    assert [line for line in err.splitlines() if "error" in line.lower()] == err.strip().splitlines()[-1:]
    assert tree(tmp_path / "out") == {"notes.txt": b"a user's notes\n"}

    # a new folder is written whole, with the marker, and says where
    (tmp_path / "out" / "notes.txt").unlink()
    (tmp_path / "out").rmdir()
    code, out, _ = run(command, argv, capsys)
    assert code == 0 and out.strip().splitlines()[-1].endswith(f"to {tmp_path / 'out'}")
    assert set(tree(tmp_path / "out")) == output_files | {OUTPUT_MARKER}
    assert set(read_marker(tmp_path / "out")["written"]) == output_files

    # files a user adds inside the output (and beside it) survive a rerun, which replaces the package's own
    (tmp_path / "out" / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "out" / "data").mkdir(exist_ok=True)
    (tmp_path / "out" / "data" / "README.txt").write_text("where the shards came from\n")
    code, _, _ = run(command, argv, capsys)
    assert code == 0
    after = tree(tmp_path / "out")
    assert after["notes.txt"] == b"a user's notes\n" and after["data/README.txt"] == b"where the shards came from\n"
    assert set(after) == output_files | {OUTPUT_MARKER, "notes.txt", "data/README.txt"}
    assert (tmp_path / "sibling.txt").read_text() == "a user's file beside the output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sibling.txt"]  # no staging folder left


def test_republish_removes_only_its_own_stale_shards(tmp_path, cache_dir):
    out = tmp_path / "out"
    publish_module.publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=2, stats=False)
    assert len(list((out / "data").glob("train-*.parquet"))) == 6
    (out / "data" / "notes.txt").write_text("mine\n")
    summary = publish_module.publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=5, stats=False)
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(
        [Path(f).name for f in summary["files"] if f.startswith("data/")] + ["notes.txt"])
    assert len(load_patent_splits(out, cache_dir=cache_dir)["train"]) == 12


def test_a_failed_publish_leaves_the_folder_as_it_was(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "out"
    publish_module.publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, stats=False)
    before = tree(out)

    def half_written(splits, folder, *args):
        (folder / "README.md").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish_module, "_write_export", half_written)
    with pytest.raises(OSError, match="No space left"):
        publish_module.publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=2)
    assert tree(out) == before
    with pytest.raises(OSError):
        publish_module.publish(tmp_path / "new", data_dir=str(RELEASE), cache_dir=cache_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half export, no staging folder


def test_publish_checks_its_folder_before_building(tmp_path, cache_dir, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("a user's own card\n")
    monkeypatch.setattr(publish_module, "Uspto70k", lambda **kwargs: pytest.fail("built before the folder check"))
    with pytest.raises(OutputDirError, match=r"out_dir .*/out: the folder holds files that thmm did not write"):
        publish_module.publish(tmp_path / "out", data_dir=str(RELEASE), cache_dir=cache_dir)
    assert tree(tmp_path / "out") == {"README.md": b"a user's own card\n"}


# ---- thmm.outputs ----------------------------------------------------------------------------------


def test_claim_output_dir(tmp_path):
    new = tmp_path / "a" / "b"
    claim_output_dir(new, "--output-dir", "thmm-train", replace=False)
    assert read_marker(new) == {"command": "thmm-train", "version": read_marker(new)["version"], "written": []}
    (tmp_path / "empty").mkdir()
    claim_output_dir(tmp_path / "empty", "--output-dir", "thmm-train", replace=False)
    assert (tmp_path / "empty" / OUTPUT_MARKER).is_file()

    (new / "model").mkdir()
    (new / "model" / "config.json").write_text("{}")
    (new / "summary.json").write_text("{}")
    record_outputs(new, ["model", "summary.json"])
    (new / "notes.txt").write_text("mine\n")
    claim_output_dir(new, "--output-dir", "thmm-train", replace=False)  # e.g. a resume: everything stays
    assert set(tree(new)) == {OUTPUT_MARKER, "model/config.json", "summary.json", "notes.txt"}
    claim_output_dir(new, "--output-dir", "thmm-train", replace=True)  # what the package wrote goes, nothing else
    assert set(tree(new)) == {OUTPUT_MARKER, "notes.txt"} and read_marker(new)["written"] == []

    with pytest.raises(OutputDirError, match=r"^--out .*/b: the folder holds the output of thmm-train, not of "
                                             r"thmm-publish \(\.thmm-output\.json, notes\.txt\)"):
        claim_output_dir(new, "--out", "thmm-publish", replace=True)
    users = tmp_path / "users"
    users.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (users / name).write_text(name)
    with pytest.raises(OutputDirError) as info:
        claim_output_dir(users, "--output-dir", "thmm-train", replace=True)
    assert str(info.value).startswith(f"--output-dir {users}: the folder holds files that thmm did not write "
                                      "(a.txt, b.txt, c.txt, d.txt and 1 more)")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    assert sorted(tree(users)) == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]
    for bad, words in [("", "--output-dir: empty path"), (users / "a.txt", "is a file, not a folder"),
                       (users / "a.txt" / "run", "a.txt is a file, not a folder")]:
        with pytest.raises(OutputDirError, match=words):
            check_output_dir(bad, "--output-dir")


def test_staged_output_dir_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out, "--out", "thmm-stats") as staging:
        assert staging.parent == tmp_path and not out.exists()
        (staging / "stats.json").write_text("1")
    assert tree(out) == {OUTPUT_MARKER: (out / OUTPUT_MARKER).read_bytes(), "stats.json": b"1"}
    with pytest.raises(RuntimeError), staged_output_dir(out, "--out", "thmm-stats") as staging:
        (staging / "stats.json").write_text("2")
        raise RuntimeError("killed")
    assert (out / "stats.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "stats.md").write_text("a user's file where the output goes\n")
    with pytest.raises(OutputDirError, match="stats.md would be overwritten"):
        with staged_output_dir(out, "--out", "thmm-stats") as staging:
            (staging / "stats.md").write_text("new")
    assert (out / "stats.md").read_text() == "a user's file where the output goes\n"


# ---- one validator for every format ----------------------------------------------------------------

GOOD = {"patent_id": "1", "title": "Shoe", "abstract": "A sole.", "labels": ["A43B"]}
BAD_VALUES = [
    ({"labels": []}, "labels", "empty label list []"),
    ({"labels": ["A43"]}, "labels", "'A43' is a class; labels must be subclass codes"),
    ({"labels": ["a43b"]}, "labels", "(codes are upper case: 'A43B')"),
    ({"labels": ["A43 B"]}, "labels", "malformed CPC code 'A43 B'"),
    ({"labels": ["A43B", "A43B"]}, "labels", "code 'A43B' is listed twice"),
    ({"title": "", "abstract": " "}, "title", "title and abstract are both empty"),
    ({"title": "Shoe\x00"}, "title", "control character U+0000 (NUL) at character 5"),
    ({"abstract": "A\x0csole"}, "abstract", "control character U+000C (form feed) at character 2"),
    ({"patent_id": " 1"}, "patent_id", "without surrounding spaces"),
    ({"abstract": "x" * (MAX_FIELD_CHARS + 1)}, "abstract", f"more than the limit of {MAX_FIELD_CHARS:,} per field"),
]


def write_tsv(path: Path, rows: list[dict]) -> Path:
    lines = ["\t".join([r["patent_id"], r["title"], r["abstract"], repr(r["labels"])]) for r in rows]
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8", newline="")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_parquet(path):
    return [row for row in iter_patent_parquet(path, PatentRowValidator()) if row is not None]


@pytest.mark.parametrize("change, field, problem", BAD_VALUES, ids=[p for _, _, p in BAD_VALUES])
def test_every_format_refuses_the_same_row_the_same_way(tmp_path, change, field, problem):
    rows = [{**GOOD, "patent_id": "0"}, {**GOOD, **change}]
    messages = {}
    for name, write, read, where in [("tsv", write_tsv, read_patent_tsv, "line 3"),
                                     ("jsonl", write_jsonl, read_patent_jsonl, "line 2"),
                                     ("parquet", write_parquet, read_parquet, "row 2")]:
        path = write(tmp_path / f"train.{name}", rows)
        with pytest.raises(PatentDataError) as info:
            read(path)
        assert str(info.value).startswith(f"{path}, {where}, field {field!r}: "), str(info.value)
        messages[name] = info.value.problem
    assert len(set(messages.values())) == 1 and problem in messages["tsv"], messages


def test_field_size_limit_boundary(tmp_path):
    at_limit = {**GOOD, "abstract": "y" * MAX_FIELD_CHARS}
    assert read_patent_tsv(write_tsv(tmp_path / "a.tsv", [at_limit]))[0]["abstract"] == at_limit["abstract"]
    assert read_patent_jsonl(write_jsonl(tmp_path / "a.jsonl", [at_limit]))[0]["abstract"] == at_limit["abstract"]


def test_upsampled_export_copies_must_repeat_earlier_patents(tmp_path, cache_dir):
    out = tmp_path / "out"
    summary = publish_module.publish(out, base_url=RELEASE.as_uri(), cache_dir=cache_dir, upsample=True, stats=False)
    added = summary["build_summary"]["train"]["upsampled_rows_added"]
    assert added > 0 and len(load_patent_splits(out, cache_dir=cache_dir)["train"]) == 12 + added
    shard = out / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    ids = table.column("patent_id").to_pylist()
    pq.write_table(table.set_column(0, "patent_id", pa.array(ids[:-1] + ["NEW1"])), shard)
    with pytest.raises(PatentDataError, match=rf"{shard}, row {12 + added}, field 'patent_id': this row is declared "
                                              "an up-sampling copy"):
        load_patent_splits(out, cache_dir=cache_dir)
    pq.write_table(table.set_column(0, "patent_id", pa.array(["9000002"] + ids[1:])), shard)
    with pytest.raises(PatentDataError, match=rf"{shard}, row 2, field 'patent_id': patent_id '9000002' already"):
        load_patent_splits(out, cache_dir=cache_dir)


def test_split_files_are_read_by_their_suffix(tmp_path, cache_dir):
    rows = read_patent_tsv(RELEASE / "train.tsv")
    jsonl = write_jsonl(tmp_path / "train.jsonl", [{k: r[k] for k in ("patent_id", "title", "abstract", "labels")}
                                                   for r in rows])
    splits = load_patent_splits(None, cache_dir=cache_dir, data_files={"train": str(jsonl),
                                                                       "test": str(RELEASE / "test.tsv")})
    assert splits["train"].to_list() == rows
    csv_file = tmp_path / "train.csv"
    csv_file.write_text((RELEASE / "train.tsv").read_text())
    with pytest.raises(PatentDataError, match=r"train\.csv: unknown file type '\.csv': split files are \.tsv or \.jsonl"):
        load_patent_splits(None, cache_dir=cache_dir, data_files={"train": str(csv_file)})


@pytest.mark.parametrize("where", ["folder", "file-url", "current-folder"])
def test_a_published_card_names_local_data_by_its_folder_never_its_path(where, tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "out"
    if where == "folder":
        publish_module.publish(out, base_url=str(RELEASE), cache_dir=cache_dir, stats=False)
    elif where == "file-url":
        publish_module.publish(out, base_url=RELEASE.as_uri(), cache_dir=cache_dir, stats=False)
    else:
        monkeypatch.chdir(RELEASE)
        publish_module.publish(out, data_dir=".", cache_dir=cache_dir, stats=False)
    card = (out / "README.md").read_text()
    assert str(RELEASE.parent) not in card and "`release/`" in card
    if where == "current-folder":
        assert "pretty_name: release (USPTO-70k format)" in card


def test_publish_checks_shard_size_and_licence_before_building(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(publish_module, "Uspto70k", lambda **kwargs: pytest.fail("built before the checks"))
    for rows in (0, -5, True, 2.5, "10", None):
        with pytest.raises(ValueError, match=r"^max_shard_rows: must be an integer of at least 1"):
            publish_module.publish(tmp_path / "out", data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=rows)
    for licence in ("", " ", "cc-by-4.0\nlicense: mit"):
        with pytest.raises(ValueError, match=r"^--license: must be a licence id such as cc-by-4.0, on one line"):
            publish_module.publish(tmp_path / "out", data_dir=str(RELEASE), cache_dir=cache_dir, license=licence)
    assert not (tmp_path / "out").exists()


def test_a_hub_licence_id_is_named_as_it_is(tmp_path, cache_dir):
    out = tmp_path / "out"
    publish_module.publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, license="mit", stats=False)
    card = (out / "README.md").read_text()
    assert "\nlicense: mit\n" in card and "license_name" not in card
