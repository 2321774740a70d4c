"""The blocked attention kernel against torch's scaled_dot_product_attention (fp32).

Tolerance (tests/_tolerance.py): the float32 rounding of the scores (``d`` terms), the softmax's
sum and the weighted sum of values (``s`` terms each), in both implementations, relative to the
values' scale; ``exp`` turns a score's absolute error into the weights' relative error, so the
largest |score| multiplies it (a condition number). About 2e-5 here (values up to 4, scores up
to 5), 50 times the measured difference; a mask, block or kv-head indexing bug moves outputs
by 1e-2 or more.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxenc.nn import layers
from tests._tolerance import rounding_bound


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
