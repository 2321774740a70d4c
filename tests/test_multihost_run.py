"""``jaxenc run`` as a job of 2 processes x 4 CPU devices: one folder, the one-device numbers, and
a lost process that ends the other with one line.

The job runs on one machine as the README's "Several hosts" section shows it, each process a
``jaxenc run ... --coordinator localhost:PORT --num-processes 2 --process-id I --cpu-devices 4``
(gloo between the processes), with a free port. On failure the other process is killed at once
and the output of both is shown.

Two jobs against a one-process, one-device run of the same config:

- the default suite's (``QUICK_FIT``): the tiny twin's first subject with its planted features
  (copied from the one-device run's folder, so the job fits and scores only), ridge and the MLP
  (1 epoch, 2 fold models on 8 devices: padded) on voxels, 10 permutations. Both runs take 46 s
  of CPU time from an empty compile cache (the one-device run 15 s, the job 29.5 s over its two
  processes; XLA's compiles dominate) and 33 s from the suite's warm cache; 75 s and 54 s of wall
  time on 2 cores under a load of 11-13.
- the thorough one (``SETTINGS``, marked slow): Whisper extraction split over the processes,
  both subjects, ridge and the MLP on voxels and PCA components (PCA fitted sharded over both
  processes), 3 epochs; 224 s on 2 cores under a load of 10-13.

Tolerances of the equality tests: the job fits on a mesh of 8 devices over both processes (and
the thorough one extracts the Whisper features on 4 devices per process, the one-device run on 1),
so its predictions differ from one device's by float32 rounding; at most
``tests._runs.PREDICTION_ATOL`` (1e-4, the bound of the networks' sharded training on 8
devices; measured here at most 9e-6 for the MLP, 2e-5 for ridge, voxels and PCA targets, after
3 epochs; 1.2e-7 and 7.2e-7 in the default suite's job), against O(0.1) for
a story extracted twice or never, a voxel block or model slot misplaced. The per-voxel scores
follow from the predictions' difference (:func:`tests._runs.assert_same_run_numbers`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxenc import multihost
from jaxenc.errors import ConfigError
from jaxenc.store import RunStore
from tests._runs import assert_same_run_numbers

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "table1.toml"


def _settings(*settings: str) -> list[str]:
    return ["--quiet"] + [item for setting in settings for item in ("--set", setting)]


# Whisper (the embedded default) extracts the audio features, split over the processes; planted
# semantic features; ridge and the MLP on voxels and PCA components (fitted sharded over both
# processes), 3 epochs.
SETTINGS = _settings("data.preset=tiny", "semantic.source=planted", 'table.feature_sets=["audio"]',
                     'table.models=["ridge","mlp"]', 'table.targets=["voxels","pca"]', "table.n_components=8",
                     "ridge.folds=2", "train.n_folds=2", "train.max_epochs=3", "networks.hidden=8",
                     "evaluate.permutations=100", "analyses.partition=false", "analyses.clustering=false",
                     "nonlinearity.run=false")
# Planted features and ridge only: the lost-process test needs a job that runs, not the models.
_QUICK = ("data.preset=tiny", "audio.source=planted", "semantic.source=planted", 'table.feature_sets=["audio"]',
          'table.models=["ridge"]', 'table.targets=["voxels"]', "ridge.folds=2", "evaluate.permutations=100",
          "analyses.partition=false", "analyses.clustering=false", "nonlinearity.run=false")
QUICK = _settings(*_QUICK)
# The default suite's equality job: QUICK's on the first subject with the MLP beside ridge (2 fold
# models of 1 epoch, networks.hidden as in SETTINGS), 10 permutations (every voxel still gets its
# p-value; the significance is not what the job changes).
QUICK_FIT = _settings(*(s for s in _QUICK if not s.startswith(("table.models=", "evaluate.permutations="))),
                      'table.models=["ridge","mlp"]', "evaluate.permutations=10", 'data.subjects=["UTS01"]',
                      "train.n_folds=2", "train.max_epochs=1", "networks.hidden=8")
# A whole job, both processes (the slow tests' fixture, the one-device run and the job: 224 s on
# 2 cores under a load of 10-13).
TIMEOUT = 600.0
# The heartbeat of the lost-process tests: short, yet long for a heartbeat thread on a busy machine.
HEARTBEAT_S = 10
JOIN_S = 5
# Seconds between a process's end and the other's, beyond the heartbeat: JAX's error propagation
# and the interpreter's exit, under load.
MARGIN_S = 30.0
PORT_TRIES = 3
LINE = re.compile(r"^jaxenc: error: process (\d) of 2 stopped answering \(.*\); process (\d) of 2 stops too$")


def free_port() -> int:
    """A port free on every interface (the coordinator binds them all)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


