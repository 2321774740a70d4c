"""``jaxenc run`` on 8 host devices against a one-device run: the device line, the same numbers.

One module fixture runs the command line twice in child processes on the tiny twin's first
subject with its planted features, ridge and the MLP on audio+semantic, voxel and PCA targets,
3 epochs: once
as a plain one-device process, once with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(``run.devices`` left at 0: every device) in a folder holding a copy of the first run's twin and
features.

The numbers are compared by :func:`tests._runs.assert_same_run_numbers` (its docstring states
the bounds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxenc.distributed import PATIENT_CPU_COLLECTIVES
from tests._runs import assert_same_run_numbers

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--quiet"] + [item for setting in (
    "data.preset=tiny", 'data.subjects=["UTS01"]', "audio.source=planted", "semantic.source=planted",
    'table.feature_sets=["audio+semantic"]', 'table.models=["ridge","mlp"]', "table.n_components=8", "ridge.folds=2",
    "train.n_folds=2", "train.max_epochs=3", "networks.hidden=8", "evaluate.permutations=100",
    "analyses.partition=false", "analyses.clustering=false", "nonlinearity.run=false") for item in ("--set", setting)]


def _run(out: Path, devices: int) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {PATIENT_CPU_COLLECTIVES}"
    done = subprocess.run([sys.executable, "-m", "jaxenc.cli", "run", str(ROOT / "experiments" / "table1.toml"),
                           "--out", str(out), *SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh-runs")
    one = root / "one"
    printed = {"one": _run(one, 1)}
    many = root / "many"
    many.mkdir()
    for name in ("data", "features"):  # the twin and its planted features, as written
        shutil.copytree(one / name, many / name)
    printed["many"] = _run(many, 8)
    return {"one": one, "many": many}, printed


def test_run_prints_the_devices_it_fits_and_evaluates_on(runs):
    _, printed = runs
    assert "fit on 1 device (1 process)" in printed["one"]
    assert "fit on 8 devices (1 process)" in printed["many"]
    assert "evaluate on 8 devices (1 process)" in printed["many"]


def test_run_on_8_devices_gives_the_one_device_predictions_and_scores(runs):
    folders, _ = runs
    jobs = {("audio+semantic", model, target) for model in ("ridge", "mlp") for target in ("voxels", "pca")}
    assert_same_run_numbers(folders["one"], folders["many"], jobs)
