"""The compiled training program: a chunk of epochs for a stack of models, vmapped.

Every model's parameters, AdamW state, best parameters and early-stopping counters are stacked
along a leading model axis (the *carry*), and one jitted program advances them all::

    carry[model, ...] --lax.scan over epochs: if any model of the stack still trains,
                        vmap over models (a lax.scan over its minibatches, its validation
                        loss and the early-stopping rule)--> carry[model, ...]

Each step is written for one model; the vmapped program and the one-model-at-a-time program
(``vectorized=False``, the reference the tests compare against, where an epoch of a stopped
model is skipped outright) run the same function. Models never interact, so with a mesh the
stack is split along one mesh axis (:func:`jax.shard_map`) and the same program runs on each
device's models, without a collective.

Where the time goes and why it is written so (measured in ``benchmarks/train.py``):

- A minibatch of padding only (a model with fewer rows than the longest) and the steps of a
  stopped model must leave the model unchanged. That mask is applied to each leaf as the last
  operation of the AdamW update, where XLA fuses it into the update's elementwise loops, so it
  costs no pass over memory; the epoch-level selects of the earlier program are gone.
- The carry is donated: the program updates it in place instead of allocating a second copy
  of every model's parameters and moments per call.
- The data stay on the device and each model gathers its minibatch rows through its own
  index arrays (``X[subject, rows]``), so padded rows never enter a loss, BatchNorm statistics
  or the validation loss.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

__all__ = ["ProgramSpec", "stack_initializer", "compiled_program", "SHARED", "PER_MODEL", "merged_state"]

# One optimizer object for every run: its hyperparameters live in each model's optimizer state
# (set per model at creation), so a grid is one more slice of the stack and runs of the same
# shapes share the compiled program.
ADAMW = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)
# Data every model reads (X [subject, tr, feature], Y [target, tr, output]) and per-model data.
SHARED = ("X", "Y")
PER_MODEL = ("subj", "tgt", "train_idx", "n_train", "val_idx", "n_val", "key")


@dataclass(frozen=True)
class ProgramSpec:
    """The settings a compiled program depends on (everything else is data)."""

    batch_size: int
    val_batch_size: int
    loss: str
    max_epochs: int
    patience: int
    min_delta: float
    # Training and validation rows per model, padded to multiples of the batch sizes.
    n_train_max: int
    n_val_max: int


def merged_state(params, rest) -> nnx.State:
    """A model's full state (``nnx.merge(graphdef, state)``) from its parameters and the rest."""
    return nnx.merge_state(params, rest)


def _select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf (pytrees of the same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _masked_loss_sum(pred, y, mask, loss: str):
    """Sum over real rows and outputs of the elementwise loss; padded rows contribute 0."""
    diff = pred - y
    per = jnp.abs(diff) if loss == "mae" else jnp.square(diff)
    return jnp.sum(jnp.where(mask[:, None], per, 0.0))


def initial_carry(params, rest, opt, stopped, max_epochs: int) -> dict:
    """The carry of models that have trained no epoch; ``stopped`` marks padding slots."""
    shape = stopped.shape
    return {
        "params": params,
        "rest": rest,  # BatchNorm statistics, dropout keys and counters
        "opt": opt,
        "best": {"params": params, "rest": rest},
        "best_val": jnp.full(shape, jnp.inf, jnp.float32),
        "best_epoch": jnp.full(shape, -1, jnp.int32),
        "bad": jnp.zeros(shape, jnp.int32),
        "stopped": stopped,
        "stop_epoch": jnp.full(shape, -1, jnp.int32),
        "nan_epoch": jnp.full(shape, -1, jnp.int32),
        "history": jnp.full(shape + (max_epochs, 2), jnp.nan, jnp.float32),
    }


def stack_initializer(make_model, n_features: int, n_outputs: int, max_epochs: int):
    """A function creating the stacked models and their initial carry, and its graph definition.

    Returns
    -------
    (callable, list)
        ``create(key_data, learning_rate, weight_decay, stopped) -> carry``, each argument
        stacked along the model axis (one initialisation key per model), and a list that holds
        the models' ``nnx.GraphDef`` once ``create`` has been traced.
    """
    graphs = []

    def one(key_data, lr, wd):
        key = jax.random.wrap_key_data(key_data)
        model = make_model(n_features, n_outputs, rngs=nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 2)))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        graphs.append(graphdef)  # trace time: the same structure for every model
        opt = ADAMW.init(params)
        opt.hyperparams["learning_rate"] = lr
        opt.hyperparams["weight_decay"] = wd
        return params, rest, opt

    def create(key_data, lr, wd, stopped):
        params, rest, opt = jax.vmap(one)(key_data, lr, wd)
        return initial_carry(params, rest, opt, stopped, max_epochs)

    return create, graphs


