"""RunResults: summaries against numpy, exact save/load round trip, clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxenc.errors import ConfigError, DataError
from jaxenc.metrics import SCORE_ARRAYS, Scores
from jaxenc.report.results import ModelResult, RunResults, slug


def _assert_equal_results(a: RunResults, b: RunResults) -> None:
    assert a.name == b.name and a.config == b.config and a.timings == b.timings
    assert a.partition == b.partition and a.sweeps == b.sweeps and a.planted == b.planted
    assert a.nonlinearity == b.nonlinearity
    assert a.cc_max.keys() == b.cc_max.keys()
    for subject in a.cc_max:
        np.testing.assert_array_equal(a.cc_max[subject], b.cc_max[subject])
        assert a.cc_max[subject].dtype == b.cc_max[subject].dtype
    assert [m.name for m in a.models] == [m.name for m in b.models]
    for ma, mb in zip(a.models, b.models, strict=True):
        assert (ma.subject, ma.info) == (mb.subject, mb.info)
        assert ma.scores == mb.scores
        for key in SCORE_ARRAYS:
            # assert_array_equal treats NaN at the same place as equal; the dtype must survive.
            np.testing.assert_array_equal(getattr(ma.scores, key), getattr(mb.scores, key))
            assert getattr(ma.scores, key).dtype == getattr(mb.scores, key).dtype
    assert a.clustering.keys() == b.clustering.keys()
    for subject, entry in a.clustering.items():
        other = b.clustering[subject]
        assert entry.keys() == other.keys()
        np.testing.assert_array_equal(entry["labels"], other["labels"])
        assert {k: v for k, v in entry.items() if k != "labels"} == {
            k: v for k, v in other.items() if k != "labels"
        }


def test_summary_matches_numpy(run_results):
    scores = run_results.models[0].scores
    summary = scores.summary(top_k=7)
    finite_cc = scores.cc_norm[np.isfinite(scores.cc_norm)]
    assert summary["mean_r"] == pytest.approx(np.mean(scores.r), rel=1e-12)
    assert summary["median_r"] == pytest.approx(np.median(scores.r), rel=1e-12)
    assert summary["mean_r2"] == pytest.approx(np.mean(scores.r2.astype(np.float64)), rel=1e-6)
    assert summary["mean_r2_cod"] == pytest.approx(np.mean(scores.r2_cod.astype(np.float64)), rel=1e-6)
    assert summary["mean_cc_norm"] == pytest.approx(np.nanmean(scores.cc_norm), rel=1e-12)
    assert summary["median_cc_norm"] == pytest.approx(np.median(finite_cc), rel=1e-12)
    assert summary["top_k_mean_r"] == pytest.approx(np.mean(sorted(scores.r)[-7:]), rel=1e-12)
    assert summary["n_significant"] == int(np.count_nonzero(scores.p < 0.05))
    assert summary["n_voxels"] == 60
    everything = scores.summary(top_k=10_000)
    assert everything["top_k_mean_r"] == pytest.approx(summary["mean_r"], rel=1e-12)


def test_summary_all_nan_is_nan_without_warning(recwarn):
    n = 5
    scores = Scores(r=np.zeros(n), r2=np.zeros(n), r2_cod=np.zeros(n), cc_norm=np.full(n, np.nan), p=np.ones(n),
                    significant=np.zeros(n, bool))
    assert math.isnan(scores.summary()["mean_cc_norm"])
    assert not recwarn.list


def test_scores_refuse_bad_shapes():
    with pytest.raises(DataError, match="one shape"):
        Scores(r=np.zeros(4), r2=np.zeros(4), r2_cod=np.zeros(4), cc_norm=np.zeros(3), p=np.zeros(4),
               significant=np.zeros(4, bool))
    with pytest.raises(DataError, match="boolean"):
        Scores(r=np.zeros(2), r2=np.zeros(2), r2_cod=np.zeros(2), cc_norm=np.zeros(2), p=np.zeros(2),
               significant=np.array([0.5, 1.0]))


def test_name_table_find(run_results):
    assert run_results.models[0].name == "audio | ridge | voxels"
    table = run_results.table(top_k=5)
    assert len(table) == len(run_results.models)
    assert table[0]["subject"] == "UTS01" and table[0]["top_k"] == 5
    found = run_results.find(subject="UTS02", model="mlp", target="pca")
    assert [s.features for s in found] == ["audio", "semantic", "audio+semantic"]
    assert all(s.subject == "UTS02" for s in found)
    assert len(run_results.find()) == len(run_results.models)
    assert run_results.subjects == ["UTS01", "UTS02"]


def test_round_trip_exact(run_results, tmp_path):
    run_results.save(tmp_path / "run")
    loaded = RunResults.load(tmp_path / "run")
    _assert_equal_results(run_results, loaded)
    assert np.isnan(loaded.cc_max["UTS01"][:3]).all()
    assert not list((tmp_path / "run").rglob("*.tmp")), "temporary files left behind"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["summary"][0]["mean_r"] == run_results.models[0].scores.summary()["mean_r"]
    assert (tmp_path / "run" / "scores" / "UTS01" / "cc_max.npy").is_file()
    assert (tmp_path / "run" / "clustering" / "UTS02" / "labels.npy").is_file()
    # Saving again over the same folder gives the same run.
    loaded.save(tmp_path / "run")
    _assert_equal_results(run_results, RunResults.load(tmp_path / "run"))


def test_colliding_slugs_get_distinct_files(run_results, tmp_path):
    base = run_results.models[0]
    shifted = [Scores(**{**base.scores.arrays(), "r": base.scores.r + k}) for k in (1, 2)]
    twin = ModelResult(base.subject, "audio/x", "ridge", "voxels", shifted[0])
    other = ModelResult(base.subject, "audio-x", "ridge", "voxels", shifted[1])
    assert slug(twin.name) == slug(other.name)
    run_results.models += [twin, other]
    run_results.save(tmp_path)
    loaded = RunResults.load(tmp_path)
    np.testing.assert_array_equal(loaded.find(features="audio/x")[0].scores.r, base.scores.r + 1)
    np.testing.assert_array_equal(loaded.find(features="audio-x")[0].scores.r, base.scores.r + 2)


def test_numpy_extras_become_json(run_results, tmp_path):
    run_results.models[0].info = {"layer": np.int64(3), "alphas": np.array([1.0, 10.0])}
    run_results.save(tmp_path)
    assert RunResults.load(tmp_path).models[0].info == {"layer": 3, "alphas": [1.0, 10.0]}
    run_results.models[0].info = {"model": object()}
    with pytest.raises(ConfigError, match="info.model"):
        run_results.save(tmp_path / "other")


def test_missing_npz_names_file(run_results, tmp_path):
    run_results.save(tmp_path)
    victim = tmp_path / "scores" / "UTS02" / "semantic-mlp-pca.npz"
    assert victim.is_file()
    victim.unlink()
    with pytest.raises(DataError, match="semantic-mlp-pca.npz") as info:
        RunResults.load(tmp_path)
    assert info.value.subject == "UTS02" and info.value.path == str(victim)


def test_corrupt_files_name_file(run_results, tmp_path):
    run_results.save(tmp_path)
    victim = tmp_path / "scores" / "UTS01" / "audio-ridge-voxels.npz"
    victim.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="audio-ridge-voxels.npz"):
        RunResults.load(tmp_path)
    run_results.save(tmp_path)
    np.save(tmp_path / "scores" / "UTS01" / "cc_max.npy", np.zeros(59))
    with pytest.raises(DataError, match=r"cc_max.npy.*\(59,\).*\(60,\)"):
        RunResults.load(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json"):
        RunResults.load(tmp_path)
    with pytest.raises(DataError, match="no metrics.json"):
        RunResults.load(tmp_path / "absent")


def test_npz_lacking_an_array(run_results, tmp_path):
    run_results.save(tmp_path)
    victim = tmp_path / "scores" / "UTS01" / "audio-ridge-voxels.npz"
    np.savez(victim, r=np.zeros(60))
    with pytest.raises(DataError, match=r"audio-ridge-voxels.npz.*lacks \['r2'"):
        RunResults.load(tmp_path)


def test_validate_catches_misaligned_voxels(run_results, tmp_path):
    run_results.cc_max["UTS02"] = np.ones(44)
    with pytest.raises(DataError, match="UTS02.*45 voxels, expected 44"):
        run_results.save(tmp_path)


def test_unsafe_subject_refused(run_results, tmp_path):
    run_results.cc_max["../evil"] = np.ones(3)
    with pytest.raises(ConfigError, match="file-name safe"):
        run_results.save(tmp_path)
