# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""What a multi-process launch (torchrun, ``accelerate launch``) tells each of its processes. Light on
purpose: a command reads it on its way out (``thmm.cli.end_distributed_process``)."""

from __future__ import annotations

import os


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` of an ``accelerate launch`` / torchrun launch; ``(0, 1)`` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
