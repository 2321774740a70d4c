"""Sharded PCA on 8 host devices against the single-device pca_fit and scikit-learn's PCA.

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


def _check_against_references(shape, shard, method):
    import jax
    from jax.sharding import PartitionSpec as P
    from sklearn.decomposition import PCA as SkPCA

    from jaxenc.decomp import pca_fit, pca_inverse, pca_transform
    from jaxenc.decomp.sharded import (pca_fit_sharded, pca_inverse_sharded,
                                       pca_transform_sharded)
    from jaxenc.distributed import make_mesh

    n, p = shape
    width = -(-p // 8) * 8  # voxels padded to a multiple of the 8 shards
    y = planted(n, p, seed=n + p)
    mesh = make_mesh(("data",))
    state = pca_fit_sharded(y, K, mesh, shard=shard)
    assert state.components.shape == (K, width) and state.n_voxels == p
    assert state.components.sharding.spec == P(None, "data")
    assert len(state.components.addressable_shards) == 8
    single = pca_fit(y, K, method=method)
    sk = SkPCA(K, svd_solver="full").fit(y)
    full = state.gather()
    padding = np.asarray(state.components)[:, p:]
    assert_allclose(padding, 0.0)
    for ref_components in (np.asarray(single.components), sk.components_):
        assert_allclose(full.components, ref_components, atol=2e-4)
    assert_allclose(full.mean, sk.mean_, rtol=1e-5, atol=1e-5)
    assert_allclose(full.explained_variance, sk.explained_variance_, rtol=1e-4)
    assert_allclose(full.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-4)
    assert_allclose(full.singular_values, sk.singular_values_, rtol=1e-4)
    assert full.n_samples == n

    scale = np.abs(y).max()
    for whiten in (False, True):
        z = pca_transform_sharded(state, y, whiten=whiten)
        assert z.shape == (n, K) and z.sharding.is_fully_replicated
        assert_allclose(z, pca_transform(single, y, whiten=whiten), atol=1e-4 * scale)
        z_sk = SkPCA(K, svd_solver="full", whiten=whiten).fit(y).transform(y)
        assert_allclose(z, z_sk, atol=1e-4 * scale)
        rec = pca_inverse_sharded(state, z, whiten=whiten)
        assert rec.shape == (n, width) and rec.sharding.spec == P(None, "data")
        rec = np.asarray(rec)
        assert_allclose(rec[:, p:], 0.0)
        assert_allclose(rec[:, :p], pca_inverse(single, z, whiten=whiten), atol=1e-4 * scale)
        assert_allclose(rec[:, :p], sk.inverse_transform(z_sk) if not whiten else
                        SkPCA(K, svd_solver="full", whiten=True).fit(y).inverse_transform(z_sk),
                        atol=1e-4 * scale)
    # Already-sharded input gives the same scores as host input.
    y_sharded = jax.device_put(np.pad(y, ((0, 0), (0, width - p))).astype(np.float32),
                               state.components.sharding)
    assert_allclose(pca_transform_sharded(state, y_sharded), pca_transform_sharded(state, y),
                    atol=1e-5 * scale)


def _check_voxel_gram():
    _check_against_references(WIDE, "voxels", "gram")


def _check_row_covariance():
    _check_against_references(TALL, "rows", "covariance")


def _check_block_list_and_errors():
    from jaxenc.decomp import pca_fit
    from jaxenc.decomp.sharded import pca_fit_sharded, pca_transform_sharded
    from jaxenc.distributed import make_mesh

    mesh = make_mesh()
    y = planted(*WIDE)
    # Story blocks are stacked along rows, as pca_fit does.
    state = pca_fit_sharded([y[:20], y[20:]], K, mesh)
    assert_allclose(state.gather().components, pca_fit(y, K, method="gram").components,
                    atol=2e-4)
    with pytest.raises(ConfigError, match="sharding"):
        pca_fit_sharded(y, K, mesh, shard="columns")
    with pytest.raises(ConfigError, match="n_components"):
        pca_fit_sharded(y, 49, mesh)
    with pytest.raises(ConfigError, match="axes"):
        pca_fit_sharded(y, K, mesh, axis="model")
    with pytest.raises(AlignmentError, match="163 voxels"):
        pca_transform_sharded(state, y[:, :100])


def test_voxel_sharded_gram_matches_single_device_and_sklearn():
    run_sharded(__file__, "_check_voxel_gram")


def test_row_sharded_covariance_matches_single_device_and_sklearn():
    run_sharded(__file__, "_check_row_covariance")


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
