"""The chunk loop alone: re-packing the models still training into smaller stacks changes no
result beyond float32 rounding and compiles once per stack size; a run killed while re-packed
resumes exactly."""

import functools

import jax
import numpy as np
import pytest

from jaxenc.models.nonlinear import MLP
from jaxenc.train import SubjectData, TrainConfig
from jaxenc.train.config import resolve_grid
from jaxenc.train.fit import train_stack
from jaxenc.train.loop import stack_sizes
from jaxenc.train.stack import stack_subjects

# A hidden size no other test uses: this module's compiled programs, and their trace counts,
# are its own.
MAKE = functools.partial(MLP, hidden=11, dropout=0.1)
CFG = TrainConfig(n_folds=4, n_components=None, batch_size=16, val_batch_size=64, max_epochs=40, patience=2,
                  learning_rate=3e-2, loss="mse", epochs_per_call=2, checkpoint_every=2)


def _noise(seed):
    # Pure-noise responses and a large step: each model's validation loss turns up after a
    # few epochs, at a different epoch per model.
    rng = np.random.default_rng(seed)
    return SubjectData({f"s{i}": rng.standard_normal((40, 10)).astype(np.float32) for i in range(8)},
                       {f"s{i}": rng.standard_normal((40, 12)).astype(np.float32) for i in range(8)})


STACK = stack_subjects({"N": _noise(3), "M": _noise(4)}, CFG, resolve_grid([{}, {"weight_decay": 0.3}], CFG))


def _leaves(state):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree.leaves(state)]


def _assert_same(a, b, rtol=0.0):
    # rtol: float32 rounding of the losses, reduced in an order XLA picks by stack size.
    for x, y in zip(_leaves((a.best_state, a.final_state)), _leaves((b.best_state, b.final_state)), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.history, b.history, rtol=rtol)
    np.testing.assert_array_equal(a.stop_epoch, b.stop_epoch)
    np.testing.assert_array_equal(a.best_epoch, b.best_epoch)


@pytest.fixture(scope="module")
def repacked():
    return train_stack(MAKE, STACK, CFG, progress=False)


def test_stack_sizes():
    assert stack_sizes(16) == (1, 2, 4, 8, 16)
    assert stack_sizes(15) == (1, 2, 4, 8, 15)
    assert stack_sizes(24, unit=8) == (8, 16, 24)
    assert stack_sizes(1) == (1,)


def test_repacked_run_equals_the_full_stack_and_compiles_once_per_size(repacked):
    n = len(STACK.keys)
    stops = repacked.stop_epoch
    assert n == 16 and (stops >= 0).all() and len(set(stops.tolist())) > 2, "models stop at different epochs"
    # Sizes the loop ran at: the smallest bucket holding the models still training at the start
    # of each chunk of 2 epochs.
    sizes = {min(s for s in stack_sizes(n) if s >= int((stops >= e).sum())) for e in range(0, stops.max() + 1, 2)}
    assert len(sizes) > 1, "the stack was re-packed"
    assert repacked.n_traces == len(sizes) <= len(stack_sizes(n))
    full = train_stack(MAKE, STACK, CFG, progress=False, repack=False)
    # Each model computes what it computes in the full stack; losses and parameters within
    # float32 rounding (about 2e-7 seen), the same stopping and best epochs.
    _assert_same(repacked, full, rtol=1e-5)
    assert full.n_traces == repacked.n_traces, "the full stack's size was compiled by the first run"


class _Killed(Exception):
    pass


def test_kill_while_repacked_and_resume(repacked, tmp_path):
    # Killed after epoch 6, when some models have stopped and the stack is smaller.
    def kill(epoch, info):
        if epoch == 6:
            assert info["stopped"].any() and info["val_loss"].shape == (len(STACK.keys),)
            raise _Killed

    with pytest.raises(_Killed):
        train_stack(MAKE, STACK, CFG, progress=False, checkpoint_dir=tmp_path, callback=kill)
    resumed = train_stack(MAKE, STACK, CFG, progress=False, checkpoint_dir=tmp_path)
    _assert_same(resumed, repacked)
