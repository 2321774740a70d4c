"""Float32 tolerances derived from rounding and conditioning, for the tests' comparisons.

A float32 result differs from the exact one (or from another float32 computation of it) by
rounding, and how the rounding adds up depends on the summation order, which changes with the
CPU's vector width (AVX2 or AVX-512), XLA's kernels, BLAS and its thread count. So a tolerance
read off one machine can fail on another; these functions bound the difference instead.

The model (Higham & Mary, "A new approach to probabilistic rounding error analysis", SISC 2019):
every floating-point operation errs by a relative ``delta`` with ``|delta| <= u``, the errors
independent with mean zero; ``u = 2^-24`` is float32's unit roundoff. A sum or dot product of
``n`` terms then errs by at most ``LAMBDA * sqrt(n) * u`` relative to the scale of its terms
(the worst case being ``n * u``), and independent error sources add in quadrature: a value
reached through reductions of ``n_1, n_2, ...`` terms, in one or more float32 computations,
errs by ``LAMBDA * u * sqrt(n_1 + n_2 + ...)`` relative to its scale. Elementwise operations
(a product, ``exp``, ``rsqrt``) count as reductions of one term each and are negligible next to
the reductions. A solve or any map with condition number ``kappa`` multiplies the relative error
of its input by up to ``kappa``. A float64 reference adds nothing at this scale.

A real bug (a wrong index, fold, scale, centring, ddof, missing term) moves results by 1e-3 or
much more; each test states the size of the bug it guards against next to its bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: Unit roundoff of float32 (half the machine epsilon).
U32 = float(np.finfo(np.float32).eps) / 2
#: Standard deviations of the rounding error allowed: a Gaussian exceeds 5 sigma with
#: probability 6e-7, so none of the up to ~1e5 entries one assertion compares should.
LAMBDA = 5.0


def rounding_bound(lengths: Iterable[int], scale: float = 1.0, kappa: float = 1.0) -> float:
    """Bound on the rounding error of a float32 value reached through reductions of ``lengths`` terms.

    Parameters
    ----------
    lengths : iterable of int
        Number of terms of every float32 sum or dot product on the path from the inputs to the
        compared value, over all the float32 computations compared (list a reduction once per
        computation that performs it: twice when two float32 implementations are compared).
    scale : float
        Scale of the terms (of the compared value, when the terms are of its size), in the
        compared value's units; ``1`` gives a relative bound.
    kappa : float
        Condition number of the map from the reductions to the compared value.

    Returns
    -------
    float
        ``LAMBDA * u * kappa * scale * sqrt(sum(lengths))``.
    """
    return LAMBDA * U32 * kappa * scale * math.sqrt(sum(lengths))


def dot_rtol(n: int, kappa: float = 1.0, computations: int = 1) -> float:
    """Relative bound for a float32 sum or dot product of ``n`` terms (``rounding_bound``).

    Parameters
    ----------
    n : int
        Number of terms.
    kappa : float
        Condition number amplifying the error (``sum |x_i y_i| / |sum x_i y_i|`` for a sum that
        cancels; that of a linear system for a solve).
    computations : int
        Float32 computations compared (2 for float32 against float32, 1 against float64).
    """
    return rounding_bound([n] * computations, kappa=kappa)


def correlation_atol(n: int, rms_over_std: float = 1.0, computations: int = 1) -> float:
    """Absolute bound for a Pearson correlation of ``n`` float32 rows, centred before the products.

    ``r = <a_c, b_c> / (|a_c| |b_c|)`` takes three dot products of ``n`` terms, each erring by
    ``sqrt(n) u`` relative to ``|a_c| |b_c|`` (so absolutely in ``r``); the means' errors shift a
    centred column by a constant, which changes ``r`` only to second order. Rounding ``x - mean``
    errs by ``u |x|`` per row, which moves ``r`` by up to ``u * rms(x) / std(x)``: an offset far
    from zero costs accuracy linearly, where the uncentred one-pass formula would cost
    ``u * (rms / std)^2``.

    Parameters
    ----------
    n : int
        Rows.
    rms_over_std : float
        Largest root-mean-square over standard deviation of the columns (1 for centred data).
    computations : int
        Float32 computations compared.
    """
    return LAMBDA * U32 * math.sqrt(computations * (3 * n + 2 * rms_over_std**2))


def network_atol(scale: float, lengths: Iterable[int], computations: int = 2) -> float:
    """Absolute bound for a float32 forward pass, e.g. a transformer's against transformers'.

    Every layer's output carries the rounding of its reductions (the contractions of the
    projections, of the attention scores and of the weighted sum over keys, the softmax's and the
    norms' sums, the feed-forward layers), and the residual stream passes the earlier layers'
    errors on; with weights of gain about 1 (random init at the tests' shapes) no layer amplifies
    them much, and independent layers add in quadrature: ``rounding_bound`` of all the path's
    reductions, once per implementation.

    Parameters
    ----------
    scale : float
        Largest magnitude of the compared layer output.
    lengths : iterable of int
        Contraction length of every reduction from the input to the compared output (none for
        an embedding lookup, which is exact: the bound is then 0).
    computations : int
        Float32 implementations compared (2: jaxenc and PyTorch).
    """
    return rounding_bound(list(lengths) * computations, scale=scale)


def llama_lengths(hidden: int, intermediate: int, head_dim: int, seq: int) -> list[int]:
    """Reductions of one LLaMA decoder layer: RMSNorm, q/k/v, scores, softmax, weights x values,
    output projection, RMSNorm, gate/up, down (each over its contraction length)."""
    return [hidden, hidden, hidden, hidden, head_dim, seq, seq, hidden, hidden, hidden, hidden, intermediate]


def whisper_lengths(d_model: int, ffn: int, heads: int, frames: int) -> list[int]:
    """Reductions of one Whisper encoder layer: LayerNorm (mean, variance), q/k/v, scores, softmax,
    weights x values, output projection, LayerNorm, fc1, fc2."""
    return [2 * d_model, d_model, d_model, d_model, d_model // heads, frames, frames, d_model, 2 * d_model,
            d_model, ffn]


def whisper_frontend_lengths(mel_bins: int, d_model: int) -> list[int]:
    """Reductions of Whisper's two width-3 convolutions, before the first layer."""
    return [3 * mel_bins, 3 * d_model]


def llama_layer_atol(config, seq: int, depth: int, state, final_norm: bool = False) -> float:
    """``network_atol`` of a LLaMA hidden state after ``depth`` layers (0: the embeddings, exact).

    Parameters
    ----------
    config : jaxenc or transformers LlamaConfig
        The model's shape (``hidden_size``, ``intermediate_size``, ``head_dim``).
    seq : int
        Tokens attended over (the longest sequence of the comparison).
    depth : int
        Layers on the path.
    state : array
        The reference state (its largest magnitude is the scale).
    final_norm : bool
        Whether the state has the final RMSNorm applied.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    lengths = llama_lengths(config.hidden_size, config.intermediate_size, head_dim, seq) * depth
    return network_atol(float(np.abs(state).max()), lengths + ([config.hidden_size] if final_norm else []))


def llama_state_atols(config, seq: int, states, final_norm: bool = True) -> list[float]:
    """``llama_layer_atol`` of each of transformers' ``hidden_states`` (entry ``l``: after ``l``
    layers; the last one after the final RMSNorm if ``final_norm``, as a model cut at
    ``max_layer`` has not)."""
    return [llama_layer_atol(config, seq, depth, state, final_norm and depth == len(states) - 1)
            for depth, state in enumerate(states)]


def whisper_layer_atol(config, frames: int, depth: int, state, final_norm: bool = False) -> float:
    """``network_atol`` of a Whisper encoder state after the convolutions and ``depth`` layers
    (``config``: ``num_mel_bins``, ``d_model``, ``encoder_ffn_dim``, ``encoder_attention_heads``;
    ``frames``: encoder positions attended over; ``final_norm``: after the final LayerNorm)."""
    front = whisper_frontend_lengths(config.num_mel_bins, config.d_model)
    layer = whisper_lengths(config.d_model, config.encoder_ffn_dim, config.encoder_attention_heads, frames)
    lengths = front + layer * depth + ([2 * config.d_model] if final_norm else [])
    return network_atol(float(np.abs(state).max()), lengths)


def whisper_state_atols(config, frames: int, states, final_norm: bool = True) -> list[float]:
    """``whisper_layer_atol`` of each hidden state of a Whisper encoder (entry ``l``: after ``l``
    layers; the last one after the final LayerNorm if ``final_norm``)."""
    return [whisper_layer_atol(config, frames, depth, state, final_norm and depth == len(states) - 1)
            for depth, state in enumerate(states)]


def noise_ceiling_rtol(repeats):
    """Relative bound for Schoppe's ``cc_max`` of float32 ``repeats`` against a float64 reference.

    The variances over ``n_trs`` rows (``Var(sum_i r_i)`` and each ``Var(r_i)``, after sums over
    the ``N`` repeats) err by ``rounding_bound([n_trs, N])`` relative to themselves, and the
    signal power ``SP ~ Var(sum) - sum Var`` cancels: its condition number is
    ``(Var(sum) + sum Var) / |Var(sum) - sum Var|``, large for a voxel with little signal.
    ``cc_max = (1 + (TP / SP - 1) / N)^(-1/2)`` then changes by ``s = (TP / SP) / (2 N) / (1 +
    (TP / SP - 1) / N)`` times the relative error of ``SP`` (and of ``TP``, well conditioned).

    Parameters
    ----------
    repeats : array of shape (n_repeats, n_trs, n_voxels)

    Returns
    -------
    array of shape (n_voxels,)
        The bound per voxel; 0 where the ceiling is undefined (``SP <= 0``: NaN on both sides).
    """
    rep = np.asarray(repeats, np.float64)
    n, n_trs = rep.shape[:2]
    var_sum, sum_var = rep.sum(axis=0).var(axis=0), rep.var(axis=1).sum(axis=0)
    defined = var_sum > sum_var
    gap = np.where(defined, var_sum - sum_var, 1.0)
    kappa = (var_sum + sum_var) / gap
    ratio = sum_var * (n - 1) / gap  # TP / SP
    sensitivity = ratio / (2 * n) / (1 + (ratio - 1) / n)
    return np.where(defined, sensitivity * (kappa + 1), 0.0) * rounding_bound([n_trs, n])


def assert_within(actual, desired, rtol=0.0, atol=0.0, err_msg: str = "") -> None:
    """``numpy.testing.assert_allclose`` with per-element ``rtol`` and ``atol`` (arrays broadcast
    against ``desired``); NaNs must match."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired), err_msg=err_msg)
    bound = np.broadcast_to(atol + rtol * np.abs(desired), desired.shape)
    error = np.where(np.isnan(desired), 0.0, np.abs(actual - desired))
    bad = np.flatnonzero(error > bound)
    assert bad.size == 0, (f"{err_msg}: {bad.size} entries beyond their bound, e.g. entry {bad[0]}: "
                           f"{actual.flat[bad[0]]} vs {desired.flat[bad[0]]}, bound {bound.flat[bad[0]]:.3g}")


