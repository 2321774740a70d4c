"""The one job runner on a mesh: ``fit_predict(..., mesh=)`` on 8 (and 4) host devices against one device.

Each ``_check_*`` function runs in a child process with 8 CPU devices (tests/_sharded.py). Two
subjects of 37 voxels (not a multiple of 8: the last voxel shard is padded), 6 stories of 40
rows, 16 features in two bands. Tolerances, per family:

- ridge and banded ridge on voxels: ``ridge_atols(..., computations=2)["predict"]`` of
  tests/_tolerance.py per voxel (two float32 solutions, the sharded and the unsharded one, of
  the same well-conditioned problem at each voxel's chosen penalty; banded ridge on the
  features rescaled by the voxel's chosen band weights). The chosen penalties must be equal: a
  wrong voxel block or padding column moves a prediction by O(1).
- ridge on PCA targets: the same bound on the component scores, plus the turn of the top-k
  subspace between the two float32 PCAs (``pca_bounds(..., computations=2)["angle"]``) times the
  largest norm of a centred training row and of a predicted score row, as ``projection_atol``.
  On a mesh the PCAs (ridge's per subject, the networks' per fold) are fitted voxel-sharded.
- networks (MLLinear, MLP, DIMLP): a few epochs of AdamW whose per-device vmaps batch fewer
  models than the one-device vmap, so the float32 rounding differs as in
  tests/train/test_fit_sharded.py, whose bound applies: 1e-4 absolute on the predictions (unit
  scale responses), against O(0.1) for a model given the wrong fold or subject.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from tests._sharded import run_sharded

N_VOXELS = 37
NETWORK_ATOL = 1e-4


def _subject(seed: int, n_stories: int = 6, rows: int = 40, n_features: int = 16):
    from jaxenc.pipeline import SubjectArrays

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_stories * rows, n_features)).astype(np.float32)
    W = rng.standard_normal((n_features, N_VOXELS))
    Y = (np.tanh(X) @ W + rng.standard_normal((len(X), N_VOXELS))).astype(np.float32)
    groups = np.repeat([f"story{i}" for i in range(n_stories)], rows)
    X_test = rng.standard_normal((30, n_features)).astype(np.float32)
    half = n_features // 2
    return SubjectArrays(X, Y, groups, X_test, ((0, half), (half, n_features)), n_delays=4)


def _data():
    return {"A": _subject(0), "B": _subject(1)}


def _train(**changes):
    from jaxenc.train import TrainConfig

    settings = dict(n_components=6, n_folds=3, max_epochs=3, batch_size=32, val_batch_size=64,
                    epochs_per_call=3, checkpoint_every=3)
    return TrainConfig(**(settings | changes))


def _ridge_bound(arrays, Y, options, X_test=None):
    """Per-column prediction bound of two float32 ridge solutions (see the module docstring),
    with the one-device estimator's coefficients and penalties as the reference."""
    from tests._tolerance import ridge_atols

    model = options.estimator(arrays.bands, seed=0).fit(arrays.X, Y, groups=arrays.groups)
    X_test = arrays.X_test if X_test is None else X_test
    if not options.banded:
        return ridge_atols(arrays.X, Y, model.coef_, model.best_alphas_, computations=2, X_test=X_test)["predict"]
    owner = np.concatenate([np.full(b - a, i) for i, (a, b) in enumerate(arrays.bands)])
    bounds = []
    for v in range(Y.shape[1]):
        scale = np.sqrt(model.candidates_[model.best_candidates_[v]][owner])
        coef = np.where(scale > 0, model.coef_[:, v] / np.where(scale > 0, scale, 1), 0)
        bounds.append(ridge_atols(arrays.X * scale, Y[:, v:v + 1], coef[:, None], [model.best_alphas_[v]],
                                  computations=2, X_test=X_test * scale)["predict"][0])
    return np.asarray(bounds)


