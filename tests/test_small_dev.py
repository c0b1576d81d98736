"""The small-dev rule (issue 33): a dev set under ``--small-dev-documents`` documents tunes one global
threshold, for the fusion weight's cross-validation and the final thresholds alike."""

from __future__ import annotations

import json

import pytest

from conftest import QUICKSTART_DATA
from thmm.thresholds import SMALL_DEV_DOCUMENTS, dev_granularity


def test_dev_granularity_rule():
    assert SMALL_DEV_DOCUMENTS == 200
    assert dev_granularity("node", 199) == dev_granularity("level", 100) == "global"
    assert dev_granularity("node", 200) == "node" and dev_granularity("level", 4469) == "level"
    assert dev_granularity("node", 13, small_dev_documents=0) == "node"  # 0: never
    assert dev_granularity("node", 13, small_dev_documents=10) == "node"


@pytest.mark.slow
def test_a_small_dev_set_tunes_one_global_threshold_unless_turned_off(tiny_encoder_dir, tmp_path, capfd,
                                                                      monkeypatch):
    from thmm import lexical
    from thmm.arguments import parse_args
    from thmm.trainer import train

    granularities = []
    choose = lexical.choose_fusion_weight

    def spy(*args, **kwargs):  # the granularity the fusion weight's cross-validation tunes at
        granularities.append(args[6])
        return choose(*args, **kwargs)

    monkeypatch.setattr(lexical, "choose_fusion_weight", spy)
    common = ["--dataset", str(QUICKSTART_DATA), "--encoder", str(tiny_encoder_dir), "--max-train-samples", "40",
              "--max-eval-samples", "30", "--epochs", "1", "--batch-size", "8", "--max-length", "32",
              "--head-hidden-size", "8", "--report-to", "none", "--node-threshold-min-support", "5"]
    small = train(parse_args([*common, "--output-dir", str(tmp_path / "small")]))
    assert small["thresholds"]["per_level"] is None and small["thresholds"]["per_node"] is None
    assert json.loads((tmp_path / "small" / "model" / "config.json").read_text())["level_thresholds"] is None
    out = capfd.readouterr()
    assert "thresholds tuned on dev (f1_mean, global: dev has fewer than --small-dev-documents 200)" in out.out + out.err
    off = train(parse_args([*common, "--output-dir", str(tmp_path / "off"), "--small-dev-documents", "0"]))
    assert off["thresholds"]["per_level"] is not None
    assert granularities == ["global", "node"]
