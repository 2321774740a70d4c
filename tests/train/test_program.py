"""The compiled training program alone: its AdamW against optax, and one model's epochs against
a plain optax + flax training loop written here, fed the same minibatches.

The reference loop trains on the real rows of each minibatch only (no padding, no masks), so
it checks the program's row gathering, the masks of partial and empty minibatches (loss,
BatchNorm statistics, no update), the loss normalisation, the validation loss and AdamW.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxenc.models.nonlinear import MLP
from jaxenc.train import TrainConfig, _adamw
from jaxenc.train._placement import place
from jaxenc.train.config import resolve_grid
from jaxenc.train.program import ProgramSpec, compiled_program, shuffled_batches, stack_initializer
from jaxenc.train.stack import SubjectData, stack_subjects


def test_adamw_equals_optax_and_a_masked_step_changes_nothing():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(3), jnp.float32)}
    lr, wd = jnp.float32(3e-3), jnp.float32(0.1)
    tx = optax.adamw(lr, weight_decay=wd)
    ref, ref_state = params, tx.init(params)
    ours, state = params, _adamw.init(params, lr, wd)
    update = jax.jit(_adamw.update)
    for step in range(6):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        apply = step != 3
        new, new_state = update(ours, grads, state, jnp.asarray(apply))
        if apply:
            u, ref_state = tx.update(grads, ref_state, ref)
            ref = optax.apply_updates(ref, u)
        else:
            for a, b in zip(jax.tree.leaves((new, new_state)), jax.tree.leaves((ours, state)), strict=True):
                np.testing.assert_array_equal(a, b)
        ours, state = new, new_state
        # Same operations in the same order as optax: equal to the bit.
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
            np.testing.assert_array_equal(a, b)
    assert int(state["count"]) == int(ref_state[0].count) == 5


def _subject(seed, n_stories=5, n_features=6, n_voxels=4):
    rng = np.random.default_rng(seed)
    f = {f"s{i}": rng.standard_normal((int(rng.integers(25, 45)), n_features)).astype(np.float32)
         for i in range(n_stories)}
    w = rng.standard_normal((n_features, n_voxels))
    r = {k: (np.tanh(x) @ w + 0.3 * rng.standard_normal((len(x), n_voxels))).astype(np.float32) for k, x in f.items()}
    return SubjectData(f, r)


@pytest.mark.slow
def test_one_model_epochs_equal_a_plain_optax_loop():
    # Dropout off, so the model is deterministic given the minibatches; BatchNorm on.
    make = functools.partial(MLP, hidden=8, dropout=0.0)
    cfg = TrainConfig(n_folds=3, n_components=None, batch_size=16, val_batch_size=32, max_epochs=3, patience=5,
                      learning_rate=1e-2, weight_decay=0.05, loss="mae", epochs_per_call=3)
    # Two subjects: the first one's models carry padded rows and an empty last minibatch.
    stack = stack_subjects({"A": _subject(0), "B": _subject(1, n_stories=7)}, cfg, resolve_grid(None, cfg))
    create, graphs = stack_initializer(make, stack.n_features, stack.n_outputs, cfg.max_epochs)
    data, carry = place(create, stack, None, "models")
    spec = ProgramSpec.of(cfg, stack)
    program, _ = compiled_program(graphs[-1], spec, False)
    m = 1  # subject A, fold 1
    assert stack.per_model["n_train"][m] < stack.n_train_max - cfg.batch_size, "an empty minibatch is exercised"
    one = jax.tree.map(lambda a: a[m], carry)
    d = {k: (v if k in ("X", "Y") else v[m]) for k, v in data.items()}
    got = program(one, d, jnp.arange(cfg.max_epochs, dtype=jnp.int32))

    # Reference: the same initial model, trained on the real rows of the same minibatches.
    model = nnx.merge(graphs[-1], jax.tree.map(lambda a: a[m], carry["params"]),
                      jax.tree.map(lambda a: a[m], carry["rest"]))
    tx = optax.adamw(jnp.float32(cfg.learning_rate), weight_decay=jnp.float32(cfg.weight_decay))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    X = np.asarray(stack.shared["X"][stack.per_model["subj"][m]])
    Y = np.asarray(stack.shared["Y"][stack.per_model["tgt"][m]])
    val_rows = stack.per_model["val_idx"][m, : stack.per_model["n_val"][m]]

    @nnx.jit
    def step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda model: jnp.mean(jnp.abs(model(x, train=True) - y)))(model)
        opt.update(model, grads)
        return loss

    history = []
    for epoch in range(cfg.max_epochs):
        rows, masks = map(np.asarray, shuffled_batches(stack.per_model["key"][m], stack.per_model["train_idx"][m],
                                                       stack.per_model["n_train"][m], epoch, cfg.batch_size))
        total = 0.0
        for r, mask in zip(rows, masks, strict=True):
            if mask.any():
                total += float(step(model, opt, jnp.asarray(X[r[mask]]), jnp.asarray(Y[r[mask]]))) * mask.sum()
        val = float(np.mean(np.abs(np.asarray(model(jnp.asarray(X[val_rows]))) - Y[val_rows])))
        history.append((total / stack.per_model["n_train"][m], val))
    np.testing.assert_allclose(np.asarray(got["history"]), np.asarray(history), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(nnx.state(model, nnx.Param)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    for a, b in zip(stats, jax.tree.leaves(got["rest"]["hidden"]["norm"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
