"""The command line refuses what it cannot do in one line, without a traceback.

Each case runs ``python -m jaxenc.cli`` in a subprocess, as a user would: a paper config on
the tiny twin with more folds than stories, a learning rate or weight decay out of range, an
``--out`` that is a file or cannot be written, and a run folder another process is using.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import QUICK

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _one_line_error(*argv) -> str:
    run = subprocess.run([sys.executable, "-m", "jaxenc.cli", *argv], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxenc: error:"), run.stderr
    return lines[0]


def test_a_paper_config_on_the_tiny_twin_names_the_fold_settings_to_change(tmp_path):
    message = _one_line_error("run", str(EXPERIMENTS / "ablations.toml"), "--set", "data.preset=tiny",
                              "--out", str(tmp_path / "run"), "--quiet")
    assert "ridge.folds = 5 and train.n_folds = 5 folds over training stories" in message
    assert "subject UTS02 has 2 training stories" in message
    assert "--set ridge.folds=2 --set train.n_folds=2" in message


def test_settings_out_of_range_and_unusable_output_folders(tmp_path):
    config = str(EXPERIMENTS / "ablations.toml")
    out = str(tmp_path / "run")
    assert "train.learning_rate must be positive, got -0.1" in _one_line_error(
        "fit", config, "--out", out, "--set", "train.learning_rate=-0.1")
    assert "train.weight_decay must be at least 0, got -1.0" in _one_line_error(
        "fit", config, "--out", out, "--set", "train.weight_decay=-1")

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert "--out names a file" in _one_line_error("extract", config, "--out", str(a_file))
    assert "--out lies under the file" in _one_line_error("extract", config, "--out", str(a_file / "run"))
    # chmod does not stop root; /sys refuses new files to everyone.
    if os.geteuid() == 0:
        locked = Path("/sys/jaxenc-run")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        locked = tmp_path / "ro" / "run"
    assert "cannot write into" in _one_line_error("extract", config, "--out", str(locked))


def test_a_run_folder_in_use_stops_a_second_run_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # This test's own process is alive, so its lock is not stale.
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / "run.lock").write_text(json.dumps(holder))
    message = _one_line_error("extract", str(EXPERIMENTS / "ablations.toml"), "--out", str(out))
    assert (f"run folder in use by pid {os.getpid()} on {socket.gethostname()} since 2026-01-01T00:00:00+00:00"
            in message)
    assert str(out / "run.lock") in message


@pytest.mark.slow
def test_two_runs_into_one_folder_at_once(tmp_path):
    """A real second process while the first runs: it stops at once, the first finishes."""
    out = tmp_path / "run"
    config = tmp_path / "quick.toml"
    config.write_text('name = "quick"\n[table]\ntargets = ["voxels"]\n')
    argv = [sys.executable, "-m", "jaxenc.cli", "run", str(config), "--out", str(out)] + QUICK
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.lock").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        message = _one_line_error("run", str(config), "--out", str(out), *QUICK)
        assert f"run folder in use by pid {first.pid} on {socket.gethostname()}" in message
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert "planted checks:" in stdout and not (out / "run.lock").exists()
