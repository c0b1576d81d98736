# Copyright 2026 The THMM package authors. Licensed under the Apache License, Version 2.0.
"""Output folders: the package deletes or overwrites only what it wrote.

A folder a command writes into carries a marker file, :data:`OUTPUT_MARKER`, a small JSON object
with the command, the package version and the files the command wrote (``written``, paths relative
to the folder). A command writes into a folder that is missing, empty, or holds its own marker;
anything else is refused before a file is written or deleted, naming the folder, the option and a few
of the entries it holds. Files a user added to a marked folder stay: only the files the marker lists
are replaced or removed.

- :func:`check_output_dir`: the check alone (writes nothing), for a command to run with its option
  checks, before any work.
- :func:`claim_output_dir`: the check, then the marker (a folder the command fills over time, like a
  training run); :func:`record_outputs` adds what it wrote to the marker.
- :func:`staged_output_dir`: a folder written whole: built in a temporary sibling and moved into place
  only when complete (renamed, for a new folder), so an interrupted command leaves the old content
  or the new, never a mixture of the two.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "OUTPUT_MARKER",
    "OutputDirError",
    "WRITTEN_LIST",
    "check_output_dir",
    "claim_output_dir",
    "listed",
    "read_marker",
    "record_outputs",
    "remove_written_folder",
    "staged_output_dir",
    "unlisted_entries",
    "write_written_list",
]

OUTPUT_MARKER = ".thmm-output.json"
# Inside a folder the package writes whole (a checkpoint): the entries it wrote there, so that removing the
# folder leaves a file a user put in it (and the folder with it)
WRITTEN_LIST = ".thmm-written.json"
# The errors of a write that names no file: a full disk, a quota, a file-size limit, a read-only mount.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_STAGING_PREFIX = ".thmm-staging-"  # a sibling folder a staged output is built in (removed after)


class OutputDirError(ValueError):
    """An output folder the package may not write into; the message (one line) names the folder, the
    option and what is in the way."""


def _version() -> str:
    from thmm import __version__

    return __version__


def read_marker(path: str | os.PathLike) -> dict | None:
    """The marker of ``path`` (``command``, ``version``, ``written``), or ``None`` when it has none."""
    marker = Path(path) / OUTPUT_MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        data = {}  # a damaged marker still marks the folder as the package's; it lists nothing to replace
    written = data.get("written")
    data["written"] = [name for name in written if _inside(name)] if isinstance(written, list) else []
    return data


def _inside(name) -> bool:
    """Whether a marker's entry names something inside its folder: a relative path, not the folder
    itself (``.``, empty) and not above it (``..``); a damaged or forged marker's others are ignored."""
    if not isinstance(name, str) or not name.strip("/") or name.startswith("/") or "\\" in name:
        return False
    return not any(part in (".", "..") for part in name.rstrip("/").split("/"))


def listed(name: str, written: Iterable[str]) -> bool:
    """Whether the file ``name`` (relative) is among ``written``: listed itself, or inside a folder listed
    whole (``"checkpoints/step_00000001/"``, or a bare folder name, as markers before 0.2 list them)."""
    for entry in written:
        if name == entry or name.startswith(entry if entry.endswith("/") else entry + "/"):
            return True
    return False


def _write_marker(path: Path, command: str, written: Iterable[str]) -> None:
    """The marker, written atomically (a reader never sees half of it)."""
    marker = {"command": command, "version": _version(), "written": sorted(set(written))}
    temporary = path / (OUTPUT_MARKER + ".tmp")
    temporary.write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path / OUTPUT_MARKER)


def _entries(path: Path, limit: int = 4) -> str:
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _foreign(path: Path, written: set[str], will_write: Iterable[str]) -> list[str]:
    """Entries under ``path`` that match a pattern of ``will_write`` (relative glob patterns), or stand
    where a folder of one must go, and that the package did not write: writing there would overwrite,
    or mix with, a user's file."""
    foreign = []
    for pattern in will_write:
        parts = Path(pattern).parts
        for depth in range(1, len(parts)):  # a user's file named like a folder of the output
            above = path.joinpath(*parts[:depth])
            if not any(ch in str(above) for ch in "*?[") and above.exists() and not above.is_dir():
                foreign.append(above.relative_to(path).as_posix())
        for candidate in sorted(path.glob(pattern)):
            name = candidate.relative_to(path).as_posix()
            if name not in written and name != OUTPUT_MARKER:
                foreign.append(name)
    return sorted(set(foreign))


def replaceable_output_file(path: Path, is_own_record) -> bool:
    """Whether the file ``path`` may be replaced by a command that writes JSON lines: it is empty (no byte
    at all), or every line is a JSON object that ``is_own_record`` recognises as that command's record.
    Every line, not the first: a user's notes below one pasted record, or after a blank first line, are
    not the command's to replace."""
    with open(path, "rb") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:  # not JSON, a blank line, or bytes that are not UTF-8
                return False
            if not (isinstance(record, dict) and is_own_record(record)):
                return False
    return True