def score_tolerances(prediction, repeats, trim: int, floor: float, computations: int = 1) -> dict:
    """(rtol, atol) per voxel score (``jaxenc.metrics.VOXEL_SCORES``) of float32 scores.

    r: ``correlation_atol`` of the rows kept, with the columns' offsets; r2 = r |r| doubles it;
    r2_cod = 1 - SS_res / SS_tot carries the same relative errors, scaled by
    ``|1 - r2_cod| <= 1 + |r2_cod|``; cc_max: ``noise_ceiling_rtol``; cc_norm = r / cc_max: both
    errors, r's divided by the floor of the ceiling. The rtols are per voxel: compare with
    ``assert_within``.

    Parameters
    ----------
    prediction : array of shape (n_trs, n_voxels)
    repeats : array of shape (n_repeats, n_trs, n_voxels)
    trim : int
        Rows dropped from the start.
    floor : float
        Smallest ceiling cc_norm divides by.
    computations : int
        Float32 computations compared (2 for two jaxenc paths).
    """
    kept = np.concatenate([prediction[trim:], repeats.mean(axis=0)[trim:]], axis=1).astype(np.float64)
    rms_over_std = float(np.max(np.sqrt((kept**2).mean(axis=0)) / kept.std(axis=0)))
    r_atol = correlation_atol(len(kept), rms_over_std, computations)
    c_rtol = noise_ceiling_rtol(repeats[:, trim:]) * math.sqrt(computations)
    return {"r": (0, r_atol), "r2": (0, 2 * r_atol), "r2_cod": (r_atol, r_atol), "cc_max": (c_rtol, 0),
            "cc_norm": (c_rtol, r_atol / floor)}


