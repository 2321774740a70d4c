"""``jaxenc run`` on 8 host devices against a one-device run: the device line, the same numbers.

One module fixture runs the command line twice in child processes on the tiny twin's first
subject with its planted features, ridge and the MLP on audio+semantic, voxel and PCA targets,
3 epochs: once
as a plain one-device process, once with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(``run.devices`` left at 0: every device) in a folder holding a copy of the first run's twin and
features.

Tolerances. The predictions of a fit on 8 devices differ from one device's by the float32
rounding of the sharded programs (bounded in tests/pipeline/test_mesh.py; at most 1e-4 here,
the networks' bound, against O(0.1) for a wrong voxel block or model slot). Each voxel's test
correlation then moves by at most ``2 |d_c| / |p_c|`` (``p_c`` the centred prediction over the
rows scored, ``d_c`` the centred difference: the change of the unit vector ``p_c / |p_c|``),
plus the rounding of two float32 correlations (``correlation_atol(n, computations=2)`` of
tests/_tolerance.py); the paper's r2 = r|r| by twice that; means over voxels by the mean bound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxenc.distributed import PATIENT_CPU_COLLECTIVES
from tests._tolerance import assert_within, correlation_atol

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--quiet"] + [item for setting in (
    "data.preset=tiny", 'data.subjects=["UTS01"]', "audio.source=planted", "semantic.source=planted",
    'table.feature_sets=["audio+semantic"]', 'table.models=["ridge","mlp"]', "table.n_components=8", "ridge.folds=2",
    "train.n_folds=2", "train.max_epochs=3", "networks.hidden=8", "evaluate.permutations=100",
    "analyses.partition=false", "analyses.clustering=false", "nonlinearity.run=false") for item in ("--set", setting)]
PREDICTION_ATOL = 1e-4


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
    from jaxenc.metrics import protocol_trim

    folders, _ = runs
    metrics = {k: json.loads((folder / "metrics.json").read_text().replace("NaN", "null"))
               for k, folder in folders.items()}
    summary = {k: {(row["subject"], row["features"], row["model"], row["target"]): row for row in m["summary"]}
               for k, m in metrics.items()}
    assert set(summary["one"]) == set(summary["many"])
    assert {key[2:] for key in summary["one"]} == {("ridge", "voxels"), ("ridge", "pca"), ("mlp", "voxels"),
                                                   ("mlp", "pca")}
    for key, row in summary["one"].items():
        subject, features, model, target = key
        name = f"{features}__{model}__{target}"
        p = [np.load(folders[k] / "predictions" / f"{name}.npz")[subject].astype(np.float64) for k in ("one", "many")]
        assert_within(p[1], p[0], atol=PREDICTION_ATOL, err_msg=f"{name} {subject}")
        kept = [a[protocol_trim(len(a)):] for a in p]
        centred = kept[0] - kept[0].mean(0)
        diff = kept[1] - kept[0]
        bound = (2 * np.linalg.norm(diff - diff.mean(0), axis=0) / np.linalg.norm(centred, axis=0)
                 + correlation_atol(len(centred), computations=2))
        scores = [np.load(folders[k] / "scores" / subject / f"{features}-{model}-{target}.npz")
                  for k in ("one", "many")]
        assert_within(scores[1]["r"], scores[0]["r"], atol=bound, err_msg=f"r of {name} {subject}")
        assert_within(scores[1]["r2"], scores[0]["r2"], atol=2 * bound, err_msg=f"r2 of {name} {subject}")
        other = summary["many"][key]
        assert_within(other["mean_r"], row["mean_r"], atol=float(bound.mean()), err_msg=f"mean r of {key}")
        assert_within(other["mean_r2"], row["mean_r2"], atol=2 * float(bound.mean()), err_msg=f"mean r2 of {key}")
        assert other["n_voxels"] == row["n_voxels"]
