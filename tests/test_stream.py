"""jaxenc.stream: story-by-story stacking (host and 8-device mesh) against numpy concatenation,
chunked voxel scores against per-voxel numpy formulas, chunked PCA inverse projections against
the whole-matrix ones, and training on streamed views against training on separate arrays.
"""

import functools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from jaxenc.errors import AlignmentError, ConfigError, DataError
from tests._sharded import run_sharded
from tests._tolerance import assert_within, rounding_bound, score_tolerances

ROWS = {"a": 13, "b": 7, "c": 21, "d": 9}  # 50 rows: not a multiple of 8
N_VOXELS = 19  # not a multiple of 8


def _stories(seed=0):
    rng = np.random.default_rng(seed)
    return {s: rng.standard_normal((n, N_VOXELS)) for s, n in ROWS.items()}  # float64, as on disk


def test_host_stack_equals_concatenate():
    from jaxenc.stream import stack_story_rows, story_views

    data = _stories()
    order = ["c", "a", "d", "b"]
    Y, slices = stack_story_rows(data.__getitem__, order, ROWS, N_VOXELS)
    ref = np.concatenate([data[s] for s in order]).astype(np.float32)
    assert Y.dtype == np.float32
    assert_array_equal(Y, ref)
    views = story_views(Y, slices)
    for s in order:
        assert_array_equal(views[s], data[s].astype(np.float32))
        assert np.shares_memory(views[s], Y)
    # Row counts may be a sequence in story order.
    Y2, _ = stack_story_rows(data.__getitem__, order, [ROWS[s] for s in order], N_VOXELS)
    assert_array_equal(Y2, ref)


def test_stack_errors_name_the_story():
    from jaxenc.stream import stack_story_rows

    data = _stories()
    rows = dict(ROWS, b=8)
    with pytest.raises(DataError, match=r"story b.*expected \(8, 19\)|expected \(8, 19\).*b"):
        stack_story_rows(data.__getitem__, list(ROWS), rows, N_VOXELS, subject="UTS01")
    with pytest.raises(ConfigError, match="no row count"):
        stack_story_rows(data.__getitem__, ["a", "zzz"], ROWS, N_VOXELS)
    with pytest.raises(ConfigError, match="shard"):
        stack_story_rows(data.__getitem__, ["a"], ROWS, N_VOXELS, shard="cols")


def _check_sharded_stacks():
    import tempfile
    from pathlib import Path

    import h5py
    from jax.sharding import PartitionSpec as P

    from jaxenc.distributed import make_mesh
    from jaxenc.stream import stack_story_rows

    data = _stories(1)
    order = list(ROWS)
    ref = np.concatenate([data[s] for s in order]).astype(np.float32)
    mesh = make_mesh(("data",))
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for s, a in data.items():
            path = Path(tmp) / f"{s}.hf5"
            with h5py.File(path, "w") as f:
                f["data"] = a
            files[s] = h5py.File(path, "r")
        # A lazy reader: each shard reads only its hyperslab of each story.
        read = lambda s: files[s]["data"]  # noqa: E731
        Yr, slices = stack_story_rows(read, order, ROWS, N_VOXELS, mesh=mesh, axis="data")
        assert Yr.shape == (56, N_VOXELS) and Yr.sharding.spec == P("data", None)
        assert len(Yr.addressable_shards) == 8
        Yr = np.asarray(Yr)
        assert_array_equal(Yr[:50], ref)
        assert_array_equal(Yr[50:], 0.0)
        Yv, _ = stack_story_rows(read, order, ROWS, N_VOXELS, mesh=mesh, axis="data", shard="voxels")
        assert Yv.shape == (50, 24) and Yv.sharding.spec == P(None, "data")
        Yv = np.asarray(Yv)
        assert_array_equal(Yv[:, :N_VOXELS], ref)
        assert_array_equal(Yv[:, N_VOXELS:], 0.0)
        # A 2-D mesh: rows split over one axis, replicated over the other.
        mesh2 = make_mesh(("rows", "other"), (4, 2))
        Y2, _ = stack_story_rows(data.__getitem__, order, ROWS, N_VOXELS, mesh=mesh2, axis="rows")
        assert Y2.shape == (52, N_VOXELS)
        assert_array_equal(np.asarray(Y2)[:50], ref)
        for f in files.values():
            f.close()
    assert slices["c"] == slice(20, 41)


def test_sharded_stacks_equal_concatenate():
    run_sharded(__file__, "_check_sharded_stacks", timeout=120)


def _reference_scores(y, pred, repeats, trim):
    """Per-voxel Pearson r, the paper's r2 = r·|r|, the coefficient of determination and
    Schoppe et al. (2016) cc_norm (cc_max floored at 0.25), from their definitions, on the rows
    left after dropping the first ``trim``."""
    y, pred, repeats = y[trim:], pred[trim:], repeats[:, trim:]
    n_vox = y.shape[1]
    r = np.array([np.corrcoef(y[:, v], pred[:, v])[0, 1] for v in range(n_vox)])
    cod = 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    n = repeats.shape[0]
    each = repeats.var(1)  # [repeat, voxel]
    tp = each.mean(0)
    sp = (repeats.sum(0).var(0) - each.sum(0)) / (n * (n - 1))
    mean = repeats.mean(0)
    cc_max = np.fmax(1 / np.sqrt(1 + (1 / n) * (tp / sp - 1)), 0.25)
    r_mean = np.array([np.corrcoef(mean[:, v], pred[:, v])[0, 1] for v in range(n_vox)])
    return {"r": r, "r2": r * np.abs(r), "r2_cod": cod, "cc_norm": r_mean / cc_max}


