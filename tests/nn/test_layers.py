"""The blocked attention kernel against torch's scaled_dot_product_attention (fp32).

Tolerance (tests/_tolerance.py): the float32 rounding of the scores (``d`` terms), the softmax's
sum and the weighted sum of values (``s`` terms each), in both implementations, relative to the
values' scale; ``exp`` turns a score's absolute error into the weights' relative error, so the
largest |score| multiplies it (a condition number). About 2e-5 here (values up to 4, scores up
to 5), 50 times the measured difference; a mask, block or kv-head indexing bug moves outputs
by 1e-2 or more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxenc.precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.nn import layers
from tests._tolerance import rounding_bound


@pytest.fixture(autouse=True)
def full_precision():
    """The layers are called here directly, outside the models (which set their own precision):
    at full float32 on every backend, as torch computes them here."""
    with matmul.scope("highest"):
        yield


@pytest.mark.parametrize("heads, kv_heads, causal, block_elements", [
    (4, 4, False, None), (4, 4, True, 300), (4, 2, True, None), (4, 2, False, 300), (4, 1, True, 300),
    (4, 2, True, 150),
])
def test_attention_matches_torch_sdpa(monkeypatch, heads, kv_heads, causal, block_elements):
    if block_elements is not None:
        # At least 2 queries per block. 300 scores per block: both rows together, 7 blocks of 2
        # queries for 13 queries, the last one padded; 150: one row at a time, 7 blocks each.
        monkeypatch.setitem(layers._SCORE_BLOCK_ELEMENTS, "cpu", block_elements)
        monkeypatch.setattr(layers, "_MIN_BLOCK_QUERIES", 2)
    rng = np.random.default_rng(heads * 10 + kv_heads)
    b, s, d = 2, 13, 8
    q = rng.standard_normal((b, s, heads, d)).astype(np.float32)
    k, v = (rng.standard_normal((b, s, kv_heads, d)).astype(np.float32) for _ in range(2))
    key_mask = rng.random((b, s)) > 0.3
    key_mask[:, 0] = True  # every query keeps a key, so torch has no NaN rows to compare
    got = layers.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), scale=0.3, causal=causal,
                           key_mask=jnp.asarray(key_mask))
    allowed = torch.from_numpy(key_mask)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(s, s, dtype=torch.bool).tril()
    heads_first = [torch.from_numpy(a).transpose(1, 2) for a in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(
        *heads_first, attn_mask=allowed, scale=0.3, enable_gqa=True
    ).transpose(1, 2).reshape(b, s, heads * d)
    assert got.shape == (b, s, heads * d)
    k_per_head = np.repeat(k, heads // kv_heads, axis=2)
    largest_score = 0.3 * np.abs(np.einsum("bqhd,bkhd->bhqk", q, k_per_head)).max()
    atol = rounding_bound([d, s, s] * 2, scale=np.abs(v).max(), kappa=max(1.0, largest_score))
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), rtol=0, atol=atol)


def route_tolerance(q, k, v, scale: float) -> float:
    """Bound on the difference of two float32 attention routes' outputs (tests/_tolerance.py's model).

    Each route rounds a logit ``scale * q.k``, a reduction of ``d`` products (and the scale),
    relative to ``scale * sum|q||k|``: the two routes' logits differ by at most ``dl``, the
    :func:`rounding_bound` of both routes' reductions. A softmax weight ``p_j`` then moves by
    at most ``2 p_j dl`` (its own logit's change and the normaliser's weighted mean of the
    others'), so an output ``sum_j p_j v_j`` moves by at most ``2 dl max|v|``; each route adds
    the rounding of its normaliser and weighted sum over the ``t`` keys and of ``exp`` and the
    division (one term each), relative to ``max|v|``.
    """
    d, t, heads, kv_heads = q.shape[-1], k.shape[1], q.shape[2], k.shape[2]
    k_heads = np.repeat(np.abs(k), heads // kv_heads, axis=2)  # query head i reads kv head i // g
    qk = np.einsum("bshd,bthd->bhst", np.abs(q), k_heads).max()
    dl = rounding_bound([d + 1] * 2, scale=scale * qk)
    v_max = float(np.abs(v).max())
    return float(2 * dl * v_max + rounding_bound([t, t, 1, 1] * 2, scale=v_max))


def _padded_masks(b: int, t: int) -> np.ndarray:
    """Key masks of the LLaMA paths: right padding (the windowed features, semantic.py), left
    padding (positions counted from the first real token), and a padding row holding one
    unmasked token (semantic.py's rows past the last window)."""
    mask = np.ones((b, t), bool)
    mask[0, t - 5:] = False  # a window shorter than the batch's sequence
    mask[1, :4] = False  # left-padded: its first queries have no key at all (uniform weights)
    mask[2, 1:] = False  # a padding row
    return mask


@pytest.mark.parametrize("case", ["whisper", "whisper_one_query", "llama_mha", "llama_gqa", "llama_mqa"])
def test_dot_product_attention_route_equals_the_blocked_route(monkeypatch, case):
    """jax.nn.dot_product_attention (XLA's implementation, the GPU/TPU route for float32)
    against the blocked einsum, with several query blocks on the blocked side, within the
    derived bound (about 1e-4 here; the differences seen are 2-4e-7)."""
    monkeypatch.setitem(layers._SCORE_BLOCK_ELEMENTS, "cpu", 2000)
    monkeypatch.setattr(layers, "_MIN_BLOCK_QUERIES", 4)
    rng = np.random.default_rng(len(case))
    b, s, d = 3, 24, 16
    whisper = case.startswith("whisper")
    heads, kv_heads = {"whisper": (4, 4), "whisper_one_query": (4, 4), "llama_mha": (4, 4), "llama_gqa": (8, 2),
                       "llama_mqa": (4, 1)}[case]
    q = rng.standard_normal((b, 1 if case == "whisper_one_query" else s, heads, d)).astype(np.float32)
    k, v = (rng.standard_normal((b, s, kv_heads, d)).astype(np.float32) for _ in range(2))
    if whisper:
        # Whisper scales the queries before the product: scale 1, bidirectional, no mask.
        q, scale, kw = q * d**-0.5, 1.0, {}
    else:
        scale, kw = d**-0.5, {"causal": True, "key_mask": jnp.asarray(_padded_masks(b, s))}
    routes = {route: jax.jit(lambda q, k, v, route=route: layers.attention(q, k, v, scale=scale, route=route, **kw))
              for route in ("blocked", "xla")}
    blocked, xla = (np.asarray(f(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))) for f in routes.values())
    assert blocked.shape == xla.shape == (b, q.shape[1], heads * d)
    tol = route_tolerance(q, k, v, scale)
    assert tol < 1e-3  # far below the outputs' unit scale
    np.testing.assert_allclose(xla, blocked, rtol=0, atol=tol)


def test_the_route_follows_the_platform(monkeypatch):
    assert layers.attention_route("auto", jnp.float32, 64) == ("blocked" if matmul.platform() == "cpu" else
                                                               layers.attention_route("auto", jnp.float32, 64))
    for where, dtype, head_dim, route in [("cpu", jnp.bfloat16, 64, "blocked"), ("gpu", jnp.bfloat16, 64, "cudnn"),
                                          ("gpu", jnp.float16, 128, "cudnn"), ("gpu", jnp.float32, 64, "xla"),
                                          ("gpu", jnp.bfloat16, 12, "xla"), ("tpu", jnp.bfloat16, 128, "xla")]:
        monkeypatch.setattr(layers, "platform", lambda where=where: where)
        assert layers.attention_route("auto", dtype, head_dim) == route, (where, dtype, head_dim)
        assert layers.attention_route("blocked", dtype, head_dim) == "blocked"
    with pytest.raises(ConfigError, match="attention must be one of"):
        layers.attention_route("flash", jnp.float32, 64)