def _job_argv(out: Path, port: int, i: int, settings: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxenc.cli", "run", str(CONFIG), "--out", str(out), *settings,
            "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i),
            "--cpu-devices", "4", *extra]


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _end(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            # The supervisor and its worker share the session started for them.
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _run_job(out: Path, settings: list[str]) -> tuple[list[int], list[str]]:
    """Both processes of a job into ``out``; a port taken since it was found free is tried again."""
    for attempt in range(PORT_TRIES):
        port = free_port()
        logs = [out.parent / f"{out.name}-try{attempt}-log{i}.txt" for i in range(2)]
        procs = [_start(_job_argv(out, port, i, settings), logs[i]) for i in range(2)]
        deadline = time.monotonic() + TIMEOUT
        try:
            while any(p.poll() is None for p in procs):
                if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            _end(procs)
        texts = [log.read_text(errors="replace") for log in logs]
        if not any("Failed to add port" in text for text in texts):
            break
    return [p.returncode for p in procs], texts


def _shown(codes, texts) -> str:
    return "\n".join(f"--- process {i}, exit {c} ---\n{t[-6000:]}"
                     for i, (c, t) in enumerate(zip(codes, texts, strict=True)))


def _run_one(out: Path, settings: list[str]) -> None:
    """The one-process, one-device run of ``settings`` into ``out``."""
    done = subprocess.run([sys.executable, "-m", "jaxenc.cli", "run", str(CONFIG), "--out", str(out), *settings],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr


def _runs(root: Path, settings: list[str], copied: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """A one-device run and a job of 2 processes of ``settings``, the job's folder holding copies
    of the one-device run's subfolders ``copied``."""
    one, two = root / "one", root / "two"
    _run_one(one, settings)
    two.mkdir()
    for name in copied:
        shutil.copytree(one / name, two / name)
    started = time.monotonic()
    codes, texts = _run_job(two, settings)
    assert codes == [0, 0], f"job failed after {time.monotonic() - started:.0f} s:\n{_shown(codes, texts)}"
    return {"one": one, "two": two}, texts


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """The default suite's runs: the job reads the one-device run's twin and planted features, so
    it starts at the fits; XLA's programs come from the suite's compile cache where it has them
    (tests/conftest.py's settings reach both processes through the environment)."""
    return _runs(tmp_path_factory.mktemp("multihost-quick"), QUICK_FIT, copied=("data", "features"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _runs(tmp_path_factory.mktemp("multihost-runs"), SETTINGS)


def _assert_one_folder(folders: dict, texts: list[str]) -> None:
    """Both processes fitted and scored on the 8 devices; process 0 alone wrote the folder."""
    for text in texts:
        assert "fit on 8 devices (2 processes)" in text and "evaluate on 8 devices (2 processes)" in text, text
    # Process 0 released its lock and wrote the report, once; process 1 says so.
    assert not (folders["two"] / RunStore.LOCK).exists()
    assert (folders["two"] / "report.html").is_file() and (folders["two"] / "metrics.json").is_file()
    assert "report: " + str(folders["two"] / "report.md") in texts[0]
    assert "report: written by process 0 of the job" in texts[1]


def _assert_same_numbers(folders: dict, jobs: set[tuple[str, str, str]]) -> None:
    assert_same_run_numbers(folders["one"], folders["two"], jobs)


def test_two_processes_fit_on_8_devices_into_one_folder_with_the_one_device_numbers(quick_runs):
    """The default suite's job: ridge (voxels split over the 8 devices of both processes) and the
    MLP (2 fold models padded to 8 slots) into one folder, metrics.json as one device's."""
    folders, texts = quick_runs
    _assert_one_folder(folders, texts)
    _assert_same_numbers(folders, {("audio", "ridge", "voxels"), ("audio", "mlp", "voxels")})


@pytest.mark.slow
def test_two_processes_split_the_stories_fit_on_8_devices_and_write_one_folder(runs):
    folders, texts = runs
    _assert_one_folder(folders, texts)
    stories = json.loads((folders["one"] / "features" / "index.json").read_text())["audio"]["keys"]
    shares = []
    for i, text in enumerate(texts):
        share = re.search(rf"audio features: process {i} of 2 extracts (\d+) of (\d+) stories \((.*)\)", text)
        assert share, text
        shares.append(share.group(3).split(", "))
    # Every story extracted by exactly one process, the index listing all.
    assert sorted(shares[0] + shares[1]) == sorted(stories) and not set(shares[0]) & set(shares[1])
    index = json.loads((folders["two"] / "features" / "index.json").read_text())
    assert sorted(index["audio"]["keys"]) == sorted(stories)


@pytest.mark.slow
def test_two_processes_give_the_one_device_predictions_and_scores(runs):
    _assert_same_numbers(runs[0], {("audio", model, target) for model in ("ridge", "mlp")
                                   for target in ("voxels", "pca")})


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("jaxenc: error:") or "Traceback" in line
            or line.startswith(("F1", "E1", "*** Check failure"))]


def test_a_killed_process_ends_the_other_with_one_line_within_the_heartbeat(tmp_path):
    """Process 1 is killed (SIGKILL, supervisor and worker) once both are fitting; process 0 must
    end within HEARTBEAT_S + MARGIN_S with exit 1 and one line naming process 1. 25 s."""
    port = free_port()
    logs = [tmp_path / f"log{i}.txt" for i in range(2)]
    extra = ("--heartbeat-timeout", str(HEARTBEAT_S))
    procs = [_start(_job_argv(tmp_path / "run", port, i, QUICK, *extra), logs[i]) for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while "[2/4]" not in logs[1].read_text() and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), _shown([p.poll() for p in procs],
                                                               [log.read_text() for log in logs])
            time.sleep(0.2)
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = procs[0].wait(timeout=HEARTBEAT_S + MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still runs {HEARTBEAT_S + MARGIN_S:.0f} s after process 1 was killed:\n"
                        + logs[0].read_text())
        elapsed = time.monotonic() - killed
    finally:
        _end(procs)
    text = logs[0].read_text()
    assert code == 1, text
    assert _error_lines(text) == [text.strip().splitlines()[-1]], text
    match = LINE.match(text.strip().splitlines()[-1])
    assert match and match.groups() == ("1", "0"), text
    assert elapsed < HEARTBEAT_S + MARGIN_S


@pytest.mark.parametrize("alone", [0, 1])
def test_a_process_that_never_joins_ends_the_other_with_one_line(tmp_path, alone):
    """Only process ``alone`` of 2 starts: it ends after the join timeout (5 s) with exit 1 and one
    line naming the missing one (the coordinator, for process 1). About 15 s each."""
    log = tmp_path / "log.txt"
    proc = _start(_job_argv(tmp_path / "run", free_port(), alone, QUICK, "--join-timeout", str(JOIN_S)), log)
    started = time.monotonic()
    try:
        code = proc.wait(timeout=JOIN_S + MARGIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {alone} still runs {JOIN_S + MARGIN_S:.0f} s after it started:\n{log.read_text()}")
    finally:
        _end([proc])
    text = log.read_text()
    assert code == 1 and time.monotonic() - started < JOIN_S + MARGIN_S, text
    assert _error_lines(text) == [text.strip().splitlines()[-1]], text
    expected = ("not all 2 processes joined within 5 s (process 0 of 2" if alone == 0
                else "process 0 of 2 (the coordinator at localhost:")
    assert text.strip().splitlines()[-1].startswith(f"jaxenc: error: {expected}"), text
    assert not (tmp_path / "run").exists()


class _Processes:
    """Processes of a job as the run folder sees them, without JAX: index 1 of 2, process 0's
    decisions given."""

    def __init__(self, decisions):
        self.writer = False
        self.decisions = list(decisions)
        self.barriers = []

    def barrier(self, name):
        self.barriers.append(name)

    def agree(self, value, name="value"):
        return self.decisions.pop(0)


def test_only_the_writer_writes_and_the_others_take_its_decisions(tmp_path):
    processes = _Processes([True])
    store = RunStore(tmp_path / "run", processes)
    with store.lock():
        store.write_json("a.json", {"x": 1})
        store.write_arrays("b.npz", {"y": np.zeros(3)})
        store.write_array("c.npy", np.zeros(3))
        store.save_prediction("job", {"S1": np.zeros((2, 3))}, {"digest": "d"})
        # Process 0 found the fit stored: so does this process, which cannot see it.
        assert store.reusable_prediction("job", "d") is True
    assert not (tmp_path / "run").exists()
    store.barrier("stage")
    assert processes.barriers == ["stage"]
    assert store.child("nonlinearity").processes is processes and not store.child("nonlinearity").writer
    # One process: writes, its own decision.
    alone = RunStore(tmp_path / "alone")
    with alone.lock():
        alone.save_prediction("job", {"S1": np.zeros((2, 3))}, {"digest": "d"})
    assert alone.reusable_prediction("job", "d") and not alone.reusable_prediction("job", "other")


def _args(*argv):
    parser = argparse.ArgumentParser()
    multihost.add_process_options(parser)
    return parser.parse_args(list(argv))


def test_process_options_name_a_job_or_refuse_in_one_line():
    job = multihost.job_of(_args("--coordinator", "h:1234", "--num-processes", "2", "--process-id", "1"))
    assert job == multihost.Job("h:1234", 2, 1, multihost.HEARTBEAT_TIMEOUT_S, multihost.JOIN_TIMEOUT_S)
    assert multihost.job_of(_args("--num-processes", "1", "--process-id", "0")) is None
    for argv, words in [(("--num-processes", "2"), "go together"),
                        (("--num-processes", "2", "--process-id", "2", "--coordinator", "h:1"), "0 .. "),
                        (("--num-processes", "2", "--process-id", "0"), "--coordinator HOST:PORT"),
                        (("--num-processes", "2", "--process-id", "0", "--coordinator", "h"), "HOST:PORT"),
                        (("--cpu-devices", "0"), "at least 1")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            multihost.job_of(_args(*argv))


# What JAX's coordination service prints when a process is lost (jax 0.10), as supervise() holds it.
_HEARTBEAT = ("E1205 01:31:56.371451    4640 coordination_service.cc:1549] [44] Use error polling to propagate "
              "the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending "
              "heartbeats):\n1\nThe tasks have crashed.\n")
_LEADER = ("F1205 01:32:54.527767    6098 client.h:80] Terminating process because the JAX distributed service "
           "detected fatal errors. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either "
           "the leader task was preempted/died/restarted unexpectedly\n")


def test_the_coordination_service_errors_become_one_line_naming_the_process():
    job = multihost.Job("h:1", 2, 0, 10, 5)
    assert LINE.match("jaxenc: error: " + multihost._verdict(_HEARTBEAT, job)).groups() == ("1", "0")
    other = multihost.Job("h:1", 2, 1, 10, 5)
    assert LINE.match("jaxenc: error: " + multihost._verdict(_LEADER, other)).groups() == ("0", "1")
    assert multihost._verdict("", job) is None
