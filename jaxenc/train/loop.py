"""The chunk loop around the compiled program: checkpoints, callbacks, NaN checks, re-packing.

:func:`run_chunks` calls the program for ``epochs_per_call`` epochs at a time. Between calls
it checks the losses, writes orbax checkpoints, calls the callback and, as models stop early,
re-packs the models still training into a smaller stack, so a run where models stop at
different epochs costs about what a loop over the models would::

    full[model, ...]  --gather(slots)-->  stack[slot, ...]  --program-->  ...  --scatter-->  full

Stack sizes come from a few buckets (:func:`stack_sizes`: the full stack and powers of two
below it), so the program compiles at most once per bucket. A stack smaller than its bucket
is filled with stopped models, which the program leaves unchanged; every model computes what
it computes in the full stack, up to float32 rounding of reductions whose vectorisation XLA
chooses by stack size (losses differ in the last bits; stopping epochs are equal unless two
validation losses lie within that rounding).
:func:`run_one_by_one` is the reference loop: the one-model program, model after model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding

from jaxenc.distributed import to_host
from jaxenc.train import _checkpoint
from jaxenc.train.config import NonFiniteError, TrainConfig
from jaxenc.train.program import SHARED

__all__ = ["stack_sizes", "run_chunks", "run_one_by_one"]


def stack_sizes(n_slots: int, unit: int = 1) -> tuple[int, ...]:
    """The stack sizes the program runs at: ``n_slots`` and ``unit * 2**k`` below it.

    Parameters
    ----------
    n_slots : int
        Size of the full stack (a multiple of ``unit``).
    unit : int
        Every size is a multiple of it (the devices along a mesh axis).

    Returns
    -------
    tuple of int
        Increasing sizes, the last ``n_slots``.
    """
    sizes = {n_slots}
    s = unit
    while s < n_slots:
        sizes.add(s)
        s *= 2
    return tuple(sorted(sizes))


def raise_nonfinite(nan_epoch: np.ndarray, keys) -> None:
    """Raise :class:`NonFiniteError` for the first model whose loss became NaN or infinite."""
    bad = np.flatnonzero(nan_epoch[: len(keys)] >= 0)
    if bad.size:
        i = int(bad[0])
        raise NonFiniteError(
            f"NaN or infinity in the training or validation loss at fold {keys[i].fold}, epoch "
            f"{int(nan_epoch[i])} (grid index {keys[i].grid}; {bad.size} model(s) affected): the "
            "training diverged; lower the learning rate",
            subject=keys[i].subject,
        )


def _indexed_sharding(sharding):
    """The sharding the stack's gather and scatter must name: on a mesh of Explicit axes JAX
    cannot resolve it from the operands (a ShardingTypeError), and on Auto axes it refuses one."""
    if sharding is None or AxisType.Explicit not in sharding.mesh.axis_types:
        return None
    return sharding


@functools.cache
def _jit_take(sharding):
    named = _indexed_sharding(sharding)
    return jax.jit(lambda tree, idx: jax.tree.map(lambda a: a.at[idx].get(out_sharding=named), tree),
                   out_shardings=sharding)


@functools.cache
def _jit_put(sharding):
    named = _indexed_sharding(sharding)
    return jax.jit(lambda full, idx, part: jax.tree.map(lambda a, b: a.at[idx].set(b, out_sharding=named), full, part),
                   out_shardings=sharding, donate_argnums=0)


def run_chunks(program, carry: dict, data: dict, cfg: TrainConfig, keys, *, manager=None, meta=None,
               callback=None, bar=None, sizes: tuple[int, ...] | None = None) -> dict:
    """Train the stacked models chunk by chunk until every one has stopped or ``max_epochs``.

    Parameters
    ----------
    program : callable
        ``program(carry, data, epochs) -> carry`` (:func:`jaxenc.train.program.compiled_program`,
        vectorized); its carry argument is donated.
    carry : dict
        Stacked initial state, leading axis ``n_slots`` (models, then padding slots).
    data : dict
        ``X`` and ``Y`` and the per-model arrays (leading axis ``n_slots``), on their devices.
    cfg : TrainConfig
    keys : sequence of ModelKey
        The real models (the first ``len(keys)`` slots); named in errors.
    manager, meta : optional
        Orbax checkpoint manager and the run's signature: resume from the latest checkpoint,
        save every ``checkpoint_every`` epochs and at the end.
    callback : callable, optional
        ``callback(epoch, {"val_loss": (n_models,), "stopped": (n_models,)})`` after each chunk.
    bar : tqdm, optional
        Progress over epochs.
    sizes : tuple of int, optional
        Stack sizes to re-pack into (:func:`stack_sizes`); ``(n_slots,)`` never re-packs.

    Returns
    -------
    dict
        The final carry of all ``n_slots`` slots.
    """
    n_slots = len(to_host(carry["stopped"]))
    sizes = sizes or (n_slots,)
    sharding = carry["stopped"].sharding if isinstance(carry["stopped"].sharding, NamedSharding) else None
    take, put = _jit_take(sharding), _jit_put(sharding)
    per_model = {k: v for k, v in data.items() if k not in SHARED}
    epoch, e = 0, cfg.epochs_per_call
    if manager is not None:
        restored = _checkpoint.restore_latest(manager, carry, meta)
        if restored is not None:
            epoch, carry = restored
    if bar is not None:
        bar.update(epoch)
    stopped = to_host(carry["stopped"]).copy()
    # The running stack holds the models `slots` of `full`; while it holds all of them it is
    # `full` itself (no copy), and `full` is stale until the stack is scattered back.
    full, stack, slots, stack_data = None, carry, None, data

    def synced():
        return stack if slots is None else put(full, jnp.asarray(slots), stack)

    while epoch < cfg.max_epochs and not stopped.all():
        size = min(s for s in sizes if s >= (~stopped).sum())
        if size != len(stopped if slots is None else slots):
            full = synced()
            slots = np.concatenate([np.flatnonzero(~stopped), np.flatnonzero(stopped)])[:size]
            idx = jnp.asarray(slots)
            stack = take(full, idx)
            stack_data = {**{k: data[k] for k in SHARED}, **take(per_model, idx)}
        stack = program(stack, stack_data, jnp.arange(epoch, epoch + e, dtype=jnp.int32))
        epoch += e
        if bar is not None:
            bar.update(min(e, cfg.max_epochs - bar.n))
        here = np.arange(n_slots) if slots is None else slots
        stopped[here] = to_host(stack["stopped"])
        nan_epoch = np.full(n_slots, -1)
        nan_epoch[here] = to_host(stack["nan_epoch"])
        raise_nonfinite(nan_epoch, keys)
        done = epoch >= cfg.max_epochs or stopped.all()
        if manager is not None and (epoch % cfg.checkpoint_every == 0 or done):
            full = synced()
            _checkpoint.save(manager, epoch, full, meta)
        if callback is not None:
            val = np.full(n_slots, np.nan, np.float32)
            val[here] = to_host(stack["history"][:, min(epoch, cfg.max_epochs) - 1, 1])
            callback(epoch, {"val_loss": val[: len(keys)], "stopped": stopped[: len(keys)].copy()})
    return synced()


def run_one_by_one(program, carry: dict, data: dict, cfg: TrainConfig, keys, *, bar=None) -> dict:
    """The reference loop: the one-model program on each model in turn, until it stops.

    Parameters
    ----------
    program : callable
        The one-model program (``vectorized=False``); epochs after a model stopped are skipped.
    carry, data, cfg, keys, bar
        As in :func:`run_chunks` (no padding slots).

    Returns
    -------
    dict
        The final carry, stacked again.
    """
    results = []
    for m in range(len(keys)):
        c = jax.tree.map(lambda a, m=m: a[m], carry)
        d = {name: (v if name in SHARED else v[m]) for name, v in data.items()}
        epoch = 0
        while epoch < cfg.max_epochs and not bool(c["stopped"]):
            c = program(c, d, jnp.arange(epoch, epoch + cfg.epochs_per_call, dtype=jnp.int32))
            epoch += cfg.epochs_per_call
            raise_nonfinite(np.asarray(c["nan_epoch"])[None], keys[m : m + 1])
        results.append(c)
        if bar is not None:
            bar.update(1)
    return jax.tree.map(lambda *a: jnp.stack(a), *results)
