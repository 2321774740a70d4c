"""A RunResults built from random arrays: 2 subjects, several feature spaces, models, targets."""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc.report.results import ModelScores, RunResults

SUBJECTS = {"UTS01": 60, "UTS02": 45}
FEATURES = ("audio", "semantic", "audio+semantic")
MODELS = ("ridge", "mlp")
TARGETS = ("voxels", "pca")


def _scores(rng, subject, n_voxels, features, model, target, shift):
    r = np.clip(rng.normal(0.1 + shift, 0.1, n_voxels), -0.99, 0.99)
    cc_norm = r / rng.uniform(0.3, 0.9, n_voxels)
    cc_norm[rng.random(n_voxels) < 0.1] = np.nan
    p = rng.random(n_voxels) ** 2
    return ModelScores(
        subject=subject,
        features=features,
        model=model,
        target=target,
        r=r,
        r2=(r * np.abs(r)).astype(np.float32),
        r2_cod=(r**2 - 0.005).astype(np.float32),
        cc_norm=cc_norm,
        p=p,
        significant=p < 0.05,
        info={"seconds": float(rng.uniform(1, 5)), "best_epoch": int(rng.integers(1, 50))},
    )


def make_results(seed: int = 0) -> RunResults:
    """A complete RunResults (every section present) from a seeded generator."""
    rng = np.random.default_rng(seed)
    scores = []
    for subject, n_voxels in SUBJECTS.items():
        for target in TARGETS:
            for i, features in enumerate(FEATURES):
                for j, model in enumerate(MODELS):
                    scores.append(
                        _scores(rng, subject, n_voxels, features, model, target, 0.02 * (i + j))
                    )
        scores.append(_scores(rng, subject, n_voxels, "semantic/L3", "dimlp", "voxels", 0.05))
    cc_max = {s: rng.uniform(0.2, 0.95, n) for s, n in SUBJECTS.items()}
    cc_max["UTS01"][:3] = np.nan
    partition = [
        {
            "subject": s,
            "target": "voxels",
            "features_a": "audio",
            "features_b": "semantic",
            "model": "ridge",
            "n_significant": int(rng.integers(10, 40)),
            "unique_a": float(rng.uniform(0, 0.01)),
            "unique_b": float(rng.uniform(0, 0.02)),
            "shared": float(rng.uniform(-0.005, 0.02)),
            "share_best_unique_a": 0.2,
            "share_best_unique_b": 0.3,
            "share_best_shared": 0.5,
            "best_model_share": {"audio": 0.1, "semantic": 0.4, "audio+semantic": 0.5},
        }
        for s in SUBJECTS
    ]
    sweeps = [
        {
            "name": "llama layers",
            "x_label": "layer",
            "rows": [
                {
                    "subject": s,
                    "model": "ridge",
                    "x": layer,
                    "mean_r": float(rng.uniform(0.05, 0.2)),
                    "mean_cc_norm": float(rng.uniform(0.1, 0.5)),
                    "n_significant": int(rng.integers(0, 40)),
                }
                for s in SUBJECTS
                for layer in range(4)
            ],
        }
    ]
    clustering = {}
    for s, n in SUBJECTS.items():
        labels = rng.integers(-1, 3, n)
        clustering[s] = {
            "labels": labels,
            "label_names": ["audio", "semantic", "audio+semantic"],
            "modularity": float(rng.uniform(0.2, 0.4)),
            "null_mean": 0.05,
            "null_std": 0.01,
        }
    planted = {
        s: {
            "audio_voxels_found": {
                "value": 0.8, "margin": 0.3, "passed": True, "what": "audio-only voxels best"
            },
            "ceiling_recovered": {
                "value": 0.02, "margin": 0.05, "passed": True, "what": "cc_max error"
            },
        }
        for s in SUBJECTS
    }
    nonlinearity = {
        "folder": "nonlinearity", "subjects": ["UTS01"], "models": ["ridge", "mllinear", "mlp"],
        "rows": [
            {"subject": "UTS01", "model": model, "voxels": voxels, "n_voxels": n,
             "mean_r": float(rng.uniform(0, 0.9)), "mean_r2": float(rng.uniform(0, 0.8))}
            for model in ("ridge", "mllinear", "mlp")
            for voxels, n in (("audio+semantic", 18), ("interaction", 24))
        ],
    }
    return RunResults(
        name="unit <run>",
        config={
            "data": {"synthetic": "tiny"},
            "subjects": list(SUBJECTS),
            "features": list(FEATURES),
            "models": list(MODELS),
            "note": "<script>alert('x')</script>",
        },
        cc_max=cc_max,
        scores=scores,
        partition=partition,
        sweeps=sweeps,
        clustering=clustering,
        planted=planted,
        nonlinearity=nonlinearity,
        timings={"features": 12.5, "fit": 30.25},
    )


@pytest.fixture
def run_results() -> RunResults:
    """A fresh complete RunResults (tests may mutate it)."""
    return make_results()


@pytest.fixture(scope="module")
def shared_results() -> RunResults:
    """The same complete RunResults for a whole module: tests must not mutate it."""
    return make_results()
