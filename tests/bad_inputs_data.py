"""Training-data rows of the bad-input table (``test_bad_inputs.py``): every format (TSV, JSON Lines,
a parquet export) passes one row validator, so each bad row is refused naming the file, the line or
row, and the field; control characters and odd label spellings are read exactly or refused; an empty
split and a folder holding two formats are refused; ``thmm-publish`` and ``thmm-stats`` never write
into a folder holding files they did not write. Data rows call ``load_patent_splits`` (no training)
unless the message must come from ``thmm-train``. Each row's files are written under the case's ``tmp``."""

from __future__ import annotations

import json
import shutil

from bad_input_table import Case
from conftest import QUICKSTART_DATA
from dataset_script import MAX_FIELD_CHARS, PatentDataError, read_patent_tsv
from thmm.outputs import OutputDirError

LIMIT = f"more than the limit of {MAX_FIELD_CHARS:,} per field"
SPLIT_STEMS = {"train": "train", "validation": "dev", "test": "test"}
TRAIN_PARQUET = "{tmp}/export/data/train-00000-of-00001.parquet"
FOREIGN = "the folder holds files that thmm did not write (notes.txt)"


# ---- setups -------------------------------------------------------------------------------------


def loads(make, **options):
    """An "api" row's call: ``load_patent_splits(folder, **options)`` on the folder ``make(env)``
    returns (made first, outside the call), with a cache under the case's ``tmp``."""
    from dataset_script import load_patent_splits

    def setup(env):
        folder = make(env)
        return lambda: load_patent_splits(folder, cache_dir=str(env.tmp / "cache"), **options)

    return setup


def tsv_edit(line: int, field: str, value: str, name: str = "train.tsv"):
    """The quickstart data with one value of ``name`` replaced (written byte for byte, line ends kept)."""

    def make(env):
        env.copy("data")
        path = env.data / name
        lines = path.read_text(encoding="utf-8").split("\n")
        header = lines[0].split("\t")
        cells = lines[line - 1].split("\t")
        cells[header.index(field)] = value
        lines[line - 1] = "\t".join(cells)
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))  # "\udce9": the byte 0xe9
        return env.data

    return make


def tsv_bytes(change, name: str = "train.tsv"):
    """The quickstart data with ``name``'s bytes passed through ``change``."""

    def make(env):
        env.copy("data")
        path = env.data / name
        path.write_bytes(change(path.read_bytes()))
        return env.data

    return make


def header_only(name: str = "dev.tsv"):
    return tsv_bytes(lambda data: data.split(b"\n", 1)[0] + b"\n", name)


def rows_of(split: str) -> list[dict]:
    return read_patent_tsv(QUICKSTART_DATA / f"{SPLIT_STEMS[split]}.tsv")


def parquet_export(edit=None, split: str = "train", table=None):
    """``{tmp}/export``: the quickstart splits as parquet files ``data/{split}-00000-of-00001.parquet``
    (the layout thmm-publish writes); ``edit(rows)`` changes ``split``'s rows (a list of dicts; every
    split's for ``split="*"``) first, or ``table(rows)`` builds its Arrow table (for columns of other
    types)."""

    def make(env):
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = env.tmp / "export"
        (folder / "data").mkdir(parents=True)
        for name in SPLIT_STEMS:
            rows = rows_of(name)
            if split in (name, "*") and edit is not None:
                edit(rows)
            arrow = table(rows) if name == split and table is not None else pa.Table.from_pylist(rows)
            pq.write_table(arrow, folder / "data" / f"{name}-00000-of-00001.parquet")
        return folder

    return make


def row_set(index: int, **values):
    """An ``edit`` that sets values of row ``index`` (0-based) and drops any derived column it names
    as ``None``."""

    def edit(rows):
        for key, value in values.items():
            if value is None:
                rows[index].pop(key)
            else:
                rows[index][key] = value

    return edit


def without_derived(rows):
    for row in rows:
        del row["sections"], row["classes"]


def with_claims(rows):
    import pyarrow as pa

    return pa.Table.from_pylist([{**row, "claims": "1. A shoe."} for row in rows])


