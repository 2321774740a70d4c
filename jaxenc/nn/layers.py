"""Building blocks shared by the Whisper and LLaMA ports: norms, attention, rotary embeddings.

Axis letters used in the shape comments of this subpackage::

    b  batch                 s  query position          t  key position
    h  attention heads       k  key/value heads         g  query heads per key/value head
    d  head dimension        m  model width (d_model, hidden_size)

Every function computes what the Hugging Face PyTorch module of the same role computes, in the
same order of operations where the order changes float rounding (softmax in float32, RMS
statistics in float32), so that float32 outputs agree with transformers to about 1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["RMSNorm", "layer_norm", "attention", "rotary_cos_sin", "apply_rotary"]


class RMSNorm(nnx.Module):
    """Root-mean-square norm as LLaMA applies it: statistics in float32, scale after the cast.

    Parameters
    ----------
    features : int
        Width of the normalised (last) axis.
    eps : float
        Added to the mean square before the reciprocal square root.
    dtype : jnp.dtype
        Compute and output dtype.
    param_dtype : jnp.dtype
        Dtype of ``scale``.
    """

    def __init__(self, features: int, *, eps: float, dtype=jnp.float32, param_dtype=jnp.float32):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise ``x`` of shape (..., features); returns the same shape in ``dtype``."""
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        # LLaMA casts back to the activation dtype before multiplying by the weight; keeping that
        # order makes bf16 runs round like the reference.
        normed = (x32 * jax.lax.rsqrt(variance + self.eps)).astype(self.dtype)
        return self.scale[...].astype(self.dtype) * normed


def layer_norm(eps: float, features: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """An ``nnx.LayerNorm`` configured like ``torch.nn.LayerNorm`` (two-pass variance).

    Parameters
    ----------
    eps : float
        Epsilon of the variance (torch's default is 1e-5).
    features : int
        Width of the normalised (last) axis.
    dtype, param_dtype : jnp.dtype
        Compute and parameter dtypes.
    rngs : nnx.Rngs
        Unused by the ones/zeros initialisers but required by flax.

    Returns
    -------
    nnx.LayerNorm
        Parameters ``scale`` and ``bias`` of shape (features,).
    """
    # The single-pass E[x^2] - E[x]^2 variance flax uses by default drifts ~1e-6 from torch.
    return nnx.LayerNorm(
        features, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, mask: jax.Array | None = None
) -> jax.Array:
    """Scaled dot-product attention with grouped key/value heads and a float32 softmax.

    Parameters
    ----------
    q : jax.Array
        Queries, shape (batch, seq_q, heads, head_dim).
    k, v : jax.Array
        Keys and values, shape (batch, seq_k, kv_heads, head_dim); ``heads`` must be a multiple
        of ``kv_heads``. Query head ``i`` reads key/value head ``i // (heads // kv_heads)``, the
        order of transformers' ``repeat_kv``.
    scale : float
        Multiplies the query-key products (1.0 when the queries are already scaled).
    mask : jax.Array of bool, optional
        Shape broadcastable to (batch, 1, 1, seq_q, seq_k); True where a query may attend to a
        key. A query row with no True entry attends uniformly (finite garbage, never NaN).

    Returns
    -------
    jax.Array
        Shape (batch, seq_q, heads * head_dim), in the dtype of ``q``.
    """
    b, s, h, d = q.shape
    kv_heads = k.shape[2]
    qg = q.reshape(b, s, kv_heads, h // kv_heads, d)  # [b, s, k, g, d]
    scores = jnp.einsum("bskgd,btkd->bkgst", qg, k)  # [b, k, g, s, t]
    scores = scores.astype(jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgst,btkd->bskgd", weights, v)  # [b, s, k, g, d]
    return out.reshape(b, s, h * d)  # [b, s, h*d]


def rotary_cos_sin(positions: jax.Array, inv_freq: np.ndarray, dtype) -> tuple[jax.Array, jax.Array]:
    """Cosines and sines of rotary position embeddings, in the rotate-half layout of HF LLaMA.

    Parameters
    ----------
    positions : jax.Array of int
        Shape (batch, seq).
    inv_freq : np.ndarray of float32
        Shape (head_dim // 2,), the (possibly rescaled) inverse frequencies.
    dtype : jnp.dtype
        Output dtype (the angles are computed in float32 first, as transformers does).

    Returns
    -------
    cos, sin : jax.Array
        Each of shape (batch, seq, head_dim).
    """
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [b, s, d/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)  # [b, s, d]
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x`` of shape (batch, seq, heads, head_dim) by angles of shape (batch, seq, head_dim).

    Pairs dimension ``i`` with ``i + head_dim // 2`` (transformers' ``rotate_half``), the layout
    of Hugging Face LLaMA checkpoints (Meta's interleaved layout is permuted at conversion).
    """
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # [b, s, h, d]
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
