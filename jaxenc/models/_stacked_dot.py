"""A dense layer's matrix product that, for large kernels, stays one product per model under vmap.

``jax.vmap`` over a stack of models turns each layer's ``x @ W`` into one batched
``dot_general`` (every model's rows against its own kernel). On XLA:CPU (jax 0.10, YNNPACK)
the batched forward product runs as fast as separate products, or faster, up to 16384 x 256
kernels, and falls off a cliff beyond: at the paper's width, ``[15, 128, 21504] x
[15, 21504, 256]``, it reaches 50 GFLOP per CPU-second against 66-71 for 15 separate products
(measured with 2048, 4096, 8192, 12288, 16384 and 21504 input features; benchmarks/train.py
records the paper-width case as ``matmul_layout``). The kernel-gradient product ``x.T @ g``
shows no such cliff (54 batched, 45-49 separate at 21504).

So for kernels larger than :data:`SEPARATE_ABOVE_BYTES` this product keeps the forward product
(and the input gradient, a product of the same shape class) one product per model under
``vmap``, exactly the product a one-model program computes, and leaves the kernel gradient
batched; smaller kernels are plain ``lax.dot_general``. It differentiates as ``x @ W``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

__all__ = ["stacked_dot_general", "SEPARATE_ABOVE_BYTES"]

# Kernels above this size (per model) keep their forward product separate per model.
SEPARATE_ABOVE_BYTES = 16 * 2**20
# Dimension numbers of the three products of a dense layer, x [rows, in] and W [in, out].
_FORWARD = (((1,), (0,)), ((), ()))  # x @ W -> [rows, out]
_INPUT_GRAD = (((1,), (1,)), ((), ()))  # g @ W.T -> [rows, in]
_KERNEL_GRAD = (((0,), (0,)), ((), ()))  # x.T @ g -> [in, out]


@functools.lru_cache(maxsize=None)
def _separate(dimension_numbers, precision):
    """``lax.dot_general`` that, vmapped over both operands, is one product per element."""

    @custom_vmap
    def dot(a, b):
        return lax.dot_general(a, b, dimension_numbers, precision=precision)

    @dot.def_vmap
    def rule(axis_size, in_batched, a, b):
        a_batched, b_batched = in_batched
        if not (a_batched and b_batched):
            axes = (0 if a_batched else None, 0 if b_batched else None)
            return jax.vmap(dot, in_axes=axes)(a, b), True
        return jnp.stack([dot(a[i], b[i]) for i in range(axis_size)]), True

    return dot


@functools.lru_cache(maxsize=None)
def _dense(precision):
    @jax.custom_vjp
    def dense(x, w):
        return _separate(_FORWARD, precision)(x, w)

    def forward(x, w):
        return dense(x, w), (x, w)

    def backward(residuals, g):
        x, w = residuals
        return (_separate(_INPUT_GRAD, precision)(g, w),
                lax.dot_general(x, g, _KERNEL_GRAD, precision=precision))

    dense.defvjp(forward, backward)
    return dense


def stacked_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                        out_sharding=None):
    """``lax.dot_general`` for ``nnx.Linear(dot_general=...)``: a dense layer's ``x @ W`` whose
    kernel is larger than :data:`SEPARATE_ABOVE_BYTES` is kept one product per model under
    ``vmap``; any other product is ``lax.dot_general`` itself.

    Parameters
    ----------
    lhs : array of shape (rows, in)
    rhs : array of shape (in, out)
    dimension_numbers, precision, preferred_element_type, out_sharding
        As for :func:`jax.lax.dot_general`.

    Returns
    -------
    array of shape (rows, out)
    """
    if (lhs.ndim, rhs.ndim) != (2, 2) or dimension_numbers != _FORWARD or preferred_element_type is not None \
            or out_sharding is not None or rhs.size * rhs.dtype.itemsize <= SEPARATE_ABOVE_BYTES:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, out_sharding=out_sharding)
    return _dense(precision)(lhs, rhs)
