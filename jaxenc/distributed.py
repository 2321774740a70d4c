"""Device meshes and sharded placement of response matrices, single host or many.

The sharded PCA (:mod:`jaxenc.decomp.sharded`) and ridge (:mod:`jaxenc.models.ridge_sharded`)
split a response matrix ``Y`` of shape (n_trs, n_voxels) along one named axis of a mesh,
either by voxels (columns) or by TRs (rows), and combine per-shard results with collectives
inside :func:`jax.shard_map`. A dimension that does not divide by the number of shards is
zero padded at the end: the padded voxels are constant zero columns, the padded rows are
masked out by the kernels, and every function says how much of its output is padding.

Axis types
----------
:func:`make_mesh` gives every axis ``jax.sharding.AxisType.Explicit`` by default, the default
of ``jax.make_mesh`` since jax 0.7: shardings are part of the array types, so a jitted
function that would silently all-gather a sharded operand fails to trace instead. All the
kernels here run under ``jax.shard_map``, which takes meshes of either type; pass
``axis_types=(AxisType.Auto,)`` to let the compiler choose shardings in code of your own.

Several hosts
-------------
Every process runs the same program; ``jax.distributed.initialize`` joins them, after which
``jax.devices()`` lists the devices of all hosts and :func:`make_mesh` spans them. Arrays are
built with :func:`jax.make_array_from_callback`, so each process only reads the slices its own
devices hold (``Y`` may be a ``numpy.memmap``). For example, on two hosts of 8 GPUs each::

    # on host i (i = 0, 1), with the same script and arguments:
    import jax
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=2,
                               process_id=i)
    from jaxenc.distributed import make_mesh
    from jaxenc.decomp.sharded import pca_fit_sharded
    mesh = make_mesh(("data",))                    # 16 devices, one axis
    Y = np.load("train_responses.npy", mmap_mode="r")   # (n_trs, n_voxels) on every host
    state = pca_fit_sharded(Y, 512, mesh)          # components voxel-sharded over 16 GPUs

The nonlinear training spreads its stacked (subject, fold, hyperparameter) models the same way:
each host reads its stories into a host array (or a sharded one,
:func:`jaxenc.stream.stack_story_rows`), and :func:`jaxenc.train.fit_encoders` places the model
axis along a mesh axis, every device creating and training only its own models::

    # on host i, same script and arguments on every host:
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=2,
                               process_id=i)
    from functools import partial
    from jaxenc.models import MLP
    from jaxenc.train import TrainConfig, fit_encoders
    mesh = make_mesh(("models",))                  # 16 devices
    fit = fit_encoders(partial(MLP, hidden=256), data, TrainConfig(),
                       mesh=mesh, axis="models")   # 3 subjects x 5 folds -> 16 slots

Per-model inputs are placed with :func:`jax.make_array_from_callback` (each process builds only
the slots of its own devices) and parameters are initialised inside :func:`jax.shard_map`;
early-stopping flags and the final parameters are gathered with :func:`to_host`, so every
process returns the same fit.

(On SLURM or Cloud TPU, ``jax.distributed.initialize()`` finds these arguments itself.)
Results come back as global ``jax.Array`` objects; ``np.asarray`` on one needs every shard to
be addressable, which holds on one host only: :func:`to_host` (and
:meth:`~jaxenc.decomp.sharded.ShardedPCAState.gather`, which uses it) gathers them across
processes, as a collective that every process calls. ``python -m jaxenc.multihost`` runs all
of the above on every process of a job and checks that the results equal one process's
(see :mod:`jaxenc.multihost`); the test suite runs it as 2 processes x 4 CPU devices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxenc.errors import ConfigError

__all__ = ["RUN_AXIS", "run_mesh", "describe_mesh", "make_mesh", "axis_size", "padded_size", "shard_columns",
           "shard_rows", "replicate", "to_host", "shard_program", "PATIENT_CPU_COLLECTIVES"]

# XLA_FLAGS for CPU devices that share a machine's cores (host devices of one process, or
# several processes on one machine): on a loaded machine a device can wait in a collective far
# longer than XLA's default limits, which abort the process; an hour lets the caller's own
# timeout decide. Only read when the backend starts.
PATIENT_CPU_COLLECTIVES = ("--xla_cpu_collective_call_terminate_timeout_seconds=3600 "
                           "--xla_cpu_collective_timeout_seconds=3600")


# The one axis of a run's mesh (run_mesh): models, voxels and PCA columns are all split along it.
RUN_AXIS = "data"


def run_mesh(devices: int = 0) -> Mesh | None:
    """The one mesh a run's fit and evaluate stages share (the config's ``run.devices``).

    Parameters
    ----------
    devices : int
        0: every device of ``jax.devices()`` (the devices of every process once
        ``jax.distributed.initialize`` ran); N: the first N of them.

    Returns
    -------
    jax.sharding.Mesh or None
        One axis, :data:`RUN_AXIS`, over the chosen devices; None when that is one device, so a
        one-device run keeps the unsharded path.

    Raises
    ------
    ConfigError
        A negative count, or more devices asked than there are.
    """
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 0:
        raise ConfigError(f"run.devices must be an integer of at least 0 (0: every device), got {devices!r}")
    available = jax.devices()
    if devices > len(available):
        raise ConfigError(f"run.devices = {devices}, but there are {len(available)} devices "
                          f"({available[0].platform}, {jax.process_count()} process(es))")
    chosen = available[:devices] if devices else available
    return make_mesh((RUN_AXIS,), devices=chosen) if len(chosen) > 1 else None


def describe_mesh(mesh: Mesh | None) -> str:
    """``"8 devices (1 process)"``: the devices of ``mesh`` (None: this process's default device)
    and the processes they belong to."""
    devices = [jax.devices()[0]] if mesh is None else list(mesh.devices.flat)
    processes = len({d.process_index for d in devices})
    return (f"{len(devices)} device{'s' if len(devices) > 1 else ''} "
            f"({processes} process{'es' if processes > 1 else ''})")


def make_mesh(axis_names: Sequence[str] = ("data",), shape: Sequence[int] | None = None, *,
              devices=None, axis_types: Sequence[AxisType] | None = None) -> Mesh:
    """A mesh over the available devices (of every process, after ``jax.distributed``).

    Parameters
    ----------
    axis_names : sequence of str
        One name per mesh axis, e.g. ``("data",)`` or ``("rows", "voxels")``.
    shape : sequence of int, optional
        Devices along each axis; their product must equal the number of devices. Default:
        all devices on the first axis, 1 on the others.
    devices : sequence of jax.Device, optional
        Devices to use (default ``jax.devices()``).
    axis_types : sequence of jax.sharding.AxisType, optional
        Type of each axis; default ``AxisType.Explicit`` for all (see the module docstring).

    Returns
    -------
    jax.sharding.Mesh

    Raises
    ------
    ConfigError
        Shape and names disagree, or the shape does not use exactly the given devices.
    """
    axis_names = tuple(axis_names)
    devices = list(jax.devices() if devices is None else devices)
    if shape is None:
        shape = (len(devices),) + (1,) * (len(axis_names) - 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(axis_names) or not axis_names:
        raise ConfigError(f"mesh shape {shape} and axis names {axis_names} must have the same, "
                          "non-zero length")
    if math.prod(shape) != len(devices):
        raise ConfigError(f"mesh shape {shape} holds {math.prod(shape)} devices but "
                          f"{len(devices)} are given")
    if axis_types is None:
        axis_types = (AxisType.Explicit,) * len(axis_names)
    return jax.make_mesh(shape, axis_names, axis_types=tuple(axis_types), devices=devices)


def axis_size(mesh: Mesh, axis: str) -> int:
    """Number of shards along a named mesh axis.

    Raises
    ------
    ConfigError
        The mesh has no such axis.
    """
    if axis not in mesh.shape:
        raise ConfigError(f"mesh has axes {tuple(mesh.shape)}, not {axis!r}")
    return mesh.shape[axis]


def padded_size(n: int, mesh: Mesh, axis: str, multiple: int = 1) -> int:
    """``n`` rounded up to a multiple of ``multiple`` times the shards along ``axis``."""
    step = axis_size(mesh, axis) * multiple
    return -(-n // step) * step


def _padded_reader(A, shape):
    """Callback for make_array_from_callback: slice ``idx`` of ``A`` zero padded to ``shape``."""

    def read(idx):
        starts = [s.start or 0 for s in idx]
        stops = [shape[d] if s.stop is None else s.stop for d, s in enumerate(idx)]
        inside = tuple(slice(min(a, n), min(b, n)) for a, b, n in zip(starts, stops, A.shape, strict=True))
        block = np.asarray(A[inside])
        pad = [(0, (b - a) - k) for a, b, k in zip(starts, stops, block.shape, strict=True)]
        return np.pad(block, pad) if any(p for _, p in pad) else block

    return read


def _place(A, mesh: Mesh, spec: P, shape, dtype) -> jax.Array:
    A = A if isinstance(A, np.ndarray) else np.asarray(A)
    read = _padded_reader(A, shape)
    return jax.make_array_from_callback(tuple(shape), NamedSharding(mesh, spec),
                                        lambda idx: read(idx).astype(dtype, copy=False))


def shard_columns(A, mesh: Mesh, axis: str = "data", *, width: int | None = None,
                  dtype=np.float32) -> jax.Array:
    """Place a matrix on the mesh with its columns (voxels) split along ``axis``.

    Parameters
    ----------
    A : array of shape (n_rows, n_cols)
        Host array (numpy, memmap); each process reads only the columns its devices hold.
    mesh : jax.sharding.Mesh
    axis : str
        Mesh axis the columns are split along; the array is replicated over other axes.
    width : int, optional
        Padded number of columns, a multiple of the axis size (default: the smallest one).
    dtype : dtype

    Returns
    -------
    jax.Array of shape (n_rows, width)
        Sharded ``P(None, axis)``; columns ``n_cols:`` are zeros.
    """
    width = padded_size(A.shape[1], mesh, axis) if width is None else width
    return _place(A, mesh, P(None, axis), (A.shape[0], width), dtype)


def shard_rows(A, mesh: Mesh, axis: str = "data", *, dtype=np.float32) -> jax.Array:
    """Place a matrix on the mesh with its rows (TRs) split along ``axis``.

    Parameters
    ----------
    A : array of shape (n_rows, n_cols)
    mesh : jax.sharding.Mesh
    axis : str
    dtype : dtype

    Returns
    -------
    jax.Array of shape (padded_size(n_rows), n_cols)
        Sharded ``P(axis, None)``; rows ``n_rows:`` are zeros.
    """
    return _place(A, mesh, P(axis, None), (padded_size(A.shape[0], mesh, axis), A.shape[1]),
                  dtype)


def replicate(A, mesh: Mesh, *, dtype=np.float32) -> jax.Array:
    """Place a full copy of ``A`` on every device of the mesh.

    Returns
    -------
    jax.Array of the shape of ``A``, sharded ``P()``.
    """
    A = np.asarray(A)
    return _place(A, mesh, P(), A.shape, dtype)


@functools.cache
def shard_program(kernel, params: tuple, mesh: Mesh, in_specs, out_specs, check_vma: bool = True):
    """``kernel`` with keyword arguments ``params``, shard_mapped over ``mesh`` and jitted, once.

    A ``jax.jit`` of a new closure compiles again on every call, so a sharded step built inside
    a function called per fold or per story (a PCA's scores, a ridge's predictions) would
    compile each time; the program here is kept per kernel, settings, mesh and specs, and a
    call with arrays of shapes seen before runs without compiling.

    Parameters
    ----------
    kernel : callable
        A module-level function (hashable), the per-shard body.
    params : tuple of (str, value) pairs
        Its keyword arguments; hashable values.
    mesh : jax.sharding.Mesh
    in_specs, out_specs : PartitionSpec or tuple of them
        As :func:`jax.shard_map`'s.
    check_vma : bool
        As :func:`jax.shard_map`'s.

    Returns
    -------
    callable
        ``jax.jit(jax.shard_map(partial(kernel, **dict(params)), ...))``.
    """
    return jax.jit(jax.shard_map(functools.partial(kernel, **dict(params)), mesh=mesh, in_specs=in_specs,
                                 out_specs=out_specs, check_vma=check_vma))


def to_host(a) -> np.ndarray:
    """A (possibly sharded) array as one numpy array on this host, from every process's shards.

    On one host this is ``np.asarray``. An array with shards on devices of other processes is
    read from a local copy when it is replicated, and otherwise gathered with
    ``jax.experimental.multihost_utils.process_allgather``: a collective, so every process
    must call ``to_host`` on the same arrays in the same order.

    Parameters
    ----------
    a : jax.Array or array_like
        Any shape and dtype (typed PRNG keys excepted: pass ``jax.random.key_data(a)``).

    Returns
    -------
    ndarray of the shape and dtype of ``a``
    """
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
        return np.asarray(a)
    if a.is_fully_replicated:
        return np.asarray(a.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
