"""The MLP family against numpy forward passes, and the structural properties of the controls.

The float32 forwards are compared with float64 numpy on the same parameters within
``rounding_bound`` (tests/_tolerance.py) of the contraction lengths on the path, scaled by the
absolute-value forward pass (the size of the summed terms, ``|X| @ |W|``), and through
BatchNorm by its condition, the terms' size over the batch's standard deviation. About 1e-6 to
1e-5 here; a wrong weight block, gate order or statistic moves outputs by 1e-2 or more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxenc.precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.models.nonlinear import DIMLP, MLP, DeepMLP, DelayGRU, MLLinear, delayed_columns
from tests._tolerance import network_atol, rounding_bound

RNG = np.random.default_rng(0)
X = RNG.standard_normal((9, 12)).astype(np.float32)


@pytest.fixture(autouse=True)
def full_precision():
    """The models are called here directly, outside the trainer's programs (which set their own
    precision): at full float32 on every backend, as numpy computes."""
    with matmul.scope("highest"):
        yield


def _np(v):
    return np.asarray(v[...], np.float64)


def test_mllinear_is_the_product_of_its_weight_matrices():
    m = MLLinear(12, 5, hidden=3, rngs=nnx.Rngs(0))
    w1, b1, w2, b2 = _np(m.encode.kernel), _np(m.encode.bias), _np(m.decode.kernel), _np(m.decode.bias)
    w = w1 @ w2  # (12, 5) of rank <= 3
    assert np.linalg.matrix_rank(w) <= 3
    terms = (np.abs(X) @ np.abs(w1) + np.abs(b1)) @ np.abs(w2) + np.abs(b2)
    atol = rounding_bound([12, 1, 3, 1], scale=terms.max())
    np.testing.assert_allclose(np.asarray(m(X)), X @ w + b1 @ w2 + b2, rtol=0, atol=atol)


def test_mlp_eval_and_train_forward_match_numpy():
    m = MLP(12, 4, hidden=6, dropout=0.0, rngs=nnx.Rngs(1))
    w1, w2, b2 = _np(m.hidden.linear.kernel), _np(m.readout.kernel), _np(m.readout.bias)
    bn = m.hidden.norm
    # Training mode: batch statistics over the real rows only (mask), biased variance.
    mask = np.arange(9) < 6
    h = X @ w1
    mu, var = h[mask].mean(0), h[mask].var(0)
    want = np.tanh((h - mu) / np.sqrt(var + bn.epsilon) * _np(bn.scale) + _np(bn.bias)) @ w2 + b2
    got = np.asarray(m(X, train=True, mask=jnp.asarray(mask)))
    # h's rounding (12 terms, then the 6-row mean and variance) relative to |X| @ |w1|, divided
    # by the batch's standard deviation, times BatchNorm's scale; tanh is 1-Lipschitz; then the
    # readout's 6-term sums weigh it by |w2|.
    h_terms = np.abs(X) @ np.abs(w1)

    def out_atol(std):
        normed = rounding_bound([12, 6, 6, 1], scale=h_terms.max()) / std.min() * np.abs(_np(bn.scale)).max()
        readout = np.abs(w2).sum(axis=0).max()
        return normed * readout + rounding_bound([6, 1], scale=readout + np.abs(b2).max())

    np.testing.assert_allclose(got, want, rtol=0, atol=out_atol(np.sqrt(var + bn.epsilon)))
    # momentum 0.9 from 0: the 6-row mean of h, times 0.1.
    mean_atol = 0.1 * rounding_bound([12, 6, 1], scale=h_terms.max())
    np.testing.assert_allclose(_np(bn.mean), 0.1 * mu, rtol=0, atol=mean_atol)
    # Evaluation mode: running statistics.
    running_std = np.sqrt(_np(bn.var) + bn.epsilon)
    want = np.tanh((h - _np(bn.mean)) / running_std * _np(bn.scale) + _np(bn.bias)) @ w2 + b2
    np.testing.assert_allclose(np.asarray(m(X)), want, rtol=0, atol=out_atol(running_std))


@pytest.mark.slow
def test_dimlp_has_no_cross_modal_interaction():
    # Modality a: columns 0-1 and 6-7 (two delay blocks of 6), b: 2-5 and 8-11.
    a, b = delayed_columns(0, 2, 6, 2), delayed_columns(2, 6, 6, 2)
    assert a == ((0, 2), (6, 8)) and b == ((2, 6), (8, 12))
    m = DIMLP([a, b], 3, hidden=(4, 5), rngs=nnx.Rngs(2))
    m(X, train=True)  # non-trivial running statistics
    a_cols = np.r_[0:2, 6:8]
    x1, x2 = X[:4].copy(), X[4:8].copy()
    mixed12, mixed21 = x1.copy(), x2.copy()
    mixed12[:, a_cols], mixed21[:, a_cols] = x2[:, a_cols], x1[:, a_cols]
    def f(x):
        return np.asarray(m(jnp.asarray(x)), np.float64)

    # Additive across modalities: f(a1, b1) + f(a2, b2) == f(a2, b1) + f(a1, b2), to the rounding
    # of four float32 forwards (contractions of up to 8 inputs and 5 hidden units, a few terms of
    # the size of the outputs); the MLP below mixes them by 1e-2 or more.
    scale = max(np.abs(f(x)).max() for x in (x1, x2, mixed12, mixed21))
    np.testing.assert_allclose(f(x1) + f(x2), f(mixed12) + f(mixed21), atol=network_atol(scale, [8, 5, 5], 4))
    # The MLP does mix them.
    mlp = MLP(12, 3, hidden=8, rngs=nnx.Rngs(2))
    def g(x):
        return np.asarray(mlp(jnp.asarray(x)), np.float64)

    assert np.max(np.abs(g(x1) + g(x2) - g(mixed12) - g(mixed21))) > 1e-2


def test_deep_mlp_and_gru_shapes_and_gru_against_numpy():
    assert DeepMLP(12, 4, depth=3, hidden=5, rngs=nnx.Rngs(3))(X).shape == (9, 4)
    m = DelayGRU(12, 4, n_delays=3, hidden=5, rngs=nnx.Rngs(4))
    c = m.cell
    def sig(z):
        return 1 / (1 + np.exp(-z))

    seq = X.reshape(9, 3, 4)
    h = np.zeros((9, 5))
    # Standard GRU equations; the cell packs the r, z, n weights side by side.
    wi_r, wi_z, wi_n = np.split(_np(c.dense_i.kernel), 3, axis=1)
    bi_r, bi_z, bi_n = np.split(_np(c.dense_i.bias), 3)
    wh_r, wh_z, wh_n = np.split(_np(c.dense_h.kernel), 3, axis=1)
    for d in (2, 1, 0):  # oldest delay block first
        x = seq[:, d]
        r = sig(x @ wi_r + bi_r + h @ wh_r)
        z = sig(x @ wi_z + bi_z + h @ wh_z)
        n = np.tanh(x @ wi_n + bi_n + r * (h @ wh_n))
        h = (1 - z) * n + z * h
    want = h @ _np(m.readout.kernel) + _np(m.readout.bias)
    # Three steps of 4- and 5-term contractions, each within rounding_bound of their terms
    # (|x| |W_i| + |h| |W_h| + biases, |h| < 1), through 1-Lipschitz gates (errors at most add
    # up over the steps), then the readout's 5 terms weighted by |readout|.
    pre = max(np.abs(seq[:, d]).sum(axis=1).max() * np.abs(_np(c.dense_i.kernel)).max() for d in range(3))
    pre += np.abs(_np(c.dense_i.bias)).max() + 5 * np.abs(_np(c.dense_h.kernel)).max()
    readout = np.abs(_np(m.readout.kernel)).sum(axis=0).max()
    atol = 3 * rounding_bound([4, 5, 1, 1], scale=pre) * readout + rounding_bound([5, 1], scale=readout)
    np.testing.assert_allclose(np.asarray(m(X)), want, rtol=0, atol=atol)


def test_config_errors():
    with pytest.raises(ConfigError):
        DIMLP([(0, 4)], 3, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        DelayGRU(10, 3, n_delays=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        delayed_columns(4, 2, 6, 2)


def test_torch_linear_draws_like_torch_nn_linear():
    import torch

    from jaxenc.models.nonlinear import torch_linear

    n_in, n_out = 300, 400
    ours = torch_linear(n_in, n_out, rngs=nnx.Rngs(0))
    torch.manual_seed(0)
    theirs = torch.nn.Linear(n_in, n_out)
    bound = 1 / np.sqrt(n_in)
    for got, want in ((_np(ours.kernel), theirs.weight.detach().numpy()),
                      (_np(ours.bias), theirs.bias.detach().numpy())):
        assert np.abs(got).max() <= bound and np.abs(want).max() <= bound
        # Both uniform on [-bound, bound]: std bound / sqrt(3). 120000 kernel draws give a
        # relative standard error of the std near 0.2%, 400 bias draws near 3%: margins 1% / 10%.
        tol = 0.01 if got.size > 1000 else 0.1
        np.testing.assert_allclose(got.std(), want.std(), rtol=tol)
        np.testing.assert_allclose(got.std(), bound / np.sqrt(3), rtol=tol)
    # The layers MLP builds start this way too (no bias before BatchNorm).
    mlp = MLP(n_in, 7, hidden=n_out, rngs=nnx.Rngs(1))
    assert mlp.hidden.linear.bias is None
    np.testing.assert_allclose(_np(mlp.hidden.linear.kernel).std(), bound / np.sqrt(3), rtol=0.01)


@pytest.mark.parametrize("make", [
    lambda dtype: MLLinear(12, 5, hidden=8, rngs=nnx.Rngs(0), dtype=dtype),
    lambda dtype: MLP(12, 5, hidden=8, rngs=nnx.Rngs(0), dtype=dtype),
    lambda dtype: DIMLP([(0, 5), (5, 12)], 5, hidden=4, rngs=nnx.Rngs(0), dtype=dtype),
    lambda dtype: DeepMLP(12, 5, depth=2, hidden=8, rngs=nnx.Rngs(0), dtype=dtype),
    lambda dtype: DelayGRU(12, 5, n_delays=3, hidden=8, rngs=nnx.Rngs(0), dtype=dtype),
])
def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32(make):
    full, half = make(jnp.float32), make(jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(half, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
    want, got = np.asarray(full(X)), half(X)
    assert got.dtype == jnp.bfloat16
    # Each layer rounds its two operands and its output to 8 significant bits (relative 2^-9
    # each): about 3 * 2^-9 = 0.6% of the scale of the terms summed per layer, 1.8% through three
    # layers; cancellation in the sums makes an output smaller than its terms, hence 5% of the
    # largest output (measured: 0.3-0.5%).
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.05 * np.abs(want).max())
