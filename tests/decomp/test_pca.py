"""jaxenc.decomp.PCA against scikit-learn's PCA on the same data.

Float32 fits are compared with float64 ones within ``pca_bounds`` (tests/_tolerance.py): the
rounding of the scatter or Gram matrix and of the eigensolver, turned into eigenvalue errors
(Weyl) and a subspace angle (Davis-Kahan, through the eigengap at K). For ``planted`` data that
is an angle of 2e-4 and variances within 1e-5 to 2e-4 (the K-th smallest); a component from the
wrong end of the spectrum, a missing centring or a ddof slip is off by 1e-2 or more.
"""

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
from tests._tolerance import U32, assert_within, column_mean_atol, pca_bounds, projection_atol, rounding_bound

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
    bounds = pca_bounds(y, K)
    assert_allclose(ours.mean_, sk.mean_, rtol=0, atol=column_mean_atol(y))
    # Same sign rule as sklearn's svd_flip(u_based_decision=False): components agree entrywise.
    assert_allclose(ours.components_, sk.components_, atol=bounds["angle"])
    assert max_principal_angle(ours.components_, sk.components_) < bounds["angle"]
    assert_within(ours.explained_variance_, sk.explained_variance_, rtol=bounds["variance_rtol"])
    # The ratio's denominator, the total variance, is a sum of n p float32 squares.
    ratio_rtol = bounds["variance_rtol"] + rounding_bound([y.size])
    assert_within(ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=ratio_rtol)
    assert_within(ours.singular_values_, sk.singular_values_, rtol=bounds["singular_rtol"])
    assert ours.n_samples_ == sk.n_samples_
    # Orthonormal to the angle between the float32 components and exact ones, twice.
    assert_allclose(ours.components_ @ ours.components_.T, np.eye(K), atol=2 * bounds["angle"])


def test_transform_and_inverse_match_sklearn(case):
    y, sk, ours = case
    rng = np.random.default_rng(7)
    y_new = y[:20] + 0.1 * rng.standard_normal(y[:20].shape)
    z = ours.transform(y_new)
    assert z.shape == (20, K)
    bounds = pca_bounds(y, K)
    atol = projection_atol(bounds, y_new - sk.mean_, y.shape[1]) + column_mean_atol(y) * np.sqrt(y.shape[1])
    assert_allclose(z, sk.transform(y_new), atol=atol)
    z_pred = rng.standard_normal((5, K))
    atol = projection_atol(bounds, z_pred, K) + column_mean_atol(y)
    assert_allclose(ours.inverse_transform(z_pred), sk.inverse_transform(z_pred), atol=atol)


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
    bounds = pca_bounds(y, K)
    # chunk_elements forces voxel chunks of 16 (the last one padded) and row chunks of 64.
    for method, chunk in [("gram", 160 * 16), ("covariance", 64 * 40)]:
        for blocks_in in (blocks, [jnp.asarray(b) for b in blocks]):
            ours = PCA(K, method=method, chunk_elements=chunk).fit(blocks_in)
            assert_allclose(ours.components_, sk.components_, atol=bounds["angle"])
            assert_within(ours.explained_variance_ratio_, sk.explained_variance_ratio_,
                          rtol=bounds["variance_rtol"] + rounding_bound([y.size]))
    z_blocks = PCA(K, chunk_elements=64 * 40).fit_transform(blocks)
    atol = projection_atol(bounds, y - sk.mean_, y.shape[1]) + column_mean_atol(y) * np.sqrt(y.shape[1])
    assert_allclose(z_blocks, sk.transform(y), atol=atol)


def test_reductions_match_numpy():
    y = planted(*TALL, seed=5)
    blocks = [y[:41], y[41:100], y[100:]]
    mean, n = column_mean(blocks, chunk_elements=64 * 40)
    yc = y - y.mean(axis=0)
    assert n == TALL[0]
    assert_allclose(mean, y.mean(axis=0), rtol=0, atol=column_mean_atol(y))
    gram = gram_matrix(blocks, mean, chunk_elements=160 * 16)
    scatter = scatter_matrix(blocks, mean, chunk_elements=64 * 40)
    # Entry (i, j) sums the products of two centred rows (columns): within rounding_bound of
    # the product of their norms; the centring rounds each value by u |y|, which adds
    # 2 u |y_i| |yc_j|. A missing centring or a row chunk counted twice is off by 10 or more.
    for got, data, centred in ((gram, y, yc), (scatter, y.T, yc.T)):
        norms, centred_norms = np.linalg.norm(data, axis=1), np.linalg.norm(centred, axis=1)
        atol = (rounding_bound([data.shape[1]]) * np.outer(centred_norms, centred_norms)
                + 2 * U32 * np.outer(norms, centred_norms))
        assert_within(got, centred @ centred.T, atol=atol + atol.T)


