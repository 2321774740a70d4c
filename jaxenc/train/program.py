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
  stopped model must leave the model unchanged. That mask is applied to each leaf inside the
  AdamW update (:mod:`jaxenc.train._adamw`), where XLA fuses it into the update's elementwise
  loops, so it costs no pass over memory; the epoch-level selects of the earlier program,
  which read and wrote every parameter and moment once per epoch, are gone.
- AdamW itself is compiled with the fewest passes over memory XLA:CPU allows (see
  :mod:`jaxenc.train._adamw`): at the paper's width it moves more bytes than anything else.
- The carry is donated: the program updates it in place instead of allocating a second copy
  of every model's parameters and moments per call.
- The data stay on the device and each model gathers its minibatch rows through its own
  index arrays (``X[subject, rows]``), so padded rows never enter a loss, BatchNorm statistics
  or the validation loss.
- Under ``vmap`` each dense layer is one batched product over the stack. On XLA:CPU the
  product's implementation is chosen per program (:func:`compiler_options`): its library
  fusions (YNNPACK) for small kernels, its own (Eigen) products for large ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxenc import precision as matmul
from jaxenc.train import _adamw

__all__ = ["ProgramSpec", "stack_initializer", "compiled_program", "compiler_options", "shuffled_batches",
           "train_step", "validation_loss", "merged_state"]

# Data every model reads (X [subject, tr, feature], Y [target, tr, output]) and per-model data.
SHARED = ("X", "Y")
PER_MODEL = ("subj", "tgt", "train_idx", "n_train", "val_idx", "n_val", "key")

# A stack of models whose largest kernel (per model) is above this size runs its batched
# products through XLA:CPU's own (Eigen) dot instead of its library fusions (YNNPACK). Measured
# on 2 cores (benchmarks/results/train.json, ``products``): at the paper's width, [15, 128, 21504]
# x [15, 21504, 256], YNNPACK's batched forward product runs at 93-100 GFLOP/s and Eigen's at
# 160-166; at 512 x 256 kernels YNNPACK is as fast or faster (131 against 120), and a
# fold-parallel epoch at that width took 0.30 s with it against 0.34-0.45 s without. An earlier
# measurement put the edge where YNNPACK's batched product falls off between 16384 x 256 and
# 21504 x 256 kernels.
LIBRARY_DOTS_MAX_KERNEL_BYTES = 16 * 2**20
# The jax.jit compiler options that turn XLA:CPU's library fusions off.
WITHOUT_LIBRARY_DOTS = (("xla_cpu_experimental_ynn_fusion_type", ""),)


@dataclass(frozen=True)
class ProgramSpec:
    """The settings a compiled program depends on (everything else is data)."""

    batch_size: int
    # Rows per chunk of the validation pass.
    val_chunk: int
    loss: str
    max_epochs: int
    patience: int
    min_delta: float
    # Training and validation rows per model, padded to multiples of batch_size and val_chunk.
    n_train_max: int
    n_val_max: int
    # Matrix-product precision the program is traced at (jaxenc.precision).
    precision: str = matmul.DEFAULTS["training"]

    @classmethod
    def of(cls, cfg, stack) -> ProgramSpec:
        """The spec of training ``stack`` (:class:`jaxenc.train.stack.Stack`) with ``cfg``."""
        return cls(cfg.batch_size, stack.val_chunk, cfg.loss, cfg.max_epochs, cfg.patience, cfg.min_delta,
                   stack.n_train_max, stack.n_val_max, cfg.precision)