def pca_bounds(y, k: int, computations: int = 1) -> dict:
    """Bounds for a float32 PCA of ``y`` (top ``k`` components) against a float64 one.

    The scatter (or Gram) matrix of the centred data ``Y_c`` sums ``L = max(n, p)`` products per
    entry, and the float32 eigensolver adds a backward error of about ``sqrt(m) u`` of the matrix
    (``m = min(n, p)``, its size): ``rounding_bound([L, m]) ||Y_c||_F^2``; the centring rounds
    each value by up to ``u |y|`` (offsets cost accuracy), which adds ``2 u ||Y||_F ||Y_c||_F``.
    That bounds the norm of the matrix's error ``E``. Then (Weyl, Davis-Kahan): each eigenvalue
    ``s_i^2`` moves by at most ``||E||``, and the top-``k`` subspace turns by at most
    ``||E|| / (s_k^2 - s_{k+1}^2)``.

    Parameters
    ----------
    y : array of shape (n, p)
    k : int
    computations : int
        Float32 PCAs compared (2 for two float32 fits).

    Returns
    -------
    dict
        ``norm_error`` (``||E||``), ``variance_rtol`` (per component, shape (k,)),
        ``singular_rtol`` (half of it), ``angle`` (radians; also bounds each component's
        entries and the change of the projection of a unit vector), ``gap_kappa``
        (``s_1^2 / (s_k^2 - s_{k+1}^2)``), and ``variances`` (the float64 ``s_i^2``).
    """
    y = np.asarray(y, np.float64)
    n, p = y.shape
    s2 = np.linalg.svd(y - y.mean(axis=0), compute_uv=False) ** 2
    centred_norm2 = float(s2.sum())
    norm_error = (rounding_bound([max(n, p), min(n, p)] * computations, scale=centred_norm2)
                  + 2 * computations * U32 * np.sqrt(float(np.sum(y**2)) * centred_norm2))
    gap = s2[k - 1] - (s2[k] if k < len(s2) else 0.0)
    variance_rtol = norm_error / s2[:k]
    return {"norm_error": norm_error, "variance_rtol": variance_rtol, "singular_rtol": variance_rtol / 2,
            "angle": norm_error / gap, "gap_kappa": s2[0] / gap, "variances": s2}