@pytest.mark.slow
def test_chunked_scores_equal_whole_matrix_formulas():
    from jaxenc.metrics import ScoreConfig, score

    rng = np.random.default_rng(2)
    signal = rng.standard_normal((40, 30))
    repeats = signal + 0.7 * rng.standard_normal((6, 40, 30))
    y = repeats.mean(0)
    pred = signal + 0.5 * rng.standard_normal((40, 30))
    calls = []

    def predict_chunk(c0, c1):
        calls.append((c0, c1))
        return pred[:, c0:c1]

    config = ScoreConfig(test_trim=4, permutations=20, block_size=4)
    got = score(predict_chunk, repeats, config, chunk=7)
    assert calls == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    ref = _reference_scores(y, pred, repeats, 4)
    # Float32 scores against float64 formulas: tests/_tolerance.py's score_tolerances (about 1e-5;
    # a chunk scored against another chunk's voxels is off by 0.1 or more).
    bounds = score_tolerances(pred, repeats, 4, config.floor)
    for name in ("r", "r2", "r2_cod", "cc_norm"):
        assert_within(getattr(got, name), ref[name], *bounds[name], err_msg=name)
    # The permutations are shared by all voxels: chunks give the p-values of the whole.
    np.testing.assert_array_equal(got.p, score(pred, repeats, config).p)
    with pytest.raises(AlignmentError, match="voxels 0:7"):
        score(lambda c0, c1: pred[:, :3], repeats, config, chunk=7)
    with pytest.raises(AlignmentError, match="repeats"):
        score(predict_chunk, repeats[:, :20], config, chunk=7)


def test_pca_chunk_predictor_equals_numpy_inverse():
    from jaxenc.decomp import PCA
    from jaxenc.stream import pca_chunk_predictor

    rng = np.random.default_rng(3)
    y = rng.standard_normal((60, 33)) @ rng.standard_normal((33, 33)) + rng.normal(2, 1, 33)
    pcas = [PCA(5).fit(y[:40].astype(np.float32)), PCA(5, whiten=True).fit(y[20:].astype(np.float32))]
    scores = [rng.standard_normal((12, 5)) for _ in pcas]
    predict = pca_chunk_predictor(pcas, scores)
    ref, ref_terms = [], []
    for p, z in zip(pcas, scores, strict=True):
        c, m = np.asarray(p.components_, np.float64), np.asarray(p.mean_, np.float64)
        scale = np.sqrt(np.asarray(p.explained_variance_, np.float64)) if p.whiten else 1.0
        ref.append((z * scale) @ c + m)
        ref_terms += [np.abs(z * scale) @ np.abs(c), m]
    ref = np.mean(ref, axis=0)
    got = np.concatenate([predict(c0, min(c0 + 10, 33)) for c0 in range(0, 33, 10)], axis=1)
    # Float32 (z * scale) @ components + mean, averaged over the two PCAs, against float64 on the
    # same parameters: a dot of 5 terms, the mean's addition and the average, within
    # rounding_bound of the terms' scale (about 1e-5 here); a chunk's columns taken from another
    # chunk are off by the data's spread, about 10.
    terms = max(float(np.abs(r).max()) for r in ref_terms)
    assert_allclose(got, ref, rtol=0, atol=rounding_bound([5, 2, 2], scale=terms))


@pytest.mark.slow
def test_training_on_streamed_views_equals_separate_arrays():
    from jaxenc.metrics import ScoreConfig, protocol_trim, score
    from jaxenc.models.nonlinear import MLP
    from jaxenc.stream import fit_chunk_predictor, stack_story_rows, story_views
    from jaxenc.train import SubjectData, TrainConfig, fit_encoders

    rng = np.random.default_rng(4)
    rows = {f"s{i}": int(n) for i, n in enumerate(rng.integers(30, 45, 5))}
    feats = {s: rng.standard_normal((n, 6)).astype(np.float32) for s, n in rows.items()}
    w = rng.standard_normal((6, 25))
    resp = {s: np.tanh(x) @ w + 0.3 * rng.standard_normal((len(x), 25)) for s, x in feats.items()}
    Y, slices = stack_story_rows(resp.__getitem__, list(rows), rows, 25)
    cfg = TrainConfig(n_folds=3, n_components=4, batch_size=32, val_batch_size=64, max_epochs=2,
                      epochs_per_call=2, checkpoint_every=2)
    make = functools.partial(MLP, hidden=8)
    streamed = fit_encoders(make, {"S": SubjectData(feats, story_views(Y, slices))}, cfg, progress=False)
    separate = {s: a.astype(np.float32) for s, a in resp.items()}
    memory = fit_encoders(make, {"S": SubjectData(feats, separate)}, cfg, progress=False)
    assert_array_equal(streamed.history, memory.history)
    x_test = {"S": rng.standard_normal((20, 6)).astype(np.float32)}
    repeats = np.tanh(x_test["S"]) @ w + 0.3 * rng.standard_normal((3, 20, 25))
    config = ScoreConfig(permutations=10, block_size=4)
    whole = score(memory.predict(x_test)["S"], repeats, config)
    chunked = score(fit_chunk_predictor(streamed, x_test, "S"), repeats, config, chunk=8)
    # Two float32 computations of the same scores (chunked and whole): score_tolerances for two.
    prediction = np.asarray(fit_chunk_predictor(streamed, x_test, "S")(0, 25))
    bounds = score_tolerances(prediction, repeats, protocol_trim(20), 0.25, computations=2)
    for name in ("r", "r2", "r2_cod", "cc_norm"):
        assert_within(getattr(chunked, name), getattr(whole, name), *bounds[name], err_msg=name)
