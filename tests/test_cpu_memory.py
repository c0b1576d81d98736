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


def fake_cgroups(tmp_path, monkeypatch, proc_cgroup: str, mem_available_kb: int = 8_000_000):
    """/proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup under tmp_path."""
    (tmp_path / "meminfo").write_text(f"MemTotal: 16000000 kB\nMemAvailable: {mem_available_kb} kB\n")
    (tmp_path / "cgroup").write_text(proc_cgroup)
    monkeypatch.setattr(cpu_memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(cpu_memory, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(cpu_memory, "CGROUP_ROOT", tmp_path / "sys")
    return tmp_path / "sys"


def write_cgroup(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_available_memory_is_the_smaller_of_the_system_and_a_container_limit(tmp_path, monkeypatch):
    """A v2 container limit, counted as container runtimes do (usage less the reclaimable inactive file
    pages), and a limit on an ancestor cgroup, which applies too."""
    root = fake_cgroups(tmp_path, monkeypatch, "0::/box/job\n")
    write_cgroup(root, {"cgroup.controllers": "cpu memory\n"})
    write_cgroup(root / "box", {"memory.max": "3000000000\n", "memory.current": "500000000\n",
                                "memory.stat": "anon 400000000\ninactive_file 100000000\n"})
    write_cgroup(root / "box" / "job", {"memory.max": "max\n", "memory.current": "400000000\n"})
    assert cpu_memory.available_memory() == 3_000_000_000 - 500_000_000 + 100_000_000
    # the system has less than the limit leaves: MemAvailable
    fake_cgroups(tmp_path, monkeypatch, "0::/box/job\n", mem_available_kb=1_000_000)
    assert cpu_memory.available_memory() == 1_000_000 * 1024


def test_available_memory_reads_a_v1_memory_cgroup_and_ignores_its_no_limit_value(tmp_path, monkeypatch):
    root = fake_cgroups(tmp_path, monkeypatch, "5:cpu,cpuacct:/x\n4:memory:/docker/abc\n0::/\n")
    write_cgroup(root / "memory", {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "1\n"})
    write_cgroup(root / "memory" / "docker" / "abc", {
        "memory.limit_in_bytes": "2000000000\n", "memory.usage_in_bytes": "1200000000\n",
        "memory.stat": "cache 300000000\ntotal_inactive_file 200000000\n"})
    assert cpu_memory.available_memory() == 2_000_000_000 - 1_200_000_000 + 200_000_000
    # inside a cgroup namespace the listed path does not exist: the mount's root is this cgroup
    fake_cgroups(tmp_path, monkeypatch, "4:memory:/host/path/not/here\n")
    (root / "memory" / "memory.limit_in_bytes").write_text("1500000000\n")
    assert cpu_memory.available_memory() == 1_500_000_000 - 1


def test_available_memory_without_proc_files_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_memory, "MEMINFO", tmp_path / "none")
    monkeypatch.setattr(cpu_memory, "PROC_CGROUP", tmp_path / "none")
    assert cpu_memory.available_memory() is None
