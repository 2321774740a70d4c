"""partition_rows and partition_sets against the set-theoretic formulas written here in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc.analysis import by_feature_set, partition_rows, partition_sets, preferred_model
from jaxenc.featuresets import FEATURE_SETS
from jaxenc.metrics import Scores
from jaxenc.report import ModelResult
from tests._tolerance import U32, rounding_bound

N_VOXELS = 40


def _scores(rng, shift=0.0):
    r = np.clip(rng.normal(0.2 + shift, 0.2, N_VOXELS), -0.9, 0.9)
    p = rng.random(N_VOXELS) ** 3
    return Scores(r=r, r2=r * np.abs(r), r2_cod=r**2, cc_norm=r, p=p, significant=p < 0.1)


def _models(seed=0):
    rng = np.random.default_rng(seed)
    models = []
    for model, shift in (("ridge", 0.0), ("mlp", 0.1)):
        for i, name in enumerate(FEATURE_SETS):
            models.append(ModelResult("S1", name, model, "voxels", _scores(rng, shift + 0.05 * i)))
    models.append(ModelResult("S1", "semantic/L3", "ridge", "voxels", _scores(rng)))
    models.append(ModelResult("S1", "audio", "gru", "voxels", _scores(rng)))
    return models


def test_rows_follow_the_set_theoretic_parts_on_the_joint_models_significant_voxels():
    models = _models()
    rows = partition_rows(models)
    # Only models fitted on all three feature sets are partitioned (not the gru, not a layer).
    assert [(row["model"], row["target"]) for row in rows] == [("ridge", "voxels"), ("mlp", "voxels")]
    for row in rows:
        sets = by_feature_set(models, "S1", row["model"], "voxels")
        a, b, ab = (np.asarray(sets[n].r2, np.float64) for n in FEATURE_SETS)
        sig = sets["audio+semantic"].significant
        unique_a, unique_b, shared = ab - b, ab - a, a + b - ab
        assert row["n_significant"] == sig.sum() > 0
        # Float32 parts (3 inputs and 2 additions, each rounding within u of the largest r2) and
        # their float32 mean over the significant voxels (rounding_bound of that many terms).
        largest_r2 = max(np.abs(x).max() for x in (a, b, ab))
        atol = 5 * U32 * largest_r2 + rounding_bound([sig.sum()], scale=3 * largest_r2)
        assert row["unique_a"] == pytest.approx(unique_a[sig].mean(), abs=atol)
        assert row["unique_b"] == pytest.approx(unique_b[sig].mean(), abs=atol)
        assert row["shared"] == pytest.approx(shared[sig].mean(), abs=atol)
        largest = np.argmax(np.stack([unique_a, unique_b, shared]), axis=0)[sig]
        assert row["share_best_unique_a"] == pytest.approx(np.mean(largest == 0))
        assert row["share_best_shared"] == pytest.approx(np.mean(largest == 2))
        best = np.argmax(np.stack([a, b, ab]), axis=0)[sig]
        assert row["best_model_share"] == pytest.approx({n: np.mean(best == i) for i, n in enumerate(FEATURE_SETS)})
        part = partition_sets(sets)
        np.testing.assert_array_equal(part.best[sig], best)
        assert (part.best[~sig] == -1).all()


def test_the_preferred_model_has_the_best_joint_mean_r():
    models = _models()
    joint = {m.model: np.mean(m.scores.r) for m in models if m.features == "audio+semantic"}
    assert preferred_model(models, "S1", "voxels") == max(joint, key=joint.get)
    assert preferred_model(models, "S1", "pca") is None
    assert by_feature_set(models, "S1", "gru", "voxels") is None