def _pca_ridge_bound(arrays, options, k):
    """Ridge on PCA scores: the scores' bound plus the subspace turn (module docstring)."""
    from jaxenc.decomp import PCA
    from tests._tolerance import pca_bounds, rounding_bound

    Y = np.asarray(arrays.Y, np.float64)
    pca = PCA(k).fit(arrays.Y)
    Z = np.asarray(pca.transform(arrays.Y))
    scores = _ridge_bound(arrays, Z, options)
    predicted = options.estimator(arrays.bands).fit(arrays.X, Z, groups=arrays.groups).predict(arrays.X_test)
    bounds = pca_bounds(Y, k, computations=2)
    rows = max(np.linalg.norm(Y - Y.mean(0), axis=1).max(), np.linalg.norm(predicted, axis=1).max())
    return float(np.linalg.norm(scores)) + (bounds["angle"] + rounding_bound([N_VOXELS, k, 1] * 2)) * rows * 2


def _check_equal_to_one_device():
    import jax

    from jaxenc.decomp.sharded import ShardedPCAState
    from jaxenc.distributed import RUN_AXIS, run_mesh, to_host
    from jaxenc.models import RidgeOptions, ShardedBandedRidgeCV, ShardedRidgeCV
    from jaxenc.pipeline import fit_predict
    from tests._tolerance import assert_within

    train_fit = importlib.import_module("jaxenc.train.fit")

    mesh = run_mesh(0)
    assert mesh is not None and mesh.shape == {RUN_AXIS: 8} and run_mesh(1) is None
    data, train = _data(), _train()
    seen = []

    # Record what the sharded fits hold on the devices, not only what they return.
    def recording(cls):
        fit = cls.fit

        def wrapped(self, X, Y, groups=None):
            out = fit(self, X, Y, groups)
            seen.append((cls.__name__, self.coef_.sharding, [s.data.shape for s in self.coef_.addressable_shards]))
            return out

        return wrapped

    ShardedRidgeCV.fit = recording(ShardedRidgeCV)
    ShardedBandedRidgeCV.fit = recording(ShardedBandedRidgeCV)
    sharded_pca = importlib.import_module("jaxenc.decomp.sharded")
    fit_pca = sharded_pca.pca_fit_sharded

    methods = []

    def pca_recording(*args, **kwargs):
        methods.append(kwargs.get("method", "exact"))
        state = fit_pca(*args, **kwargs)
        seen.append(("pca", state.components.sharding, [s.data.shape for s in state.components.addressable_shards]))
        assert isinstance(state, ShardedPCAState)
        return state

    sharded_pca.pca_fit_sharded = pca_recording
    run_chunks = train_fit.run_chunks

    def chunks_recording(program, carry, *args, **kwargs):
        out = run_chunks(program, carry, *args, **kwargs)
        leaf = jax.tree.leaves(out["params"])[0]
        seen.append(("params", leaf.sharding, [s.data.shape for s in leaf.addressable_shards]))
        return out

    train_fit.run_chunks = chunks_recording

    for banded in (False, True):
        options = RidgeOptions(banded=banded, folds=3, band_candidates=3)
        for target in ("voxels", "pca"):
            seen.clear()
            one = fit_predict("ridge", data, target=target, ridge=options, train=train)
            many = fit_predict("ridge", data, target=target, ridge=options, train=train, mesh=mesh)
            assert one.info["median_alpha"] == many.info["median_alpha"]
            for subject, arrays in data.items():
                bound = (_ridge_bound(arrays, arrays.Y, options) if target == "voxels"
                         else _pca_ridge_bound(arrays, options, train.n_components))
                assert_within(many.predictions[subject], one.predictions[subject], atol=bound,
                              err_msg=f"{'banded ' if banded else ''}ridge {target} {subject}")
            # Coefficients voxel-sharded over 8 devices: 37 voxels (or 6 components) padded.
            name = "ShardedBandedRidgeCV" if banded else "ShardedRidgeCV"
            ridge = [s for s in seen if s[0] == name]
            assert len(ridge) == 2
            for _, sharding, shapes in ridge:
                assert sharding.spec == jax.sharding.PartitionSpec(None, RUN_AXIS)
                assert len(shapes) == 8 and len({s for s in shapes}) == 1 and shapes[0][0] == 16
            if banded and target == "voxels":
                # Each device's block searched the same candidates: the same choice per voxel.
                arrays = data["A"]
                whole = options.estimator(arrays.bands).fit(arrays.X, arrays.Y, groups=arrays.groups)
                split = options.estimator(arrays.bands, mesh=mesh).fit(arrays.X, arrays.Y, groups=arrays.groups)
                np.testing.assert_array_equal(split.candidates_, whole.candidates_)
                for name in ("best_candidates_", "best_alphas_", "band_alphas_"):
                    np.testing.assert_array_equal(to_host(getattr(split, name))[..., :N_VOXELS], getattr(whole, name))
                assert np.all(to_host(split.best_candidates_)[N_VOXELS:] == -1)
            if target == "pca":
                # Fitted once per subject, components (6, 40) split into 8 blocks of 5 voxels.
                pcas = [s for s in seen if s[0] == "pca"]
                assert len(pcas) == 2 and all(shapes == [(6, 5)] * 8 for _, _, shapes in pcas)
                assert all(sharding.spec == jax.sharding.PartitionSpec(None, RUN_AXIS) for _, sharding, _ in pcas)

    for model, target in (("mllinear", "voxels"), ("mllinear", "pca"), ("mlp", "voxels"), ("mlp", "pca"),
                          ("dimlp", "voxels"), ("dimlp", "pca")):
        seen.clear()
        one = fit_predict(model, data, target=target, train=train)
        many = fit_predict(model, data, target=target, train=train, mesh=mesh)
        assert one.info["best_epoch"] == many.info["best_epoch"], model
        for subject in data:
            assert_within(many.predictions[subject], one.predictions[subject], atol=NETWORK_ATOL,
                          err_msg=f"{model} {target} {subject}")
        # 2 subjects x 3 folds = 6 models padded to 8 slots, one per device (the second
        # record: the first is the one-device run's).
        _, sharding, shapes = [s for s in seen if s[0] == "params"][1]
        assert sharding.spec[0] == RUN_AXIS and len(shapes) == 8 and all(s[0] == 1 for s in shapes)
        # PCA targets: each fold's PCA fitted voxel-sharded (6 components of 37 voxels in 8
        # blocks of 5), only on the mesh.
        pcas = [shapes for name, _, shapes in seen if name == "pca"]
        assert pcas == ([[(6, 5)] * 8] * 6 if target == "pca" else []), model

    # The randomized solver is sharded too: the same test matrix on both sides, so ridge's
    # subject PCA and the MLP's fold PCAs differ from one device's by rounding alone (5 voxels
    # a shard, fewer than its 16 sketch columns).
    randomized = dataclasses.replace(train, pca_method="randomized")
    for model in ("ridge", "mlp"):
        seen.clear(), methods.clear()
        one = fit_predict(model, data, target="pca", ridge=RidgeOptions(folds=3), train=randomized)
        many = fit_predict(model, data, target="pca", ridge=RidgeOptions(folds=3), train=randomized, mesh=mesh)
        for subject, arrays in data.items():
            bound = (_pca_ridge_bound(arrays, RidgeOptions(folds=3), train.n_components) if model == "ridge"
                     else NETWORK_ATOL)
            assert_within(many.predictions[subject], one.predictions[subject], atol=bound,
                          err_msg=f"{model} randomized pca {subject}")
        pcas = [shapes for name, _, shapes in seen if name == "pca"]
        assert pcas == [[(6, 5)] * 8] * (2 if model == "ridge" else 6) and set(methods) == {"randomized"}, model


