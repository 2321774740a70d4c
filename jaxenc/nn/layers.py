"""Building blocks shared by the Whisper and LLaMA ports: norms, attention, rotary embeddings.

Axis letters used in the shape comments of this subpackage::

    b  batch                 s  query position          t  key position
    h  attention heads       k  key/value heads         g  query heads per key/value head
    d  head dimension        m  model width (d_model, hidden_size)
    n  query blocks          c  queries per block

Every function computes what the Hugging Face PyTorch module of the same role computes, in the
same order of operations where the order changes float rounding (softmax in float32, RMS
statistics in float32), so that float32 outputs agree with transformers to about 1e-6.

Attention takes one of :data:`ATTENTION_ROUTES`; ``"auto"`` is decided at trace time by
:func:`attention_route` from the platform the program is traced for: the blocked einsum on
CPUs, ``jax.nn.dot_product_attention`` on GPUs (cuDNN's fused flash attention for bfloat16 and
float16, which cuDNN requires; XLA's implementation for float32) and TPUs (XLA's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxenc.errors import ConfigError
from jaxenc.precision import platform

__all__ = ["RMSNorm", "layer_norm", "attention", "attention_route", "ATTENTION_ROUTES", "rotary_cos_sin",
           "apply_rotary"]

# "auto" (by platform, attention_route), "blocked" (the hand-written blocked einsum),
# "xla" / "cudnn" (jax.nn.dot_product_attention with that implementation).
ATTENTION_ROUTES = ("auto", "blocked", "xla", "cudnn")
# Head widths cuDNN's flash attention takes.
_CUDNN_HEAD_DIMS = range(8, 257, 8)


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


# Most float32 attention scores one query block may hold. On CPU the scores of a block should stay
# in cache: a (batch, heads, 800, 800) score tensor written and re-read whole runs several times
# slower than the same work in ~4 MB blocks. Accelerators only need the bound on memory.
_SCORE_BLOCK_ELEMENTS = {"cpu": 1 << 20}
_SCORE_BLOCK_ELEMENTS_DEFAULT = 1 << 28
# Fewest queries per block: with many rows and heads (16 windows of 576 tokens, 8 heads) the
# budget alone would leave ~14 queries per block, and the LLaMA forward took 1.7 times the CPU
# time it takes with 64 (measured on 2 cores). Rows are then taken a group at a time instead,
# which also saved ~10% on Whisper's 30 s inputs.
_MIN_BLOCK_QUERIES = 64


def attention_route(route: str, dtype, head_dim: int) -> str:
    """The implementation :func:`attention` takes: ``route`` itself unless it is ``"auto"``.

    The one place the choice is made, at trace time, from :func:`jaxenc.precision.platform`:
    ``"blocked"`` on CPUs (the blocked einsum keeps each block's scores in cache, several
    times faster there than a whole score tensor); on GPUs ``"cudnn"`` (fused flash attention,
    never writing the scores to memory) for 16-bit operands with a head width cuDNN takes, else
    ``"xla"``; ``"xla"`` on TPUs, whose compiler fuses the attention itself.

    Parameters
    ----------
    route : str
        One of :data:`ATTENTION_ROUTES`.
    dtype : jnp.dtype
        Dtype of the queries, keys and values.
    head_dim : int

    Returns
    -------
    str
        ``"blocked"``, ``"xla"`` or ``"cudnn"``.
    """
    if route not in ATTENTION_ROUTES:
        raise ConfigError(f"attention must be one of {list(ATTENTION_ROUTES)}, got {route!r}")
    if route != "auto":
        return route
    where = platform()
    if where == "cpu":
        return "blocked"
    if where == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim in _CUDNN_HEAD_DIMS:
        return "cudnn"
    return "xla"


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float,
    causal: bool = False,
    key_mask: jax.Array | None = None,
    route: str = "auto",
) -> jax.Array:
    """Scaled dot-product attention with grouped key/value heads and a float32 softmax.

    On the ``"blocked"`` route queries are processed in blocks (of at least 64 queries, for
    groups of rows when the batch is large) sized so that one block's scores fit a fixed
    budget (a few MB on CPU), which bounds memory and keeps CPU work in cache; the result does
    not depend on the blocks beyond float rounding. The ``"xla"`` and ``"cudnn"`` routes call
    ``jax.nn.dot_product_attention``; every route computes the same function (equal to
    float32 rounding, tests/nn/test_layers.py).

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
    causal : bool
        Whether query ``i`` may only attend to keys ``j <= i`` (requires seq_q == seq_k).
    key_mask : jax.Array of bool, optional
        Shape (batch, seq_k); False marks keys no query may attend to (padding). A query left
        with no key attends uniformly: finite garbage, never NaN.
    route : str
        One of :data:`ATTENTION_ROUTES` (see :func:`attention_route`).

    Returns
    -------
    jax.Array
        Shape (batch, seq_q, heads * head_dim), in the dtype of ``q``.
    """
    b, s, h, d = q.shape
    t = k.shape[1]
    route = attention_route(route, q.dtype, d)
    if route != "blocked":
        mask = None
        if key_mask is not None:
            # cuDNN takes a mask as a bias of full (query, key) extent; XLA broadcasts either way.
            mask = jnp.broadcast_to(key_mask[:, None, None, :], (b, 1, s, t))  # [b, 1, s, t]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                           implementation=route)  # [b, s, h, d]
        return out.reshape(b, s, h * d)
    budget = _SCORE_BLOCK_ELEMENTS.get(jax.default_backend(), _SCORE_BLOCK_ELEMENTS_DEFAULT)
    # Rows are taken a group at a time when even the fewest queries per block of every row
    # would exceed the budget; the group size divides the batch, so nothing is padded.
    limit = max(1, budget // (h * t * min(s, _MIN_BLOCK_QUERIES)))
    rows = max(r for r in range(1, min(b, limit) + 1) if b % r == 0)
    if rows == b:
        return _attention_rows(q, k, v, scale, causal, key_mask, budget)

    def group(x):
        return None if x is None else x.reshape(b // rows, rows, *x.shape[1:])

    out = jax.lax.map(lambda a: _attention_rows(*a[:3], scale, causal, a[3], budget),
                      (group(q), group(k), group(v), group(key_mask)))
    return out.reshape(b, s, h * d)


def _attention_rows(q, k, v, scale, causal, key_mask, budget):
    """:func:`attention` for rows processed together: queries in blocks within the budget."""
    b, s, h, d = q.shape
    t, kv_heads = k.shape[1], k.shape[2]
    g = h // kv_heads
    n_blocks = -(-s // max(_MIN_BLOCK_QUERIES, budget // (b * h * t)))
    c = -(-s // n_blocks)  # queries per block, chosen to pad as little as possible
    # Heads-major layouts make each product a plain batched matmul (the (batch, seq, heads, dim)
    # layout is several times slower on XLA:CPU); the g query heads sharing a key/value head are
    # folded into the query axis, so keys and values are never repeated.
    qh = jnp.transpose(q.reshape(b, s, kv_heads, g, d), (0, 2, 3, 1, 4))  # [b, k, g, s, d]
    qh = jnp.pad(qh, ((0, 0),) * 3 + ((0, n_blocks * c - s), (0, 0)))  # [b, k, g, n*c, d]
    blocks = jnp.moveaxis(qh.reshape(b, kv_heads, g, n_blocks, c, d), 3, 0)  # [n, b, k, g, c, d]
    kh = jnp.transpose(k, (0, 2, 1, 3))  # [b, k, t, d]
    vh = jnp.transpose(v, (0, 2, 1, 3))  # [b, k, t, d]
    keys = jnp.arange(t)

    def block(args):
        qb, first = args
        scores = jnp.einsum("bkqd,bktd->bkqt", qb.reshape(b, kv_heads, g * c, d), kh)  # [b, k, g*c, t]
        scores = scores.astype(jnp.float32).reshape(b, kv_heads, g, c, t) * scale  # [b, k, g, c, t]
        allowed = jnp.ones((1, 1, 1, c, t), bool)
        if causal:
            allowed = allowed & (keys <= first + jnp.arange(c)[:, None])  # [1, 1, 1, c, t]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, None, :]  # [b, 1, 1, c, t]
        if causal or key_mask is not None:
            scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        weights = weights.reshape(b, kv_heads, g * c, t)  # [b, k, g*c, t]
        return jnp.einsum("bkqt,bktd->bkqd", weights, vh).reshape(b, kv_heads, g, c, d)  # [b, k, g, c, d]

    firsts = jnp.arange(n_blocks) * c
    out = block((blocks[0], firsts[0]))[None] if n_blocks == 1 else jax.lax.map(block, (blocks, firsts))
    out = jnp.transpose(out, (1, 0, 4, 2, 3, 5)).reshape(b, n_blocks * c, h * d)  # [b, n*c, h*d]
    return out[:, :s]


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
