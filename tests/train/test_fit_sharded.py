"""fit_encoders with the model axis split over 8 host devices against the unsharded run.

Each ``_check_*`` function runs in a child process with 8 CPU devices (tests/_sharded.py).
Two subjects x 3 folds x 1 grid point = 6 models, padded to 8 slots on the mesh: the padded
slots must be dropped and must not change the real models. The reference is the same data
trained without a mesh; per-device vmaps batch fewer models than the unsharded vmap, so the
float32 rounding differs as in tests/train/test_fit.py and the same tolerances apply
(1e-4 absolute on parameters, 1e-5 relative on losses).
"""

import functools

import numpy as np
import pytest

from jaxenc.errors import ConfigError
from tests._sharded import run_sharded

CFG = dict(n_folds=3, n_components=6, batch_size=32, val_batch_size=64, max_epochs=4, patience=4,
           learning_rate=3e-3, loss="mse", epochs_per_call=2, checkpoint_every=2)


def _subject(seed, n_stories, n_voxels, n_features=10, rows=(30, 50)):
    from jaxenc.train import SubjectData

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_features, n_voxels))
    feats, resps = {}, {}
    for s in range(n_stories):
        n = int(rng.integers(*rows))
        x = rng.standard_normal((n, n_features)).astype(np.float32)
        feats[f"story{s}"] = x
        resps[f"story{s}"] = (np.tanh(x) @ w + 0.5 * rng.standard_normal((n, n_voxels))).astype(np.float32)
    return SubjectData(feats, resps)


def _leaves(state):
    import jax

    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                       np.float64) for x in jax.tree.leaves(state)]


