"""Sharded PCA on 8 host devices against the single-device pca_fit (the same solver: Gram,
covariance or randomized with the same settings) and scikit-learn's exact PCA.

Each ``_check_*`` function runs in a child process with 8 CPU devices (tests/_sharded.py).
The voxel count 163 does not divide by 8, so every check also covers the zero padding.
Tolerances (float32, planted data with singular values 10 * 0.75**j over a 0.05 noise floor):
components entrywise 2e-4 of sklearn and of the single-device fit (same sign rule, so no
sign alignment), explained variance and singular values 1e-4 relative, scores and
reconstructions 1e-4 relative to the data scale.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxenc.errors import AlignmentError, ConfigError
from tests._sharded import run_sharded
from tests._tolerance import assert_within, column_mean_atol, pca_bounds, projection_atol, rounding_bound

K = 6
WIDE = (48, 163)  # n_trs < n_voxels: voxel-sharded Gram path
TALL = (163, 40)  # n_voxels <= n_trs: row-sharded covariance path (rows pad 163 -> 168)


def planted(n, p, seed=0, rank=K, noise=0.05):
    """Well separated top singular values over a noise floor, plus voxel offsets."""
    rng = np.random.default_rng(seed)
    scales = 10.0 * 0.75 ** np.arange(rank)
    left = np.linalg.qr(rng.standard_normal((n, rank)))[0] * np.sqrt(n)
    right = np.linalg.qr(rng.standard_normal((p, rank)))[0].T
    y = (left * scales) @ right + noise * rng.standard_normal((n, p))
    return y + rng.normal(3.0, 1.0, size=p)


def _check_against_references(shape, shard, method, randomized=None):
    import jax
    from jax.sharding import PartitionSpec as P
    from sklearn.decomposition import PCA as SkPCA

    from jaxenc.decomp import pca_fit, pca_inverse, pca_transform
    from jaxenc.decomp.sharded import pca_fit_sharded, pca_inverse_sharded, pca_transform_sharded
    from jaxenc.distributed import make_mesh

    n, p = shape
    width = -(-p // 8) * 8  # voxels padded to a multiple of the 8 shards
    y = planted(n, p, seed=n + p)
    mesh = make_mesh(("data",))
    # randomized: the randomized solver's settings, the same for both fits.
    extra = {} if randomized is None else {"method": "randomized", **randomized}
    state = pca_fit_sharded(y, K, mesh, shard=shard, **extra)
    assert state.components.shape == (K, width) and state.n_voxels == p
    assert state.components.sharding.spec == P(None, "data")
    assert len(state.components.addressable_shards) == 8
    single = pca_fit(y, K, method=method, **(randomized or {}))
    sk = SkPCA(K, svd_solver="full").fit(y)
    full = state.gather()
    padding = np.asarray(state.components)[:, p:]
    assert_allclose(padding, 0.0)
    # pca_bounds (tests/_tolerance.py): against sklearn one float32 fit, against the
    # single-device fit two; tests/decomp/test_pca.py states the sizes.
    one, two = pca_bounds(y, K), pca_bounds(y, K, computations=2)
    for ref_components, bounds in ((np.asarray(single.components), two), (sk.components_, one)):
        assert_allclose(full.components, ref_components, atol=bounds["angle"])
    assert_allclose(full.mean, sk.mean_, rtol=0, atol=column_mean_atol(y))
    assert_within(full.explained_variance, sk.explained_variance_, rtol=one["variance_rtol"])
    assert_within(full.explained_variance_ratio, sk.explained_variance_ratio_,
                  rtol=one["variance_rtol"] + rounding_bound([y.size]))
    assert_within(full.singular_values, sk.singular_values_, rtol=one["singular_rtol"])
    assert full.n_samples == n

    centred = y - sk.mean_
    s_k = np.sqrt(one["variances"][K - 1] / (n - 1))
    for whiten in (False, True):
        z = pca_transform_sharded(state, y, whiten=whiten)
        assert z.shape == (n, K) and z.sharding.is_fully_replicated
        # Projections: the subspace's angle on the rows' norm, the mean's rounding; whitening
        # divides by the singular values (by s_K at most) and adds their relative error.
        z_sk = SkPCA(K, svd_solver="full", whiten=whiten).fit(y).transform(y)
        z_atol = {}
        for name, bounds in (("single", two), ("sk", one)):
            atol = projection_atol(bounds, centred, p) + 2 * column_mean_atol(y) * np.sqrt(p)
            z_atol[name] = atol / s_k + np.abs(z_sk).max() * bounds["singular_rtol"].max() if whiten else atol
        assert_allclose(z, pca_transform(single, y, whiten=whiten), atol=z_atol["single"])
        assert_allclose(z, z_sk, atol=z_atol["sk"])
        rec = pca_inverse_sharded(state, z, whiten=whiten)
        assert rec.shape == (n, width) and rec.sharding.spec == P(None, "data")
        rec = np.asarray(rec)
        assert_allclose(rec[:, p:], 0.0)
        # Back: the angle twice on the rows' norm (the singular values' error cancels).
        rec_atol = 2 * projection_atol(one, centred, p) + 2 * column_mean_atol(y)
        assert_allclose(rec[:, :p], pca_inverse(single, z, whiten=whiten), atol=rec_atol)
        assert_allclose(rec[:, :p], sk.inverse_transform(z_sk) if not whiten else
                        SkPCA(K, svd_solver="full", whiten=True).fit(y).inverse_transform(z_sk),
                        atol=rec_atol)
    # Already-sharded input gives the same scores as host input: the same components, only the
    # p-term dot products' rounding (and the mean's) may differ.
    y_sharded = jax.device_put(np.pad(y, ((0, 0), (0, width - p))).astype(np.float32),
                               state.components.sharding)
    atol = rounding_bound([p, p], scale=float(np.linalg.norm(y, axis=1).max()))
    assert_allclose(pca_transform_sharded(state, y_sharded), pca_transform_sharded(state, y), atol=atol)


def _check_voxel_gram():
    _check_against_references(WIDE, "voxels", "gram")


def _check_row_covariance():
    _check_against_references(TALL, "rows", "covariance")


def _check_voxel_randomized():
    # The power iterations' own error, (s_{K+1} / s_K)^(2 n_iter + 1) < 1e-9 for planted's noise
    # floor, adds nothing visible to the float32 bounds (tests/decomp/test_pca.py).
    _check_against_references(WIDE, "voxels", "randomized", {"n_iter": 4, "seed": 1})
    # 40 voxels on 8 shards: 5 rows a shard, fewer than the 16 sketch columns, so each shard's
    # R of the tall QR is 5 x 16.
    _check_against_references(TALL, "voxels", "randomized", {"n_iter": 4, "seed": 1})


def _check_block_list_and_errors():
    from jaxenc.decomp import pca_fit
    from jaxenc.decomp.sharded import pca_fit_sharded, pca_transform_sharded
    from jaxenc.distributed import make_mesh

    mesh = make_mesh()
    y = planted(*WIDE)
    # Story blocks are stacked along rows, as pca_fit does.
    state = pca_fit_sharded([y[:20], y[20:]], K, mesh)
    assert_allclose(state.gather().components, pca_fit(y, K, method="gram").components,
                    atol=pca_bounds(y, K, computations=2)["angle"])
    with pytest.raises(ConfigError, match="sharding"):
        pca_fit_sharded(y, K, mesh, shard="columns")
    with pytest.raises(ConfigError, match="over voxels only"):
        pca_fit_sharded(y, K, mesh, shard="rows", method="randomized")
    with pytest.raises(ConfigError, match="unknown sharded PCA method"):
        pca_fit_sharded(y, K, mesh, method="gram")
    with pytest.raises(ConfigError, match="n_iter"):
        pca_fit_sharded(y, K, mesh, method="randomized", n_iter=-1)
    with pytest.raises(ConfigError, match="n_components"):
        pca_fit_sharded(y, 49, mesh)
    with pytest.raises(ConfigError, match="axes"):
        pca_fit_sharded(y, K, mesh, axis="model")
    with pytest.raises(AlignmentError, match="163 voxels"):
        pca_transform_sharded(state, y[:, :100])


def _check_refits_do_not_compile():
    import logging

    import jax

    from jaxenc.decomp.sharded import ShardedPCA
    from jaxenc.distributed import make_mesh

    mesh = make_mesh()
    y = planted(*WIDE)
    compiled = []

    class Count(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Compiling"):
                compiled.append(record.getMessage().split(" with ")[0])

    for method in ("gram", "randomized"):
        pca = ShardedPCA(K, mesh, method=method).fit(y)
        pca.inverse_transform(pca.transform(y[:3]))
    logging.getLogger("jax").addHandler(Count())
    jax.config.update("jax_log_compiles", True)
    # A fold's PCA, fitted again on data of the same shape, scores and maps back without a
    # compilation: each sharded program is built once (a new jit closure per call compiled
    # every story's scores anew).
    for method in ("gram", "randomized"):
        pca = ShardedPCA(K, mesh, method=method).fit(2 * y)
        pca.inverse_transform(pca.transform(y[:3]))
    assert compiled == [], compiled


def test_voxel_sharded_gram_matches_single_device_and_sklearn():
    run_sharded(__file__, "_check_voxel_gram")


def test_row_sharded_covariance_matches_single_device_and_sklearn():
    run_sharded(__file__, "_check_row_covariance")


def test_voxel_sharded_randomized_matches_single_device_and_sklearn():
    run_sharded(__file__, "_check_voxel_randomized")


def test_sharded_programs_compile_once_on_8_devices():
    run_sharded(__file__, "_check_refits_do_not_compile")


def test_blocks_and_errors_on_8_devices():
    run_sharded(__file__, "_check_block_list_and_errors")


def test_make_mesh_shapes_and_axis_types():
    import jax
    from jax.sharding import AxisType

    from jaxenc.distributed import make_mesh

    mesh = make_mesh(("rows", "voxels"))
    assert dict(mesh.shape) == {"rows": jax.device_count(), "voxels": 1}
    assert mesh.axis_types == (AxisType.Explicit, AxisType.Explicit)
    auto = make_mesh(axis_types=(AxisType.Auto,))
    assert auto.axis_types == (AxisType.Auto,)
    with pytest.raises(ConfigError, match="devices"):
        make_mesh(("data",), shape=(jax.device_count() + 1,))
