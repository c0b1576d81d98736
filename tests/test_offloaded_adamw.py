"""OffloadedAdamW (--low-cpu-memory): torch's AdamW updates bit for bit, with the large parameters'
moments in an unnamed temporary file between steps."""
import errno
import os
import tempfile

import pytest
import torch

import thmm.offloaded_adamw as offloaded_adamw
from thmm.offloaded_adamw import MOMENTS, OffloadedAdamW

MIN_ELEMENTS = 64  # so that the small test model has offloaded and in-memory parameters both


def model_and_groups(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return model, [{"params": decay, "weight_decay": 0.01, "lr": 1e-2}, {"params": no_decay, "weight_decay": 0.0, "lr": 5e-3}]


def train(model, optimizer, steps, seed=1, skip_grad_of=None):
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = torch.randn(8, 12, generator=generator), torch.randn(8, 3, generator=generator)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if skip_grad_of is not None and step % 2:  # a parameter without a gradient in some steps
            skip_grad_of.grad = None
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("fused", [True, False])
def test_the_same_updates_as_adamw_with_the_moments_out_of_memory(fused, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TMPDIR would put the file
    plain, groups = model_and_groups()
    reference = torch.optim.AdamW(groups, fused=fused)
    offload, groups = model_and_groups()
    optimizer = OffloadedAdamW(groups, fused=fused, min_elements=MIN_ELEMENTS)
    train(plain, reference, 5, skip_grad_of=plain[2].weight)
    train(offload, optimizer, 5, skip_grad_of=offload[2].weight)
    for (name, a), b in zip(plain.named_parameters(), offload.parameters()):
        assert torch.equal(a, b), name
    # between steps the large parameters' moments are not in memory; the small ones' are
    for param in offload.parameters():
        state = optimizer.state[param]
        assert "step" in state
        if param.numel() >= MIN_ELEMENTS:
            assert not any(name in state for name in MOMENTS)
        else:
            assert all(name in state for name in MOMENTS)
    assert optimizer._file is not None and not any(n.startswith("thmm-adamw") for n in os.listdir(tmp_path))  # no name
    # the state dict holds them all, as AdamW's does
    ours, theirs = optimizer.state_dict(), reference.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for index, state in theirs["state"].items():
        assert state.keys() == ours["state"][index].keys()
        for key, value in state.items():
            assert torch.equal(value, ours["state"][index][key]), (index, key)
    assert not any(name in optimizer.state[offload[0].weight] for name in MOMENTS)  # and they left memory again


def test_a_resumed_optimizer_continues_as_adamw_does(tmp_path):
    plain, groups = model_and_groups()
    reference = torch.optim.AdamW(groups, fused=True)
    train(plain, reference, 3)
    saved_model = {k: v.clone() for k, v in plain.state_dict().items()}
    path = tmp_path / "optimizer.pt"
    torch.save(reference.state_dict(), path)
    train(plain, reference, 3, seed=2)

    resumed, groups = model_and_groups(seed=7)
    resumed.load_state_dict(saved_model)
    optimizer = OffloadedAdamW(groups, fused=True, min_elements=MIN_ELEMENTS)
    optimizer.load_state_dict(torch.load(path))
    assert not any(name in optimizer.state[resumed[0].weight] for name in MOMENTS)  # offloaded on loading
    train(resumed, optimizer, 3, seed=2)
    for a, b in zip(plain.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_an_unwritable_file_keeps_the_moments_in_memory_with_a_warning(monkeypatch):
    plain, groups = model_and_groups()
    reference = torch.optim.AdamW(groups, fused=True)
    offload, groups = model_and_groups()
    optimizer = OffloadedAdamW(groups, fused=True, min_elements=MIN_ELEMENTS)
    train(plain, reference, 2)
    train(offload, optimizer, 2)  # two steps offloaded, then the disk is full

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(offloaded_adamw.os, "pwrite", full)
    with pytest.warns(RuntimeWarning, match=r"--low-cpu-memory: the optimizer's moments stay in memory.*No space left"):
        train(offload, optimizer, 3, seed=2)
    train(plain, reference, 3, seed=2)
    for a, b in zip(plain.parameters(), offload.parameters()):
        assert torch.equal(a, b)
    assert optimizer._file is None
    for param in offload.parameters():
        assert all(name in optimizer.state[param] for name in MOMENTS)


def test_release_closes_the_file():
    model, groups = model_and_groups()
    optimizer = OffloadedAdamW(groups, min_elements=MIN_ELEMENTS)
    train(model, optimizer, 1)
    file = optimizer._file
    optimizer.release()
    assert file.closed and not optimizer.state


def test_a_short_read_or_write_is_completed(monkeypatch, tmp_path):
    """pwrite and preadv may move fewer bytes than asked (large tensors, signals): the rest follows."""
    real_pwrite, real_preadv = os.pwrite, os.preadv
    monkeypatch.setattr(offloaded_adamw.os, "pwrite", lambda fd, data, offset: real_pwrite(fd, data[:7], offset))
    monkeypatch.setattr(offloaded_adamw.os, "preadv", lambda fd, views, offset: real_preadv(fd, [views[0][:5]], offset))
    tensor = torch.randn(100)
    with open(tmp_path / "f", "w+b") as f:
        offloaded_adamw.write_all(f.fileno(), tensor, 3)
        back = torch.empty(100)
        offloaded_adamw.read_all(f.fileno(), back, 3)
        assert torch.equal(back, tensor)
        with pytest.raises(EOFError):
            offloaded_adamw.read_all(f.fileno(), torch.empty(200), 3)


def test_the_file_goes_to_the_run_folder_when_the_temporary_folder_is_in_memory(tmp_path, monkeypatch):
    """On tmpfs the file would take the very memory it frees: then it goes to the run's folder."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    mounts = tmp_path / "mounts"
    monkeypatch.setattr(offloaded_adamw, "MOUNTS", str(mounts))
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\ntmpfs {temporary} tmpfs rw 0 0\n")
    assert offloaded_adamw.file_system_type(temporary / "x") == "tmpfs"
    assert offloaded_adamw.moments_folder(tmp_path / "run") == str(tmp_path / "run")
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\ntmpfs {tmp_path}/tm tmpfs rw 0 0\n")  # a prefix, not a parent
    assert offloaded_adamw.moments_folder(tmp_path / "run") == str(temporary)
    monkeypatch.setattr(offloaded_adamw, "MOUNTS", str(tmp_path / "absent"))
    assert offloaded_adamw.file_system_type(temporary) is None and offloaded_adamw.moments_folder("run") == str(temporary)
    # the optimizer opens its file there
    model, groups = model_and_groups()
    folder = tmp_path / "run"
    folder.mkdir()
    optimizer = OffloadedAdamW(groups, min_elements=MIN_ELEMENTS, folder=folder)
    train(model, optimizer, 1)
    assert os.path.samefile(os.path.dirname(os.readlink(f"/proc/self/fd/{optimizer._file.fileno()}")), folder)
