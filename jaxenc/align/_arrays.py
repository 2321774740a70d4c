"""Array plumbing shared by the alignment modules: no compiled program per input shape.

``jnp.asarray`` of a numpy array runs a small compiled copy program, compiled anew for every
shape; ``jax.device_put`` transfers without one. The alignment helpers see a new shape per
story, so they move host arrays with :func:`on_device`.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(*arrays) -> bool:
    """True when none of ``arrays`` is a tracer (the call is not inside jit, grad, vmap)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def on_device(a, dtype=None):
    """``a`` as a jax.Array (tracers and jax arrays of the dtype pass through unchanged).

    Parameters
    ----------
    a : array_like
    dtype : dtype, optional
        Cast to it first (on the host for host arrays).

    Returns
    -------
    jax.Array
    """
    if isinstance(a, jax.Array) and (dtype is None or a.dtype == dtype):
        return a
    if not is_concrete(a):
        return a.astype(dtype)
    return jax.device_put(np.asarray(a, dtype))
