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



def fake_proc(tmp_path, monkeypatch, proc_cgroup: str, mem_total_kb: int = 16_000_000):
    """/proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup under tmp_path; returns the cgroup root."""
    (tmp_path / "meminfo").write_text(f"MemTotal: {mem_total_kb} kB\nMemAvailable: 1000 kB\n")
    (tmp_path / "cgroup").write_text(proc_cgroup)
    monkeypatch.setattr(cpu_memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(cpu_memory, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(cpu_memory, "CGROUP_ROOT", tmp_path / "sys")
    return tmp_path / "sys"


def write_files(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_the_memory_limit_is_the_smallest_of_the_machine_and_its_cgroups_v2(tmp_path, monkeypatch):
    """A v2 limit on an ancestor applies to the cgroups below it ("max": none of its own); the
    machine's memory, when it is less; not what happens to be free (MemAvailable)."""
    root = fake_proc(tmp_path, monkeypatch, "0::/box/job\n")
    write_files(root, {"cgroup.controllers": "cpu memory\n"})  # the root cgroup has no memory.max
    write_files(root / "box", {"cgroup.controllers": "memory\n", "memory.max": "3000000000\n"})
    write_files(root / "box" / "job", {"cgroup.controllers": "\n", "memory.max": "max\n"})
    assert cpu_memory.memory_limit() == (3_000_000_000, f"the memory cgroup {root / 'box'}")
    write_files(root / "box" / "job", {"memory.max": "2000000000\n"})
    assert cpu_memory.memory_limit() == (2_000_000_000, f"the memory cgroup {root / 'box' / 'job'}")
    fake_proc(tmp_path, monkeypatch, "0::/box/job\n", mem_total_kb=1_000_000)
    assert cpu_memory.memory_limit() == (1_024_000_000, "this machine's memory")


def test_the_memory_limit_reads_v1_ignores_its_no_limit_value_and_a_namespaced_path(tmp_path, monkeypatch):
    root = fake_proc(tmp_path, monkeypatch, "5:cpu,cpuacct:/x\n4:memory:/docker/abc\n0::/\n")
    write_files(root / "memory", {"memory.limit_in_bytes": "9223372036854771712\n"})  # v1's "no limit"
    assert cpu_memory.memory_limit() == (16_000_000 * 1024, "this machine's memory")
    write_files(root / "memory" / "docker" / "abc", {"memory.limit_in_bytes": "2000000000\n"})
    assert cpu_memory.memory_limit() == (2_000_000_000, f"the memory cgroup {root / 'memory' / 'docker' / 'abc'}")
    # inside a cgroup namespace the listed path is not there: the mount's root is this process's cgroup
    fake_proc(tmp_path, monkeypatch, "4:memory:/host/path/not/here\n")
    write_files(root / "memory", {"memory.limit_in_bytes": "1500000000\n"})
    assert cpu_memory.memory_limit() == (1_500_000_000, f"the memory cgroup {root / 'memory'}")


def test_the_memory_limit_is_unknown_without_proc_files_and_the_resident_memory_is_read(tmp_path, monkeypatch):
    assert 10**7 < cpu_memory.resident_bytes() < 10**11  # this test process
    monkeypatch.setattr(cpu_memory, "MEMINFO", tmp_path / "none")
    monkeypatch.setattr(cpu_memory, "PROC_CGROUP", tmp_path / "none")
    monkeypatch.setattr(cpu_memory, "PROC_STATM", tmp_path / "none")
    assert cpu_memory.memory_limit() is None and cpu_memory.resident_bytes() is None
