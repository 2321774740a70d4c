"""Placement of the stack on a mesh: every array built from the shards this process addresses.

With ``fit_encoders(mesh=...)`` the model axis is split across the devices of one mesh axis:
the stack is padded to a multiple of the axis size (padded slots repeat the last model's data
and start stopped, so they never change and are dropped from the result), the carry is
created on its devices inside :func:`jax.shard_map`, and the feature and target matrices are
replicated. Every array is built with :func:`jax.make_array_from_callback` or inside the
sharded program, so the same code runs on several hosts after ``jax.distributed.initialize``
(see :mod:`jaxenc.distributed`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxenc.distributed import padded_size, to_host

__all__ = ["place", "to_local"]


def _on_slots(a: np.ndarray, mesh: Mesh, axis: str) -> jax.Array:
    """Host array of shape (n_slots, ...) split along its leading (model) axis over ``axis``."""
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P(axis)), lambda idx: a[idx])


def _replicated(a: np.ndarray, mesh: Mesh) -> jax.Array:
    """Host array copied to every device of the mesh."""
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P()), lambda idx: a[idx])


def place(create, stack, mesh: Mesh | None, axis: str) -> tuple[dict, dict]:
    """The device data and the initial carry of a stack, on the default device or a mesh.

    Parameters
    ----------
    create : callable
        ``create(key_data, learning_rate, weight_decay, stopped) -> carry``
        (:func:`jaxenc.train.program.stack_initializer`).
    stack : jaxenc.train.stack.Stack
    mesh : Mesh or None
    axis : str
        Mesh axis the models are split along.

    Returns
    -------
    (dict, dict)
        The data (``X``, ``Y`` and the per-model arrays) and the carry, with ``n_slots``
        models: the stack's models, then on a mesh padding slots that start stopped.
    """
    n_models = len(stack.keys)
    args = (stack.init_keys, stack.learning_rate, stack.weight_decay)
    if mesh is None:
        data = {name: jnp.asarray(v) for name, v in {**stack.shared, **stack.per_model}.items()}
        # Eagerly: the operations are compiled once per process, not once per run as a new
        # jitted closure would be.
        carry = create(*map(jnp.asarray, args), jnp.zeros(n_models, bool))
        return data, carry
    n_slots = padded_size(n_models, mesh, axis)
    slot_model = np.minimum(np.arange(n_slots), n_models - 1)
    data = {name: _replicated(v, mesh) for name, v in stack.shared.items()}
    data.update({name: _on_slots(v[slot_model], mesh, axis) for name, v in stack.per_model.items()})
    spec = P(axis)
    # Each device initialises its models one after another: on XLA:CPU host devices holding two
    # or more models each, the batched QR of the GRU's orthogonal 256 x 768 recurrent kernel
    # never returns (the process idles), while one QR at a time does, with the same values.
    local = functools.partial(create, sequential=True)
    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    carry = sharded(*(_on_slots(a[slot_model], mesh, axis) for a in args),
                    _on_slots(np.arange(n_slots) >= n_models, mesh, axis))
    return data, carry


def to_local(a, n: int):
    """The first ``n`` models of a stacked leaf, on the default device (PRNG keys kept typed)."""
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(to_host(jax.random.key_data(a))[:n]), impl=jax.random.key_impl(a))
    return jnp.asarray(to_host(a)[:n])
