# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Console scripts: ``thmm-train``, ``thmm-predict``, ``thmm-publish``, ``thmm-stats``.

A user error (a bad option, file, line or field) ends with one ``error: ...`` line on stderr and exit
code 2; ``--debug`` shows the traceback instead.

The four commands share one vocabulary (transformers' ``TrainingArguments`` names where one exists):
``--output-dir``, ``--dataset``, ``--dataset-config``, ``--push-to-hub`` (a flag) with
``--hub-model-id REPO`` and ``--hub-private``, ``--config`` (a run file, ``thmm-train`` only),
``--version``, ``--quiet`` (warnings and errors only) and ``--verbose`` (the libraries' progress
bars and messages too). Old spellings (``--out``, ``--data-dir``, ``--private``, ``--config NAME``
of publish/stats, ``--push-to-hub REPO``) still work for one release, with a one-line
``warning: ... is deprecated`` on stderr naming the new one (:func:`deprecated`). :class:`HelpFormatter`
and :func:`tidy_options` make ``--help`` show dashed names only, one default per option, and the
description's example commands one per line.
"""

from __future__ import annotations

import argparse
import contextlib
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
    usage block), with exit code 2, like every other command-line error. Options are taken as spelled:
    no abbreviations (``--conf`` would be ``--config``, beside a second ``--config``)."""
    parser.error = lambda message: parser.exit(2, "error: " + re.sub(r"--\w+/(--[\w-]+)", r"\1", message) + "\n")
    parser.allow_abbrev = False
    return parser


def path_options(parser, args, names: tuple[str, ...]) -> None:
    """The path options ``names`` (dests) of ``args``: ``~`` expanded (no shell expands it after ``=``
    or in quotes), and an empty one refused naming it (an empty path is the current folder, or nothing)."""
    import os

    for name in names:
        value = getattr(args, name, None)
        if value is None or value == "-":
            continue
        if not value.strip():
            parser.error(f"--{name.replace('_', '-')}: empty path")
        setattr(args, name, os.path.expanduser(value))  # only a leading "~" changes


def version_string() -> str:
    """What ``--version`` prints: ``thmm-patents <version>``."""
    from thmm import __version__

    return f"thmm-patents {__version__}"


def deprecated(old: str, new: str, seen: set | None = None) -> None:
    """One line on stderr: ``old`` (an option as the user spelled it) is deprecated, use ``new``;
    once per spelling in ``seen`` (a parse's set), so a command warns once however often it parses."""
    if seen is not None:
        if old in seen:
            return
        seen.add(old)
    print(f"warning: {old} is deprecated and goes in the next release; use {new}", file=sys.stderr)


def _seen(parser) -> set:
    if not hasattr(parser, "_thmm_deprecations"):
        parser._thmm_deprecations = set()
    return parser._thmm_deprecations


class DeprecatedOption(argparse.Action):
    """An old spelling of an option, hidden from ``--help``: it stores into the new option's ``dest``
    (a value, or ``const`` for a flag) and warns once naming ``new``."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string or self.option_strings[0], self.new, _seen(parser))
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        spellings = getattr(namespace, "_spellings", {})
        namespace._spellings = {**spellings, self.dest: option_string or self.option_strings[0]}


def spelled(args, dest: str) -> str:
    """The option ``dest`` as the user spelled it (an old spelling, or the new one), for error messages."""
    return getattr(args, "_spellings", {}).get(dest) or "--" + dest.replace("_", "-")


def add_deprecated(parser, old: str, new: str, *, flag: bool = False, **kwargs) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the option ``new`` (its ``dest``)."""
    dest = new.lstrip("-").replace("-", "_")
    if flag:
        kwargs.update(nargs=0, const=True)
    parser.add_argument(old, action=DeprecatedOption, dest=dest, new=new, default=argparse.SUPPRESS, **kwargs)


DATASET_CONFIGS = ("uspto70k", "wipo_alpha")  # dataset_script.builder.Uspto70k's configs


class DatasetConfigAlias(argparse.Action):
    """The old ``--config NAME`` of thmm-publish and thmm-stats (a dataset config, now
    ``--dataset-config``): ``--config`` means only a run file now, which these commands do not take."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values not in DATASET_CONFIGS:
            parser.error(f"{option_string} {values}: {parser.prog} takes no run file; the dataset config is "
                         f"--dataset-config {{{','.join(DATASET_CONFIGS)}}}")
        deprecated(f"{option_string} NAME", "--dataset-config NAME", _seen(parser))
        setattr(namespace, self.dest, values)


def add_dataset_options(parser, dataset_help: str) -> None:
    """``--dataset`` and ``--dataset-config`` of thmm-publish and thmm-stats, with their old spellings
    ``--data-dir`` and ``--config NAME``."""
    parser.add_argument("--dataset", metavar="DIR", help=dataset_help)
    add_deprecated(parser, "--data-dir", "--dataset")
    parser.add_argument("--dataset-config", choices=DATASET_CONFIGS, default=DATASET_CONFIGS[0],
                        help="how to read --dataset: uspto70k (train/dev/test TSVs, the release's format) or "
                             "wipo_alpha (WIPO-alpha's XML folders) (default: uspto70k)")
    parser.add_argument("--config", action=DatasetConfigAlias, dest="dataset_config", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def require(parser, args, *names: str) -> None:
    """An option that is required (but has a deprecated spelling too, so argparse cannot require it)."""
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


class PushToHub(argparse.Action):
    """``--push-to-hub``: a flag (the repo is ``--hub-model-id``); the old ``--push-to-hub REPO``
    still works, setting ``hub_model_id`` too, with a deprecation warning."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", const=True, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if values is not True:
            deprecated(f"{option_string} REPO", f"{option_string} --hub-model-id REPO", _seen(parser))
            if getattr(namespace, "hub_model_id", None) is None:
                namespace.hub_model_id = values
        setattr(namespace, self.dest, True)


def is_flag(action) -> bool:
    """A boolean option: ``store_true`` and the like, or a ``--flag [true|false]`` (HfArgumentParser's bools)."""
    return action.nargs == 0 or (action.nargs == "?" and action.const is True)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` for the four commands: the description keeps its lines (examples one per line);
    a flag shows as ``--flag`` (``--flag, --no-flag`` when it has a negation); the default is
    appended once, and only where the help text does not already say it and it is worth saying."""

    def _split_lines(self, text, width):  # never break an option name at its hyphens
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)

    def _format_action_invocation(self, action):
        if action.option_strings and is_flag(action):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (text == argparse.SUPPRESS or re.search(r"\(default\b|\bdefault\s*:", text) or not action.option_strings
                or default is None or default is False or default == argparse.SUPPRESS
                or (is_flag(action) and default is not True)
                or action.nargs == 0):
            return text
        shown = "on" if default is True else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def tidy_options(parser):
    """``--help``, usage and error messages name each option by its dashed spelling only, while the
    underscore aliases that ``HfArgumentParser`` adds (``--head_type``) stay accepted; a boolean's
    ``--no-X`` negation shares its help line (``--X, --no-X``)."""
    by_dest = {}
    for action in parser._actions:
        dashed = [s for s in action.option_strings if "_" not in s]
        if dashed:
            action.option_strings = dashed  # parsing goes by parser._option_string_actions, which keeps all
        by_dest.setdefault(action.dest, []).append(action)
    for actions in by_dest.values():
        negations = [a for a in actions if any(s.startswith("--no-") for s in a.option_strings)]
        positives = [a for a in actions if a not in negations and a.option_strings]
        if len(positives) == 1 and negations and is_flag(positives[0]):
            for negation in negations:
                negation.help = argparse.SUPPRESS
                positives[0].option_strings = positives[0].option_strings + negation.option_strings
    return parser


def add_common_options(parser, *, quiet: bool = True, debug: bool = True):
    """``--version``, ``--quiet`` and ``--verbose`` (unless ``quiet=False``), and ``--debug``."""
    parser.add_argument("--version", action="version", version=version_string(),
                        help="print the package and its version (thmm-patents X.Y.Z), and exit")
    if quiet:
        parser.add_argument("--quiet", action="store_true",
                            help="warnings and errors only: no progress lines, bars or summaries")
        parser.add_argument("--verbose", action="store_true",
                            help="also the libraries' progress bars and messages (loading, building, writing)")
    if debug:
        parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def description(doc: str) -> str:
    """A module docstring as ``--help``'s description: its lines as written, without reST markup."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc.strip("\n"))
    return text.replace("``", "")


def check_quiet_verbose(parser, args) -> None:
    if getattr(args, "quiet", False) and getattr(args, "verbose", False):
        parser.error("--quiet and --verbose: choose one")


def library_progress(verbose: bool, quiet: bool = False) -> None:
    """The libraries' progress bars. transformers' (loading and writing weights) and datasets' (building
    splits, tokenizing; cached after the first run) time steps of a second or a few: shown only with
    ``--verbose``. huggingface_hub's (downloading an encoder, uploading to the Hub) time transfers that
    can take minutes: shown on a terminal too, never with ``--quiet``."""
    import datasets
    import huggingface_hub.utils
    import transformers

    if verbose:
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
    else:
        transformers.utils.logging.disable_progress_bar()  # this turns huggingface_hub's off too
        datasets.disable_progress_bars()
    if verbose or (not quiet and sys.stderr.isatty()):
        huggingface_hub.utils.enable_progress_bars()
    else:
        huggingface_hub.utils.disable_progress_bars()


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``, turning a user error into ``error: ...`` and exit code 2. In a process of a
    multi-process launch the process then ends here (:func:`end_distributed_process`)."""
    code = _run_main(main, argv)
    end_distributed_process(code)
    return code


def end_distributed_process(code: int) -> None:
    """In a process of a multi-process launch (torchrun, ``accelerate launch``) that imported
    ``torch.distributed``: exit with ``code`` now, after joining this process's threads, running
    ``atexit``'s handlers and flushing stdout and stderr, but without the interpreter's finalization.
    Anywhere else, return.

    Why: gloo's worker threads drop a finished collective's work on their own schedule, and dropping
    a tensor that Python created takes the GIL. A thread that asks for the GIL while the interpreter
    finalizes is ended, inside a C++ destructor, so the process aborts ("terminate called without an
    active exception", SIGABRT) after its work is done; the launcher then reports the run as failed and
    stops the other processes, the main one possibly mid-write. On a loaded 2-core machine 13 and 8 of 60
    finished two-process launches that ended the usual way aborted in two runs, and none of 60 that
    ended here (``bench/distributed_exit.py``)."""
    if "torch.distributed" not in sys.modules:
        return  # no process group, so no gloo threads
    from ..launch import launched_processes

    if launched_processes() == 1:
        return
    import atexit
    import os
    import threading

    for thread in threading.enumerate():  # what finalization would wait for first
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's shutdown, temporary folders' cleanup, ...
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can reach it
            pass
    os._exit(code)


# Signals that stop a command as Ctrl-C does: SIGTERM (timeout, docker stop, a job scheduler, a launcher
# stopping its other processes) and SIGHUP (the terminal closed); SIGINT is Ctrl-C itself.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
# How long a stop waits, at a time, for an import in progress to end (see stop_signals_interrupt).
IMPORT_WAIT_S = 0.05


def _importing(frame) -> bool:
    """Whether ``frame`` or a caller is Python's import machinery: a module is being initialised."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def stop_signals_interrupt(received: list[int]):
    """While the block runs in the main thread, :data:`STOP_SIGNALS` raise ``KeyboardInterrupt``, so that
    the same clean-up runs for each: partial outputs removed, an interrupted run's resume command
    printed. Each signal received is appended to ``received``.

    A stop that arrives while a module is being imported waits for the import to end (checked every
    :data:`IMPORT_WAIT_S` by SIGALRM): an exception raised inside an extension's initialisation (torch's,
    matplotlib's) becomes an ImportError, or aborts the process from C++. A signal whose handler is not
    the default (ignored under ``nohup``, or a caller's own) is left alone, and a process forked
    meanwhile (a data loader's worker) ends on it as it would have."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()
    pending: list[int] = []

    def stop(signum, frame):
        if os.getpid() != pid:  # a forked child inherited this handler: the signal's default end
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
            os.kill(os.getpid(), signum)
            return
        if _importing(frame) and hasattr(signal, "setitimer"):
            pending.append(signum)
            signal.setitimer(signal.ITIMER_REAL, IMPORT_WAIT_S)
            return
        pending.clear()
        received.append(signum)
        raise KeyboardInterrupt

    def again(signum, frame):  # SIGALRM: a stop that waited for an import
        if pending:
            stop(pending[-1], frame)

    defaults = {signal.SIG_DFL, signal.default_int_handler}
    previous = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)  # SIGHUP: not on Windows
        if signum is not None and signal.getsignal(signum) in defaults:
            previous[signum] = signal.signal(signum, stop)
    if previous and hasattr(signal, "SIGALRM") and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL:
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, again)
    try:
        yield
    finally:
        if getattr(signal, "SIGALRM", None) in previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` was caused by a stop (a KeyboardInterrupt in its cause or context): a library may
    turn the interrupt into an error of its own."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _run_main(main: Callable[[list[str]], int | None], argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    received: list[int] = []
    try:
        try:
            with stop_signals_interrupt(received):
                code = main(argv)
        except Exception as err:
            if _interrupted(err):  # a library's error made of a stop (an import interrupted, say)
                raise KeyboardInterrupt from err
            raise
    except USER_ERRORS as err:
        if "--debug" in argv:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
            message = f"{err.filename}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        import signal

        signum = received[0] if received else signal.SIGINT
        stopped = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"error: {stopped}" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 128 + int(signum)  # the shell's code for a process ended by that signal: 130 for Ctrl-C
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
