"""Run a check function of a test module in a child process that sees 8 host (CPU) devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect before JAX starts,
and the pytest process has long started it, so each sharded check runs in a fresh
interpreter: the child loads the test file by path and calls the named function, whose
assertions (numpy.testing) fail the child and, through its exit status, the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jaxenc.distributed import PATIENT_CPU_COLLECTIVES

N_DEVICES = 8
_ROOT = Path(__file__).resolve().parents[1]


def run_sharded(path: str, function: str, timeout: float = 120.0) -> None:
    """Call ``function`` of the Python file ``path`` on ``N_DEVICES`` host devices.

    Parameters
    ----------
    path : str
        Test file defining ``function`` (pass ``__file__``).
    function : str
        Name of a function without arguments that asserts.
    timeout : float
        Seconds before the child is killed and the test fails.

    Raises
    ------
    AssertionError
        The child exited non-zero; its output is in the message.
    """
    # Patient collectives: on a loaded machine 8 host devices wait long on each other; the
    # test's own timeout bounds the run.
    flags = f"--xla_force_host_platform_device_count={N_DEVICES} {PATIENT_CPU_COLLECTIVES}"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    code = ("import runpy, jax; "
            f"assert jax.device_count() == {N_DEVICES}, jax.devices(); "
            f"runpy.run_path({str(path)!r})[{function!r}]()")
    done = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)
    assert done.returncode == 0, (f"{function} failed on {N_DEVICES} host devices:\n"
                                  f"{done.stdout}\n{done.stderr}")
