"""Interaction shares against closed forms, and on the planted twin's interaction voxels.

Closed forms. For ``f(a, s) = g(a) + h(s) + c * P(a) * Q(s)`` evaluated on a *product design*
(every audio row paired once with every semantic row, ``P`` and ``Q`` centred exactly over
their values) the cross terms vanish exactly, so over the rows
``Var f = Var g + Var h + c^2 Var P Var Q`` and the interaction share is
``c^2 Var P Var Q / Var f``, the audio share ``Var g / Var f``, the semantic share
``Var h / Var f``, with the variances of the values computed here in float64. The
decomposition runs in float32: outputs of order 1 and sums over a few hundred pairs give
relative errors near 1e-6, so the tolerance is 1e-5. For independent Gaussian rows drawn at
random the population share is ``c^2 sa^2 ss^2 / (sa^2 + ss^2 + c^2 sa^2 ss^2)`` (0.367 here);
the estimate from 2000 rows scatters around it with a standard deviation of 0.019 (seeds 0-49
of this draw, in float64 numpy; largest deviation 0.054, seed 0: 0.400), so the tolerance is
0.06.

Planted twin. The twin of ``tests/train/test_planted.py`` (24 stories of 110 rows, planted
features) plants interaction voxels driven only by audio x semantic products and linear
voxels (audio, semantic, joint). An MLP trained on it (3 folds, seed 0; shares over the 95
test rows, averaged over the fold models) gives the 24 interaction voxels shares 0.49-0.85
(median 0.60) and the 30 linear voxels 0.004-0.020 (median 0.009): AUC 1.0. Asserted: AUC at
least 0.9, the linear voxels at most 0.1 (median at most 0.05), the interaction voxels' median
at least 0.3.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxenc.analysis import fit_interaction_shares, interaction_shares
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.models import MLP, NetworkOptions
from jaxenc.train import fit_encoders
from tests.train.test_planted import SUBJECT, planted_twin, train_config

# float32 decomposition of order-1 outputs (see the module docstring).
EXACT = 1e-5


def _product_design(rng, m_audio, m_semantic, d_audio, d_semantic):
    """Every audio row with every semantic row once; each block exactly centred."""
    u = rng.normal(size=(m_audio, d_audio))
    v = rng.normal(size=(m_semantic, d_semantic))
    u -= u.mean(axis=0)
    v -= v.mean(axis=0)
    audio = np.repeat(u, m_semantic, axis=0)
    semantic = np.tile(v, (m_audio, 1))
    return u, v, audio.astype(np.float32), semantic.astype(np.float32)


def test_linear_plus_product_has_the_closed_form_shares():
    rng = np.random.default_rng(0)
    u, v, audio, semantic = _product_design(rng, 17, 13, 3, 2)
    n_out = 5
    W, V = rng.normal(size=(3, n_out)), rng.normal(size=(2, n_out))
    p, q = rng.normal(size=3), rng.normal(size=2)
    c = np.array([0.0, 0.5, 1.0, 2.0, 4.0])

    W32, V32, p32, q32, c32 = (jnp.asarray(x, jnp.float32) for x in (W, V, p, q, c))

    def f(a, s):
        return a @ W32 + s @ V32 + c32 * ((a @ p32) * (s @ q32))[:, None]

    var_g, var_h = (u @ W).var(axis=0), (v @ V).var(axis=0)
    var_pq = c**2 * (u @ p).var() * (v @ q).var()
    total = var_g + var_h + var_pq
    got = interaction_shares(f, audio, semantic, chunk_size=10)
    np.testing.assert_allclose(got.interaction, var_pq / total, atol=EXACT)
    np.testing.assert_allclose(got.audio, var_g / total, atol=EXACT)
    np.testing.assert_allclose(got.semantic, var_h / total, atol=EXACT)
    np.testing.assert_allclose(got.variance, total, rtol=EXACT)


def test_independent_random_inputs_approach_the_population_share():
    sa, ss, c = 1.5, 0.7, 1.2
    rng = np.random.default_rng(0)
    n = 2000
    audio = (sa * rng.normal(size=(n, 1))).astype(np.float32)
    semantic = (ss * rng.normal(size=(n, 1))).astype(np.float32)
    product = c**2 * sa**2 * ss**2
    expected = product / (sa**2 + ss**2 + product)
    got = interaction_shares(lambda a, s: a + s + c * a * s, audio, semantic)
    assert got.interaction[0] == pytest.approx(expected, abs=0.06)


def test_additive_nonlinear_function_has_no_interaction():
    rng = np.random.default_rng(1)
    audio = rng.normal(size=(50, 4)).astype(np.float32)
    semantic = rng.normal(size=(50, 3)).astype(np.float32)
    W, V = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32), jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    got = interaction_shares(lambda a, s: jnp.tanh(a @ W) + jnp.sin(s @ V) ** 2, audio, semantic)
    # I is a sum of float32 values of order 1 that cancel: rounding about 1e-7 each, squared.
    assert np.all(got.interaction < 1e-10)
    # PD_a(a) = g(a) + mean h exactly, so the audio share is Var g / Var(g + h) (rows drawn at
    # random: g and h correlate a little over them, and the two shares need not sum to 1).
    g = np.tanh(audio.astype(np.float64) @ np.asarray(W, np.float64))
    h = np.sin(semantic.astype(np.float64) @ np.asarray(V, np.float64)) ** 2
    np.testing.assert_allclose(got.audio, g.var(axis=0) / (g + h).var(axis=0), rtol=EXACT)
    np.testing.assert_allclose(got.semantic, h.var(axis=0) / (g + h).var(axis=0), rtol=EXACT)


def test_chunking_and_projection_do_not_change_the_shares():
    rng = np.random.default_rng(2)
    audio = rng.normal(size=(23, 2)).astype(np.float32)
    semantic = rng.normal(size=(23, 3)).astype(np.float32)
    A, B = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32), jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    W = rng.normal(size=(4, 9)).astype(np.float32)  # 4 components to 9 voxels
    offset = rng.normal(size=9).astype(np.float32)

    def components(a, s):
        return jnp.tanh(a @ A + s @ B)

    whole = interaction_shares(components, audio, semantic)
    for chunk in (1, 7, 23, 40):
        np.testing.assert_allclose(interaction_shares(components, audio, semantic, chunk_size=chunk).interaction,
                                   whole.interaction, atol=EXACT)
    projected = interaction_shares(components, audio, semantic, project=lambda z: z @ W + offset)
    direct = interaction_shares(lambda a, s: components(a, s) @ jnp.asarray(W) + offset, audio, semantic)
    for field in ("interaction", "audio", "semantic"):
        np.testing.assert_allclose(getattr(projected, field), getattr(direct, field), atol=EXACT)
    np.testing.assert_allclose(projected.variance, direct.variance, rtol=1e-4)


def test_a_constant_output_has_nan_shares():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = interaction_shares(lambda a, s: jnp.concatenate([a[:, :1] * s[:, :1], 0 * a[:, :1]], axis=1), x, x)
    assert np.isnan(got.interaction[1]) and np.isfinite(got.interaction[0])


def test_bad_input_is_refused():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(AlignmentError, match="same rows"):
        interaction_shares(lambda a, s: a, x, x[:3])
    with pytest.raises(ConfigError, match="chunk_size"):
        interaction_shares(lambda a, s: a, x, x, chunk_size=0)
    with pytest.raises(ConfigError, match="NaN"):
        interaction_shares(lambda a, s: a, x, np.full((4, 2), np.nan))


@pytest.fixture(scope="module")
def planted_mlp(tmp_path_factory):
    """The MLP trained on the planted twin of tests/train/test_planted.py (seed 0)."""
    twin = planted_twin(tmp_path_factory.mktemp("interactions"), seed=0)
    fit = fit_encoders(functools.partial(MLP, hidden=64, dropout=0.1), {SUBJECT: twin["data"]},
                       train_config(0), progress=False)
    return twin, fit


def _rebuilt(model, a_cols, s_cols):
    """``f(a, s)``: the design rebuilt column by column (not the library's scatter), then the model."""
    def f(a, s):
        cols = {**{c: a[:, j] for j, c in enumerate(a_cols)}, **{c: s[:, j] for j, c in enumerate(s_cols)}}
        return model(jnp.stack([cols[c] for c in range(len(cols))], axis=1), train=False)

    return f


def test_fit_shares_are_the_fold_models_own(planted_mlp):
    twin, fit = planted_mlp
    audio, semantic = twin["modalities"]
    x = twin["x_test"][:20]
    shares = fit_interaction_shares(fit, SUBJECT, x, audio, semantic, chunk_size=8)
    a_cols = np.concatenate([np.arange(*r) for r in audio])
    s_cols = np.concatenate([np.arange(*r) for r in semantic])
    assert shares.interaction.shape == (3, twin["y_test"].shape[1])
    for row, i in enumerate(k for k, key in enumerate(fit.keys) if key.subject == SUBJECT):
        # train_config has no PCA: the models predict voxels.
        ref = interaction_shares(_rebuilt(fit.model(i), a_cols, s_cols), x[:, a_cols], x[:, s_cols])
        np.testing.assert_allclose(shares.interaction[row], ref.interaction, atol=1e-4)


def test_planted_interaction_voxels_have_the_largest_shares(planted_mlp):
    twin, fit = planted_mlp
    audio, semantic = twin["modalities"]
    shares = fit_interaction_shares(fit, SUBJECT, twin["x_test"], audio, semantic).mean_over_models()
    inter, linear = shares.interaction[twin["interaction"]], shares.interaction[twin["linear"]]
    labels = np.r_[np.ones(inter.size), np.zeros(linear.size)]
    assert roc_auc_score(labels, np.r_[inter, linear]) >= 0.9, (inter, linear)
    assert np.median(linear) <= 0.05 and linear.max() <= 0.1, linear
    assert np.median(inter) >= 0.3, inter


def test_modality_ranges_follow_the_encoders_column_order():
    from jaxenc.models import encoder
    from jaxenc.pipeline.runner import modality_ranges

    bands = [(0, 4), (4, 10)]  # [audio d1 d2 | semantic d1 d2], 2 + 3 columns per delay
    assert modality_ranges(encoder("mlp"), bands, 2, 10) == [[(0, 4)], [(4, 10)]]
    # Regrouped by delay: [d1: audio semantic | d2: audio semantic].
    for name in ("gru", "transformer"):
        assert modality_ranges(encoder(name), bands, 2, 10) == [[(0, 2), (5, 7)], [(2, 5), (7, 10)]]


@pytest.mark.parametrize("model", ["mlp", pytest.param("transformer", marks=pytest.mark.slow)])
def test_fit_predict_reports_the_shares(planted_mlp, model):
    """The runner's path: the twin's design regrouped as a run builds it ([audio d1..d4 |
    semantic d1..d4]) and fitted by fit_predict; the transformer reads the columns regrouped
    by delay. Both find the planted voxels at the margins of the test above (the transformer,
    about 40 s of training, is marked slow)."""
    from jaxenc.pipeline import SubjectArrays, fit_predict

    twin, _ = planted_mlp
    audio, semantic = twin["modalities"]
    order = np.concatenate([np.arange(*r) for r in (*audio, *semantic)])
    n_audio = sum(b - a for a, b in audio)
    data = twin["data"]
    stories = list(data.features)
    arrays = SubjectArrays(
        X=np.concatenate([data.features[s][:, order] for s in stories]),
        Y=np.concatenate([data.responses[s] for s in stories]),
        groups=np.concatenate([np.full(len(data.features[s]), i) for i, s in enumerate(stories)]),
        X_test=twin["x_test"][:, order], bands=((0, n_audio), (n_audio, order.size)), n_delays=len(audio),
    )
    result = fit_predict(model, {SUBJECT: arrays}, networks=NetworkOptions(hidden=64, dropout=0.1),
                         train=train_config(0), interactions=True)
    share = result.interactions[SUBJECT]
    inter, linear = share[twin["interaction"]], share[twin["linear"]]
    labels = np.r_[np.ones(inter.size), np.zeros(linear.size)]
    assert roc_auc_score(labels, np.r_[inter, linear]) >= 0.9, (inter, linear)
    assert np.median(linear) <= 0.05 and np.median(inter) >= 0.3, (inter, linear)


def test_the_readme_snippet_runs():
    from tests.test_readme import _python_blocks

    (snippet,) = _python_blocks("Interactions and cluster stability from Python")
    ns: dict = {}
    exec(compile(snippet, "README interactions snippet", "exec"), ns)
    share = ns["shares"].interaction
    # The additive output has no interaction (float32 rounding of order-1 outputs, squared).
    assert share[0] < 1e-10 and share[-1] > 0.3
    assert ns["ari"].shape == (3, 3) and np.abs(ns["ari"][0, 1]) < 0.05   # independent labels
    assert ns["stability"].summary()["n_resamples"] == 20


def test_pca_models_are_decomposed_per_voxel():
    """A stack trained on PCA components: the shares through each fold's PCA equal those of the
    fold model's voxel prediction decomposed directly (a few epochs suffice: any function)."""
    from tests.train.test_fit import _subject

    data = {"S": _subject(2, 5, 12)}  # 5 stories, 10 features, 12 voxels
    cfg = dataclasses.replace(train_config(0), n_components=4, max_epochs=2, epochs_per_call=1, checkpoint_every=1)
    fit = fit_encoders(functools.partial(MLP, hidden=8), data, cfg, progress=False)
    x = data["S"].features["story0"][:15]
    shares = fit_interaction_shares(fit, "S", x, [(0, 4)], [(4, 10)])
    assert shares.interaction.shape == (3, 12)
    for row, i in enumerate(k for k, key in enumerate(fit.keys) if key.subject == "S"):
        model, pca = fit.model(i), fit.pcas[i]
        assert pca is not None

        def voxels(a, s, model=model, pca=pca):
            return pca.inverse_transform(model(jnp.concatenate([a, s], axis=1), train=False))

        direct = interaction_shares(voxels, x[:, :4], x[:, 4:])
        # float32 in both routes, outputs of order 1: the shares agree to rounding.
        np.testing.assert_allclose(shares.interaction[row], direct.interaction, atol=1e-4)
        np.testing.assert_allclose(shares.audio[row], direct.audio, atol=1e-4)