def column_mean_atol(y) -> float:
    """Float32 column means of ``y`` (n, p): sums of n terms, within ``rounding_bound`` of the
    largest value."""
    return rounding_bound([len(y), 1], scale=float(np.abs(y).max()))


def projection_atol(bounds: dict, rows, width: int) -> float:
    """Float32 projections of ``rows`` onto (or back from) float32 PCA components: the
    components' ``angle`` (from ``pca_bounds``) times the rows' largest norm, plus the rounding of
    the ``width``-term dot products."""
    return (bounds["angle"] + rounding_bound([width, 1])) * float(np.linalg.norm(rows, axis=1).max())


def ridge_rtol(X, alpha: float, fit_intercept: bool = True, computations: int = 1) -> float:
    """Relative bound (in norm, per voxel) for a float32 ridge solution of ``X`` at ``alpha``.

    The products with the voxels (``X^T Y``, the projections back to coefficients) are float32
    dot products of up to ``n`` terms, and the solve amplifies their relative error by the
    condition number ``kappa = (s_max^2 + alpha) / (s_min^2 + alpha)`` of ``X_c^T X_c + alpha I``
    (``s_min = 0`` when there are more features than rows: the kernel form).

    Parameters
    ----------
    X : array of shape (n, p)
    alpha : float
    fit_intercept : bool
        Whether the features are centred first.
    computations : int
        Float32 solutions compared (2 for two float32 solvers).
    """
    X = np.asarray(X, np.float64)
    Xc = X - X.mean(axis=0) if fit_intercept else X
    s2 = np.linalg.svd(Xc, compute_uv=False) ** 2
    s2_min = s2.min() if X.shape[1] <= X.shape[0] else 0.0
    kappa = (s2.max() + alpha) / (s2_min + alpha)
    return rounding_bound([len(X)] * computations, kappa=kappa)


