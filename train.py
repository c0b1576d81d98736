# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""``python train.py ...`` / ``accelerate launch train.py ...`` in a checkout: the ``thmm-train``
command (see ``thmm/cli/train.py``; ``--help`` lists every option)."""

import sys

from thmm.cli.train import cli

if __name__ == "__main__":
    sys.exit(cli())