def check_output_dir(
    path: str | os.PathLike, option: str, command: str | None = None, will_write: Iterable[str] = ()
) -> dict | None:
    """Check that a command may write into ``path``; write nothing. Returns the folder's marker
    (``None`` for a missing or empty folder).

    Accepted: a missing folder (under a folder, not a file), an empty folder, and a folder holding
    :data:`OUTPUT_MARKER` of ``command`` (any command when ``None``) in which no file the command is
    about to write (``will_write``: relative glob patterns like ``"data/*.parquet"``) exists without
    being listed in the marker. Anything else raises :class:`OutputDirError`, one line naming ``option``,
    the folder and a few of its entries."""
    if not os.fspath(path).strip():  # Path("") is the current folder: never take that by accident
        raise OutputDirError(f"{option}: empty path; name a folder")
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{where}: is a file, not a folder")
    if path.is_symlink() and not path.exists():
        raise OutputDirError(f"{where}: a link to {os.readlink(path)}, which does not exist; create that folder, "
                             "or choose another")
    if not path.exists():
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputDirError(f"{where}: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputDirError(f"{where}: cannot create it, {ancestor} is not writable")
        return None
    if not any(path.iterdir()):
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputDirError(f"{where}: is not writable")
        return None
    marker = read_marker(path)
    if marker is None:
        raise OutputDirError(
            f"{where}: the folder holds files that thmm did not write ({_entries(path)}); nothing there is "
            f"deleted or overwritten: choose a new or empty folder (or one thmm wrote, with {OUTPUT_MARKER})"
        )
    if command is not None and marker.get("command") not in (None, command):
        raise OutputDirError(
            f"{where}: the folder holds the output of {marker['command']}, not of {command} "
            f"({_entries(path)}); choose another folder"
        )
    foreign = _foreign(path, set(marker["written"]), will_write)
    if foreign:
        raise OutputDirError(
            f"{where}: {', '.join(foreign[:4])}{' ...' if len(foreign) > 4 else ''} would be overwritten or mixed "
            "with this output, and thmm did not write it (it is not listed in "
            f"{OUTPUT_MARKER}); move it away or choose another folder"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputDirError(f"{where}: is not writable")
    return marker


def claim_output_dir(path: Path, option: str, command: str, replace: bool) -> None:
    """Make ``path`` an output folder of ``command`` (e.g. ``"thmm-train"``), after
    :func:`check_output_dir` (``option``, e.g. ``"--output-dir"``, names it in a refusal):

    - a missing folder is created (with its parents), an empty one is taken;
    - a folder holding the marker of ``command`` is taken; with ``replace`` the files its marker lists
      (what the package wrote there, see :func:`record_outputs`) are deleted first, and files a user
      added stay;
    - anything else raises :class:`OutputDirError` (a ``ValueError``), and nothing is written or deleted.

    Then the marker is written: ``command``, the package version, and ``written`` (kept as it was
    unless ``replace``)."""
    path = Path(path)
    marker = check_output_dir(path, option, command)
    written = marker["written"] if marker else []
    if replace and written:
        for name in sorted(written, key=lambda n: n.count("/"), reverse=True):
            _remove(path, name)
        written = []
    path.mkdir(parents=True, exist_ok=True)
    _write_marker(path, command, written)


def record_outputs(path: str | os.PathLike, names: Iterable[str]) -> None:
    """Add ``names`` (paths relative to ``path``; a folder name covers the folder) to the files the
    marker of ``path`` lists as written by the package, so that a later ``replace`` may remove them."""
    path = Path(path)
    marker = read_marker(path)
    if marker is None:
        raise OutputDirError(f"{path}: has no {OUTPUT_MARKER}; claim it (claim_output_dir) before writing")
    _write_marker(path, marker.get("command") or "thmm", [*marker["written"], *names])


def _written_list(folder: Path) -> list[str] | None:
    """The entries :data:`WRITTEN_LIST` of ``folder`` names (plain names inside it), or ``None`` when it has
    none that can be read (a folder written before the list, or whose writing was interrupted)."""
    try:
        names = json.loads((folder / WRITTEN_LIST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(names, list):
        return None
    return [n for n in names if isinstance(n, str) and _inside(n) and "/" not in n.rstrip("/")]


def unlisted_entries(folder: Path) -> set[str]:
    """The entries of ``folder`` that its :data:`WRITTEN_LIST` does not name (none without a list, or
    without the folder): a user's, to leave out of the next list."""
    names = _written_list(folder)
    if names is None or not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir()} - {n.rstrip("/") for n in names} - {WRITTEN_LIST}


def write_written_list(folder: Path, also: Iterable[str] = (), leave: Iterable[str] = ()) -> None:
    """Write :data:`WRITTEN_LIST` in ``folder``: its entries now, and ``also`` (written next), but not
    ``leave`` (a user's, found there before the package wrote)."""
    names = ({p.name for p in folder.iterdir()} | set(also)) - set(leave) - {WRITTEN_LIST}
    temporary = folder / (WRITTEN_LIST + ".tmp")
    temporary.write_text(json.dumps(sorted(names)) + "\n", encoding="utf-8")
    os.replace(temporary, folder / WRITTEN_LIST)


def remove_written_folder(folder: Path, ignore_errors: bool = True) -> None:
    """Remove what the package wrote in ``folder`` (its :data:`WRITTEN_LIST`), then the folder if that
    leaves it empty: a user's file stays, and the folder with it. A folder without a list (written
    before it, or interrupted before the list) goes whole. A failed removal raises unless
    ``ignore_errors`` (a checkpoint left over is removed again later)."""
    names = _written_list(folder)
    if names is None:
        shutil.rmtree(folder, ignore_errors=ignore_errors)
        return
    for name in [*names, WRITTEN_LIST, WRITTEN_LIST + ".tmp"]:
        entry = folder / name.rstrip("/")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=ignore_errors)
        elif entry.exists() or entry.is_symlink():
            with contextlib.suppress(*((OSError,) if ignore_errors else ())):
                entry.unlink()
    try:
        folder.rmdir()
    except OSError:  # not empty: a user's file is in it; an empty list keeps it theirs if the package writes here again
        with contextlib.suppress(OSError):
            write_written_list(folder, leave=[p.name for p in folder.iterdir()])


def _remove(root: Path, name: str) -> None:
    """Remove ``root/name`` (a file, or a folder the package wrote whole), and the folders above it
    that this leaves empty, up to ``root``; a name that is not strictly inside ``root`` is ignored."""
    target = root / name
    try:
        if not target.resolve().relative_to(root.resolve()).parts:  # the folder itself
            return
    except ValueError:  # above it, or through a link that leads out of it
        return
    if target.is_dir() and not target.is_symlink():
        remove_written_folder(target, ignore_errors=False)  # as any removal of a replaced run: a failure is said
    elif target.exists() or target.is_symlink():
        target.unlink()
    parent = target.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def is_under(name, folder: Path) -> bool:
    """Whether the path ``name`` lies in ``folder`` (or is it)."""
    try:
        Path(name).absolute().relative_to(Path(folder).absolute())
        return True
    except ValueError:
        return False


def _move(source: Path, target: Path) -> None:
    """``os.replace`` (atomic), or a copy when ``target`` is on another file system (a mount point)."""
    try:
        os.replace(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.copy2(source, target)
        source.unlink()


def work_folder(parent: Path, prefix: str) -> Path:
    """A new hidden folder ``PREFIX{host}-{pid}-XXXX`` in ``parent``, where a command builds its output
    before moving it into place. Such folders that a killed process of this machine left (its pid gone:
    nothing could remove them then) are removed first; they are the package's by their name."""
    import socket

    host = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"
    mine = f"{prefix}{host}-"
    for stale in parent.glob(f"{glob.escape(mine)}*"):
        pid = stale.name[len(mine):].split("-", 1)[0]
        if pid.isdigit() and stale.is_dir() and not stale.is_symlink() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{mine}{os.getpid()}-", dir=parent))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


@contextlib.contextmanager
def staged_output_dir(
    path: str | os.PathLike, option: str, command: str, will_write: Iterable[str] = ()
) -> Iterator[Path]:
    """Write a whole output folder safely: ``with staged_output_dir(out, "--out", "thmm-stats") as
    staging:`` write the files into ``staging``; when the block completes they are moved into ``out``.

    ``out`` is checked first (:func:`check_output_dir`, with ``will_write`` and the files actually
    written), and again before anything in it changes. A missing ``out`` receives the staging folder by
    one rename; an empty or marked one receives the new files one by one (each an atomic replace), and
    then loses the files its marker listed that the new output no longer has. Files the package did not
    write are never touched. If the block raises, the staging folder is removed and ``out`` is as it was.
    """
    path = Path(path)
    will_write = list(will_write)
    check_output_dir(path, option, command, will_write)
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = work_folder(parent, _STAGING_PREFIX + path.name + "-")
    try:
        try:
            yield staging
        except OSError as err:
            if is_under(err.filename, staging) if err.filename else err.errno in WRITE_ERRNOS:
                # a write into the staging folder failed (a full disk): name the output, not a hidden folder
                raise OSError(err.errno, f"{option} {path}: could not be written ({err.strerror or err})") from None
            raise
        new = _files(staging)
        marker = check_output_dir(path, option, command, [*will_write, *new])
        if not path.exists():
            _write_marker(staging, command, new)
            os.rename(staging, path)  # atomic: the folder appears complete, or not at all
            return
        old = set(marker["written"]) if marker else set()
        # Listed first, so that a command killed half-way still finds every file it wrote on its next run.
        _write_marker(path, command, old | set(new))
        for name in new:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            _move(staging / name, path / name)
        for name in sorted(old - set(new)):
            _remove(path, name)
        _write_marker(path, command, new)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
