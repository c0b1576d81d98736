# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Console scripts: ``thmm-train``, ``thmm-predict``, ``thmm-publish``, ``thmm-stats``.

A user error (a bad option, file, line or field) ends with one ``error: ...`` line on stderr and exit
code 2; ``--debug`` shows the traceback instead."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable

from huggingface_hub.errors import StrictDataclassError

# Errors that describe the user's input (their messages name the option, file, line or field);
# StrictDataclassError: a config.json value that THMMConfig's validation refuses.
USER_ERRORS = (ValueError, OSError, StrictDataclassError)


def one_line_errors(parser):
    """Make ``parser`` report an option error as one ``error: ...`` line naming the option (not the
    usage block), with exit code 2, like every other command-line error."""
    parser.error = lambda message: parser.exit(2, "error: " + re.sub(r"--\w+/(--[\w-]+)", r"\1", message) + "\n")
    return parser


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``, turning a user error into ``error: ...`` and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except USER_ERRORS as err:
        if "--debug" in argv:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
            message = f"{err.filename}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("error: interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130
    return int(code or 0)


def _publish(argv):
    from dataset_script.publish import main

    main(argv)


def _stats(argv):
    from dataset_script.stats import main

    main(argv)


def publish(argv: list[str] | None = None) -> int:
    """``thmm-publish``: build patent splits and export them as parquet with a dataset card (optionally to the Hub)."""
    return run_cli(_publish, argv)


def stats(argv: list[str] | None = None) -> int:
    """``thmm-stats``: label statistics of patent splits."""
    return run_cli(_stats, argv)
