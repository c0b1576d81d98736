"""FSDP2 on CPU processes: torch's ``fully_shard`` trains THMM over gloo.

``python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_worker.py OUT_DIR`` shards the encoder
layers, each level's stacked heads and the root module across the processes, trains a few SGD
steps with each process on its half of one fixed batch, gathers the full state dict and (rank 0)
saves it as a Hugging Face model in ``OUT_DIR/model``, with ``OUT_DIR/sharding.json`` recording how
the parameters were split. ``tests/test_fsdp.py`` compares the saved model with one process trained
on the whole batch (:func:`train_steps` with every row). Accelerate (1.15) routes FSDP only to GPUs,
so this drives torch's FSDP2 directly.
"""

import json
import sys
from pathlib import Path

import torch

from conftest import SMALL_TAXONOMY_CODES, build_tiny_model  # tests/, the script's folder, is on its path

from configuration_thmm import Taxonomy
from modeling_thmm import THMMForHierarchicalClassification

BATCH, TOKENS, STEPS = 8, 12, 3


def build_model() -> THMMForHierarchicalClassification:
    """A tiny THMM (mean pooling) with every dropout off, so that one process and a sharded run see
    the same function of the same data."""
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return build_tiny_model(encoder.to_dict(), Taxonomy.from_codes(SMALL_TAXONOMY_CODES), seed=0, head_type="thmm",
                            doc_representation="mean", head_dropout=0.0, max_length=32).train()


def fixed_batch(num_nodes: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 64, (BATCH, TOKENS), generator=generator)
    lengths = torch.randint(4, TOKENS + 1, (BATCH,), generator=generator)
    attention_mask = (torch.arange(TOKENS)[None, :] < lengths[:, None]).long()
    labels = (torch.rand(BATCH, num_nodes, generator=generator) < 0.3).float()
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask, "labels": labels}


def train_steps(model, rows: slice) -> None:
    """``STEPS`` plain SGD steps on ``rows`` of the fixed batch. The mean loss of two equal halves,
    averaged over two processes, is the whole batch's mean loss. SGD, unlike Adam, moves each weight
    in proportion to its gradient, so a wrongly reduced gradient shows in the weights."""
    batch = {k: v[rows] for k, v in fixed_batch(len(model.taxonomy)).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(STEPS):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def main(out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model()
    for layer in model.encoder.encoder.layer:
        fully_shard(layer)
    for level in model.heads.levels:
        fully_shard(level)
    fully_shard(model)
    local = sum(p.to_local().numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    train_steps(model, slice(rank * BATCH // world, (rank + 1) * BATCH // world))
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    sharding = [None] * world
    dist.all_gather_object(sharding, {"local_parameters": local, "total_parameters": total})
    if rank == 0:
        out = Path(out_dir)
        fresh = build_model()
        fresh.load_state_dict(state)
        fresh.save_pretrained(out / "model")
        (out / "sharding.json").write_text(json.dumps(sharding))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    from thmm.cli import end_distributed_process

    main(sys.argv[1])
    end_distributed_process(0)  # as the thmm-* commands end: gloo's threads cannot abort the exit