def _check_responses_read_straight_into_voxel_shards():
    """Ridge on voxels on a mesh: the responses go from the twin's story files into the voxel
    shards (the stacking called only with the mesh, the sharded ridge handed those very shards,
    never a host Y to copy), each shard equal to its columns of the stories' numpy
    concatenation; the predictions those of one device within the ridge bound of the module
    docstring, the chosen penalties equal. A Designs holds one form of a subject's responses."""
    import tempfile

    import jax
    from jax.sharding import PartitionSpec as P

    from jaxenc.data import LeBelDataset
    from jaxenc.distributed import RUN_AXIS, run_mesh, shard_columns
    from jaxenc.errors import ConfigError, NonFiniteError
    from jaxenc.featuresets import AUDIO, SEMANTIC
    from jaxenc.models import RidgeOptions, ShardedBandedRidgeCV, ShardedRidgeCV
    from jaxenc.pipeline import Designs, fit_predict, planted_features, response_mesh
    from jaxenc.stream import VoxelShards
    from jaxenc.synthetic import SyntheticConfig, write_synthetic
    from tests._tolerance import assert_within

    designs_module = importlib.import_module("jaxenc.pipeline.designs")
    ridge_sharded = importlib.import_module("jaxenc.models.ridge_sharded")

    root = tempfile.mkdtemp()
    # 37 voxels: the last of the 8 voxel shards is padded.
    truth = write_synthetic(root, SyntheticConfig.tiny(subjects=("UTS01",), n_voxels=(N_VOXELS,), n_repeats=(2,),
                                                       n_train_stories=6, fewer_stories=()), progress=False)
    dataset, subject = LeBelDataset(root), "UTS01"
    train = dataset.stories(subject)
    features = planted_features(truth, [*train, dataset.test_story])
    designs = Designs(dataset, features.__getitem__, {subject: train})
    mesh = run_mesh(0)
    assert response_mesh("ridge", "voxels", mesh) is mesh
    assert response_mesh("ridge", "pca", mesh) is None and response_mesh("mlp", "voxels", mesh) is None

    stacked = []
    stack = designs_module.stack_story_rows

    def stack_spy(*args, mesh=None, **kwargs):
        stacked.append(mesh)
        return stack(*args, mesh=mesh, **kwargs)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("the sharded ridge copied a host Y into the shards")

    handed = []
    fits = {cls: cls.fit for cls in (ShardedRidgeCV, ShardedBandedRidgeCV)}

    def fit_spy(cls):
        def fit(self, X, Y, groups=None):
            handed.append(Y)
            return fits[cls](self, X, Y, groups)

        return fit

    designs_module.stack_story_rows = stack_spy
    ridge_sharded.shard_columns = no_host_copy
    for cls in fits:
        cls.fit = fit_spy(cls)
    sources = [AUDIO, SEMANTIC]
    on_mesh = designs.arrays(sources, subject, mesh=mesh)
    assert stacked == [mesh]
    Y = on_mesh.Y
    assert isinstance(Y, VoxelShards) and Y.shape == (on_mesh.X.shape[0], N_VOXELS)
    assert Y.array.sharding.spec == P(None, RUN_AXIS) and Y.array.shape[1] == 40
    reference = np.concatenate([dataset.responses(subject, story) for story in train])
    reference = np.pad(reference, ((0, 0), (0, 40 - N_VOXELS)))
    shards = Y.array.addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(reference.shape[0], 5)}
    for shard in shards:
        np.testing.assert_array_equal(np.asarray(shard.data), reference[shard.index])
    assert designs.arrays(sources, subject, mesh=mesh).Y is Y and stacked == [mesh]  # read once

    results = {}
    for banded in (False, True):
        options = RidgeOptions(banded=banded, folds=3, band_candidates=3)
        handed.clear()
        results[banded] = fit_predict("ridge", {subject: on_mesh}, ridge=options, mesh=mesh)
        assert len(handed) == 1 and handed[0] is Y
    ridge_sharded.shard_columns = shard_columns
    # The other form: the shards dropped, the stories read again onto the host.
    on_host = designs.arrays(sources, subject)
    assert stacked == [mesh, None] and list(designs._responses[subject][:1]) == [None]
    np.testing.assert_array_equal(on_host.Y, reference[:, :N_VOXELS])
    for banded, many in results.items():
        options = RidgeOptions(banded=banded, folds=3, band_candidates=3)
        one = fit_predict("ridge", {subject: on_host}, ridge=options)
        assert one.info["median_alpha"] == many.info["median_alpha"]
        assert_within(many.predictions[subject], one.predictions[subject],
                      atol=_ridge_bound(on_host, on_host.Y, options), err_msg=f"banded={banded}")
    # A VoxelShards handed to a job that takes host responses is gathered first.
    pca = fit_predict("ridge", {subject: on_mesh}, target="pca", train=_train(), mesh=mesh)
    assert pca.predictions[subject].shape == (on_host.X_test.shape[0], N_VOXELS)

    # Responses that are not voxel-sharded on the estimator's mesh, or hold NaN, are refused.
    ridge = ShardedRidgeCV(mesh, RUN_AXIS, cv=3)
    replicated = VoxelShards(jax.device_put(Y.array, jax.sharding.NamedSharding(mesh, P())), N_VOXELS)
    try:
        ridge.fit(on_host.X, replicated, on_host.groups)
        raise AssertionError("a replicated Y was taken")
    except ConfigError as err:
        assert "split along the axis" in str(err)
    bad = reference[:, :N_VOXELS].copy()
    bad[7, 33] = np.nan
    try:
        ridge.fit(on_host.X, VoxelShards(shard_columns(bad, mesh, RUN_AXIS), N_VOXELS), on_host.groups)
        raise AssertionError("NaN in Y was taken")
    except NonFiniteError as err:
        assert "row 7, column 33" in str(err)


