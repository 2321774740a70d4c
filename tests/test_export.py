"""Every compiled program of jaxenc exported for CUDA and TPU with :mod:`jax.export`.

The CPU cannot show what fails to lower on an accelerator, so each program is lowered here for
``"cuda"`` and ``"tpu"`` at tiny shapes (lowering only: nothing is compiled or run for those
platforms): the training program (vectorised, one model at a time, and on a mesh) and the
predictor for every network family, every ridge route (per split and held-out fold, primal and
dual, banded, voxel-sharded; fit and predict), the PCA solvers (each method, the voxel- and
row-sharded fits, transform and inverse), the Whisper and LLaMA forwards in float32 and
bfloat16 including the windowed paths that extraction runs (``frames_at`` and the word
gather), the alignment steps, and scoring. TPUs have no float64, so each TPU export is checked to hold no ``f64``
type in its module text. Ridge's float64 route is exported for CUDA only; on TPU
``solver_dtype="auto"`` resolves to float32, whose programs are exported in the scope the
estimators run them in (:func:`~jaxenc.models.ridge_solvers.solver_scope`: float64 disabled)
and, traced with float64 *enabled*, are shown to hold no float64 value of their own: no
strongly typed float64 value in the jaxpr (weakly typed Python scalars such as the ``1.0`` of a
``jnp.where`` take the dtype of the array they meet). The jaxpr, not the module, because JAX's
TPU lowering of ``svd`` itself adds a float64 constant when x64 is on, which is why the float32
route runs with it off.

The ridge programs are found by fitting the estimators at tiny shapes with their compiled
kernels replaced by recorders that keep the exact arguments (abstract shapes, static options)
and answer zeros of the right shapes, so no kernel runs either.
"""

from __future__ import annotations

import functools
import re
import types
import warnings

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from jaxenc import distributed
from jaxenc.decomp import pca as pca_module
from jaxenc.decomp import sharded as pca_sharded
from jaxenc.distributed import make_mesh
from jaxenc.models import BandedRidgeCV, NetworkOptions, RidgeCV, encoder, ridge_lfo, ridge_sharded, ridge_solvers

PLATFORMS = ("cuda", "tpu")
# A float64 type anywhere in a module: tensor<...xf64>, a scalar f64, a complex<f64>.
F64 = re.compile(r"(?<![0-9a-z_])f64\b|xf64\b")


# ---------------------------------------------------------------------------------- helpers


def _abstract(tree):
    """Arrays as ShapeDtypeStructs (keeping a mesh sharding); everything else as is."""

    def one(x):
        if isinstance(x, jax.Array):
            sharding = x.sharding if isinstance(x.sharding, NamedSharding) else None
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        if isinstance(x, np.ndarray):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    return jax.tree.map(one, tree)


