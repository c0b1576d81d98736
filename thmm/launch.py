# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""What a multi-process launch (torchrun, ``accelerate launch``) tells each of its processes. Light on
purpose: a command reads it on its way out (``thmm.cli.end_distributed_process``)."""

from __future__ import annotations

import os


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` of an ``accelerate launch`` / torchrun launch; ``(0, 1)`` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def launched_processes(variable: str = "WORLD_SIZE") -> int:
    """The number of processes a launcher wrote in ``variable`` (``WORLD_SIZE``: all of them,
    ``LOCAL_WORLD_SIZE``: this machine's); 1 where it is unset or not a positive count, so that no
    launcher set it."""
    value = os.environ.get(variable, "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1
