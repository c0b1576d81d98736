# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""``python predict.py ...`` in a checkout: the ``thmm-predict`` command (see ``thmm/cli/predict.py``)."""

import sys

from thmm.cli.predict import cli

if __name__ == "__main__":
    sys.exit(cli())
