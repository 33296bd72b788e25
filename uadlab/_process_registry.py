"""Registry of the uadlab processes training on this machine: one small file per process.

A process holds an entry while it trains (:func:`registered`, entered by the fit core, so by
``uadlab train``, ``uadlab reproduce`` and a lab's training in a notebook kernel alike), so that the
thread budget (:mod:`uadlab._threads`) divides the usable cores among the trainings running at once,
also those started apart: two notebook kernels, two terminals.

An entry is ``<pid>-<start>.json`` in :func:`registry_dir`, holding the process id and the process's
start time (``psutil.Process.create_time``, seconds since the epoch):

- it is written atomically (a temporary name, then ``os.replace``) and removed when training ends (the
  context manager; ``atexit`` for an exit that skips it);
- an entry whose process is gone, or whose process id now belongs to another process (another start
  time: the id was recycled), is stale: ignored, and deleted by whoever reads it (:func:`live_processes`);
- there is no lock: a process writes and removes only its own entry, and a reader deletes only stale
  ones, whose names no live process can take again (the start time is in the name).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

__all__ = ["RUNTIME_VARIABLE", "registry_dir", "registered", "live_processes"]

#: Environment variable naming the registry's folder (default: see :func:`registry_dir`).
RUNTIME_VARIABLE = "UADLAB_RUNTIME_DIR"
#: Two start times of one process read apart differ by the system clock's adjustments at most.
_START_TOLERANCE_S = 1.0

_lock = threading.Lock()
_state = {"owner": None, "depth": 0, "entry": None}  # this process's registration (owner: its pid)


def registry_dir() -> Path | None:
    """The folder of the registry's entries, created (mode 700) when missing.

    ``$UADLAB_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/uadlab`` (a per-user folder in memory,
    emptied at logout), else ``<temp dir>/uadlab-<uid>``.

    Returns:
        The folder, or ``None`` when it cannot be used: it cannot be created, is no folder, is a
        symbolic link or belongs to another user. Then every process counts itself alone.
    """
    if os.environ.get(RUNTIME_VARIABLE):
        folder = Path(os.environ[RUNTIME_VARIABLE])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "uadlab"
    else:
        user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
        folder = Path(tempfile.gettempdir()) / f"uadlab-{user}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        return None  # a link or a file, or another user's folder (in a shared temp dir): not trusted
    return folder


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Hold this process's entry in the registry while inside (re-entrant, thread-safe).

    The entry is written on the outermost entry and removed on its exit; an ``atexit`` handler
    removes it if the process exits from inside. A child forked from a registered process is not
    registered: it starts its own entry if it enters. Nothing is raised when the registry cannot be
    written; the process then counts only itself (:func:`uadlab._threads.concurrent_processes`).
    """
    with _lock:
        if _state["owner"] != os.getpid():  # first use, or a forked child: the parent's entry is not ours
            _state.update(owner=os.getpid(), depth=0, entry=None)
        if _state["depth"] == 0:
            _state["entry"] = _write_entry()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            if _state["owner"] == os.getpid():
                _state["depth"] -= 1
                if _state["depth"] == 0:
                    _remove_entry()


def live_processes() -> set[int]:
    """Process ids of the registered processes that are still running; stale entries are deleted.

    Returns:
        The ids, this process's included while it is registered; empty without a usable registry.
    """
    folder = registry_dir()
    if folder is None:
        return set()
    live = set()
    for path in folder.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
            pid, start = int(entry["pid"]), float(entry["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile by its process, or not an entry
        now = _start_time(pid)
        if now is None or abs(now - start) > _START_TOLERANCE_S:
            path.unlink(missing_ok=True)  # its process is gone, or its id now names another process
        else:
            live.add(pid)
    return live


def _start_time(pid: int) -> float | None:
    """The start time of a running process (seconds since the epoch); ``None`` if none runs (or a zombie)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def _write_entry() -> Path | None:
    """Write this process's entry atomically; its path, or ``None`` without a usable registry."""
    folder = registry_dir()
    start = _start_time(os.getpid())
    if folder is None or start is None:
        return None
    path = folder / f"{os.getpid()}-{round(start * 1000)}.json"
    partial = path.with_name(f".{path.stem}.tmp")  # the name is this process's alone, as is the entry's
    try:
        partial.write_text(json.dumps({"pid": os.getpid(), "start_time": start}))
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return None
    return path


def _remove_entry() -> None:
    """Delete this process's entry, if it wrote one."""
    entry, _state["entry"] = _state["entry"], None
    if entry is not None:
        with contextlib.suppress(OSError):
            entry.unlink(missing_ok=True)


def _remove_at_exit() -> None:
    """``atexit``: the entry of a process that exits while registered (never a forked parent's)."""
    with _lock:
        if _state["owner"] == os.getpid():
            _state["depth"] = 0
            _remove_entry()


atexit.register(_remove_at_exit)
