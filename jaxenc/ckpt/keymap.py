"""Strict application of an explicit key map: Hugging Face tensors -> NNX parameters.

A key map sends every tensor name a checkpoint may hold (relative to the model's prefix, e.g.
``layers.0.fc1.weight``) to the path of an NNX parameter (``("layers", 0, "fc1", "kernel")``)
and a layout change. :func:`load_into` fills an ``nnx.eval_shape``-built model from a checkpoint
tensor by tensor and raises on anything unexpected: a key neither mapped nor explicitly
ignored, a mapped key absent from the checkpoint, a parameter no key maps to, a shape mismatch,
a non-float dtype.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxenc.ckpt.files import Shard, iter_tensor_names
from jaxenc.errors import CheckpointError
from jaxenc.nn.sharding import fits_one_device, module_bytes, parameter_sharding

__all__ = ["Target", "LINEAR", "CONV1D", "IDENTITY", "load_into", "placement"]

# Layout changes from torch to flax, as permutations of the torch axes.
# nn.Linear stores (out, in); flax's kernel is (in, out).
LINEAR = (1, 0)
# nn.Conv1d stores (out, in, width); flax's kernel is (width, in, out).
CONV1D = (2, 1, 0)
# Embeddings, biases and norm weights share one layout.
IDENTITY = None

_LOADABLE_DTYPES = ("float32", "float16", "bfloat16")


def placement(model: nnx.Module, mesh, axis: str, fsdp: bool | None):
    """The ``sharding`` argument of :func:`load_into` for a model loaded onto a mesh.

    Parameters
    ----------
    model : nnx.Module
        The abstract (``nnx.eval_shape``) model, for its parameter bytes.
    mesh : jax.sharding.Mesh or None
        None: the default device (returns None).
    axis : str
        Mesh axis of the data-parallel batch.
    fsdp : bool or None
        Shard the weights over ``axis``; None: only when they do not fit half of one device
        (see :mod:`jaxenc.nn.sharding`).

    Returns
    -------
    callable or None
        ``shape -> NamedSharding``.
    """
    if mesh is None:
        return None
    if fsdp is None:
        fsdp = not fits_one_device(module_bytes(model), mesh)
    return lambda shape: parameter_sharding(shape, mesh, axis, fsdp=fsdp)


@dataclass(frozen=True)
class Target:
    """Where one checkpoint tensor goes.

    Attributes
    ----------
    path : tuple
        Path of the NNX parameter in ``nnx.state(model)``, e.g. ``("layers", 0, "fc1", "kernel")``.
    permutation : tuple of int or None
        Axis permutation from the torch layout to flax's (``LINEAR``, ``CONV1D``), or None.
    """

    path: tuple
    permutation: tuple[int, ...] | None = IDENTITY


def load_into(
    model: nnx.Module,
    key_map: dict[str, Target],
    shards: list[Shard],
    source: Path,
    weight_map: dict[str, str] | None,
    *,
    prefix: str,
    ignore: tuple[re.Pattern, ...],
    skip: frozenset[str],
    param_dtype,
    sharding: Callable[[tuple[int, ...]], jax.sharding.Sharding] | None = None,
) -> None:
    """Fill the abstract parameters of ``model`` in place from checkpoint tensors.

    Each tensor is read, permuted, cast to ``param_dtype`` and placed before the next is read,
    so host memory holds one tensor at a time and, with ``sharding``, no device ever holds more
    of a sharded parameter than its own shard (plus, briefly, the tensor being placed).

    Parameters
    ----------
    model : nnx.Module
        Built with ``nnx.eval_shape``; every ``nnx.Param`` must be the target of one key.
    key_map : dict of str to Target
        Tensor names relative to ``prefix`` -> parameters.
    shards, source, weight_map
        As returned by :func:`jaxenc.ckpt.files.checkpoint_shards`.
    prefix : str
        Prefix of the model's tensors in this checkpoint, e.g. ``"model.encoder."`` or ``""``.
    ignore : tuple of re.Pattern
        Full tensor names deliberately not loaded (a decoder, a language-model head).
    skip : frozenset of str
        Keys of ``key_map`` whose parameters the model does not build (layers past
        ``max_layer``): never read, and not required to be present.
    param_dtype : jnp.dtype
        Dtype the parameters are stored in.
    sharding : callable, optional
        ``sharding(shape) -> jax.sharding.Sharding`` of a parameter of that (flax) shape; the
        default device when omitted.

    Raises
    ------
    CheckpointError
        On an unexpected or missing key, a shape mismatch or a non-float tensor, naming the key
        and the file.
    """
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    targets = {t.path for name, t in key_map.items() if name not in skip}
    unmapped = sorted(set(params) - targets, key=str)
    if unmapped:
        raise CheckpointError(f"no checkpoint key maps to parameter {'.'.join(map(str, unmapped[0]))}")
    loaded = set()
    for shard, full_name in iter_tensor_names(shards, source, weight_map):
        name = full_name[len(prefix):] if full_name.startswith(prefix) else None
        if name in skip or any(p.fullmatch(full_name) for p in ignore):
            continue
        if name not in key_map:
            raise CheckpointError(f"unexpected key {full_name!r}", path=shard.path)
        target = key_map[name]
        param = params[target.path]
        shape, dtype = shard.info(full_name)
        expected = param.get_value().shape
        if target.permutation is not None:
            expected = tuple(expected[i] for i in target.permutation)
        if shape != expected:
            raise CheckpointError(f"key {full_name!r} has shape {shape}, expected {expected}", path=shard.path)
        if dtype not in _LOADABLE_DTYPES:
            raise CheckpointError(f"key {full_name!r} has dtype {dtype}, expected one of {_LOADABLE_DTYPES}",
                                  path=shard.path)
        value = jnp.asarray(shard.read(full_name), dtype=param_dtype)
        if target.permutation is not None:
            value = jnp.transpose(value, target.permutation)
        if sharding is not None:
            value = jax.device_put(value, sharding(value.shape))
        param.set_value(value)
        loaded.add(name)
    missing = sorted(set(key_map) - skip - loaded)
    if missing:
        raise CheckpointError(f"missing key {prefix + missing[0]!r} ({len(missing)} missing in all)", path=source)