def _check_models_on_mesh():
    import jax

    from jaxenc.distributed import make_mesh
    from jaxenc.models.nonlinear import MLP
    from jaxenc.train import TrainConfig, fit_encoders

    make = functools.partial(MLP, hidden=16, dropout=0.1)
    data = {"A": _subject(0, 6, 20), "B": _subject(1, 7, 30, rows=(50, 70))}
    cfg = TrainConfig(**CFG)
    ref = fit_encoders(make, data, cfg, progress=False)
    mesh = make_mesh(("models",))
    seen = []
    fit = fit_encoders(make, data, cfg, progress=False, mesh=mesh, callback=lambda e, info: seen.append(info))
    assert fit.keys == ref.keys and len(fit.keys) == 6
    # The sharded program compiled once for all its calls.
    assert fit.n_traces == 1
    assert all(info["val_loss"].shape == (6,) for info in seen)
    for a, b in zip(_leaves(fit.best_state), _leaves(ref.best_state), strict=True):
        assert a.shape == b.shape and a.shape[0] == 6
        np.testing.assert_allclose(a, b, atol=1e-4)
    for a, b in zip(_leaves(fit.final_state), _leaves(ref.final_state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(fit.history, ref.history, rtol=1e-5)
    np.testing.assert_allclose(fit.best_val, ref.best_val, rtol=1e-5)
    np.testing.assert_array_equal(fit.best_epoch, ref.best_epoch)
    # Predictions: component outputs and fold-averaged voxels.
    rng = np.random.default_rng(5)
    test = {"A": rng.standard_normal((25, 10)).astype(np.float32),
            "B": rng.standard_normal((31, 10)).astype(np.float32)}
    np.testing.assert_allclose(fit.predict_components(test), ref.predict_components(test), atol=1e-4)
    for subject, pred in fit.predict(test).items():
        np.testing.assert_allclose(pred, ref.predict(test)[subject], atol=1e-4)
    # Kill after 2 of 4 epochs and resume from the sharded orbax checkpoint: same result.
    import tempfile

    class Stop(Exception):
        pass

    def stop_at_2(epoch, info):
        if epoch == 2:
            raise Stop

    with tempfile.TemporaryDirectory() as tmp:
        try:
            fit_encoders(make, data, cfg, progress=False, mesh=mesh, checkpoint_dir=tmp, callback=stop_at_2)
        except Stop:
            pass
        resumed = fit_encoders(make, data, cfg, progress=False, mesh=mesh, checkpoint_dir=tmp)
    for a, b in zip(_leaves(resumed.best_state), _leaves(fit.best_state), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.history, fit.history)
    # On a 2-D mesh, models split along one axis only (4 slots of 2 devices each).
    mesh2 = make_mesh(("models", "other"), (4, 2))
    fit2 = fit_encoders(make, data, cfg, progress=False, mesh=mesh2)
    for a, b in zip(_leaves(fit2.best_state), _leaves(ref.best_state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert jax.device_count() == 8


def _check_repacked_on_mesh():
    import jax
    from jax.sharding import AxisType

    from jaxenc.distributed import make_mesh
    from jaxenc.models.nonlinear import MLP
    from jaxenc.train import SubjectData, TrainConfig, loop
    from jaxenc.train.config import resolve_grid
    from jaxenc.train.fit import train_stack
    from jaxenc.train.stack import stack_subjects

    # Pure noise and a large step (as tests/train/test_loop.py): each model's validation loss
    # turns up at its own epoch, so once 8 of the 16 models have stopped the stack is re-packed
    # into 8 slots, one per device: a gather and a scatter of the device-split stack.
    def noise(seed):
        rng = np.random.default_rng(seed)
        return SubjectData({f"s{i}": rng.standard_normal((40, 10)).astype(np.float32) for i in range(8)},
                           {f"s{i}": rng.standard_normal((40, 12)).astype(np.float32) for i in range(8)})

    cfg = TrainConfig(n_folds=4, n_components=None, batch_size=16, val_batch_size=64, max_epochs=40, patience=2,
                      learning_rate=3e-2, loss="mse", epochs_per_call=2, checkpoint_every=2)
    make = functools.partial(MLP, hidden=11, dropout=0.1)
    takes = []
    jit_take = loop._jit_take

    def counted(sharding):
        take = jit_take(sharding)
        return lambda tree, idx: (takes.append(len(idx)), take(tree, idx))[1]

    loop._jit_take = counted
    # Explicit axes (jaxenc's meshes), where JAX cannot infer the gather's sharding, and Auto.
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = make_mesh(("models",), axis_types=(axis_type,))
        stack = stack_subjects({"N": noise(3), "M": noise(4)}, cfg, resolve_grid([{}, {"weight_decay": 0.3}], cfg),
                               mesh=mesh)
        takes.clear()
        repacked = train_stack(make, stack, cfg, progress=False, mesh=mesh)
        assert takes and set(takes) == {8}, (axis_type, takes)
        full = train_stack(make, stack, cfg, progress=False, mesh=mesh, repack=False)
        np.testing.assert_array_equal(repacked.stop_epoch, full.stop_epoch)
        np.testing.assert_array_equal(repacked.best_epoch, full.best_epoch)
        assert len(set(repacked.stop_epoch.tolist())) > 1
        # Float32 rounding of the losses, reduced in an order XLA picks by stack size.
        for a, b in zip(_leaves((repacked.best_state, repacked.final_state)),
                        _leaves((full.best_state, full.final_state)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(repacked.history, full.history, rtol=1e-5)
    assert jax.device_count() == 8


def _check_gru_initialised_on_mesh():
    from jaxenc.distributed import make_mesh
    from jaxenc.models.nonlinear import DelayGRU
    from jaxenc.train import TrainConfig
    from jaxenc.train._placement import place
    from jaxenc.train.config import resolve_grid
    from jaxenc.train.program import stack_initializer
    from jaxenc.train.stack import stack_subjects

    # 2 subjects x 4 folds x 2 grid points = 16 GRUs of 256 units, 2 on each of the 8 devices:
    # batched there, the orthogonal initialisation of their 256 x 768 recurrent kernels never
    # returned on XLA:CPU; one model at a time on each device it does, with the one-device values.
    cfg = TrainConfig(**{**CFG, "n_folds": 4, "n_components": None, "max_epochs": 2})
    data = {"A": _subject(0, 4, 12, n_features=16), "B": _subject(1, 4, 12, n_features=16)}
    points = resolve_grid([{}, {"weight_decay": 0.3}], cfg)
    create, _ = stack_initializer(functools.partial(DelayGRU, n_delays=4, hidden=256), 16, 12, cfg.max_epochs)
    mesh = make_mesh(("models",))
    _, on_mesh = place(create, stack_subjects(data, cfg, points, mesh=mesh), mesh, "models")
    _, on_one = place(create, stack_subjects(data, cfg, points), None, "models")
    for a, b in zip(_leaves(on_mesh), _leaves(on_one), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_gru_stack_of_two_models_per_device_initialises_as_on_one_device():
    run_sharded(__file__, "_check_gru_initialised_on_mesh", timeout=120)


def test_a_stack_repacked_on_the_mesh_equals_the_full_stack():
    run_sharded(__file__, "_check_repacked_on_mesh", timeout=300)


@pytest.mark.slow
def test_models_on_mesh_equal_unsharded():
    run_sharded(__file__, "_check_models_on_mesh", timeout=240)


def test_mesh_errors():
    from jaxenc.distributed import make_mesh
    from jaxenc.models.nonlinear import MLP
    from jaxenc.train import TrainConfig, fit_encoders

    data = {"A": _subject(0, 4, 12)}
    make = functools.partial(MLP, hidden=4)
    cfg = TrainConfig(**{**CFG, "max_epochs": 2})
    mesh = make_mesh(("models",))
    with pytest.raises(ConfigError, match="not 'folds'"):
        fit_encoders(make, data, cfg, progress=False, mesh=mesh, axis="folds")
    with pytest.raises(ConfigError, match="vectorize=True"):
        fit_encoders(make, data, cfg, progress=False, mesh=mesh, vectorize=False)
