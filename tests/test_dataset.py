"""Tests of dataset_script: strict readers, the Uspto70k builder, up-sampling, publishing and statistics.

All offline, on fixtures under tests/fixtures/dataset (made-up patents). The tests that read the real
data in ../shared skip when it is absent.
"""

import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

import dataset_script.publish as publish_module
from dataset_script import (
    PatentDataError,
    Uspto70k,
    load_patent_splits,
    parse_label_list,
    read_patent_tsv,
    read_wipo_alpha,
    upsample_indices,
)
from dataset_script.publish import publish
from dataset_script.stats import label_statistics
from dataset_script.stats import main as stats_main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dataset"
RELEASE = FIXTURES / "release"
BAD = FIXTURES / "bad"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def build(cache_dir, **kwargs):
    builder = Uspto70k(cache_dir=cache_dir, **kwargs)
    builder.download_and_prepare()
    return builder, builder.as_dataset()


@pytest.fixture(scope="module")
def release_splits(cache_dir):
    return build(cache_dir, data_dir=str(RELEASE))[1]


# ---- building ----------------------------------------------------------------------------------


def test_builder_features_and_rows(release_splits):
    assert list(release_splits) == ["train", "validation", "test"]
    assert {s: len(d) for s, d in release_splits.items()} == {"train": 12, "validation": 4, "test": 4}
    features = release_splits["train"].features
    assert features["patent_id"] == datasets.Value("string")
    for name in ("labels", "sections", "classes"):
        assert features[name] == datasets.List(datasets.Value("string"))

    train = release_splits["train"].to_list()
    assert train[1] == {
        "patent_id": "9000002",
        "title": "Shelf talker with release liner",
        "abstract": "A shelf label carries adhesive on its back, covered by a release liner that is cut into tabs.",
        "labels": ["G09F", "Y10T"],
        "sections": ["G", "Y"],
        "classes": ["G09", "Y10"],
    }
    assert train[2]["title"] == 'PROCESS FOR CATCHING "PIRATE" DRONES'  # CSV quoting undone
    assert train[5]["labels"] == ["B64F", "B64C"]  # release order preserved
    assert (train[5]["sections"], train[5]["classes"]) == (["B"], ["B64"])
    assert train[11]["abstract"] == "" and train[11]["title"].startswith("Rotor blade")  # title only is fine
    dev = release_splits["validation"].to_list()
    assert dev[1]["title"] == '"SMART" SHELF LABEL'
    assert dev[3]["labels"] == ["B32B", "Y10T", "G09F"] and dev[3]["classes"] == ["B32", "G09", "Y10"]


def test_crlf_files_give_the_same_rows(tmp_path, cache_dir, release_splits):
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        data = (RELEASE / name).read_bytes()
        assert b"\r" not in data
        (tmp_path / name).write_bytes(data.replace(b"\n", b"\r\n"))
    _, splits = build(cache_dir, data_dir=str(tmp_path))
    for split in release_splits:
        assert splits[split].to_list() == release_splits[split].to_list()


def test_download_path_with_file_urls(cache_dir, release_splits):
    builder, splits = build(cache_dir, base_url=RELEASE.as_uri())
    assert builder.config.base_url.startswith("file://")
    for split in release_splits:
        assert splits[split].to_list() == release_splits[split].to_list()
    assert Uspto70k.builder_configs["uspto70k"].base_url == (
        "https://raw.githubusercontent.com/boschresearch/hierarchical_patent_classification_ecir2021/main/data/uspto-release"
    )


def test_data_files_override(cache_dir, release_splits):
    files = {"train": str(RELEASE / "train.tsv"), "test": str(RELEASE / "test.tsv")}
    _, splits = build(cache_dir, data_files=files)
    assert list(splits) == ["train", "test"]
    assert splits["test"].to_list() == release_splits["test"].to_list()


