"""Two run folders of the same config give the same numbers: the check shared by the tests of
``jaxenc run`` on a mesh (tests/experiment/test_run_mesh.py) and as a job of several processes
(tests/test_multihost_run.py) against a one-device run.

Tolerances. The predictions of a sharded fit differ from one device's by the float32 rounding
of the sharded programs (bounded in tests/pipeline/test_mesh.py; at most
:data:`PREDICTION_ATOL`, the networks' bound, against O(0.1) for a wrong voxel block or model
slot). Each voxel's test correlation then moves by at most ``2 |d_c| / |p_c|`` (``p_c`` the
centred prediction over the rows scored, ``d_c`` the centred difference: the change of the unit
vector ``p_c / |p_c|``), plus the rounding of two float32 correlations
(``correlation_atol(n, computations=2)`` of tests/_tolerance.py); the paper's r2 = r|r| by
twice that; means over voxels by the mean bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests._tolerance import assert_within, correlation_atol

PREDICTION_ATOL = 1e-4


def _summary(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text().replace("NaN", "null"))
    return {(row["subject"], row["features"], row["model"], row["target"]): row for row in metrics["summary"]}


def assert_same_run_numbers(reference: Path, other: Path, jobs: set[tuple[str, str, str]]) -> None:
    """``other``'s metrics.json, predictions and per-voxel scores equal ``reference``'s within
    the bounds above; ``jobs`` the (features, model, target) the summary must hold."""
    from jaxenc.metrics import protocol_trim

    summary = {"reference": _summary(reference), "other": _summary(other)}
    assert set(summary["reference"]) == set(summary["other"])
    assert {key[1:] for key in summary["reference"]} == jobs
    for key, row in summary["reference"].items():
        subject, features, model, target = key
        name = f"{features}__{model}__{target}"
        p = [np.load(folder / "predictions" / f"{name}.npz")[subject].astype(np.float64)
             for folder in (reference, other)]
        assert_within(p[1], p[0], atol=PREDICTION_ATOL, err_msg=f"{name} {subject}")
        kept = [a[protocol_trim(len(a)):] for a in p]
        centred = kept[0] - kept[0].mean(0)
        diff = kept[1] - kept[0]
        bound = (2 * np.linalg.norm(diff - diff.mean(0), axis=0) / np.linalg.norm(centred, axis=0)
                 + correlation_atol(len(centred), computations=2))
        scores = [np.load(folder / "scores" / subject / f"{features}-{model}-{target}.npz")
                  for folder in (reference, other)]
        assert_within(scores[1]["r"], scores[0]["r"], atol=bound, err_msg=f"r of {name} {subject}")
        assert_within(scores[1]["r2"], scores[0]["r2"], atol=2 * bound, err_msg=f"r2 of {name} {subject}")
        same = summary["other"][key]
        assert_within(same["mean_r"], row["mean_r"], atol=float(bound.mean()), err_msg=f"mean r of {key}")
        assert_within(same["mean_r2"], row["mean_r2"], atol=2 * float(bound.mean()), err_msg=f"mean r2 of {key}")
        assert same["n_voxels"] == row["n_voxels"]