def ridge_atols(X, Y, coef, alphas, fit_intercept: bool = True, computations: int = 1, X_test=None) -> dict:
    """Per-voxel absolute bounds for float32 ridge coefficients, intercepts and predictions.

    Coefficients: ``ridge_rtol`` times the voxel's coefficient norm. Predictions are better
    conditioned than coefficients: the rounding ``d`` of ``X_c^T y`` (within
    ``rounding_bound([n]) ||X_c||_F ||y||``) reaches them through ``X_c (X_c^T X_c + alpha I)^-1``,
    of norm ``max_i s_i / (s_i^2 + alpha)``; that bounds the 2-norm over the rows of the
    prediction error (``predict_norm``), and so each entry, plus the ``p``-term products'
    rounding and the intercept's error. Intercepts ``mean(Y) - mean(X) c``: the mean row's norm
    times the coefficients' error, plus the means' rounding. Predictions for new rows
    ``X_test`` take the coefficients' error times the rows' norm instead.

    Parameters
    ----------
    X : array of shape (n, p)
    Y : array of shape (n, v)
    coef : array of shape (p, v)
        Reference coefficients.
    alphas : array of shape (v,)
        Each voxel's penalty.
    fit_intercept : bool
    computations : int
    X_test : array of shape (n_test, p), optional
        New rows whose predictions are compared.

    Returns
    -------
    dict
        ``coef``, ``intercept``, ``predict``, ``predict_norm``: arrays of shape (v,).
    """
    X, Y, coef = (np.asarray(a, np.float64) for a in (X, Y, coef))
    n, p = X.shape
    alphas = np.asarray(alphas, np.float64)
    Xc = X - X.mean(axis=0) if fit_intercept else X
    Yc = Y - Y.mean(axis=0) if fit_intercept else Y
    s = np.linalg.svd(Xc, compute_uv=False)
    gain = np.array([np.max(s / (s**2 + a)) for a in alphas])
    coef_norm = np.linalg.norm(coef, axis=0)
    coef_atol = np.array([ridge_rtol(X, a, fit_intercept, computations) for a in alphas]) * coef_norm
    predict_norm = rounding_bound([n] * computations) * np.linalg.norm(Xc) * np.linalg.norm(Yc, axis=0) * gain
    intercept = np.zeros_like(coef_norm)
    if fit_intercept:
        means = rounding_bound([n, p] * computations) * np.abs(Y).max(axis=0)
        intercept = np.linalg.norm(X.mean(axis=0)) * coef_atol + means
    rows = float(np.linalg.norm(X if X_test is None else X_test, axis=1).max())
    propagated = predict_norm if X_test is None else rows * coef_atol
    predict = propagated + rounding_bound([p, 1] * computations) * rows * coef_norm + intercept
    return {"coef": coef_atol, "intercept": intercept, "predict": predict, "predict_norm": predict_norm}


