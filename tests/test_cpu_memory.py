"""thmm.cpu_memory: torch's huge pages, asked for by thmm-train before torch starts, and detected."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from thmm import cpu_memory


@pytest.mark.parametrize(("mode", "available"), [
    ("always [madvise] never\n", True), ("[always] madvise never\n", True), ("always madvise [never]\n", False),
    ("", False), (None, False)])
def test_huge_pages_are_available_in_the_kernel_modes_that_give_them(tmp_path, monkeypatch, mode, available):
    mode_file = tmp_path / "enabled"
    if mode is not None:  # None: a kernel without them has no such file
        mode_file.write_text(mode)
    monkeypatch.setattr(cpu_memory, "TRANSPARENT_HUGE_PAGES", mode_file)
    assert cpu_memory.transparent_huge_pages_available() is available


@pytest.mark.parametrize(("mode", "user_value", "expected"), [
    ("always [madvise] never", None, "1"), ("always [madvise] never", "0", "0"), ("always madvise [never]", None, None)])
def test_training_asks_torch_for_huge_pages_unless_the_user_said_otherwise(tmp_path, monkeypatch, mode,
                                                                              user_value, expected):
    (tmp_path / "enabled").write_text(mode)
    monkeypatch.setattr(cpu_memory, "TRANSPARENT_HUGE_PAGES", tmp_path / "enabled")
    if user_value is None:
        monkeypatch.delenv(cpu_memory.TORCH_HUGE_PAGES_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_memory.TORCH_HUGE_PAGES_ENV, user_value)
    cpu_memory.request_torch_huge_pages()
    assert os.environ.get(cpu_memory.TORCH_HUGE_PAGES_ENV) == expected


PROBE = """
import os, sys
if sys.argv[1] == "late":  # torch has allocated before the variable is set: too late for it
    import torch
    torch.ones(4)
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
import thmm.cli.train  # thmm-train's module, first
from thmm.cpu_memory import torch_uses_huge_pages
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), torch_uses_huge_pages())
"""


@pytest.mark.skipif(not cpu_memory.transparent_huge_pages_available(), reason="no transparent huge pages here")
def test_a_training_process_puts_large_tensors_on_huge_pages_and_the_trainer_can_tell():
    def probe(mode, **env):
        base = {k: v for k, v in os.environ.items() if k != cpu_memory.TORCH_HUGE_PAGES_ENV}
        return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                              cwd=REPO_ROOT, env={**base, **env}).stdout.split()

    assert probe("train") == ["1", "True"]
    assert probe("train", THP_MEM_ALLOC_ENABLE="0") == ["0", "False"]  # the user's choice stands
    assert probe("late") == ["1", "False"]  # the variable alone does not say

