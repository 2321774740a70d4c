"""jaxenc.decomp.PCA against scikit-learn's PCA on the same data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose
from sklearn.decomposition import PCA as SkPCA

from jaxenc.decomp import (
    PCA,
    column_mean,
    gram_matrix,
    pca_fit,
    pca_inverse,
    pca_transform,
    scatter_matrix,
)
from jaxenc.errors import AlignmentError, ConfigError, DataError

K = 6
# Two shapes shared by every test, so JAX compiles each kernel for few shapes.
WIDE = (48, 160)
TALL = (160, 40)


def planted(n, p, seed=0, rank=K, noise=0.05):
    """Data whose top ``rank`` singular values are well separated (ratio 0.75) above a noise floor,
    plus voxel offsets, so float32 eigenvectors are well determined."""
    rng = np.random.default_rng(seed)
    scales = 10.0 * 0.75 ** np.arange(rank)
    left = np.linalg.qr(rng.standard_normal((n, rank)))[0] * np.sqrt(n)
    right = np.linalg.qr(rng.standard_normal((p, rank)))[0].T
    y = (left * scales) @ right + noise * rng.standard_normal((n, p))
    return y + rng.normal(3.0, 1.0, size=p)


def max_principal_angle(a, b):
    return np.max(scipy.linalg.subspace_angles(np.asarray(a).T, np.asarray(b).T))


@pytest.fixture(scope="module", params=[WIDE, TALL], ids=["n<p", "n>p"])
def case(request):
    n, p = request.param
    y = planted(n, p, seed=n + p)
    sk = SkPCA(K, svd_solver="full").fit(y)
    ours = PCA(K).fit(y)
    return y, sk, ours


def test_fit_matches_sklearn_full(case):
    y, sk, ours = case
    assert_allclose(ours.mean_, sk.mean_, rtol=1e-5, atol=1e-5)
    # Same sign rule as sklearn's svd_flip(u_based_decision=False): components agree entrywise.
    assert_allclose(ours.components_, sk.components_, atol=2e-4)
    assert max_principal_angle(ours.components_, sk.components_) < 1e-3
    assert_allclose(ours.explained_variance_, sk.explained_variance_, rtol=1e-4)
    assert_allclose(ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-4)
    assert_allclose(ours.singular_values_, sk.singular_values_, rtol=1e-4)
    assert ours.n_samples_ == sk.n_samples_
    assert_allclose(ours.components_ @ ours.components_.T, np.eye(K), atol=1e-5)


def test_transform_and_inverse_match_sklearn(case):
    y, sk, ours = case
    rng = np.random.default_rng(7)
    y_new = y[:20] + 0.1 * rng.standard_normal(y[:20].shape)
    z = ours.transform(y_new)
    assert z.shape == (20, K)
    assert_allclose(z, sk.transform(y_new), atol=2e-3 * np.abs(sk.transform(y_new)).max())
    z_pred = rng.standard_normal((5, K))
    assert_allclose(ours.inverse_transform(z_pred), sk.inverse_transform(z_pred), atol=1e-3)


@pytest.mark.parametrize("method", ["gram", "covariance"])
def test_float64_all_components_match_sklearn(method):
    # In float64 even the noise-floor components (small eigengaps) must agree.
    y = planted(*WIDE, seed=3)
    k = 40
    sk = SkPCA(k, svd_solver="full").fit(y)
    with jax.enable_x64(True):
        ours = PCA(k, method=method, dtype=jnp.float64).fit(y)
        assert ours.components_.dtype == jnp.float64
        assert_allclose(ours.components_, sk.components_, atol=1e-8)
        assert_allclose(ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-10)
        assert_allclose(ours.transform(y), sk.transform(y), atol=1e-8)


def test_blocks_equal_stacked_fit_with_small_chunks():
    y = planted(*TALL, seed=11)
    blocks = [y[:41], y[41:100], y[100:]]
    sk = SkPCA(K, svd_solver="full").fit(y)
    # chunk_elements forces voxel chunks of 16 (the last one padded) and row chunks of 64.
    for method, chunk in [("gram", 160 * 16), ("covariance", 64 * 40)]:
        for blocks_in in (blocks, [jnp.asarray(b) for b in blocks]):
            ours = PCA(K, method=method, chunk_elements=chunk).fit(blocks_in)
            assert_allclose(ours.components_, sk.components_, atol=2e-4)
            assert_allclose(ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-4)
    z_blocks = PCA(K, chunk_elements=64 * 40).fit_transform(blocks)
    assert_allclose(z_blocks, sk.transform(y), atol=2e-3 * np.abs(sk.transform(y)).max())


def test_reductions_match_numpy():
    y = planted(*TALL, seed=5)
    blocks = [y[:41], y[41:100], y[100:]]
    mean, n = column_mean(blocks, chunk_elements=64 * 40)
    yc = y - y.mean(axis=0)
    assert n == TALL[0]
    assert_allclose(mean, y.mean(axis=0), rtol=1e-5)
    gram = gram_matrix(blocks, mean, chunk_elements=160 * 16)
    scatter = scatter_matrix(blocks, mean, chunk_elements=64 * 40)
    assert_allclose(gram, yc @ yc.T, rtol=1e-4, atol=1e-2)
    assert_allclose(scatter, yc.T @ yc, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("shape", [WIDE, TALL])
def test_randomized_agrees_with_exact(shape):
    y = planted(*shape, seed=21)
    exact = PCA(K).fit(y)
    fast = PCA(K, method="randomized", n_iter=4, n_oversamples=10, seed=1, chunk_elements=64 * 40)
    fast.fit(y)
    sk = SkPCA(K, svd_solver="randomized", random_state=0).fit(y)
    assert max_principal_angle(fast.components_, exact.components_) < 1e-3
    assert max_principal_angle(fast.components_, sk.components_) < 1e-3
    assert_allclose(fast.explained_variance_, exact.explained_variance_, rtol=1e-4)
    assert_allclose(fast.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-4)
    assert_allclose(fast.components_, exact.components_, atol=5e-4)


def test_whiten_matches_sklearn():
    y = planted(*WIDE, seed=8)
    sk = SkPCA(K, whiten=True, svd_solver="full").fit(y)
    ours = PCA(K, whiten=True).fit(y)
    z = ours.transform(y)
    assert_allclose(z, sk.transform(y), atol=2e-3)
    assert_allclose(np.std(np.asarray(z), axis=0, ddof=1), 1.0, rtol=1e-4)
    assert_allclose(ours.inverse_transform(z), sk.inverse_transform(sk.transform(y)), atol=2e-3)


def test_pure_functions_jit_and_agree_with_class():
    y = planted(*WIDE, seed=9)
    state = pca_fit(y, K)
    z = jax.jit(pca_transform)(state, y)
    back = jax.jit(pca_inverse)(state, z)
    assert_allclose(z, PCA(K).fit(y).transform(y), atol=1e-4)
    sk = SkPCA(K, svd_solver="full").fit(y)
    assert_allclose(back, sk.inverse_transform(sk.transform(y)), atol=1e-3)


def test_full_rank_request_reconstructs_training_data():
    # k = n_samples: centring leaves rank n - 1, so the last component has no variance.
    y = planted(*WIDE, seed=2, noise=0.5)
    ours = PCA(WIDE[0]).fit(y)
    assert np.all(np.isfinite(np.asarray(ours.components_)))
    assert float(ours.explained_variance_[-1]) < 1e-4 * float(ours.explained_variance_[0])
    assert_allclose(ours.inverse_transform(ours.transform(y)), y, atol=1e-3)
    assert_allclose(ours.explained_variance_ratio_.sum(), 1.0, rtol=1e-4)


def test_errors():
    y = planted(*WIDE, seed=1)
    with pytest.raises(ConfigError, match="n_components"):
        PCA(WIDE[0] + 1).fit(y)
    with pytest.raises(ConfigError, match="n_components"):
        PCA(0).fit(y)
    with pytest.raises(ConfigError, match="method"):
        PCA(3, method="svd")
    bad = y.copy()
    bad[4, 7] = np.nan
    with pytest.raises(DataError, match="block 1 of 2"):
        PCA(3).fit([y, bad])
    with pytest.raises(AlignmentError, match="voxels"):
        PCA(3).fit([y, y[:, :10]])
    with pytest.raises(ConfigError, match="not fitted"):
        PCA(3).transform(y)
    pca = PCA(K).fit(y)
    with pytest.raises(AlignmentError, match="160 voxels"):
        pca.transform(y[:, :159])
    with pytest.raises(AlignmentError, match=f"{K} components"):
        pca.inverse_transform(np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="float64"):
        PCA(3, dtype=np.float64).fit(y)
