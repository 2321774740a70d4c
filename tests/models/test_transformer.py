"""DelayTransformer: its forward against numpy, its place in the registry, and its fold-parallel
training against a Python loop over the same models."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from jaxenc.errors import ConfigError
from jaxenc.models import ENCODERS, DelayTransformer, NetworkOptions, encoder
from jaxenc.train import TrainConfig, fit_encoders
from tests._tolerance import TRAINING_LOSS_RTOL, TRAINING_STATE_ATOL
from tests.train.test_fit import _max_diff, _subject, check_bfloat16_compute

RNG = np.random.default_rng(0)
X = RNG.standard_normal((9, 12)).astype(np.float32)


def _np(v):
    return np.asarray(v[...], np.float64)


def _linear(layer, x):
    return x @ _np(layer.kernel) + _np(layer.bias)


def _layer_norm(norm, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * _np(norm.scale) + _np(norm.bias)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_forward(m: DelayTransformer, x: np.ndarray) -> np.ndarray:
    """The transformer written out in float64 numpy, loop over heads, exact (erf) GELU."""
    n_delays, heads = m.n_delays, m.heads
    tokens = x.astype(np.float64).reshape(len(x), n_delays, -1)[:, ::-1]  # oldest delay first
    h = _linear(m.embed, tokens) + _np(m.position)
    for block in m.blocks:
        x_norm = _layer_norm(block.norm1, h)
        q, v = _linear(block.query, x_norm), _linear(block.value, x_norm)
        k = x_norm @ _np(block.key.kernel)  # the key projection has no bias
        d = q.shape[-1] // heads
        attended = np.concatenate([
            _softmax(q[..., i * d:(i + 1) * d] @ np.swapaxes(k[..., i * d:(i + 1) * d], 1, 2) / math.sqrt(d))
            @ v[..., i * d:(i + 1) * d]
            for i in range(heads)
        ], axis=-1)
        h = h + _linear(block.out, attended)
        u = _linear(block.up, _layer_norm(block.norm2, h))
        h = h + _linear(block.down, 0.5 * u * (1 + erf(u / math.sqrt(2))))
    return _linear(m.readout, _layer_norm(m.norm, h).mean(axis=1))


@pytest.mark.parametrize(("n_delays", "heads", "depth"), [(3, 2, 1), (4, 1, 2), (2, 4, 1)])
def test_forward_matches_numpy(n_delays, heads, depth):
    m = DelayTransformer(12, 5, n_delays=n_delays, hidden=8, heads=heads, depth=depth, rngs=nnx.Rngs(3))
    got = np.asarray(m(X))
    assert got.shape == (9, 5)
    # float32 through two or three layers of width 8-16 with softmax and LayerNorm: errors
    # of a few 1e-7 relative; 1e-4 / 1e-5 leave room for the products' accumulation order.
    np.testing.assert_allclose(got, _numpy_forward(m, X), rtol=1e-4, atol=1e-5)


def test_token_order_matters_and_train_mode_drops_out():
    m = DelayTransformer(12, 3, n_delays=3, hidden=8, heads=2, dropout=0.5, rngs=nnx.Rngs(0))
    swapped = X.reshape(9, 3, 4)[:, ::-1].reshape(9, 12)
    # Position embeddings make the delays distinguishable (the output is not permutation-invariant).
    assert np.max(np.abs(np.asarray(m(X)) - np.asarray(m(swapped)))) > 1e-3
    assert np.max(np.abs(np.asarray(m(X, train=True)) - np.asarray(m(X)))) > 1e-3


def test_config_errors():
    with pytest.raises(ConfigError, match="delay blocks"):
        DelayTransformer(10, 3, n_delays=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="multiple of heads"):
        DelayTransformer(12, 3, n_delays=3, hidden=6, heads=4, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="depth"):
        DelayTransformer(12, 3, n_delays=3, hidden=8, depth=0, rngs=nnx.Rngs(0))


def test_registry_builds_it_and_groups_each_delay_into_one_token():
    assert "transformer" in ENCODERS
    spec = encoder("transformer")
    make = spec.make_model(NetworkOptions(hidden=8, dropout=0.1), bands=[(0, 4), (4, 10)], n_delays=2)
    m = make(10, 3, rngs=nnx.Rngs(0))
    assert isinstance(m, DelayTransformer) and m.n_delays == 2
    # [audio d1 d2 | semantic d1 d2] -> [d1: audio semantic | d2: audio semantic], as the GRU.
    X, bands = np.arange(10)[None].repeat(2, axis=0), [(0, 4), (4, 10)]
    np.testing.assert_array_equal(spec.prepare(X, bands, 2)[0], [0, 1, 4, 5, 6, 2, 3, 7, 8, 9])
    np.testing.assert_array_equal(spec.prepare(X, bands, 2), encoder("gru").prepare(X, bands, 2))


MAKE = functools.partial(DelayTransformer, n_delays=2, hidden=8, heads=2, dropout=0.1)
CFG = TrainConfig(n_folds=3, n_components=6, batch_size=32, val_batch_size=64, max_epochs=6, patience=6,
                  learning_rate=3e-3, loss="mse", epochs_per_call=2, checkpoint_every=2)


# Two subjects of 10 features (2 delay blocks of 5), A padded to B's rows (test_fit's data).
DATA = {"A": _subject(0, 5, 12), "B": _subject(1, 6, 16, rows=(40, 60))}


@pytest.fixture(scope="module")
def vmapped():
    return fit_encoders(MAKE, DATA, CFG, progress=False)


@pytest.mark.slow
def test_vmapped_fit_equals_python_loop_and_compiles_once(vmapped):
    data = DATA
    looped = fit_encoders(MAKE, data, CFG, progress=False, vectorize=False)
    assert list(vmapped.keys) == list(looped.keys)
    # tests/train/test_fit.py's measured training bounds (float32 rounding of batched against
    # unbatched products, through 6 epochs of Adam at lr 3e-3 on the smooth MSE loss).
    assert _max_diff(vmapped.best_state, looped.best_state) < TRAINING_STATE_ATOL
    np.testing.assert_allclose(vmapped.history, looped.history, rtol=TRAINING_LOSS_RTOL)
    np.testing.assert_allclose(vmapped.best_val, looped.best_val, rtol=TRAINING_LOSS_RTOL)
    assert vmapped.n_traces == 1 and looped.n_traces == 1
    test = {s: d.features["story0"] for s, d in data.items()}
    for s, pred in vmapped.predict(test).items():
        np.testing.assert_allclose(pred, looped.predict(test)[s], atol=1e-4)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32(vmapped):
    """Mixed precision as for the MLP (tests/train/test_fit.py): best validation losses within
    2% of float32's over these 6 epochs (more bfloat16 products per output than the MLP's)."""
    check_bfloat16_compute(MAKE, DATA, CFG, vmapped, rtol=0.02)
