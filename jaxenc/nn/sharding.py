"""Placing a model's parameters on a device mesh: replicated, or FSDP-sharded along one axis.

Feature extraction runs data parallel: the batch of contexts or windows is split along one mesh
axis, and every device needs every weight. A model that fits one device keeps a full copy of
its parameters on each (replicated); a larger one (LLaMA-30B/65B on 80 GB cards) stores each
weight matrix split along one of its dimensions over the same axis, as fully sharded data
parallel training does, and the compiler gathers each weight where it is used. Either way every
device computes the same function of its rows, so results equal a single-device run up to float
rounding.

The mesh axes are used with ``AxisType.Auto`` (the compiler chooses the shardings of the
intermediates); :func:`auto_axes` converts the ``Explicit`` meshes of ``jax.make_mesh`` and
:func:`jaxenc.distributed.make_mesh`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxenc.errors import ConfigError

__all__ = [
    "auto_axes", "parameter_sharding", "module_bytes", "fits_one_device", "shard_module", "on_mesh", "data_parallel",
]

# Weights smaller than this (norm scales, biases) are replicated: splitting them saves nothing
# and adds a collective per use.
_MIN_SHARDED_ELEMENTS = 1 << 16
# A model is FSDP-sharded by default when its parameters would take more than this share of one
# device's memory, leaving the rest for activations.
_FITS_SHARE = 0.5


def auto_axes(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis of type ``AxisType.Auto``."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _check_axis(mesh: Mesh, axis: str) -> int:
    if axis not in mesh.shape:
        raise ConfigError(f"the mesh has axes {tuple(mesh.shape)}, not {axis!r}")
    return mesh.shape[axis]


def parameter_sharding(shape: tuple[int, ...], mesh: Mesh, axis: str, *, fsdp: bool) -> NamedSharding:
    """Where one parameter of the given shape lives on the mesh.

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape, e.g. (hidden, ffn) for a kernel.
    mesh : jax.sharding.Mesh
    axis : str
        Mesh axis the extraction batch is split along.
    fsdp : bool
        False: a full copy on every device. True: split along the last dimension that the axis
        size divides: the output width of a kernel (in, out), the hidden width of an embedding
        (vocab, hidden), so a token lookup needs no communication. Parameters with fewer than
        65,536 elements or no such dimension stay replicated.

    Returns
    -------
    NamedSharding
    """
    n = _check_axis(mesh, axis)
    mesh = auto_axes(mesh)
    if not fsdp or n == 1 or math.prod(shape) < _MIN_SHARDED_ELEMENTS:
        return NamedSharding(mesh, P())
    divisible = [d for d, size in enumerate(shape) if size % n == 0]
    if not divisible:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*(axis if d == divisible[-1] else None for d in range(len(shape)))))


def module_bytes(module) -> int:
    """Bytes of a module's ``nnx.Param`` leaves (works on ``nnx.eval_shape`` models too)."""
    leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves)


def fits_one_device(n_bytes: int, mesh: Mesh) -> bool:
    """Whether ``n_bytes`` of parameters take at most half of one device's memory.

    Devices that report no memory limit (CPU) always fit.
    """
    device = mesh.devices.flat[0]
    try:
        stats = device.memory_stats() or {}
    except (AttributeError, NotImplementedError, RuntimeError):
        stats = {}
    limit = stats.get("bytes_limit")
    return limit is None or n_bytes <= _FITS_SHARE * limit


def shard_module(module, mesh: Mesh, *, axis: str = "data", fsdp: bool | None = None):
    """Place every parameter of ``module`` on the mesh, in place; returns ``module``.

    Parameters
    ----------
    module : nnx.Module
        A built model (parameters on any device or the host).
    mesh : jax.sharding.Mesh
    axis : str
        Mesh axis of the data-parallel batch.
    fsdp : bool, optional
        Shard the weights along ``axis`` (see :func:`parameter_sharding`); default: only when
        the parameters do not fit half of one device's memory (:func:`fits_one_device`).

    Returns
    -------
    nnx.Module
        The same module, its parameters now global arrays on ``mesh``.
    """
    _check_axis(mesh, axis)
    if fsdp is None:
        fsdp = not fits_one_device(module_bytes(module), mesh)
    state = nnx.state(module, nnx.Param)
    shardings = jax.tree.map(lambda x: parameter_sharding(x.shape, mesh, axis, fsdp=fsdp), state)
    nnx.update(module, jax.device_put(state, shardings))
    return module


def on_mesh(module, mesh: Mesh) -> bool:
    """Whether every parameter of ``module`` already lives on exactly the devices of ``mesh``."""
    devices = set(mesh.devices.flat)
    return all(set(leaf.devices()) == devices and isinstance(leaf.sharding, NamedSharding)
               for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def data_parallel(module, mesh: Mesh | None, axis: str = "data"):
    """Prepare calls of ``module`` on batches split along a mesh axis.

    Parameters
    ----------
    module : nnx.Module
        Its parameters are placed on the mesh (:func:`shard_module`, FSDP only when they do not
        fit one device) unless they already are.
    mesh : jax.sharding.Mesh or None
        None: one device.
    axis : str
        Mesh axis the batch is split along.

    Returns
    -------
    n_shards : int
        Devices along ``axis`` (1 without a mesh): batch sizes must be multiples of it.
    place : callable
        ``place(host_array) -> jax.Array`` with the leading (batch) axis split along ``axis``.
    """
    if mesh is None:
        return 1, jnp.asarray
    mesh = auto_axes(mesh)
    n_shards = _check_axis(mesh, axis)
    if not on_mesh(module, mesh):
        shard_module(module, mesh, axis=axis)
    return n_shards, functools.partial(jax.device_put, device=NamedSharding(mesh, P(axis)))
