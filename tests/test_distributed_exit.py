"""A process of a multi-process launch ends in ``thmm.cli.end_distributed_process``: its threads
joined, ``atexit``'s handlers run and its output flushed, but without the interpreter's finalization,
during which gloo's worker threads can abort a finished run (``bench/distributed_exit.py`` counts
those aborts). Any other process ends as usual."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

COMMAND = """
import atexit, sys, threading, time
from pathlib import Path

import torch.distributed  # what a launched process has imported

from thmm.cli import run_cli

folder = Path(sys.argv[1])


class PrintsWhenFinalized:
    def __del__(self):
        print("finalized")


marker = PrintsWhenFinalized()
atexit.register(lambda: (folder / "atexit").write_text("ran"))


def late_writer():
    time.sleep(2)  # longer than what the ending does before it exits
    (folder / "thread").write_text("ran")


def main(argv):
    threading.Thread(target=late_writer).start()
    print("the run's output")  # buffered: stdout is a pipe
    return 3


sys.exit(run_cli(main, []))
"""


@pytest.mark.parametrize("world_size, finalized", [("2", False), ("1", True), (None, True), ("two", True)])
def test_a_launched_process_ends_without_finalization_and_loses_nothing(world_size, finalized, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    if world_size:
        env["WORLD_SIZE"] = world_size
    result = subprocess.run([sys.executable, "-c", COMMAND, str(tmp_path)], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stdout.startswith("the run's output\n")
    assert ("finalized" in result.stdout) == finalized
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "ran"


STOPPED_MID_IMPORT = """
import sys, time
from pathlib import Path

from thmm.cli import run_cli

folder = Path(sys.argv[1])
(folder / "slow_module.py").write_text(
    "import os, signal, time\\n"
    "os.kill(os.getpid(), signal.SIGTERM)  # a stop while a module initialises (torch, matplotlib)\\n"
    "time.sleep(0.5)\\n"
    "COMPLETE = True\\n")
sys.path.insert(0, str(folder))


def main(argv):
    import slow_module

    print("imported whole:", slow_module.COMPLETE, flush=True)
    time.sleep(30)  # the stop comes here, once the import is done
    return 0


sys.exit(run_cli(main, []))
"""


def test_a_stop_during_an_import_waits_for_the_import_to_end(tmp_path):
    """An interrupt raised inside a module's initialisation turns into an ImportError, or aborts from C++
    (torch): the stop waits for the import, then ends the command as usual, in one line."""
    result = subprocess.run([sys.executable, "-c", STOPPED_MID_IMPORT, str(tmp_path)], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 143, result.stderr[-2000:]
    assert result.stdout == "imported whole: True\n"
    assert result.stderr.strip() == "error: stopped by SIGTERM"