def test_changed_files_are_not_served_from_a_stale_cache(tmp_path, cache_dir):
    data = tmp_path / "data"
    shutil.copytree(RELEASE, data)
    first, splits = build(cache_dir, data_dir=str(data))
    assert len(splits["test"]) == 4
    lines = (data / "test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "test.tsv").write_text("".join(lines[:-1]), encoding="utf-8")
    second, splits = build(cache_dir, data_dir=str(data))
    assert len(splits["test"]) == 3
    assert first.cache_dir != second.cache_dir


def test_build_errors_name_the_file(tmp_path, cache_dir):
    shutil.copytree(RELEASE, tmp_path / "data")
    shutil.copy(BAD / "label_unquoted.tsv", tmp_path / "data" / "dev.tsv")
    with pytest.raises(PatentDataError, match=r"dev\.tsv, line 3, field 'labels'"):
        build(cache_dir, data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        build(cache_dir, data_dir=str(tmp_path))


# ---- strict reading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, line, field, fragment",
    [
        ("label_unquoted.tsv", 3, "labels", "'A43B' of '[A43B]' is not a single-quoted code"),
        ("label_unclosed.tsv", 2, "labels", "expected a list of quoted codes"),
        ("label_not_a_list.tsv", 3, "labels", "expected a list of quoted codes"),
        ("missing_column.tsv", 1, "labels", "missing column 'labels'"),
        ("empty_text.tsv", 3, "title", "title and abstract are both empty"),
        ("code_too_short.tsv", 2, "labels", "malformed CPC code 'A4'"),
        ("code_lower_case.tsv", 3, "labels", "codes are upper case: 'A43B'"),
        ("code_is_a_class.tsv", 2, "labels", "must be subclass codes"),
        ("code_listed_twice.tsv", 2, "labels", "listed twice"),
        ("too_few_fields.tsv", 3, "labels", "expected 4 tab-separated fields, got 3"),
        ("too_many_fields.tsv", 2, "column 5", "expected 4 tab-separated fields, got 5"),
        ("empty_labels.tsv", 3, "labels", "empty label list"),
        ("duplicate_id.tsv", 4, "patent_id", "already appears on line 2"),
        ("bad_quoting.tsv", 3, "title", "bad CSV quoting"),
    ],
)
def test_bad_input_raises_an_actionable_error(name, line, field, fragment):
    with pytest.raises(PatentDataError) as info:
        read_patent_tsv(BAD / name)
    message = str(info.value)
    assert message.startswith(f"{BAD / name}, line {line}, field {field!r}: "), message
    assert fragment in message
    assert (info.value.line, info.value.field) == (line, field)


def test_cpc_only_codes_fail_under_ipc():
    assert read_patent_tsv(BAD / "cpc_code_in_ipc.tsv", scheme="cpc")[0]["labels"] == ["B32B", "Y10T"]
    with pytest.raises(PatentDataError, match=r"line 2, field 'labels': malformed IPC code 'Y10T'"):
        read_patent_tsv(BAD / "cpc_code_in_ipc.tsv", scheme="ipc")


def test_bom_and_non_utf8_bytes(tmp_path):
    good = (RELEASE / "dev.tsv").read_bytes()
    bom = tmp_path / "bom.tsv"
    bom.write_bytes(b"\xef\xbb\xbf" + good)
    with pytest.raises(PatentDataError, match=rf"{bom}, line 1, field 'patent_id': .*byte-order mark"):
        read_patent_tsv(bom)
    latin1 = tmp_path / "latin1.tsv"
    lines = good.split(b"\n")
    lines[2] = lines[2].replace(b"shows prices", b"shows caf\xe9 prices")  # an ISO-8859-1 byte
    latin1.write_bytes(b"\n".join(lines))
    with pytest.raises(
        PatentDataError, match=rf"{latin1}, line 3, field 'abstract': byte\(s\) b'\\xe9' are not valid UTF-8"
    ):
        read_patent_tsv(latin1)


def test_explicit_filters_are_counted():
    report = {}
    rows = read_patent_tsv(BAD / "empty_labels.tsv", empty_labels="drop", report=report)
    assert [r["patent_id"] for r in rows] == ["8000001", "8000003"]
    assert report == {"rows_read": 3, "dropped_empty_labels": 1, "dropped_duplicate_ids": 0, "rows": 2}
    assert read_patent_tsv(BAD / "empty_labels.tsv", empty_labels="keep")[1]["labels"] == []
    report = {}
    rows = read_patent_tsv(BAD / "duplicate_id.tsv", duplicate_ids="drop", report=report)
    assert [r["title"] for r in rows] == ["Good patent", "Second patent"] and report["dropped_duplicate_ids"] == 1
    with pytest.raises(ValueError, match="empty_labels must be one of"):
        read_patent_tsv(BAD / "empty_labels.tsv", empty_labels="ignore")


def test_label_parser_is_strict_and_never_evaluates():
    assert parse_label_list("['A43B', 'Y10T']") == ["A43B", "Y10T"]
    assert parse_label_list("[]") == []
    for text in ("[A43B]", "['A43B'", '"A43B"', "['A43B',]", "['A43B' 'Y10T']", "[__import__('os')]", " ['A43B']"):
        with pytest.raises(ValueError):
            parse_label_list(text)


# ---- up-sampling -------------------------------------------------------------------------------


def test_upsampling_reaches_ten_and_leaves_dev_and_test(cache_dir, release_splits):
    builder, splits = build(cache_dir, data_dir=str(RELEASE), upsample=True)
    train = splits["train"].to_list()
    original = release_splits["train"].to_list()
    assert train[: len(original)] == original
    assert all(row in original for row in train[len(original) :])  # only copies of real rows
    counts = Counter(code for row in train for code in row["labels"])
    assert set(counts) == {code for row in original for code in row["labels"]}
    assert min(counts.values()) >= 10
    for split in ("validation", "test"):
        assert splits[split].to_list() == release_splits[split].to_list()
    summary = builder.build_summary
    assert summary["train"]["upsampled_rows_added"] == len(train) - len(original) > 0
    assert summary["validation"]["upsampled_rows_added"] == 0

    cached = Uspto70k(cache_dir=cache_dir, data_dir=str(RELEASE), upsample=True)
    cached.download_and_prepare()
    assert cached.build_summary == summary  # reported from the cache too


def test_upsample_indices_rarest_first_and_deterministic():
    label_lists = [["A01B"]] * 30 + [["A01B", "B64C"]] * 2 + [["B64C"]] + [["H04L", "A01B"]]
    added = upsample_indices(label_lists, min_count=10, seed=1)
    assert added == upsample_indices(label_lists, min_count=10, seed=1)
    counts = Counter(code for i in list(range(len(label_lists))) + added for code in label_lists[i])
    assert counts["H04L"] == 10 and counts["B64C"] == 10
    # rarest first: H04L (1 occurrence) gets its 9 copies, then B64C (3) its 7, cycling through its
    # carriers, starting with the row that carries no label already at 10 (index 32)
    assert added[:9] == [33] * 9 and added[9] == 32 and len(added) == 16
    assert sorted(added[9:]) == [30, 30, 31, 31, 32, 32, 32]


# ---- publishing --------------------------------------------------------------------------------


def test_publish_then_load_dataset_round_trip(tmp_path, cache_dir):
    out = tmp_path / "export"
    publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=2, stats=False)  # 6 train shards
    summary = publish(out, data_dir=str(RELEASE), cache_dir=cache_dir, max_shard_rows=5, license="cc-by-4.0")
    assert summary["rows"] == {"train": 12, "validation": 4, "test": 4}
    assert sorted(p.name for p in (out / "data").glob("train-*")) == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)
    ]
    assert (out / "label_distribution.png").read_bytes().startswith(b"\x89PNG")

    _, built = build(cache_dir, data_dir=str(RELEASE))
    loaded = datasets.load_dataset(str(out), cache_dir=cache_dir)
    assert list(loaded) == list(built)
    for split in built:
        assert loaded[split].features == built[split].features
        assert loaded[split].to_list() == built[split].to_list()

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data.configs[0]["config_name"] == "uspto70k"
    assert card.data.configs[0]["data_files"][0] == {"split": "train", "path": "data/train-*.parquet"}
    assert card.data.dataset_info["splits"][0] == {
        "name": "train",
        "num_bytes": card.data.dataset_info["splits"][0]["num_bytes"],
        "num_examples": 12,
    }
    assert "@inproceedings{pujari2021multitask" in card.text and "## Label statistics" in card.text
    assert json.loads((out / "stats.json").read_text())["train"]["levels"]["subclass"]["distinct"] == 12

    assert load_patent_splits(out, cache_dir=cache_dir)["test"].to_list() == built["test"].to_list()