def lanczos_atol(data, old_times, new_times, window: float = 3, computations: int = 1):
    """Per-entry bound for float32 Lanczos interpolation (jaxenc.align) against float64.

    Two sources: the float32 times and their differences ``new - old`` round by up to
    ``u * max|t|`` each, which moves the kernel weights by that times their slope ``|L'|``;
    and the weighted sum over the old times rounds within ``rounding_bound`` of ``|W| @ |data|``.

    Parameters
    ----------
    data : array of shape (n_old, n_features)
    old_times, new_times : arrays of seconds
    window : float
        Lobes of the kernel.
    computations : int
        Float32 computations compared (2 for two float32 paths, which round the times alike but
        may sum in another order).

    Returns
    -------
    array of shape (n_new, n_features)
    """
    data = np.abs(np.asarray(data, np.float64)).reshape(len(old_times), -1)
    old_times, new_times = np.asarray(old_times, np.float64), np.asarray(new_times, np.float64)
    spacing = np.mean(np.diff(new_times))

    def weights(shift):
        t = (new_times[:, None] - old_times[None, :] - shift) / spacing
        return np.where(np.abs(t) > window, 0.0, np.sinc(t) * np.sinc(t / window))

    h = 1e-4 * spacing  # central differences for the slope, exact to O(h^2)
    slope = np.abs(weights(h) - weights(-h)) / (2 * h)
    time_error = 2 * U32 * max(np.abs(old_times).max(), np.abs(new_times).max())
    terms = np.abs(weights(0.0)) @ data
    time_part = time_error * (slope @ data) if computations == 1 else 0.0
    return time_part + rounding_bound([len(old_times)] * computations) * terms


#: The same training computed two ways in float32 (the vmapped program against the loop of the
#: same step, tests/train/test_fit.py and tests/models/test_transformer.py): parameters and
#: optimizer state (absolute) and losses (relative) after a few epochs. Not derived: a measured
#: margin, for these reasons. The two ways differ only in the order of their products' sums,
#: so each gradient element errs by a ``rounding_bound`` relative to the scale of its terms;
#: but AdamW divides each element by its own running RMS, so what reaches a parameter is that
#: error over the element's size, the element's cancellation ratio (scale of its terms over
#: its value), which has no bound (a gradient element near zero) and depends on the data and
#: the whole trajectory; from the first differing step on, the differences also feed back
#: through the network with a data-dependent gain. The bound that does hold without them,
#: Adam's largest step (``lr (1 - b1) / sqrt(1 - b2)``, 3.2 lr; Kingma & Ba 2015, section 2.1)
#: times the steps, holds for any two runs, buggy or not (2 x 40 steps x 3.2 x 3e-3 = 0.76 in
#: test_fit), so it would catch nothing. Measured on test_fit's problem (8 epochs, 40 steps,
#: lr 3e-3; 2 cores with AVX-512): states differ by 1.2e-7 (one ulp near 1), losses by 2.1e-7
#: relative; the bounds below leave 800x and 50x for other CPUs' summation orders, while a
#: step computed from other rows, masks or folds changes AdamW's normalised update by order
#: one, so the parameters by the order of a step (lr = 3e-3).
TRAINING_STATE_ATOL = 1e-4
TRAINING_LOSS_RTOL = 1e-5
