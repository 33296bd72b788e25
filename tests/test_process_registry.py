"""Tests of uadlab._process_registry: one entry per training process, stale entries ignored and removed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import psutil
import pytest
from conftest import REPO, RegisteredProcess

from uadlab import _process_registry as registry


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty registry of this test's own."""
    path = tmp_path / "registry"
    monkeypatch.setenv(registry.RUNTIME_VARIABLE, str(path))
    return path


def _entries(folder):
    return sorted(path.name for path in folder.iterdir())


def test_an_entry_is_held_while_inside_and_removed_on_exit(folder):
    assert registry.live_processes() == set()
    with registry.registered():
        assert registry.live_processes() == {os.getpid()}
        (entry,) = folder.iterdir()
        record = json.loads(entry.read_text())
        assert record == {"pid": os.getpid(), "start_time": psutil.Process().create_time()}
        with registry.registered():  # re-entrant: the inner exit keeps the entry
            pass
        assert registry.live_processes() == {os.getpid()}
    assert registry.live_processes() == set() and _entries(folder) == []


def test_the_folder_is_private_and_defaults_to_the_runtime_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.RUNTIME_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert registry.registry_dir() == tmp_path / "uadlab"
    assert stat.S_IMODE((tmp_path / "uadlab").stat().st_mode) == 0o700


def test_a_linked_folder_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setenv(registry.RUNTIME_VARIABLE, str(tmp_path / "link"))
    assert registry.registry_dir() is None
    with registry.registered():
        assert registry.live_processes() == set()
    assert _entries(tmp_path / "real") == []


def test_two_processes_see_each_other(folder):
    with RegisteredProcess(folder) as other:
        assert registry.live_processes() == {other.pid}
        with registry.registered():
            assert registry.live_processes() == {other.pid, os.getpid()}
            view = subprocess.run([sys.executable, "-c", "from uadlab._process_registry import live_processes; "
                                   "print(sorted(live_processes()))"], capture_output=True, text=True, check=True,
                                  env={**os.environ, registry.RUNTIME_VARIABLE: str(folder)}, cwd=REPO)
            assert view.stdout.strip() == str(sorted({other.pid, os.getpid()}))
        other.release()
        assert registry.live_processes() == set() and _entries(folder) == []


def test_the_entry_of_a_killed_process_is_ignored_and_removed(folder):
    with RegisteredProcess(folder) as other:
        assert len(_entries(folder)) == 1
        other.process.send_signal(signal.SIGKILL)  # no exit handler runs: the entry stays behind
        other.process.wait(timeout=30)
        assert len(_entries(folder)) == 1
        assert registry.live_processes() == set()
        assert _entries(folder) == []


def test_a_recycled_process_id_is_told_apart_by_its_start_time(folder):
    with RegisteredProcess(folder) as other:
        (entry,) = folder.iterdir()
        record = json.loads(entry.read_text())
        # What an entry of an earlier process with the same id would hold: another start time.
        stale = folder / f"{other.pid}-1.json"
        stale.write_text(json.dumps({**record, "start_time": record["start_time"] - 3600}))
        assert registry.live_processes() == {other.pid}
        assert not stale.exists() and entry.exists()


def test_files_that_are_no_entries_are_left_alone(folder):
    folder.mkdir()
    (folder / "notes.json").write_text("not json")
    (folder / ".123-4.tmp").write_text("{}")
    assert registry.live_processes() == set()
    assert _entries(folder) == [".123-4.tmp", "notes.json"]


def test_a_process_that_exits_while_registered_leaves_no_entry(folder):
    # A training in a daemon thread never leaves its `with` block: the exit handler removes the entry.
    code = ("import threading, time; from uadlab._process_registry import live_processes, registered\n"
            "def train():\n    with registered():\n        time.sleep(60)\n"
            "threading.Thread(target=train, daemon=True).start()\n"
            "while not live_processes():\n    time.sleep(0.01)\n"
            "print('registered', flush=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, registry.RUNTIME_VARIABLE: str(folder)})
    assert done.stdout.strip() == "registered"
    assert _entries(folder) == []