def test_publish_release_card_and_upsampled_export(tmp_path, cache_dir):
    out = tmp_path / "export"
    summary = publish(out, base_url=RELEASE.as_uri(), cache_dir=cache_dir, upsample=True, stats=False)
    assert summary["build_summary"]["train"]["upsampled_rows_added"] == summary["rows"]["train"] - 12
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "USPTO-70k"
    assert "**up-sampled**" in card.text
    # up-sampling an already up-sampled export adds nothing
    assert len(load_patent_splits(out, upsample=True, cache_dir=cache_dir)["train"]) == summary["rows"]["train"]


def test_push_to_hub_uploads_the_export(tmp_path, cache_dir, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            uploaded = sorted(
                p.relative_to(kwargs["folder_path"]).as_posix()
                for p in Path(kwargs["folder_path"]).rglob("*")
                if p.is_file()
            )
            calls.append(("upload_folder", kwargs, uploaded))
            return type("Commit", (), {"commit_url": "https://huggingface.co/datasets/me/uspto/commit/abc"})()

    monkeypatch.setattr(publish_module, "HfApi", FakeApi)
    summary = publish_module.main(
        [
            "--output-dir",
            str(tmp_path / "out"),
            "--dataset",
            str(RELEASE),
            "--cache-dir",
            cache_dir,
            "--push-to-hub",
            "--hub-model-id",
            "me/uspto",
        ]
    )
    assert summary["commit_url"].endswith("/commit/abc")
    assert calls[1] == ("create_repo", "me/uspto", {"repo_type": "dataset", "private": False, "exist_ok": True})
    _, kwargs, uploaded = calls[2]
    assert kwargs["repo_id"] == "me/uspto" and kwargs["repo_type"] == "dataset"
    assert uploaded == sorted(summary["files"])  # what the export wrote: not the marker, nothing else
    assert not Path(kwargs["folder_path"]).exists()  # a temporary folder of links, removed after the upload
    assert "README.md" in uploaded and "data/train-00000-of-00001.parquet" in uploaded
    assert "data/test-00000-of-00001.parquet" in uploaded and kwargs["delete_patterns"] == ["data/*.parquet"]


# ---- the convenience loader and statistics -----------------------------------------------------


def test_load_patent_splits_sources(cache_dir, release_splits, monkeypatch, tmp_path):
    splits = load_patent_splits(RELEASE, cache_dir=cache_dir)
    assert isinstance(splits, datasets.DatasetDict) and list(splits) == ["train", "validation", "test"]
    assert splits["train"].to_list() == release_splits["train"].to_list()
    with pytest.raises(FileNotFoundError):
        load_patent_splits(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_patent_splits(tmp_path, cache_dir=cache_dir)

    requested = []

    def fake_load_dataset(path, **kwargs):
        requested.append(path)
        return datasets.DatasetDict(
            {
                name: release_splits[split]
                for name, split in [("train", "train"), ("dev", "validation"), ("test", "test")]
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = load_patent_splits("someone/uspto-70k", cache_dir=cache_dir)
    assert requested == ["someone/uspto-70k"] and list(hub) == ["train", "validation", "test"]


def test_statistics_report(tmp_path, release_splits):
    report = label_statistics(release_splits)
    dev = report["validation"]["levels"]
    assert dev["section"] == {"distinct": 5, "cardinality": 1.75}  # A; G, H; B; B, G, Y
    assert dev["subclass"] == {"distinct": 7, "cardinality": 2.0}
    assert report["train"]["label_frequency"]["A43B"] == 4
    stats_main(["--dataset", str(RELEASE), "--output-dir", str(tmp_path / "stats"),
                "--cache-dir", str(tmp_path / "cache")])
    assert {p.name for p in (tmp_path / "stats").iterdir()} == {
        "stats.json", "stats.md", "label_distribution.png", ".thmm-output.json"}


# ---- WIPO-alpha ----------------------------------------------------------------------------------


def test_wipo_alpha_reader():
    rows = read_wipo_alpha(FIXTURES / "wipo_alpha" / "train")
    assert [r["patent_id"] for r in rows] == ["EP0000101", "EP0000102", "WO0000201", "EP0000301", "EP0000302"]
    assert rows[0] == {
        "patent_id": "EP0000101",
        "title": "Soil cultivation device",  # the EN title, not the DE one
        "abstract": "A soil cultivation device has tines on a rotating shaft.",
        "labels": ["A01B", "A01C"],  # main A01B0013080000 first; A01B0033140000 is the same subclass; 'A01C 5/06'
        "sections": ["A"],
        "classes": ["A01"],
    }
    assert rows[1]["title"] == 'Plough with "quick" coupling' and rows[1]["abstract"].endswith("without tools.")
    assert rows[2]["labels"] == ["B64C", "G05D"] and "5 °C" in rows[2]["abstract"]  # ISO-8859-1 declared
    assert rows[4] == {
        "patent_id": "EP0000302",
        "title": "Secure session set-up",
        "abstract": "",
        "labels": ["H04L"],
        "sections": ["H"],
        "classes": ["H04"],
    }


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("entity.xml", "line 2, field 'DOCTYPE': entity declarations are not allowed"),
        ("no_main_code.xml", "line 2, field 'ipcs/@mc': no main IPC code"),
        ("bad_code.xml", "line 2, field 'ipcs/ipc/@ic': malformed IPC code 'Y10T'"),
        ("not_well_formed.xml", "line 4, field 'xml': not well-formed XML"),
    ],
)
def test_wipo_alpha_bad_documents(tmp_path, name, fragment):
    shutil.copy(FIXTURES / "wipo_bad" / name, tmp_path / name)
    with pytest.raises(PatentDataError) as info:
        read_wipo_alpha(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / name}, {fragment}"), str(info.value)


def test_wipo_alpha_builder_holds_out_validation(cache_dir):
    _, splits = build(
        cache_dir, config_name="wipo_alpha", data_dir=str(FIXTURES / "wipo_alpha"), validation_fraction=0.2
    )
    assert {s: len(d) for s, d in splits.items()} == {"train": 4, "validation": 1, "test": 2}
    train_ids = set(splits["train"]["patent_id"]) | set(splits["validation"]["patent_id"])
    assert train_ids == {"EP0000101", "EP0000102", "WO0000201", "EP0000301", "EP0000302"}
    assert splits["test"].to_list()[0]["labels"] == ["A01B", "B60K"]
    _, again = build(
        cache_dir, config_name="wipo_alpha", data_dir=str(FIXTURES / "wipo_alpha"), validation_fraction=0.2, seed=42
    )
    assert again["validation"]["patent_id"] == splits["validation"]["patent_id"]
    with pytest.raises(ValueError, match="data_dir"):
        build(cache_dir, config_name="wipo_alpha")


# ---- the real data in ../shared (optional) --------------------------------------------------------


def _require_shared(name):
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"real data {SHARED_DATA / name} is absent (it lives in ../shared beside the repo)")
    return SHARED_DATA / name


def test_real_uspto_debug_release_format(cache_dir):
    splits = load_patent_splits(_require_shared("uspto-debug"), cache_dir=cache_dir)
    assert {s: len(d) for s, d in splits.items()} == {"train": 10, "validation": 10, "test": 10}
    row = splits["train"][1]
    assert row["labels"] == ["G09F", "Y10T"] and row["sections"] == ["G", "Y"] and row["abstract"]


def test_real_dronesr_ipc_crlf_quoted(cache_dir):
    splits = load_patent_splits(_require_shared("dronesr"), scheme="ipc", cache_dir=cache_dir)
    assert {s: len(d) for s, d in splits.items()} == {"train": 35_750, "validation": 4_469, "test": 4_469}
    titles = splits["train"]["title"]
    assert any('"PACK"' in t for t in titles) and not any(
        t.startswith('"') and t.endswith('"') and '""' in t for t in titles
    )
    assert set(splits["validation"]["abstract"]) == {""}