def _check_stack_sizes_that_do_not_divide():
    import jax

    from jaxenc.distributed import run_mesh
    from jaxenc.pipeline import fit_predict
    from tests._tolerance import assert_within

    train_fit = importlib.import_module("jaxenc.train.fit")
    slots = []
    run_chunks = train_fit.run_chunks

    def recording(program, carry, *args, **kwargs):
        slots.append([s.data.shape[0] for s in jax.tree.leaves(carry["params"])[0].addressable_shards])
        return run_chunks(program, carry, *args, **kwargs)

    train_fit.run_chunks = recording
    # 3 subjects x 5 folds = 15 models on 4 devices: 16 slots, 4 per device, none dropped.
    data = {s: _subject(seed, n_stories=5) for seed, s in enumerate(("A", "B", "C"))}
    train = _train(n_folds=5, max_epochs=2, epochs_per_call=2, checkpoint_every=2)
    four = run_mesh(4)
    assert four.devices.size == 4
    one = fit_predict("mlp", data, target="pca", train=train)
    many = fit_predict("mlp", data, target="pca", train=train, mesh=four)
    assert slots[-1] == [4, 4, 4, 4]
    assert {s: len(v) for s, v in many.info["best_epoch"].items()} == {"A": 5, "B": 5, "C": 5}
    for subject in data:
        assert_within(many.predictions[subject], one.predictions[subject], atol=NETWORK_ATOL, err_msg=subject)
    # More devices than models: 1 subject x 2 folds on 8 devices, 6 padding slots.
    data = {"A": _subject(3, n_stories=4)}
    train = _train(n_folds=2, max_epochs=2, epochs_per_call=2, checkpoint_every=2)
    one = fit_predict("mlp", data, target="voxels", train=train)
    many = fit_predict("mlp", data, target="voxels", train=train, mesh=run_mesh(0))
    assert slots[-1] == [1] * 8 and many.info["best_epoch"] == one.info["best_epoch"]
    assert_within(many.predictions["A"], one.predictions["A"], atol=NETWORK_ATOL, err_msg="2 models on 8 devices")


def test_fit_predict_on_8_devices_equals_one_device_and_really_shards():
    run_sharded(__file__, "_check_equal_to_one_device", timeout=600)


def test_ridge_responses_are_read_straight_into_their_voxel_shards():
    run_sharded(__file__, "_check_responses_read_straight_into_voxel_shards", timeout=300)


def test_stacks_that_do_not_divide_the_devices_are_padded():
    run_sharded(__file__, "_check_stack_sizes_that_do_not_divide", timeout=300)


def test_run_mesh_on_one_device_is_none_and_refuses_more_devices_than_there_are():
    import pytest

    from jaxenc.distributed import describe_mesh, run_mesh
    from jaxenc.errors import ConfigError

    assert run_mesh(0) is None and run_mesh(1) is None
    assert describe_mesh(None) == "1 device (1 process)"
    with pytest.raises(ConfigError, match="run.devices = 2, but there are 1 devices"):
        run_mesh(2)
    with pytest.raises(ConfigError, match="at least 0"):
        run_mesh(-1)
