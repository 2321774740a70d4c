"""One process at a time in a run folder: RunStore.lock."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from jaxenc.errors import ConfigError, DataWarning
from jaxenc.store import RunStore


def _write_lock(store: RunStore, pid: int, host: str = socket.gethostname()) -> None:
    store.root.mkdir(parents=True, exist_ok=True)
    store.path(RunStore.LOCK).write_text(json.dumps({"pid": pid, "host": host, "started": "2026-01-01T00:00:00+00:00"}))


def test_the_lock_records_its_holder_is_reentrant_and_is_released(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.lock():
        holder = json.loads(store.path(RunStore.LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with store.lock():
            assert store.path(RunStore.LOCK).is_file()
        assert store.path(RunStore.LOCK).is_file()
        # A second store of the same folder is another user of it, even in this process.
        with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()} on {re.escape(socket.gethostname())}"):
            with RunStore(tmp_path / "run").lock():
                pass
    assert not store.path(RunStore.LOCK).exists()
    assert [p.name for p in store.root.iterdir()] == []


def test_a_live_or_foreign_holder_is_obeyed_and_a_dead_one_taken_over(tmp_path):
    store = RunStore(tmp_path / "run")
    _write_lock(store, os.getppid())
    with pytest.raises(ConfigError, match=f"pid {os.getppid()} .* since 2026-01-01T00:00:00"):
        with store.lock():
            pass
    # Another host's process cannot be checked from here.
    _write_lock(store, 1, host="elsewhere.invalid")
    with pytest.raises(ConfigError, match="on elsewhere.invalid"):
        with store.lock():
            pass
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)
    _write_lock(store, dead)
    with pytest.warns(DataWarning, match=f"taking over the stale lock .* of pid {dead}"):
        with store.lock():
            assert json.loads(store.path(RunStore.LOCK).read_text())["pid"] == os.getpid()
    assert not store.path(RunStore.LOCK).exists()
