"""Two processes under jax.distributed, 4 CPU devices each, run the README's multi-host command.

The command (README.md, "Several hosts") is read from the README and run as written, with a
free port and ``--out``: each process fits the sharded PCA, the voxel-sharded ridge and the
mesh-sharded encoder training over the 8 devices of both processes and compares them with
the same fits made in that process alone (tolerances: :data:`jaxenc.multihost.TOLERANCES`).
The test checks that both exit 0, that each saw 4 local of 8 devices, that every difference
is within tolerance, and that both processes gathered bit-identical results.

On failure the other process is killed at once (a process waiting for a dead peer would
otherwise block until JAX's own timeouts) and the output of both is shown.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxenc.multihost import CHECKS, TOLERANCES

ROOT = Path(__file__).resolve().parents[1]
N_PROCESSES = 2
# Whole run, both processes; about a minute on a loaded 2-core machine.
TIMEOUT = 400.0
# A port found free can be taken before the coordinator binds it: then try another one.
PORT_TRIES = 3


def readme_command() -> list[str]:
    """Arguments of the README's one-machine multi-host line, ``$i`` and port unresolved."""
    text = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in text.splitlines()
             if "jaxenc.multihost" in line and line.strip().startswith("for i in")]
    assert len(lines) == 1, f"expected one 'for i in ...' line running jaxenc.multihost: {lines}"
    match = re.fullmatch(r"for i in ([\d ]+); do (.+) & done; wait", lines[0])
    assert match, lines[0]
    assert match.group(1).split() == [str(i) for i in range(N_PROCESSES)], lines[0]
    return shlex.split(match.group(2))


def free_port() -> int:
    """A port free on every interface (the coordinator binds them all)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def launch(args: list[str], port: int, out: Path) -> tuple[list[int], list[str]]:
    """Start every process, wait for all, kill the others once one fails or time runs out."""
    procs, logs = [], []
    for i in range(N_PROCESSES):
        argv = [sys.executable if a == ".venv/bin/python" else a.replace("$i", str(i))
                for a in args]
        argv = [re.sub(r"^localhost:\d+$", f"localhost:{port}", a) for a in argv]
        log = open(out / f"log{i}.txt", "w")
        logs.append(log)
        procs.append(subprocess.Popen(argv + ["--out", str(out)], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.poll() not in (None, 0) for p in procs)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    return codes, [(out / f"log{i}.txt").read_text(errors="replace") for i in range(N_PROCESSES)]


@pytest.mark.slow
def test_readme_multihost_command_equals_one_process(tmp_path):
    args = readme_command()
    assert args[:3] == [".venv/bin/python", "-m", "jaxenc.multihost"], args
    for attempt in range(PORT_TRIES):
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        started = time.monotonic()
        codes, outputs = launch(args, free_port(), out)
        # The coordinator cannot bind its port: taken since free_port looked.
        if not any("Failed to add port" in text for text in outputs):
            break
    elapsed = time.monotonic() - started
    shown = "\n".join(f"--- process {i}, exit {c} ---\n{text[-6000:]}"
                      for i, (c, text) in enumerate(zip(codes, outputs, strict=True)))
    assert codes == [0] * N_PROCESSES, (
        f"multi-host run failed after {elapsed:.0f} s (limit {TIMEOUT:.0f} s; a -9 was killed "
        f"after the other failed or at the limit):\n{shown}")
    records = [json.loads((out / f"process{i}.json").read_text()) for i in range(N_PROCESSES)]
    for i, record in enumerate(records):
        assert (record["process"], record["processes"]) == (i, N_PROCESSES), record
        assert (record["local_devices"], record["devices"]) == (4, 8), record
        assert record["failures"] == [], shown
        checks = record["results"]
        assert tuple(checks) == CHECKS, checks
        for name, values in checks.items():
            compared = [key for key in values if key in TOLERANCES]
            assert compared, (name, values)
            for key in compared:
                assert values[key] <= TOLERANCES[key], (name, key, values[key])
    # Both processes gathered the same arrays, bit for bit.
    digests = [{name: v["digest"] for name, v in r["results"].items()} for r in records]
    assert digests[0] == digests[1], digests