def not_parquet(env):
    folder = parquet_export()(env)
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not really parquet")
    return folder


def column_of(name: str, values):
    def table(rows):
        import pyarrow as pa

        arrow = pa.Table.from_pylist(rows)
        return arrow.set_column(arrow.column_names.index(name), name, pa.array(values(len(rows))))

    return table


def jsonl_folder(edit=None, split: str = "train", raw=None):
    """``{tmp}/jsonl``: the quickstart splits as ``train.jsonl``/``dev.jsonl``/``test.jsonl``;
    ``edit(objects)`` changes ``split``'s objects, ``raw(lines)`` its text lines (after ``edit``)."""

    def make(env):
        folder = env.tmp / "jsonl"
        folder.mkdir()
        for name, stem in SPLIT_STEMS.items():
            objects = [{key: row[key] for key in ("patent_id", "title", "abstract", "labels")}
                       for row in rows_of(name)]
            if name == split and edit is not None:
                edit(objects)
            lines = [json.dumps(obj) for obj in objects]
            if name == split and raw is not None:
                lines = raw(lines)
            (folder / f"{stem}.jsonl").write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
        return folder

    return make


def with_parquet_beside(env):
    """The quickstart TSVs with a stale parquet export in ``data/`` beside them."""
    export = parquet_export()(env)
    env.copy("data")
    shutil.copytree(export / "data", env.data / "data")
    return env.data


def with_jsonl_beside(env):
    env.copy("data")
    shutil.copy(jsonl_folder()(env) / "train.jsonl", env.data / "train.jsonl")
    return env.data


def without_split_file(make, name):
    def remove(env):
        folder = make(env)
        (folder / name).unlink()
        return folder

    return remove


def reads(make, check, **options):
    """An "api" row that must succeed: ``check(splits)`` (asserts) on what ``load_patent_splits`` returns."""
    load = loads(make, **options)

    def setup(env):
        call = load(env)
        return lambda: check(call())

    return setup


def train_row_is(row: int, **expected):
    """A check that train row ``row`` (0-based) has the ``expected`` values, exactly."""

    def check(splits):
        for key, value in expected.items():
            assert splits["train"][row][key] == value, (key, "the value was changed")

    return check


def read_as_released(splits):
    """Every split as the reader gives the quickstart TSVs, with the builder's features."""
    from dataset_script.builder import FEATURES

    for split in SPLIT_STEMS:
        assert splits[split].features == FEATURES
        assert splits[split].to_list() == rows_of(split)


LONG_ABSTRACT = "word " * 30_000  # 150,000 characters: beyond csv's default 131,072, within the limit


# ---- output folders -----------------------------------------------------------------------------


def users_folder(env, name="out", inside=True):
    """``{tmp}/<name>`` holding a user's ``notes.txt`` (when ``inside``), beside a user's ``sibling.txt``."""
    folder = env.tmp / name
    folder.mkdir(exist_ok=True)
    if inside:
        (folder / "notes.txt").write_text("mine\n")
    (env.tmp / "sibling.txt").write_text("mine too\n")
    return folder


def users_files_intact(env):
    assert (env.tmp / "out" / "notes.txt").read_text() == "mine\n"
    assert (env.tmp / "sibling.txt").read_text() == "mine too\n"
    assert sorted(p.name for p in (env.tmp / "out").iterdir()) == ["notes.txt"], "something was written"
    assert not list(env.tmp.glob(".thmm-*")), "a staging folder was left"


def publish_argv(env, out, *extra):
    return ["--out", str(out), "--data-dir", str(QUICKSTART_DATA), "--cache-dir", str(env.tmp / "cache"), *extra]


def stats_argv(env, out, *extra):
    return ["--out", str(out), "--data-dir", str(QUICKSTART_DATA), "--cache-dir", str(env.tmp / "cache"), *extra]


def marked_by(command):
    def make(env):
        from thmm.outputs import claim_output_dir

        folder = env.tmp / "out"
        claim_output_dir(folder, "--out", command, replace=False)
        (folder / "notes.txt").write_text("mine\n")
        return folder

    return make


