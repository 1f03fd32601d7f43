"""The run owns its output folder: a marker says so (never a folder's name), a lock keeps a second run out,
and temporary names carry the writing process so a clean-up never deletes a live run's file in progress."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec

from curator.errors import UserError
from curator.io.paths import Options, is_local, move_file, url_to_fs

log = logging.getLogger(__name__)

MARKER = ".curator/output.json"  # written into every output folder a run owns
MANIFEST = ".curator/manifest.jsonl"  # the done-manifest (curator.io.manifest); older runs' only marker
LOCK = ".curator/lock"
TMP_MARK = ".curator-tmp-"  # `<output>.curator-tmp-<host>-<pid>-<hex>`: a file being written
HOST = socket.gethostname()
UNREADABLE_LOCK_S = 60  # a lock file still empty or torn after this long was left by a crash


class OutputInUseError(UserError, RuntimeError):
    """Another live run holds the output folder's lock."""


class OutputNotWritableError(UserError, PermissionError):
    """output.path cannot be created or written."""


def _host_key(host: str = HOST) -> str:
    return hashlib.sha1(host.encode("utf-8")).hexdigest()[:8]


def temporary_suffix() -> str:
    """What atomic_write appends to a file's name: the writing host and process, then a random part."""
    return f"{TMP_MARK}{_host_key()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    """Whether a process with this PID runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def live_temporary(name: str) -> bool:
    """True for a temporary file another live process on this host is still writing (never remove it)."""
    parts = name.rsplit(TMP_MARK, 1)[-1].split("-")
    if len(parts) != 3 or parts[0] != _host_key() or not parts[1].isdigit():
        return False  # another host's or an older run's: the lock we hold says that run is over
    pid = int(parts[1])
    return pid != os.getpid() and _alive(pid)


def is_run_folder(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """A folder this program wrote as a run's output (its marker or lock, or an older run's manifest)."""
    return any(fs.exists(posixpath.join(root, name)) for name in (MARKER, MANIFEST, LOCK))


def data_outputs(fs: fsspec.AbstractFileSystem, root: str) -> set[str]:
    """The data files (relative names) a run folder's manifest records: not its quarantine or filtered."""
    path = posixpath.join(root, MANIFEST)
    if not fs.exists(path):
        return set()
    names = set()
    for line in fs.cat_file(path).decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("outputs"):
            names.add(entry["outputs"][0])
    return names


def _check_folder(fs: fsspec.AbstractFileSystem, root: str, output: str) -> None:
    """Refuse a path that is a file, or a folder holding files some other program put there."""
    if fs.isfile(root):
        raise OutputNotWritableError(f"output.path {output!r} is a file; choose a folder (new or empty).")
    if fs.isdir(root) and fs.ls(root, detail=False) and not is_run_folder(fs, root):
        raise OutputNotWritableError(
            f"output.path {output!r} already holds files that no run of curator-classify wrote (no "
            f"{MARKER}); choose a new or empty folder so they are never overwritten."
        )


def _read(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(fs.cat_file(path).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(fs: fsspec.AbstractFileSystem, path: str, holder: dict[str, Any] | None) -> bool:
    """A lock left by a run that is gone: a dead PID on this host, or torn and old."""
    if holder is None:
        try:
            age = time.time() - os.path.getmtime(path) if is_local(fs) else UNREADABLE_LOCK_S
        except OSError:
            return True
        return age >= UNREADABLE_LOCK_S
    return holder.get("host") == HOST and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])


def _create(fs: fsspec.AbstractFileSystem, path: str, text: bytes) -> bool:
    """Create the lock file only if there is none (exclusive on local disks, best effort elsewhere)."""
    if not is_local(fs):
        if fs.exists(path):
            return False
        fs.pipe_file(path, text)
        return True
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "wb") as file:
        file.write(text)
    return True


def _take_over(fs: fsspec.AbstractFileSystem, path: str, holder: dict[str, Any] | None) -> None:
    """Move a stale lock aside (only if it is still the one judged stale), so an exclusive create can win."""
    aside = f"{path}.stale-{os.getpid()}"
    try:
        move_file(fs, path, aside)
    except FileNotFoundError:
        return  # another starting run moved it first; the exclusive create decides between us
    if _read(fs, aside) != holder:  # a live run's fresh lock slipped in between: put it back
        move_file(fs, aside, path)
        return
    fs.rm_file(aside)
    who = f"PID {holder.get('pid')} on {holder.get('host')}" if holder else "an unreadable lock"
    log.warning("Took over the lock of output folder %s from %s, which is no longer running", path, who)


def _acquire(fs: fsspec.AbstractFileSystem, path: str, output: str, me: dict[str, Any]) -> None:
    text = json.dumps(me).encode("utf-8")
    for _ in range(3):
        if _create(fs, path, text):
            return
        holder = _read(fs, path)
        if not _stale(fs, path, holder):
            break
        _take_over(fs, path, holder)
    holder = _read(fs, path) or {}
    started = holder.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "an unknown time"
    raise OutputInUseError(
        f"output.path {output!r} is in use by another run (PID {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, since {since}): wait for it to finish, or choose another output.path. "
        f"If that run is gone, delete {path}."
    )


@contextmanager
def own_output(output: str, options: Options = None) -> Iterator[None]:
    """Mark `output` as this program's run folder and hold its lock while the run is inside the block."""
    fs, root = url_to_fs(output, options)
    root = root.rstrip("/") or "/"
    _check_folder(fs, root, output)
    path = posixpath.join(root, LOCK)
    me = {"host": HOST, "pid": os.getpid(), "started": time.time(), "run": uuid.uuid4().hex}
    try:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        _acquire(fs, path, output, me)
        if not fs.exists(posixpath.join(root, MARKER)):
            fs.pipe_file(posixpath.join(root, MARKER), json.dumps({"curator_output": 1}).encode("utf-8"))
    except OSError as err:  # read-only, no permission, a file in the way, disk full
        raise OutputNotWritableError(
            f"output.path {output!r} cannot be written ({err.strerror or err}); "
            "choose a folder you can write to."
        ) from err
    try:
        yield
    finally:
        if _read(fs, path) == me:
            fs.rm_file(path)