@pytest.mark.parametrize("shape", [WIDE, TALL])
def test_randomized_agrees_with_exact(shape):
    y = planted(*shape, seed=21)
    exact = PCA(K).fit(y)
    fast = PCA(K, method="randomized", n_iter=4, n_oversamples=10, seed=1, chunk_elements=64 * 40)
    fast.fit(y)
    sk = SkPCA(K, svd_solver="randomized", random_state=0).fit(y)
    # Rounding of two float32 fits (pca_bounds for two); the power iterations' own error,
    # (s_{K+1} / s_K)^(2 n_iter + 1) < 1e-9 for planted's noise floor, adds nothing visible.
    bounds = pca_bounds(y, K, computations=2)
    assert max_principal_angle(fast.components_, exact.components_) < bounds["angle"]
    assert max_principal_angle(fast.components_, sk.components_) < bounds["angle"]
    assert_within(fast.explained_variance_, exact.explained_variance_, rtol=bounds["variance_rtol"])
    assert_within(fast.explained_variance_ratio_, sk.explained_variance_ratio_,
                  rtol=bounds["variance_rtol"] + rounding_bound([y.size] * 2))
    assert_allclose(fast.components_, exact.components_, atol=bounds["angle"])


def test_whiten_matches_sklearn():
    y = planted(*WIDE, seed=8)
    sk = SkPCA(K, whiten=True, svd_solver="full").fit(y)
    ours = PCA(K, whiten=True).fit(y)
    z = ours.transform(y)
    # Whitening divides by the singular values: their relative error adds to the projection's.
    bounds = pca_bounds(y, K)
    s_k = np.sqrt(bounds["variances"][K - 1] / (len(y) - 1))
    atol = (projection_atol(bounds, y - sk.mean_, y.shape[1]) + column_mean_atol(y) * np.sqrt(y.shape[1])) / s_k
    atol += float(np.abs(sk.transform(y)).max()) * bounds["singular_rtol"].max()
    assert_allclose(z, sk.transform(y), atol=atol)
    assert_within(np.std(np.asarray(z), axis=0, ddof=1), np.ones(K),
                  rtol=bounds["singular_rtol"] + rounding_bound([len(y)]))
    # Back: the float32 singular values divide and multiply again (their error cancels); the
    # subspace's angle counts twice, on rows of the data's norm.
    back = sk.inverse_transform(sk.transform(y))
    atol = 2 * projection_atol(bounds, y - sk.mean_, y.shape[1]) + 2 * column_mean_atol(y)
    assert_allclose(ours.inverse_transform(z), back, atol=atol)


def test_pure_functions_jit_and_agree_with_class():
    y = planted(*WIDE, seed=9)
    state = pca_fit(y, K)
    z = jax.jit(pca_transform)(state, y)
    back = jax.jit(pca_inverse)(state, z)
    # Two float32 fits, their projections compared.
    bounds = pca_bounds(y, K, computations=2)
    atol = projection_atol(bounds, y - y.mean(axis=0), y.shape[1]) + 2 * column_mean_atol(y) * np.sqrt(y.shape[1])
    assert_allclose(z, PCA(K).fit(y).transform(y), atol=atol)
    sk = SkPCA(K, svd_solver="full").fit(y)
    # Projected and back: the subspace's angle twice, on rows of the data's norm.
    atol = 2 * projection_atol(pca_bounds(y, K), y - y.mean(axis=0), y.shape[1]) + 2 * column_mean_atol(y)
    assert_allclose(back, sk.inverse_transform(sk.transform(y)), atol=atol)


def test_full_rank_request_reconstructs_training_data():
    # k = n_samples: centring leaves rank n - 1, so the last component has no variance.
    y = planted(*WIDE, seed=2, noise=0.5)
    ours = PCA(WIDE[0]).fit(y)
    assert np.all(np.isfinite(np.asarray(ours.components_)))
    # The zero eigenvalue comes out within the matrix's rounding error (Weyl): 1e-3 of the
    # largest here, 0 on this machine; keeping a spurious direction would give it about 10.
    norm_error = pca_bounds(y, WIDE[0] - 1)["norm_error"]
    assert float(ours.explained_variance_[-1]) < norm_error / (WIDE[0] - 1)
    # The whole row space is kept, so only rounding remains: rows projected onto n components and
    # back (dot products of p and n terms) within rounding_bound of their norm, 1e-4; dropping
    # the last real component would cost the noise floor, 0.1 or more.
    rows = float(np.linalg.norm(y - y.mean(axis=0), axis=1).max())
    atol = rounding_bound([WIDE[1], WIDE[0], 1], scale=rows) + 2 * column_mean_atol(y)
    assert_allclose(ours.inverse_transform(ours.transform(y)), y, atol=atol)
    # The eigenvalues sum to the trace, the total variance, to the matrix's rounding error.
    total = float(np.sum((y - y.mean(axis=0)) ** 2))
    assert_allclose(ours.explained_variance_ratio_.sum(), 1.0, rtol=norm_error / total + rounding_bound([WIDE[0]]))


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
