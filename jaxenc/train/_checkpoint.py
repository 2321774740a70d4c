"""Orbax checkpoints of the stacked training state, and resuming from them.

The whole carry of the training program (parameters, optimizer states, best parameters,
early-stopping counters, dropout keys, loss history) is saved as a flat list of arrays next to
a JSON signature of the run; a run resumes only from a checkpoint whose signature matches.
PRNG key arrays are stored as their raw key data, since orbax writes plain arrays. A carry
sharded over a mesh (``fit_encoders(mesh=...)``) is saved and restored shard by shard, keeping
its placement.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding

from jaxenc.errors import CheckpointError, DataWarning

# Checkpoints kept on disk; older ones are deleted.
_MAX_TO_KEEP = 2


def open_manager(directory) -> ocp.CheckpointManager:
    """A synchronous manager on ``directory`` (created if missing): a save is on disk when it returns."""
    options = ocp.CheckpointManagerOptions(max_to_keep=_MAX_TO_KEEP, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options, item_names=("state", "meta"))


def _is_key(x) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_arrays(carry) -> dict:
    leaves = jax.tree.leaves(carry)
    return {f"{i:05d}": jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)}


def _like(saved, old):
    """A restored leaf placed as ``old`` was: on its mesh shards (as orbax restored it, each
    process reading only its own shards) or on the default device; PRNG keys re-wrapped."""
    if isinstance(old.sharding, NamedSharding):
        value = saved
    else:
        value = jnp.asarray(np.asarray(saved))
    return jax.random.wrap_key_data(value, impl=jax.random.key_impl(old)) if _is_key(old) else value


def run_signature(keys, carry, config, grid) -> dict:
    """What must match for a checkpoint to be resumed: models, shapes, settings."""
    return {
        "models": [[k.subject, k.fold, k.grid] for k in keys],
        "shapes": [[list(x.shape), str(x.dtype)] for x in _to_arrays(carry).values()],
        "config": dataclasses.asdict(config),
        "grid": [dict(p) for p in grid],
    }


def save(manager: ocp.CheckpointManager, epoch: int, carry, meta: dict) -> None:
    """Write the carry after ``epoch`` epochs."""
    manager.save(
        epoch,
        args=ocp.args.Composite(state=ocp.args.StandardSave(_to_arrays(carry)), meta=ocp.args.JsonSave(meta)),
        force=True,
    )


def restore_latest(manager: ocp.CheckpointManager, carry, meta: dict):
    """Restore the newest readable checkpoint into the structure of ``carry``.

    A checkpoint that cannot be read back (truncated or damaged, as when a run is killed
    while writing) is removed with a :class:`~jaxenc.errors.DataWarning` naming it, and the
    previous one is tried, so the run resumes from the newest readable epoch, or from the
    start when none is.

    Returns
    -------
    (int, pytree) or None
        The epochs done and the restored carry, or None when no readable checkpoint is left.

    Raises
    ------
    CheckpointError
        The checkpoint was written by a run with other models, shapes or settings.
    """
    leaves, treedef = jax.tree.flatten(carry)
    target = _to_arrays(carry)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(manager.all_steps(), reverse=True):
        path = Path(manager.directory) / str(step)
        try:
            saved = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        # orbax reports a damaged file as a bare Exception whose cause is tensorstore's.
        except Exception as err:
            _drop(manager, step, path, err)
            continue
        for part in ("models", "shapes", "config", "grid"):
            if saved.get(part) != meta[part]:
                raise CheckpointError(
                    f"checkpoint at epoch {step} was written by a different run: its {part} differ from "
                    "this run's; use another checkpoint_dir or the original settings",
                    path=path,
                )
        try:
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
        except Exception as err:
            _drop(manager, step, path, err)
            continue
        restored = [_like(state[name], old) for name, old in zip(target, leaves, strict=True)]
        return int(step), jax.tree.unflatten(treedef, restored)
    return None


def _drop(manager: ocp.CheckpointManager, step: int, path: Path, err: Exception) -> None:
    reason = str(err.__cause__ or err).splitlines()[0]
    warnings.warn(f"unreadable checkpoint {path} ({reason}); removing it, the fit resumes from the previous one",
                  DataWarning, stacklevel=3)
    manager.delete(step)