def compiler_options(params, n_models: int) -> tuple:
    """XLA options for a program that runs a stack of ``n_models`` models with these parameters.

    Parameters
    ----------
    params : pytree of arrays
        The stacked parameters, or whole model states (leading model axis of length
        ``n_models``).
    n_models : int

    Returns
    -------
    tuple of (str, str)
        Hashable ``compiler_options`` items for :func:`jax.jit`: on a CPU backend, a stack
        whose largest kernel exceeds :data:`LIBRARY_DOTS_MAX_KERNEL_BYTES` per model gets
        :data:`WITHOUT_LIBRARY_DOTS`; otherwise none.
    """
    leaves = jax.tree.leaves(params)
    platforms = {d.platform for leaf in leaves if isinstance(leaf, jax.Array) for d in leaf.devices()}
    platforms = platforms or {jax.default_backend()}
    largest = max(leaf.size // n_models * leaf.dtype.itemsize for leaf in leaves)
    if platforms == {"cpu"} and largest > LIBRARY_DOTS_MAX_KERNEL_BYTES:
        return WITHOUT_LIBRARY_DOTS
    return ()


def merged_state(params, rest) -> nnx.State:
    """A model's full state (``nnx.merge(graphdef, state)``) from its parameters and the rest."""
    return nnx.merge_state(params, rest)


def _select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf (pytrees of the same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _masked_loss_sum(pred, y, mask, loss: str):
    """Sum over real rows and outputs of the elementwise loss; padded rows contribute 0.

    In float32 whatever the model's compute dtype (a bfloat16 sum over a batch would round
    away the loss's last digits, and its gradient flows back through the cast).
    """
    diff = pred.astype(jnp.float32) - y
    per = jnp.abs(diff) if loss == "mae" else jnp.square(diff)
    return jnp.sum(jnp.where(mask[:, None], per, 0.0))


def initial_carry(params, rest, opt, stopped, max_epochs: int) -> dict:
    """The carry of models that have trained no epoch; ``stopped`` marks padding slots."""
    shape = stopped.shape
    return {
        "params": params,
        "rest": rest,  # BatchNorm statistics, dropout keys and counters
        "opt": opt,
        # Copies: the program donates the carry, and a buffer may be donated only once.
        "best": jax.tree.map(jnp.copy, {"params": params, "rest": rest}),
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
        ``create(key_data, learning_rate, weight_decay, stopped, *, sequential=False) -> carry``,
        each argument stacked along the model axis (one initialisation key per model), and a
        list that holds the models' ``nnx.GraphDef`` once ``create`` has been traced. With
        ``sequential`` the models are initialised one after another (``jax.lax.map``) instead
        of batched (``jax.vmap``): the same values.
    """
    graphs = []

    def one(key_data, lr, wd):
        key = jax.random.wrap_key_data(key_data)
        model = make_model(n_features, n_outputs, rngs=nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 2)))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        graphs.append(graphdef)  # trace time: the same structure for every model
        return params, rest, _adamw.init(params, lr, wd)

    def create(key_data, lr, wd, stopped, *, sequential: bool = False):
        if sequential:
            params, rest, opt = jax.lax.map(lambda args: one(*args), (key_data, lr, wd))
        else:
            params, rest, opt = jax.vmap(one)(key_data, lr, wd)
        return initial_carry(params, rest, opt, stopped, max_epochs)

    return create, graphs


def shuffled_batches(key_data, train_idx, n_train, epoch, batch_size: int):
    """One model's minibatches of an epoch: its training rows in a fresh random order.

    Parameters
    ----------
    key_data : uint32 array
        The model's shuffle key (:func:`jaxenc.train.stack.model_key_data`, stream 1).
    train_idx : int array of shape (n_train_max,)
        Its training rows, padded; ``n_train_max`` a multiple of ``batch_size``.
    n_train : int scalar
        Real rows in ``train_idx``.
    epoch : int scalar
    batch_size : int

    Returns
    -------
    (int array, bool array), each of shape (n_train_max // batch_size, batch_size)
        Rows of each minibatch, and which of them are real (padding comes last, so only the
        last real minibatch is partial and the ones after it are empty).
    """
    # Per-position uniform draws (fold_in by position) are unchanged by extra padding, so a
    # padded subject shuffles its real rows exactly as an unpadded one.
    key = jax.random.fold_in(jax.random.wrap_key_data(key_data), epoch)
    pos = jnp.arange(train_idx.shape[0])
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(pos)
    order = jnp.argsort(jnp.where(pos < n_train, u, 2.0), stable=True)
    shape = (train_idx.shape[0] // batch_size, batch_size)  # [batch, row]
    return train_idx[order].reshape(shape), (pos < n_train).reshape(shape)


def train_step(graphdef, spec: ProgramSpec, data, state, rows, mask, active):
    """One model's AdamW step on one minibatch (the program scans it over the epoch's batches).

    Parameters
    ----------
    graphdef : nnx.GraphDef
    spec : ProgramSpec
    data : dict
        ``X``, ``Y`` and this model's per-model data.
    state : tuple
        ``(params, rest, opt)``: parameters, the other model state (BatchNorm statistics,
        dropout key and counter) and the AdamW state.
    rows : int array of shape (batch_size,)
        Rows of ``X[subj]`` and ``Y[tgt]``.
    mask : bool array of shape (batch_size,)
        Which rows are real; only they enter the loss and the BatchNorm statistics.
    active : bool scalar
        False for a stopped model: nothing changes.

    Returns
    -------
    (tuple, float scalar)
        The new state (unchanged for a batch of padding only or an inactive model) and the
        loss summed over the batch's real rows (0 when unchanged).
    """
    params, rest, opt = state
    with jax.named_scope("gather_rows"):
        x = data["X"][data["subj"], rows]  # [batch, feature]
        y = data["Y"][data["tgt"], rows]  # [batch, output]
    n = jnp.sum(mask)

    def loss_fn(params):
        # copy=True: the module's updates (BatchNorm statistics, dropout counters) must not
        # reach the Variables of ``rest``, which a masked step falls back to.
        model = nnx.merge(graphdef, params, rest, copy=True)
        pred = model(x, train=True, mask=mask)
        loss = _masked_loss_sum(pred, y, mask, spec.loss) / (jnp.maximum(n, 1) * y.shape[-1])
        return loss, nnx.split(model, nnx.Param, ...)[2]

    with jax.named_scope("forward_backward"):
        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    # A batch of padding only, or a stopped model: no update, no optimizer count, no dropout
    # key, no BatchNorm statistics.
    has = (n > 0) & active
    with jax.named_scope("adamw"):
        params, opt = _adamw.update(params, grads, opt, has)
        rest = _select(has, new_rest, rest)
    return (params, rest, opt), jnp.where(has, loss * n, 0.0)


def validation_loss(graphdef, spec: ProgramSpec, data, params, rest):
    """One model's loss on its validation rows, averaged over rows and outputs (evaluation mode)."""
    pos = jnp.arange(spec.n_val_max)
    n_chunks = spec.n_val_max // spec.val_chunk
    rows = data["val_idx"].reshape(n_chunks, spec.val_chunk)
    masks = (pos < data["n_val"]).reshape(n_chunks, spec.val_chunk)

    def body(acc, chunk):
        idx, mask = chunk
        pred = nnx.merge(graphdef, params, rest, copy=True)(data["X"][data["subj"], idx], train=False)
        return acc + _masked_loss_sum(pred, data["Y"][data["tgt"], idx], mask, spec.loss), None

    total, _ = lax.scan(body, jnp.zeros((), jnp.float32), (rows, masks))
    return total / (data["n_val"] * data["Y"].shape[-1])


def _epoch_function(graphdef, spec: ProgramSpec):
    """One model's epoch ``(carry, data, epoch) -> carry``: shuffle, steps, validation, stopping."""

    def train_epoch(c, data, epoch, active):
        def step(carry, batch):
            state, loss_sum = carry
            state, loss = train_step(graphdef, spec, data, state, *batch, active)
            return (state, loss_sum + loss), None

        with jax.named_scope("shuffle"):
            batches = shuffled_batches(data["key"], data["train_idx"], data["n_train"], epoch, spec.batch_size)
        init = ((c["params"], c["rest"], c["opt"]), jnp.zeros((), jnp.float32))
        ((params, rest, opt), loss_sum), _ = lax.scan(step, init, batches)
        return params, rest, opt, loss_sum / data["n_train"]

    def epoch_fn(c, data, epoch):
        active = ~c["stopped"] & (epoch < spec.max_epochs)
        params, rest, opt, train_loss = train_epoch(c, data, epoch, active)
        with jax.named_scope("validation"):
            val = validation_loss(graphdef, spec, data, params, rest)
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
                     axis: str | None = None, options: tuple = ()):
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
    options : tuple of (str, str)
        XLA compiler options (:func:`compiler_options`).

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

        with matmul.scope(spec.precision, key="train.precision"):
            return _chunk(carry, data, epochs)

    def _chunk(carry, data, epochs):
        def body(c, epoch):
            # Epochs where every model of the stack has stopped are skipped (a real branch: the
            # predicate is one value for the whole stack).
            training = jnp.any(~c["stopped"]) & (epoch < spec.max_epochs)
            return lax.cond(training, lambda c: epoch_all(c, data, epoch), lambda c: c, c), None

        carry, _ = lax.scan(body, carry, epochs)
        return carry

    jit = functools.partial(jax.jit, donate_argnums=0, compiler_options=dict(options) or None)
    if mesh is None:
        return jit(chunk), counter
    data_specs = {name: (P() if name in SHARED else P(axis)) for name in SHARED + PER_MODEL}
    sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(P(axis), data_specs, P()), out_specs=P(axis),
                            check_vma=False)
    return jit(sharded), counter
