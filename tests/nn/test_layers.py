"""The blocked attention kernel against torch's scaled_dot_product_attention (fp32, tolerance 1e-5)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxenc.nn import layers

TOL = dict(rtol=1e-5, atol=1e-5)


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
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), **TOL)