def _epoch_function(graphdef, spec: ProgramSpec):
    """One model's epoch ``(carry, data, epoch) -> carry``: shuffle, steps, validation, stopping."""
    bsz, vbsz = spec.batch_size, spec.val_batch_size
    n_batches, n_vchunks = spec.n_train_max // bsz, spec.n_val_max // vbsz

    def shuffled_batches(data, epoch):
        # Per-position uniform draws (fold_in by position) are unchanged by extra padding, so a
        # padded subject shuffles its real rows exactly as an unpadded one.
        key = jax.random.fold_in(jax.random.wrap_key_data(data["key"]), epoch)
        pos = jnp.arange(spec.n_train_max)
        u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(pos)
        order = jnp.argsort(jnp.where(pos < data["n_train"], u, 2.0), stable=True)
        rows = data["train_idx"][order].reshape(n_batches, bsz)  # [batch, row]
        return rows, (pos < data["n_train"]).reshape(n_batches, bsz)

    def train_epoch(c, data, epoch, active):
        def step(state, batch):
            params, rest, opt, loss_sum = state
            idx, mask = batch
            with jax.named_scope("gather_rows"):
                x = data["X"][data["subj"], idx]  # [batch, feature]
                y = data["Y"][data["tgt"], idx]  # [batch, output]
            n = jnp.sum(mask)

            def loss_fn(params):
                # copy=True: the module's updates (BatchNorm statistics, dropout counters) must
                # not reach the Variables of ``rest``, which a masked step falls back to.
                model = nnx.merge(graphdef, params, rest, copy=True)
                pred = model(x, train=True, mask=mask)
                loss = _masked_loss_sum(pred, y, mask, spec.loss) / (jnp.maximum(n, 1) * y.shape[-1])
                return loss, nnx.split(model, nnx.Param, ...)[2]

            with jax.named_scope("forward_backward"):
                (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            # A batch of padding only, or a stopped model: no update, no optimizer count, no
            # dropout key, no BatchNorm statistics.
            has = (n > 0) & active
            with jax.named_scope("adamw"):
                updates, new_opt = ADAMW.update(grads, opt, params)
                new = (optax.apply_updates(params, updates), new_rest, new_opt)
                params, rest, opt = _select(has, new, (params, rest, opt))
            return (params, rest, opt, loss_sum + jnp.where(has, loss * n, 0.0)), None

        with jax.named_scope("shuffle"):
            batches = shuffled_batches(data, epoch)
        init = (c["params"], c["rest"], c["opt"], jnp.zeros((), jnp.float32))
        (params, rest, opt, loss_sum), _ = lax.scan(step, init, batches)
        return params, rest, opt, loss_sum / data["n_train"]

    def val_loss(params, rest, data):
        pos = jnp.arange(spec.n_val_max)
        rows = data["val_idx"].reshape(n_vchunks, vbsz)
        masks = (pos < data["n_val"]).reshape(n_vchunks, vbsz)

        def body(acc, chunk):
            idx, mask = chunk
            pred = nnx.merge(graphdef, params, rest, copy=True)(data["X"][data["subj"], idx], train=False)
            return acc + _masked_loss_sum(pred, data["Y"][data["tgt"], idx], mask, spec.loss), None

        total, _ = lax.scan(body, jnp.zeros((), jnp.float32), (rows, masks))
        return total / (data["n_val"] * data["Y"].shape[-1])

    def epoch_fn(c, data, epoch):
        active = ~c["stopped"] & (epoch < spec.max_epochs)
        params, rest, opt, train_loss = train_epoch(c, data, epoch, active)
        with jax.named_scope("validation"):
            val = val_loss(params, rest, data)
        with jax.named_scope("early_stopping"):
            finite = jnp.isfinite(train_loss) & jnp.isfinite(val)
            ok = active & finite
            improved = ok & (val < c["best_val"] - spec.min_delta)
            bad = jnp.where(ok, jnp.where(improved, 0, c["bad"] + 1), c["bad"])
            patience_out = ok & (bad >= spec.patience)
            new_nan = active & ~finite
            row = jnp.minimum(epoch, spec.max_epochs - 1)
            return {
                "params": params,
                "rest": rest,
                "opt": opt,
                "best": _select(improved, {"params": params, "rest": rest}, c["best"]),
                "best_val": jnp.where(improved, val, c["best_val"]),
                "best_epoch": jnp.where(improved, epoch, c["best_epoch"]),
                "bad": bad,
                # A model stopped by patience, a non-finite loss or max_epochs no longer changes.
                "stopped": c["stopped"] | patience_out | new_nan,
                "stop_epoch": jnp.where(patience_out, epoch, c["stop_epoch"]),
                "nan_epoch": jnp.where(new_nan, epoch, c["nan_epoch"]),
                "history": c["history"].at[row].set(
                    jnp.where(active, jnp.stack([train_loss, val]), c["history"][row])
                ),
            }

    return epoch_fn


@functools.lru_cache(maxsize=16)
def compiled_program(graphdef, spec: ProgramSpec, vectorized: bool, mesh: Mesh | None = None,
                     axis: str | None = None):
    """The jitted chunk program ``(carry, data, epochs) -> carry`` and its trace counter.

    Runs of equal structure share it; it retraces (and the counter grows) once per stack size.
    The carry argument is donated.

    Parameters
    ----------
    graphdef : nnx.GraphDef
        Structure of one model.
    spec : ProgramSpec
    vectorized : bool
        True: carry and per-model data are stacked along a leading model axis. False: one
        model, whose epochs are skipped outright once it has stopped.
    mesh : Mesh, optional
        Split the stack along ``axis``: each device runs the vmapped program on its own slots,
        ``X`` and ``Y`` replicated.
    axis : str, optional

    Returns
    -------
    (callable, list of int)
        The program, and a one-element list counting its traces.
    """
    counter = [0]
    epoch_fn = _epoch_function(graphdef, spec)
    data_axes = {name: (None if name in SHARED else 0) for name in SHARED + PER_MODEL}
    epoch_all = jax.vmap(epoch_fn, in_axes=(0, data_axes, None)) if vectorized else epoch_fn

    def chunk(carry, data, epochs):
        counter[0] += 1  # runs at trace time only: counts compilations of the program

        def body(c, epoch):
            # Epochs where every model of the stack has stopped are skipped (a real branch: the
            # predicate is one value for the whole stack).
            training = jnp.any(~c["stopped"]) & (epoch < spec.max_epochs)
            return lax.cond(training, lambda c: epoch_all(c, data, epoch), lambda c: c, c), None

        carry, _ = lax.scan(body, carry, epochs)
        return carry

    if mesh is None:
        return jax.jit(chunk, donate_argnums=0), counter
    data_specs = {name: (P() if name in SHARED else P(axis)) for name in SHARED + PER_MODEL}
    sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(P(axis), data_specs, P()), out_specs=P(axis),
                            check_vma=False)
    return jax.jit(sharded, donate_argnums=0), counter