def foreign_shard(env):
    """An earlier thmm-publish output into which a user copied a parquet file of their own."""
    from thmm.outputs import claim_output_dir

    folder = env.tmp / "out"
    claim_output_dir(folder, "--out", "thmm-publish", replace=False)
    (folder / "data").mkdir()
    (folder / "data" / "train-extra.parquet").write_bytes(b"mine")
    return folder


def claims_users_folder(env):
    from thmm.outputs import claim_output_dir

    folder = users_folder(env)
    return lambda: claim_output_dir(folder, "--output-dir", "thmm-train", replace=True)


def nothing_written(env):
    assert not (env.tmp / "out").exists(), "the output folder was created"
    assert not list(env.tmp.glob(".thmm-*")), "a staging folder was left"


def refusal(entry, argv_of, make, *words, after=None):
    return Case(entry, lambda env: argv_of(env, make(env)), 2, words, after=after)


# ---- the rows -----------------------------------------------------------------------------------

CASES = {
    # ---- a parquet export passes the TSV reader's checks, naming file, row and field
    "data-parquet-empty-labels": Case(
        "api", loads(parquet_export(row_set(11, labels=[], sections=[], classes=[]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 12, field 'labels': empty label list",)),
    "data-parquet-duplicate-id": Case(
        "api", loads(parquet_export(row_set(11, patent_id="QS0001"))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 12, field 'patent_id': patent_id 'QS0001' already appears on row 1",)),
    "data-parquet-duplicate-id-across-splits-files": Case(
        "api", loads(parquet_export(row_set(1, patent_id="QS0241"), split="validation")), PatentDataError,
        ("{tmp}/export/data/validation-00000-of-00001.parquet, row 2, field 'patent_id'", "already appears on row 1")),
    "data-parquet-empty-title-and-abstract": Case(
        "api", loads(parquet_export(row_set(11, title=" ", abstract=""))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 12, field 'title': title and abstract are both empty",)),
    "data-parquet-class-label": Case(
        "api", loads(parquet_export(row_set(11, labels=["A43"], sections=["A"], classes=["A43"]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 12, field 'labels': 'A43' is a class; labels must be subclass codes",)),
    "data-parquet-label-lower-case": Case(
        "api", loads(parquet_export(row_set(0, labels=["a43b"]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'labels'", "codes are upper case: 'A43B'")),
    "data-parquet-label-inner-space": Case(
        "api", loads(parquet_export(row_set(0, labels=["A43 B"]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'labels': malformed CPC code 'A43 B'",)),
    "data-parquet-label-trailing-space": Case(
        "api", loads(parquet_export(row_set(0, labels=["A43B "]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'labels'", "surrounding whitespace")),
    "data-parquet-label-fullwidth-digit": Case(
        "api", loads(parquet_export(row_set(0, labels=["A\uff143B"]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'labels'", "non-ASCII character U+FF14")),
    "data-parquet-labels-a-string": Case(
        "api", loads(parquet_export(table=column_of("labels", lambda n: ["['A43B']"] * n))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'labels': expected a list of subclass codes",)),
    "data-parquet-title-integers": Case(
        "api", loads(parquet_export(table=column_of("title", lambda n: list(range(n))))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'title': expected a string, got number 0",)),
    "data-parquet-title-null": Case(
        "api", loads(parquet_export(table=column_of("title", lambda n: [None] + ["x"] * (n - 1)))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'title': expected a string, got null",)),
    "data-parquet-nul-in-title": Case(
        "api", loads(parquet_export(row_set(3, title="Shoe\x00sole"))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 4, field 'title': control character U+0000 (NUL) at character 5",)),
    "data-parquet-form-feed-in-abstract": Case(
        "api", loads(parquet_export(row_set(3, abstract="A sole.\x0cA heel."))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 4, field 'abstract': control character U+000C (form feed)",)),
    "data-parquet-id-zero-width-space": Case(
        "api", loads(parquet_export(row_set(3, patent_id="QS\u200b0004"))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 4, field 'patent_id': invisible format character U+200B",)),
    "data-parquet-field-too-long": Case(
        "api", loads(parquet_export(row_set(0, abstract="x" * (MAX_FIELD_CHARS + 1)))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'abstract': {MAX_FIELD_CHARS + 1:,} characters, {LIMIT}",)),
    "data-parquet-sections-not-the-labels": Case(
        "api", loads(parquet_export(row_set(0, sections=["H"]))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'sections': ['H'] is not the labels' sections",)),
    "data-parquet-unknown-column": Case(
        "api", loads(parquet_export(table=with_claims)), PatentDataError,
        (f"{TRAIN_PARQUET}, row 1, field 'claims': unknown field 'claims'",)),
    "data-parquet-files-with-other-columns": Case(
        "api", loads(parquet_export(without_derived)), PatentDataError,
        ("{tmp}/export/data/", "has the columns", "all files of an export need the same")),
    "data-parquet-empty-split": Case(
        "api", loads(parquet_export(lambda rows: rows.clear(), split="validation")), PatentDataError,
        ("{tmp}/export/data/validation-00000-of-00001.parquet: no documents",)),
    "data-parquet-not-parquet": Case(
        "api", loads(not_parquet), PatentDataError, (f"{TRAIN_PARQUET}: not a readable parquet file",)),
    "data-parquet-reads-as-released": Case("api", reads(parquet_export(), read_as_released), None),
    "data-parquet-without-derived-columns-reads": Case(
        "api", reads(parquet_export(without_derived, split="*"), read_as_released), None),
    "data-parquet-drop-option-applies": Case(
        "api", reads(parquet_export(row_set(11, labels=[], sections=[], classes=[])),
                     train_row_is(11, **rows_of("train")[12]), empty_labels="drop"), None),
    # ---- JSON Lines: read with a JSON parser, fields of their JSON types, the same row checks
    "data-jsonl-title-number": Case(
        "api", loads(jsonl_folder(row_set(2, title=5))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'title': expected a string, got number 5",)),
    "data-jsonl-title-bool": Case(
        "api", loads(jsonl_folder(row_set(2, title=True))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'title': expected a string, got boolean true",)),
    "data-jsonl-labels-a-string": Case(
        "api", loads(jsonl_folder(row_set(2, labels="['A43B']"))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'labels': expected a list of subclass codes",)),
    "data-jsonl-label-a-number": Case(
        "api", loads(jsonl_folder(row_set(2, labels=["A43B", 12]))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'labels': label 12 is a number 12",)),
    "data-jsonl-empty-labels": Case(
        "api", loads(jsonl_folder(row_set(2, labels=[]))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'labels': empty label list",)),
    "data-jsonl-class-label": Case(
        "api", loads(jsonl_folder(row_set(2, labels=["A43"]))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'labels': 'A43' is a class",)),
    "data-jsonl-missing-field": Case(
        "api", loads(jsonl_folder(row_set(2, abstract=None))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3, field 'abstract': missing field 'abstract'",)),
    "data-jsonl-duplicate-key": Case(
        "api", loads(jsonl_folder(raw=lambda lines: [lines[0][:-1] + ', "title": "again"}', *lines[1:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 1: not valid JSON (the key 'title' appears twice",)),
    "data-jsonl-nan": Case(
        "api", loads(jsonl_folder(raw=lambda lines: [lines[0].replace('"title": "', '"t": NaN, "title": "', 1),
                                                     *lines[1:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 1: not valid JSON (NaN is not valid JSON)",)),
    "data-jsonl-not-json": Case(
        "api", loads(jsonl_folder(raw=lambda lines: [*lines[:4], "patent_id\ttitle", *lines[4:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 5: not valid JSON",)),
    "data-jsonl-not-an-object": Case(
        "api", loads(jsonl_folder(raw=lambda lines: ['["QS1", "t", "a", ["A43B"]]', *lines[1:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 1: expected a JSON object",)),
    "data-jsonl-empty-line": Case(
        "api", loads(jsonl_folder(raw=lambda lines: [*lines[:2], "", *lines[2:]])), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 3: empty line",)),
    "data-jsonl-nul-escape": Case(
        "api", loads(jsonl_folder(row_set(0, title="Shoe\x00sole"))), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 1, field 'title': control character U+0000 (NUL)",)),
    "data-jsonl-lone-surrogate": Case(
        "api", loads(jsonl_folder(raw=lambda lines: [lines[0].replace('"title": "', '"title": "\\ud800', 1),
                                                     *lines[1:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 1, field 'title': lone surrogate",)),
    "data-jsonl-deeply-nested": Case(
        "api", loads(jsonl_folder(raw=lambda lines: ["[" * 100_000 + "]" * 100_000, *lines[1:]])),
        PatentDataError, ("{tmp}/jsonl/train.jsonl, line 1",)),
    "data-jsonl-empty-file": Case(
        "api", loads(jsonl_folder(lambda objects: objects.clear(), split="test")), PatentDataError,
        ("{tmp}/jsonl/test.jsonl: no documents",)),
    "data-jsonl-bom": Case(
        "api", loads(jsonl_folder(raw=lambda lines: ["\ufeff" + lines[0], *lines[1:]])), PatentDataError,
        ("{tmp}/jsonl/train.jsonl, line 1: the file starts with a UTF-8 byte-order mark",)),
    "data-jsonl-line-separator-is-text": Case(
        "api", reads(jsonl_folder(row_set(0, abstract="A sole.\u2028A heel.")),
                     train_row_is(0, abstract="A sole.\u2028A heel.")), None),
    "data-jsonl-reads-as-released": Case("api", reads(jsonl_folder(), read_as_released), None),
    # ---- empty splits, in any format, are refused naming the file
    # ---- reader_processes: how many processes read a large TSV or JSONL file (the rows do not change)
    "data-reader-processes-negative": Case(
        "api", loads(lambda env: env.copy("data"), reader_processes=-1), ValueError,
        ("reader_processes must be 0 (one per core) or a number of processes, got -1",)),
    "data-reader-processes-two-reads-as-released": Case(
        "api", reads(lambda env: env.copy("data"), read_as_released, reader_processes=2), None),
    "data-tsv-header-only-dev": Case(
        "api", loads(header_only()), PatentDataError, ("{data}/dev.tsv: no documents (only a header)",)),
    "data-tsv-header-only-dev-train": Case(
        "train", lambda env: env.train_argv(dataset=header_only()(env)), 2,
        ("error: {data}/dev.tsv: no documents (only a header)",)),
    "data-tsv-all-rows-dropped": Case(
        "api", loads(tsv_bytes(lambda data: data.split(b"\n", 1)[0] + b"\nQS9\tT\tA\t[]\n", "test.tsv"),
                     empty_labels="drop"),
        PatentDataError, ("{data}/test.tsv: no documents left: the explicit filter options dropped all 1",)),
    # ---- a folder holding two formats is refused, naming both
    "data-tsv-and-parquet": Case(
        "api", loads(with_parquet_beside), PatentDataError,
        ("{data}: holds TSV splits (train.tsv, dev.tsv, test.tsv) and a parquet export "
         "(data/test-00000-of-00001.parquet", "unclear which to read", "move the other files")),
    "data-tsv-and-parquet-train": Case(
        "train", lambda env: env.train_argv(dataset=with_parquet_beside(env)), 2,
        ("{data}: holds TSV splits", "and a parquet export")),
    "data-tsv-and-jsonl": Case(
        "api", loads(with_jsonl_beside), PatentDataError,
        ("{data}: holds TSV splits", "and JSONL splits (train.jsonl)")),
    "data-jsonl-split-missing": Case(
        "api", loads(without_split_file(jsonl_folder(), "dev.jsonl")), FileNotFoundError,
        ("{tmp}/jsonl has no dev.jsonl",)),
    # ---- field sizes: csv's 131,072 is no limit; MAX_FIELD_CHARS is, named with file, line, field
    "data-tsv-150k-abstract-reads": Case(
        "api", reads(tsv_edit(2, "abstract", LONG_ABSTRACT), train_row_is(0, abstract=LONG_ABSTRACT)), None),
    "data-tsv-malformed-group-symbol": Case(
        "api", loads(tsv_edit(3, "labels", "['G05D1/2']")), PatentDataError,
        ("{tmp}/data/train.tsv, line 3, field 'labels': malformed CPC symbol 'G05D1/2'", "'G05D 1/02'")),
    "data-tsv-group-symbol-twice": Case(
        "api", loads(tsv_edit(3, "labels", "['G05D1/02', 'G05D 1/02']")), PatentDataError,
        ("{tmp}/data/train.tsv, line 3, field 'labels': code 'G05D 1/02' is listed twice",)),
    "data-tsv-field-too-long": Case(
        "api", loads(tsv_edit(2, "abstract", "x" * (MAX_FIELD_CHARS + 1))), PatentDataError,
        (f"{{data}}/train.tsv, line 2, field 'abstract': {MAX_FIELD_CHARS + 1:,} characters, {LIMIT}",)),
    "data-tsv-field-too-long-quoted": Case(
        "api", loads(tsv_edit(3, "title", '"' + "x" * (MAX_FIELD_CHARS + 1) + '"')), PatentDataError,
        (f"{{data}}/train.tsv, line 3, field 'title': {MAX_FIELD_CHARS + 1:,} characters",)),
    # ---- control characters and line ends: read exactly or refused with file, line, field
    "data-tsv-nul-byte": Case(
        "api", loads(tsv_edit(3, "title", "Shoe\x00sole")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'title': control character U+0000 (NUL) at character 5",)),
    "data-tsv-form-feed": Case(
        "api", loads(tsv_edit(3, "abstract", "A sole.\x0cA heel.")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'abstract': control character U+000C (form feed) at character 8",)),
    "data-tsv-vertical-tab": Case(
        "api", loads(tsv_edit(3, "abstract", "A sole.\x0bA heel.")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'abstract': control character U+000B (vertical tab)",)),
    "data-tsv-next-line-c1": Case(
        "api", loads(tsv_edit(3, "title", "Shoe\x85sole")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'title': control character U+0085",)),
    "data-tsv-escape": Case(
        "api", loads(tsv_edit(3, "title", "Shoe\x1b[31msole")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'title': control character U+001B (escape)",)),
    "data-tsv-lone-cr-in-value": Case(
        "api", loads(tsv_edit(3, "title", "Shoe\rsole")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'title': a carriage return (\\r) that is not part of a CRLF line end",)),
    "data-tsv-cr-only-line-ends": Case(
        "api", loads(tsv_bytes(lambda data: data.replace(b"\n", b"\r"))), PatentDataError,
        ("{data}/train.tsv, line 1, field 'labels': a carriage return", "line ends must be LF or CRLF")),
    "data-tsv-crlf-reads": Case(
        "api", reads(tsv_bytes(lambda data: data.replace(b"\n", b"\r\n")), train_row_is(0, **rows_of("train")[0])),
        None),
    "data-tsv-quoted-line-break-reads": Case(
        "api", reads(tsv_edit(2, "title", '"Shoe\r\nsole"'), train_row_is(0, title="Shoe\r\nsole")), None),
    "data-tsv-bom": Case(
        "api", loads(tsv_bytes(lambda data: b"\xef\xbb\xbf" + data)), PatentDataError,
        ("{data}/train.tsv, line 1, field 'patent_id': the file starts with a UTF-8 byte-order mark",)),
    "data-tsv-bom-inside": Case(
        "api", loads(tsv_edit(3, "patent_id", "\ufeffQS0002")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'patent_id': invisible format character U+FEFF",)),
    "data-tsv-trailing-tab": Case(
        "api", loads(tsv_edit(3, "labels", "['B64C']\t")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'column 5': expected 4 tab-separated fields, got 5",)),
    "data-tsv-trailing-tab-in-header": Case(
        "api", loads(tsv_bytes(lambda data: data.replace(b"labels\n", b"labels\t\n", 1))), PatentDataError,
        ("{data}/train.tsv, line 1, field '': header column '' is not one of",)),
    "data-tsv-not-utf8": Case(
        "api", loads(tsv_edit(3, "title", "caf\udce9")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'title': byte(s) b'\\xe9' are not valid UTF-8",)),
    # ---- label spellings: only the release's, codes exact
    "data-tsv-label-inner-space": Case(
        "api", loads(tsv_edit(3, "labels", "['A43 B']")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels': malformed CPC code 'A43 B'",)),
    "data-tsv-label-lower-case": Case(
        "api", loads(tsv_edit(3, "labels", "['a43b']")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels'", "(codes are upper case: 'A43B')")),
    "data-tsv-label-trailing-space": Case(
        "api", loads(tsv_edit(3, "labels", "['A43B ']")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels'", "'A43B ' (it has surrounding whitespace)")),
    "data-tsv-label-arabic-digit": Case(
        "api", loads(tsv_edit(3, "labels", "['A\u06643B']")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels'", "non-ASCII character U+0664")),
    "data-tsv-label-list-form-feed": Case(
        "api", loads(tsv_edit(3, "labels", "['A43B'\x0c]")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels'", "is not a single-quoted code")),
    "data-tsv-label-list-double-quotes": Case(
        "api", loads(tsv_edit(3, "labels", '["A43B"]')), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels'",)),
    "data-tsv-class-label": Case(
        "api", loads(tsv_edit(3, "labels", "['A43']")), PatentDataError,
        ("{data}/train.tsv, line 3, field 'labels': 'A43' is a class",)),
    # ---- thmm-publish / thmm-stats: only into new, empty or their own folders, checked first
    "data-publish-users-folder": refusal(
        "publish", publish_argv, users_folder, "--out {tmp}/out: " + FOREIGN, "nothing there is deleted or overwritten",
        after=users_files_intact),
    "data-stats-users-folder": refusal(
        "stats", stats_argv, users_folder, "--out {tmp}/out: " + FOREIGN, after=users_files_intact),
    "data-publish-into-the-data-folder": Case(
        "publish", lambda env: publish_argv(env, env.copy("data")), 2,
        ("--out {data}: the folder holds files that thmm did not write (cpc_titles.tsv, dev.tsv",)),
    "data-stats-into-stats-of-another-command": refusal(
        "stats", stats_argv, marked_by("thmm-publish"), "--out {tmp}/out: the folder holds the output of thmm-publish"),
    "data-publish-foreign-shard-in-own-output": refusal(
        "publish", publish_argv, foreign_shard,
        "--out {tmp}/out: data/train-extra.parquet would be overwritten or mixed"),
    "data-publish-out-under-a-file": refusal(
        "publish", publish_argv, lambda env: env.file() / "out", "--out {tmp}/file.txt/out: {tmp}/file.txt is a file"),
    "data-stats-out-a-file": refusal(
        "stats", stats_argv, lambda env: env.file(), "--out {tmp}/file.txt: is a file, not a folder"),
    "data-stats-out-empty-string": refusal("stats", stats_argv, lambda env: "", "--out: empty path"),
    "data-publish-bad-data-after-out-check": Case(
        "publish", lambda env: ["--out", str(env.tmp / "out"), "--data-dir", str(header_only()(env)),
                                "--cache-dir", str(env.tmp / "cache")], 2,
        ("{data}/dev.tsv: no documents (only a header)",), after=nothing_written),
    "data-claim-users-folder-api": Case(
        "api", claims_users_folder, OutputDirError,
        ("--output-dir {tmp}/out: " + FOREIGN,),
        after=users_files_intact),
}

CASES.update({
    # a parquet export is loaded as written: its group symbols, in any notation the readers take, are stored
    # in canonical form as from TSV and JSON Lines (and derived columns follow them)
    "data-parquet-group-symbols-canonical": Case(
        "api", reads(parquet_export(row_set(0, labels=["B64C1/00", "G06N"], sections=["B", "G"], classes=["B64", "G06"])),
                     train_row_is(0, labels=["B64C 1/00", "G06N"], sections=["B", "G"], classes=["B64", "G06"])),
        None),
})

CASES.update({
    # invisible characters alone are no text: the tokenizer drops them and would see an empty document
    "data-parquet-invisible-title": Case(
        "api", loads(parquet_export(row_set(11, title="\u200b\ufeff", abstract=" "))), PatentDataError,
        (f"{TRAIN_PARQUET}, row 12, field 'title': title and abstract are both empty",)),
})
