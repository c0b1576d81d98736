"""FSDP on CPU processes: torch's FSDP2 (``fully_shard``) over gloo, two processes, trains THMM to the
weights one process reaches on the whole batch, and the gathered weights save as a loadable model."""

import json

import torch

from conftest import REPO_ROOT, run_command
from fsdp_worker import build_model, train_steps
from modeling_thmm import THMMForHierarchicalClassification


def test_fsdp2_on_two_cpu_processes_matches_one_process(tmp_path, one_distributed_run_at_a_time):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_command([*launcher, REPO_ROOT / "tests" / "fsdp_worker.py", tmp_path], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    shards = json.loads((tmp_path / "sharding.json").read_text())
    total = shards[0]["total_parameters"]
    assert all(0 < s["local_parameters"] < total for s in shards), shards  # each process holds a part ...
    assert sum(s["local_parameters"] for s in shards) == total  # ... and together they hold every weight once

    reference = build_model()
    before = {name: t.clone() for name, t in reference.state_dict().items()}
    train_steps(reference, slice(None))
    sharded = THMMForHierarchicalClassification.from_pretrained(tmp_path / "model").state_dict()
    moved = max((t - before[name]).abs().max().item() for name, t in reference.state_dict().items())
    assert moved > 1e-2  # training changed the weights, so agreeing below is not trivial
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(sharded[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