def float64_values(jaxpr) -> list[str]:
    """Strongly typed float64 values of a jaxpr and of every jaxpr inside it."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = [str(v) for v in [*jaxpr.invars, *jaxpr.constvars, *(o for e in jaxpr.eqns for o in e.outvars)]
             if getattr(v.aval, "dtype", None) == np.float64 and not v.aval.weak_type]
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                if isinstance(sub, (jex_core.Jaxpr, jex_core.ClosedJaxpr)):
                    found += float64_values(sub)
    return found


def export(fn, *args, platforms=PLATFORMS, **kwargs) -> dict[str, str]:
    """MLIR text of ``fn`` (a ``jax.jit``) exported for each platform; asserts that the TPU
    module holds no float64."""
    text = {}
    for platform in platforms:
        exported = jax.export.export(fn, platforms=[platform])(*_abstract(args), **kwargs)
        assert exported.platforms == (platform,)
        text[platform] = exported.mlir_module()
    if "tpu" in text:
        found = F64.search(text["tpu"])
        assert found is None, (f"float64 in the TPU export of {getattr(fn, '__name__', fn)}: "
                               f"...{text['tpu'][found.start() - 300:found.end() + 50]}")
    return text


class Recorder:
    """Stands in for compiled kernels: records each call's function, abstract arguments and
    static options, and answers zeros of the output's shapes without compiling anything.
    Calls made while tracing another program (tracer arguments) go to the real kernel."""

    def __init__(self):
        self.calls = {}

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def spy(*args, **kwargs):
            if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
                return fn(*args, **kwargs)
            abstract = _abstract(args)
            key = (name, str(jax.tree.map(lambda a: (a.shape, a.dtype) if hasattr(a, "shape") else a, abstract)),
                   repr(sorted(kwargs.items())))
            self.calls.setdefault(key, (name, fn, abstract, kwargs))
            out = fn.eval_shape(*args, **kwargs)
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype, device=getattr(s, "sharding", None)), out)

        return spy

    def patch(self, monkeypatch, module, names):
        for name in names:
            monkeypatch.setattr(module, name, self.wrap(f"{module.__name__.rsplit('.', 1)[-1]}.{name}",
                                                        getattr(module, name)))

    def jax_proxy(self, label: str):
        """A stand-in for the ``jax`` module whose ``jit`` makes recorded programs."""
        proxy = types.SimpleNamespace(**{k: getattr(jax, k) for k in dir(jax) if not k.startswith("__")})
        proxy.jit = lambda fn, **kw: self.wrap(f"{label}.{getattr(fn, '__name__', 'program')}", jax.jit(fn, **kw))
        return proxy

    def shard_programs(self, monkeypatch, module):
        """Record the programs ``module`` builds with :func:`jaxenc.distributed.shard_program`,
        built anew (its cache is bypassed, so no recorded program outlives the test)."""
        proxy = self.jax_proxy(module.__name__.rsplit(".", 1)[-1])
        build = distributed.shard_program.__wrapped__

        def recorded(*args, **kwargs):
            with monkeypatch.context() as m:
                m.setattr(distributed, "jax", proxy)
                return build(*args, **kwargs)

        monkeypatch.setattr(module, "shard_program", recorded)

    def names(self) -> set[str]:
        return {name for name, _, _, _ in self.calls.values()}


# ------------------------------------------------------------------------------------ ridge

_SOLVER_KERNELS = ("_decompose_one", "_decompose_full", "_cv_batch", "_refit_batch", "_predict_batch")
_LFO_KERNELS = ("_decompose", "_corrections", "_cv_batch", "_refit_batch")
_SHARDED_KERNELS = ("_cv_kernel", "_select_kernel", "_refit_kernel", "_predict_kernel")
# (n_rows, n_features): more rows than features (primal) and fewer (dual).
_SHAPES = {"primal": (24, 6), "dual": (16, 30)}


def _ridge_data(mode):
    n, p = _SHAPES[mode]
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, p)), rng.standard_normal((n, 5))


def _record_ridge(monkeypatch, solver_dtype: str) -> Recorder:
    """Fit and predict with every ridge route, recording their compiled kernels."""
    rec = Recorder()
    rec.patch(monkeypatch, ridge_solvers, _SOLVER_KERNELS)
    rec.patch(monkeypatch, ridge_lfo, _LFO_KERNELS)
    rec.shard_programs(monkeypatch, ridge_sharded)
    options = dict(alphas=[0.1, 10.0], cv=3, solver_dtype=solver_dtype)
    for one_decomposition in (True, False):
        monkeypatch.setattr(ridge_lfo, "lfo_is_cheaper", lambda *a, _c=one_decomposition, **k: _c)
        for mode in _SHAPES:
            X, Y = _ridge_data(mode)
            bands = [slice(0, 3), slice(3, None)]
            with warnings.catch_warnings():
                # Zeros from the recorders select alphas on ties: nothing to warn about.
                warnings.simplefilter("ignore")
                RidgeCV(**options).fit(X, Y).predict(X)
                BandedRidgeCV(bands, n_iter=1, **options).fit(X, Y)
                if one_decomposition:
                    # One alpha for all voxels: the refit is a pass of its own.
                    RidgeCV(alpha_per_target=False, **options).fit(X, Y)
                    ridge_sharded.ShardedRidgeCV(make_mesh(), **options).fit(X, Y).predict(X)
    assert rec.names() == ({f"ridge_solvers.{k}" for k in _SOLVER_KERNELS}
                           | {f"ridge_lfo.{k}" for k in _LFO_KERNELS}
                           | {f"ridge_sharded.{k}" for k in _SHARDED_KERNELS})
    return rec


def test_ridge_float32_route_exports_for_cuda_and_tpu_without_float64(monkeypatch):
    float32 = ridge_solvers.resolve_solver_dtype("auto", "tpu")
    assert float32 == np.float32
    rec = _record_ridge(monkeypatch, "float32")
    for name, fn, args, kwargs in rec.calls.values():
        with ridge_solvers.solver_scope(float32):
            text = export(fn, *args, **kwargs)
        assert not F64.search(text["cuda"]), name
        # Float64 enabled: nothing of the route widens to float64 on its own.
        with jax.enable_x64(True):
            assert float64_values(fn.trace(*args, **kwargs).jaxpr) == [], name


def test_ridge_float64_route_exports_for_cuda(monkeypatch):
    rec = _record_ridge(monkeypatch, "float64")
    with jax.enable_x64(True):
        for name, fn, args, kwargs in rec.calls.values():
            text = export(fn, *args, platforms=("cuda",), **kwargs)
            if name in ("ridge_solvers._decompose_one", "ridge_lfo._decompose"):
                # The checks the float32 route passes see the float64 decompositions.
                assert F64.search(text["cuda"]), name
                assert float64_values(fn.trace(*args, **kwargs).jaxpr), name


# ------------------------------------------------------------------------------------ train


def _subject(seed, n_features):
    from jaxenc.train.stack import SubjectData

    rng = np.random.default_rng(seed)
    f = {f"s{i}": rng.standard_normal((20 + 3 * i, n_features)).astype(np.float32) for i in range(4)}
    return SubjectData(f, {k: rng.standard_normal((len(x), 3)).astype(np.float32) for k, x in f.items()})


@pytest.mark.parametrize("name", ["mllinear", "mlp", "dimlp", "gru", "transformer", "deepmlp-2"])
def test_training_program_and_predictor_export(name):
    from jaxenc.train import TrainConfig
    from jaxenc.train._placement import place
    from jaxenc.train.config import resolve_grid
    from jaxenc.train.fit import _predictor
    from jaxenc.train.program import ProgramSpec, compiled_program, merged_state, stack_initializer
    from jaxenc.train.stack import stack_subjects

    bands, n_delays = [(0, 4), (4, 8)], 2
    make = encoder(name).make_model(NetworkOptions(hidden=4), bands=bands, n_delays=n_delays)
    cfg = TrainConfig(n_folds=2, n_components=None, batch_size=8, val_batch_size=16, max_epochs=2,
                      epochs_per_call=2)
    stack = stack_subjects({"A": _subject(0, 8), "B": _subject(1, 8)}, cfg, resolve_grid(None, cfg))
    create, graphs = stack_initializer(make, stack.n_features, stack.n_outputs, cfg.max_epochs)
    spec = ProgramSpec.of(cfg, stack)
    epochs = jnp.arange(cfg.max_epochs, dtype=jnp.int32)
    # The initial carry and the data as shapes: the initializer is traced, not run.
    data, carry = jax.eval_shape(lambda: place(create, stack, None, "models"))
    program, _ = compiled_program(graphs[-1], spec, True)
    export(program, carry, data, epochs)
    if name == "mlp":
        # One model at a time (vectorize=False).
        one, _ = compiled_program(graphs[-1], spec, False)
        first = functools.partial(jax.tree.map, lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype))
        export(one, first(carry), {k: (v if k in ("X", "Y") else first(v)) for k, v in data.items()}, epochs)
        # The stack split over a mesh axis.
        mesh = make_mesh(axis_names=("models",))
        on_mesh, _ = compiled_program(graphs[-1], spec, True, mesh, "models")
        export(on_mesh, *jax.eval_shape(lambda: place(create, stack, mesh, "models"))[::-1], epochs)
    state = merged_state(carry["params"], carry["rest"])
    x_all = jax.ShapeDtypeStruct((2, 30, stack.n_features), jnp.float32)  # [subjects, rows, features]
    subjects = jax.ShapeDtypeStruct(carry["stopped"].shape, jnp.int32)  # [models]
    export(_predictor(graphs[-1], ()), state, x_all, subjects)


# -------------------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("method", ["gram", "covariance", "randomized"])
def test_pca_solvers_transform_and_inverse_export(method):
    Y = jax.ShapeDtypeStruct((12, 20), jnp.float32)
    export(jax.jit(functools.partial(pca_module.pca_fit, n_components=3, method=method, n_iter=2,
                                     check_finite=False)), Y)
    mean, comps, var = (jax.ShapeDtypeStruct(s, jnp.float32) for s in [(20,), (3, 20), (3,)])
    for whiten in (False, True):
        export(pca_module._transform, mean, comps, var, Y, whiten=whiten)
        export(pca_module._inverse, mean, comps, var, jax.ShapeDtypeStruct((12, 3), jnp.float32), whiten=whiten)


def test_sharded_pca_programs_export(monkeypatch):
    rec = Recorder()
    rec.shard_programs(monkeypatch, pca_sharded)
    Y = np.random.default_rng(0).standard_normal((12, 20))
    mesh = make_mesh()
    fits = [{"shard": shard} for shard in pca_sharded.SHARDINGS] + [{"method": "randomized", "n_iter": 2}]
    for fit in fits:
        state = pca_sharded.pca_fit_sharded(Y, 3, mesh, **fit)
        for whiten in (False, True):
            z = pca_sharded.pca_transform_sharded(state, Y, whiten=whiten)
            pca_sharded.pca_inverse_sharded(state, z, whiten=whiten)
    assert rec.names() == {f"sharded.{k}" for k in ("_gram_kernel", "_covariance_kernel", "_randomized_kernel",
                                                      "_project_kernel", "_inverse_kernel")}
    for _, fn, args, kwargs in rec.calls.values():
        export(fn, *args, **kwargs)


def test_streamed_inverse_exports():
    from jaxenc.stream import _inverse_columns

    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    export(_inverse_columns, f32((10, 3)), f32((7,)), f32((3, 7)), f32((3,)))


# --------------------------------------------------------------------------------- forwards


def _split(make):
    """Graph and abstract state of the module ``make()`` builds, without initialising it."""
    return nnx.split(nnx.eval_shape(make))


# Attention routes: "blocked" is what a CPU takes, "xla" (jax.nn.dot_product_attention) what a
# GPU takes for float32 and a TPU for every dtype; both must lower for both platforms. The
# cuDNN route needs a GPU at trace time, so it is not exported from here.
ROUTES = ("blocked", "xla")


@pytest.mark.parametrize("attention", ROUTES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_whisper_forward_and_window_frames_export(dtype, attention):
    from jaxenc.features.audio import _encode
    from jaxenc.nn import WhisperEncoder, WhisperEncoderConfig

    config = WhisperEncoderConfig(num_mel_bins=8, d_model=16, encoder_layers=2, encoder_attention_heads=2,
                                  encoder_ffn_dim=32, max_source_positions=12)
    graphdef, state = _split(lambda: WhisperEncoder(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0),
                                                    attention=attention))
    mel = jax.ShapeDtypeStruct((2, 8, 24), jnp.float32)
    export(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)), state, mel)
    # What extraction compiles: _encode's function on the merged module.
    frames = jax.jit(lambda s, x, f: _encode.fun(nnx.merge(graphdef, s), x, f, (1, 2)))
    export(frames, state, mel, jax.ShapeDtypeStruct((2,), jnp.int32))


@pytest.mark.parametrize("attention", ROUTES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_llama_forward_and_word_windows_export(dtype, attention):
    from jaxenc.features.semantic import _hidden_at
    from jaxenc.nn import LlamaConfig, LlamaModel

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=4)
    graphdef, state = _split(lambda: LlamaModel(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0),
                                                attention=attention))
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    export(jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m)), state, ids, ids)
    # The windowed path: every window's hidden states gathered at its words' last tokens.
    windows = jax.jit(lambda s, i, m, k: _hidden_at.fun(nnx.merge(graphdef, s), i, m, k, (0, 2)))
    export(windows, state, ids, ids, jax.ShapeDtypeStruct((2, 5), jnp.int32))


# ---------------------------------------------------------------------------------- scoring


def test_scoring_programs_export():
    from jaxenc.metrics import correlation, noise_ceiling, partition, significance

    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    y, repeats, voxels = f32((20, 6)), f32((3, 20, 6)), f32((6,))
    flags = jax.ShapeDtypeStruct((6,), jnp.bool_)
    export(correlation.pearson_r, y, y)
    export(correlation.r2_score, y, y)
    export(noise_ceiling.signal_power, repeats)
    export(noise_ceiling.cc_max, repeats)
    export(noise_ceiling.cc_norm, y, repeats, floor=0.25)
    export(noise_ceiling.explainable_variance, repeats)
    export(significance.block_permutation, jax.random.key(0), n_trs=20, block_size=4)
    export(significance._permutation_counts, y, y, 0, True, n_permutations=8, block_size=4, batch_size=4)
    export(significance._fdr_bh, voxels, 0.05)
    export(partition._partition, voxels, voxels, voxels, flags)
    export(partition._best_model, f32((3, 6)), flags)


# -------------------------------------------------------------------------------- alignment


def test_alignment_programs_export():
    from jaxenc.align import delays, lanczos, story

    f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    features, old_times, new_times = f32((40, 3)), f32((40,)), f32((16,))
    export(delays._delayed, features, jax.ShapeDtypeStruct((40,), jnp.int32), delays=(1, 2))
    for chunk_size in (None, 8):
        export(lanczos._interp, features, old_times, new_times, 0.25, window=3, chunk_size=chunk_size)
    export(story._zscore, features, axis=0, ddof=0)
    export(story._story_rows, features, old_times, new_times, 0.25, np.int32(2), np.int32(12),
           standardize=True, window=3, chunk_size=None)
