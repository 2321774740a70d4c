"""The command line refuses what it cannot do in one line, without a traceback.

Each case runs ``python -m jaxenc.cli`` in a subprocess, as a user would: a paper config on
the tiny twin with more folds than stories, a learning rate or weight decay out of range, an
``--out`` that is a file or cannot be written, and a run folder another process is using.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxenc import cli
from tests.test_cli import QUICK

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _one_line_error(*argv) -> str:
    run = subprocess.run([sys.executable, "-m", "jaxenc.cli", *argv], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxenc: error:"), run.stderr
    return lines[0]


def test_more_folds_than_the_tiny_twin_has_stories_names_the_fold_settings_to_change(tmp_path):
    # The preset alone brings its 2 folds (PRESET_DEFAULTS); the paper's 5, asked for, are refused.
    message = _one_line_error("run", str(EXPERIMENTS / "ablations.toml"), "--set", "data.preset=tiny",
                              "--set", "ridge.folds=5", "--set", "train.n_folds=5",
                              "--out", str(tmp_path / "run"), "--quiet")
    assert "ridge.folds = 5 and train.n_folds = 5 folds over training stories" in message
    assert "subject UTS02 has 2 training stories" in message
    assert "--set ridge.folds=2 --set train.n_folds=2" in message


@pytest.mark.slow
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


@pytest.fixture
def terminal_ctrl_c():
    """Python's own Ctrl-C handler, as a command started from a terminal has it: the test
    process may have inherited another (a library or an earlier test in the same worker can set
    SIGINT to be ignored), and the command's KeyboardInterrupt path needs this one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_stage_ends_in_one_line_and_releases_the_lock(tmp_path, monkeypatch, capsys, signum,
                                                                     terminal_ctrl_c):
    """Ctrl-C or SIGTERM in the middle of a stage: one line naming it, the lock released."""
    from jaxenc.experiment import stages

    held = []

    def extract(self):
        held.append(self.store.path("run.lock").is_file())
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the handler raises long before this ends

    monkeypatch.setattr(stages.Experiment, "extract", stages._locked(extract))
    out = tmp_path / "run"
    code = cli.main(["extract", str(EXPERIMENTS / "ablations.toml"), "--out", str(out), "--quiet"])
    assert code == 128 + signum and held == [True]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert lines == [f"jaxenc: interrupted by {name} during feature extraction; what was finished is kept: run the "
                     "same command again to resume"]
    assert not (out / "run.lock").exists()
    # The handler is the caller's again once main() returns.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _scores(out: Path) -> dict:
    from jaxenc.report import RunResults

    return {(m.subject, m.features, m.model, m.target): m.scores for m in RunResults.load(out).models}


@pytest.mark.slow
def test_a_run_signalled_during_extraction_and_during_a_fit_resumes_to_the_same_scores(tmp_path):
    """A real `jaxenc run` (default extractors, ridge and MLLinear): SIGTERM while it extracts,
    the same command again, Ctrl-C once a network checkpoint is stored, the same command again;
    its scores equal those of an uninterrupted run bit for bit (about 4 minutes on 2 cores)."""
    config = tmp_path / "quick.toml"
    config.write_text('name = "quick"\n')
    settings = ["--quiet", "--set", "data.preset=tiny", "--set", 'data.subjects=["UTS01"]',
                "--set", 'table.models=["ridge", "mllinear"]', "--set", 'table.targets=["voxels"]',
                "--set", "ridge.folds=2", "--set", "ridge.band_candidates=2", "--set", "train.n_folds=2",
                "--set", "train.max_epochs=20", "--set", "train.epochs_per_call=1",
                "--set", "train.checkpoint_every=1", "--set", "networks.hidden=8",
                "--set", "evaluate.permutations=100", "--set", "analyses.cluster_k=3",
                "--set", "nonlinearity.run=false"]

    def command(out):
        return [sys.executable, "-m", "jaxenc.cli", "run", str(config), "--out", str(out), *settings]

    def interrupt(out, signum, ready) -> str:
        run = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not ready():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        run.send_signal(signum)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 128 + signum and "Traceback" not in stderr, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and not (out / "run.lock").exists(), stderr
        return lines[0]

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True)

    out = tmp_path / "run"
    # The first feature entry committed: extraction is under way.
    assert "SIGTERM during feature extraction" in interrupt(
        out, signal.SIGTERM, lambda: any((out / "features").glob("*/*/*/*/*/committed.json")))
    assert not (out / "predictions").exists()
    # A network's first checkpoint stored: the fits are under way.
    assert "Ctrl-C (SIGINT) during the fits" in interrupt(
        out, signal.SIGINT, lambda: any((out / "checkpoints").glob("*/*/*")))
    assert not (out / "metrics.json").exists()
    subprocess.run(command(out), check=True, capture_output=True)

    expected, resumed = _scores(reference), _scores(out)
    assert resumed.keys() == expected.keys() and len(expected) == 6
    for key, scores in expected.items():
        for name in ("r", "r2", "r2_cod", "p"):
            np.testing.assert_array_equal(getattr(resumed[key], name), getattr(scores, name), err_msg=str(key))


def test_settings_that_cannot_run_stop_before_any_work(tmp_path):
    """Counts past 32 bits at load; a network too large for the device before extraction."""
    config = str(EXPERIMENTS / "ablations.toml")
    assert "evaluate.permutations = 1000000000000 does not fit a 32-bit integer" in _one_line_error(
        "fit", config, "--out", str(tmp_path / "a"), "--set", "evaluate.permutations=1000000000000")
    out = tmp_path / "run"
    message = _one_line_error("run", config, "--out", str(out), *QUICK,
                              "--set", 'table.models=["mlp"]', "--set", "train.n_folds=2",
                              "--set", "networks.hidden=1000000000")
    assert "networks.hidden = 1000000000: the fits' compiled program needs at least" in message
    assert not (out / "features").exists() and not (out / "run.lock").exists()


def test_a_full_disk_in_a_stage_ends_in_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    from jaxenc.experiment import stages
    from jaxenc.store import atomic_write

    def extract(self):
        def full(fh):
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file named

        atomic_write(self.store.path("features/index.json"), full)

    monkeypatch.setattr(stages.Experiment, "extract", stages._locked(extract))
    out = tmp_path / "run"
    assert cli.main(["extract", str(EXPERIMENTS / "ablations.toml"), "--out", str(out), "--quiet"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"jaxenc: error: No space left on device: {out / 'features' / 'index.json'}"]
    assert not (out / "run.lock").exists()
