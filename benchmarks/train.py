"""Training the paper's MLP for every (subject, fold): jaxenc's fold-parallel program against
loops over the models, the float32 matmul peak and the memory bandwidth, measured in one run.

    python benchmarks/train.py          # both widths and the early-stopping case: ~16 min on 2 quiet cores
    python benchmarks/train.py --fast   # tiny sizes, a smoke check (~2 min)
    python benchmarks/train.py --gpu    # the paper's width at full size on an accelerator

Cases (3 subjects x 5 story-grouped folds = 15 models; MLP 256 hidden, BatchNorm, tanh, dropout
0.2; AdamW 1e-3, weight decay 1e-4, MAE on 512 PCA components, batch 128):

- ``paper``: the paper's input width, 4 delays x (4096 + 1280) = 21,504 features, 10 stories x
  120 TRs per subject (960 training rows per model), a fixed number of epochs (every model
  trains every epoch: time per epoch is what is compared).
- ``current``: 4 x 128 = 512 features, 12 stories x 150 TRs, a fixed number of epochs.
- ``early_stopping``: 512 features on noisy targets, patience 3, so the models stop at epochs
  spread over the run; the fold-parallel program re-packs the models still training into
  smaller stacks (and, for comparison, does not).

Methods, each a fit of all 15 models followed by the test-story prediction:

- ``fold_parallel``: :func:`jaxenc.train.fit_encoders`, every model in one vmapped program;
- ``loop_same_program``: the same compiled step, one model after another
  (``vectorize=False``), each stopping when it stops (stopped epochs are skipped);
- ``plain_optax_loop``: the loop a user would write: an ``nnx.jit`` AdamW step per minibatch,
  numpy shuffles, validation and early stopping in Python;
- ``torch_loop``: the same in PyTorch (torch_reference.py), at 512 features.

Each JAX method runs twice: ``cold`` (first call in the process, compilation included) and
``warm`` (compiled programs reused); headline ratios are warm, time per epoch of the same
work, and cold ratios are reported beside them. The loops stop each model exactly when it
stops, so in the early-stopping case they do the least possible work.

Results are checked against each other in the same run: fold_parallel, its unpacked run and
the two loops of the same step run the same computation (test r equal within 1e-3 at a fixed
number of epochs); the other loops draw other minibatch orders, dropout masks and (torch)
initialisations, so their test r must agree within ``R_TOLERANCE``. With early stopping on
noisy targets the validation loss is flat, and float32 rounding (batched vs separate products,
reductions ordered by stack size) can move a model's stop by many epochs, so there the same
computations are held to ``R_TOLERANCE`` too and the models stopping at other epochs are counted.

Also measured in the same run: the float32 matmul peak (best 2048^3 product, 8192^3 with
``--gpu``) and the streaming memory bandwidth; the FLOPs of the dense layers counted from the model (forward and
backward, training and validation rows); the time breakdown of one epoch of the fold-parallel
and of the one-model program by operation (jax.profiler, operations grouped by the named
scopes of jaxenc.train.program and jaxenc.models.nonlinear), and the passes over memory of
the first layer's kernel-sized arrays per step, counted in the compiled HLO; the first layer's
forward and kernel-gradient products for a stack of models four ways (``products``: batched
through XLA:CPU's library fusions, batched through its own products, one model at a time in a
compiled loop, one model per jitted call); the compiled programs' epoch timed alone (the stack
against the one-model program once per model); and
from those the ``ceiling``: the share of the matmul peak an epoch could reach at best on this
machine (its first-layer products at their best measured rate, the other dense-layer FLOPs at
the peak, AdamW's minimum bytes at the measured bandwidth, nothing else). The machine is
shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import sys
import time

# Per-operation events in jax.profiler traces of XLA:CPU programs (the time breakdown); read when
# JAX starts.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import matmul_peak_gflops, memory_bandwidth_gbs, parse_args, peak_rss_mb, profile_ops, write_results
from flax import nnx

from jaxenc.decomp import PCA
from jaxenc.metrics import pearson_r
from jaxenc.models.nonlinear import MLP
from jaxenc.train import SubjectData, TrainConfig, fit_encoders
from jaxenc.train._placement import place
from jaxenc.train.config import resolve_grid
from jaxenc.train.fit import (
    EncoderFit,
    train_stack,
)
from jaxenc.train.program import (
    WITHOUT_LIBRARY_DOTS,
    ProgramSpec,
    compiled_program,
    compiler_options,
    merged_state,
    shuffled_batches,
    stack_initializer,
    train_step,
    validation_loss,
)
from jaxenc.train.stack import stack_subjects

HP = dict(hidden=256, dropout=0.2, learning_rate=1e-3, weight_decay=1e-4, batch_size=128, n_components=512)
# Largest difference in mean test r allowed between methods that draw different minibatch
# orders, dropout masks or initialisations (fold_parallel and loop_same_program: 1e-3).
R_TOLERANCE = 0.03
# Categories of the time breakdown: the first named scope found in an operation's metadata.
SCOPES = ("validation", "gather_rows", "adamw", "dropout", "batch_norm", "shuffle", "early_stopping",
          "forward_backward")

# torch's thread count, chosen once per run by torch_reference.fastest_threads.
_TORCH: dict = {}
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _on_event(name, seconds, **kwargs):
    if name in _COMPILE_EVENTS:
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


def make_data(n_subjects, n_stories, trs, n_features, n_voxels, noise=2.0, seed=0):
    """Random delayed features; responses = tanh(features @ A) @ B + noise, per subject.

    Returns
    -------
    (dict of str to SubjectData, dict of str to (ndarray, ndarray))
        Training stories per subject, and each subject's test story (features, responses).
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_features, 64)).astype(np.float32) / np.sqrt(n_features)
    subjects, tests = {}, {}
    for s in range(n_subjects):
        b = rng.standard_normal((64, n_voxels)).astype(np.float32)

        def story(n, b=b):
            x = rng.standard_normal((n, n_features)).astype(np.float32)
            return x, (np.tanh(3 * x @ a) @ b + noise * rng.standard_normal((n, n_voxels))).astype(np.float32)

        parts = {f"story{i:02d}": story(trs) for i in range(n_stories)}
        subjects[f"S{s}"] = SubjectData({k: v[0] for k, v in parts.items()}, {k: v[1] for k, v in parts.items()})
        tests[f"S{s}"] = story(trs)
    return subjects, tests


@nnx.jit
def _optax_step(model, opt, x, y):
    def loss_fn(model):
        return jnp.mean(jnp.abs(model(x, train=True) - y))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss


@nnx.jit
def _optax_predict(model, x):
    return model(x, train=False)


def plain_optax_loop(subjects, folds, test_x, *, make, cfg, pcas, seed=0):
    """Train every (subject, fold) MLP with a jitted minibatch step driven from Python.

    The loop a careful user would write with flax and optax: PCA targets per fold, numpy
    shuffles, an ``nnx.jit`` step and validation compiled once for all models, early stopping
    keeping a copy of the best state. Same settings as the jaxenc run. Fold PCAs are fitted
    once into ``pcas``, keyed by (subject, training stories), and reused by later calls.

    Returns
    -------
    (dict of str to ndarray of shape (n_test, n_voxels), list of int)
        Fold-averaged voxel predictions per subject, and the epochs each model ran.
    """
    # One transformation for all models: nnx.jit keys its cache on the optimizer's graph, which
    # holds it, so a fresh optax.adamw per model would recompile the step for every model.
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    preds, epochs_run = {}, []
    for si, (subject, data) in enumerate(subjects.items()):
        fold_preds = []
        for k, (train, val) in enumerate(folds[subject]):
            if (subject, train) not in pcas:
                pcas[subject, train] = PCA(cfg.n_components).fit([data.responses[s] for s in train])
            pca = pcas[subject, train]
            x_train = np.concatenate([data.features[s] for s in train])
            z_train = np.asarray(pca.transform(np.concatenate([data.responses[s] for s in train])))
            x_val = jnp.asarray(np.concatenate([data.features[s] for s in val]))
            z_val = jnp.asarray(pca.transform(np.concatenate([data.responses[s] for s in val])))
            model = make(x_train.shape[1], cfg.n_components, rngs=nnx.Rngs(params=seed + 100 * si + k, dropout=k))
            opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
            best, best_state, bad, epochs = np.inf, None, 0, 0
            for _ in range(cfg.max_epochs):
                order = rng.permutation(len(x_train))
                for start in range(0, len(order), cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    _optax_step(model, opt, jnp.asarray(x_train[idx]), jnp.asarray(z_train[idx]))
                epochs += 1
                val_loss = float(jnp.mean(jnp.abs(_optax_predict(model, x_val) - z_val)))
                if val_loss < best - cfg.min_delta:
                    best, best_state, bad = val_loss, nnx.clone(nnx.state(model)), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
            epochs_run.append(epochs)
            nnx.update(model, best_state)
            fold_preds.append(np.asarray(pca.inverse_transform(_optax_predict(model, jnp.asarray(test_x[subject])))))
        preds[subject] = np.mean(fold_preds, axis=0)
    return preds, epochs_run


@functools.cache
def _jitted_step(graphdef, spec):
    step = jax.jit(functools.partial(train_step, graphdef, spec), donate_argnums=1)
    val = jax.jit(functools.partial(validation_loss, graphdef, spec))
    shuffle = jax.jit(shuffled_batches, static_argnums=4)
    return step, val, shuffle


def loop_same_step(subjects, test_x, *, make, cfg, pca_cache=None):
    """jaxenc's own training step (:func:`jaxenc.train.program.train_step`), jitted once and
    called from Python for every minibatch of every model, model after model; validation and
    the early-stopping rule between epochs, in Python. The loop one writes around the same step
    instead of vmapping it.

    Returns
    -------
    (dict of str to ndarray of shape (n_test, n_voxels), list of int)
        Fold-averaged voxel predictions per subject, and the epochs each model ran.
    """
    stack = stack_subjects(subjects, cfg, resolve_grid(None, cfg), pca_cache)
    create, graphs = stack_initializer(make, stack.n_features, stack.n_outputs, cfg.max_epochs)
    data, carry = place(create, stack, None, "models")
    step, val, shuffle = _jitted_step(graphs[-1], ProgramSpec.of(cfg, stack))
    best_states, best_vals, epochs_run = [], [], []
    for m in range(len(stack.keys)):
        d = {k: (v if k in ("X", "Y") else v[m]) for k, v in data.items()}
        state = tuple(jax.tree.map(lambda a, m=m: a[m], carry[k]) for k in ("params", "rest", "opt"))
        n_batches = -(-int(stack.per_model["n_train"][m]) // cfg.batch_size)
        best, best_state, bad, epochs = np.inf, None, 0, 0
        for epoch in range(cfg.max_epochs):
            rows, masks = map(np.asarray, shuffle(d["key"], d["train_idx"], d["n_train"], epoch, cfg.batch_size))
            for b in range(n_batches):
                state, _ = step(d, state, rows[b], masks[b], True)
            epochs += 1
            loss = float(val(d, state[0], state[1]))
            if loss < best - cfg.min_delta:
                # A copy: the step donates (overwrites) the state it is given.
                best, best_state, bad = loss, jax.tree.map(jnp.copy, state[:2]), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        best_states.append(merged_state(*best_state))
        best_vals.append(best)
        epochs_run.append(epochs)
    fit = EncoderFit(keys=stack.keys, folds=stack.folds, grid=stack.grid, pcas=stack.pcas, graphdef=graphs[-1],
                     best_state=jax.tree.map(lambda *a: jnp.stack(a), *best_states), best_val=np.asarray(best_vals),
                     best_epoch=None, stop_epoch=None, history=None, final_state=None, n_traces=0, config=cfg,
                     n_features=stack.n_features)
    return fit.predict(test_x), epochs_run


def mean_r(preds, tests):
    return {s: float(np.nanmean(np.asarray(pearson_r(tests[s][1], preds[s])))) for s in preds}


def timed(fn) -> dict:
    """Run ``fn() -> (preds, epochs per model)``; wall and CPU seconds, compilation inside them."""
    compile0, cpu0, t0 = _compile_seconds[0], time.process_time(), time.perf_counter()
    preds, epochs = fn()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "compile_s": _compile_seconds[0] - compile0, "epochs_per_model": [int(e) for e in epochs],
            "preds": preds}


def model_flops(make, n_features, n_outputs) -> dict:
    """FLOPs of the dense layers per row, counted from the model's kernels.

    A kernel of shape (a, b) costs 2ab per row forward, 2ab for its gradient and 2ab for the
    gradient of its input, except the first layer's (the features need no gradient).

    Returns
    -------
    dict
        ``train_per_row`` (forward + backward) and ``eval_per_row`` (forward).
    """
    model = nnx.eval_shape(lambda: make(n_features, n_outputs, rngs=nnx.Rngs(0)))
    kernels = [v.shape for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param) and path[-1] == "kernel"]
    forward = sum(2 * a * b for a, b in kernels)
    backward = sum(2 * a * b * (1 if a == n_features else 2) for a, b in kernels)
    return {"train_per_row": forward + backward, "eval_per_row": forward, "kernels": kernels}


def model_rows(subjects, folds) -> list[tuple[int, int]]:
    """Training and validation rows of every model, in the stack's order (subject, then fold)."""
    out = []
    for subject, data in subjects.items():
        rows = {s: len(data.features[s]) for s in data.features}
        out += [(sum(rows[s] for s in train), sum(rows[s] for s in val)) for train, val in folds[subject]]
    return out


def case_flops(flops, rows, epochs_per_model) -> float:
    """Dense-layer FLOPs of the models' training and validation rows (:func:`model_rows`) over
    the epochs each ran."""
    return sum(e * (n_train * flops["train_per_row"] + n_val * flops["eval_per_row"])
               for e, (n_train, n_val) in zip(epochs_per_model, rows, strict=True))


def epoch_work(flops, rows, batch_size: int) -> dict:
    """One epoch of every model (:func:`model_rows`): the models, their training rows,
    validation rows and AdamW steps (one per minibatch of a model) summed, and the FLOPs."""
    return {"n_models": len(rows), "train_rows": sum(t for t, _ in rows), "val_rows": sum(v for _, v in rows),
            "steps": sum(-(-t // batch_size) for t, _ in rows), "flop": case_flops(flops, rows, [1] * len(rows))}


def run_methods(subjects, tests, cfg, methods, *, make, repeats: int) -> tuple[dict, dict]:
    """Each method's fit and test-story prediction: once cold, then ``repeats`` times warm.

    The warm runs go round the methods in turn, so a change of the machine's load falls on all
    of them alike.

    Returns
    -------
    (dict, dict)
        Per method ``cold`` (one run) and ``warm`` (a list of runs), each run with its wall
        and CPU seconds, compilation seconds, epochs per model and mean test r per subject;
        and the folds of every subject.
    """
    test_x = {s: t[0] for s, t in tests.items()}
    # Fold PCAs are fitted by each method's first run and kept for its later ones (one cache
    # per method): the runs after the first time training and prediction.
    folds = {}
    caches = collections.defaultdict(dict)

    def jaxenc_fit(repack=True, **kw):
        pca_cache = caches[repack, tuple(kw.items())]

        def go():
            if repack:
                fit = fit_encoders(make, subjects, cfg, progress=False, pca_cache=pca_cache, **kw)
            else:
                fit = train_stack(make, stack_subjects(subjects, cfg, resolve_grid(None, cfg), pca_cache), cfg,
                                  progress=False, repack=False)
            folds.update(fit.folds)
            epochs = [int(e) + 1 if e >= 0 else cfg.max_epochs for e in fit.stop_epoch]
            return fit.predict(test_x), epochs
        return go

    runners = {
        "fold_parallel": jaxenc_fit(),
        "fold_parallel_no_repack": jaxenc_fit(repack=False),
        "loop_same_program": jaxenc_fit(vectorize=False),
        "loop_same_step": lambda: loop_same_step(subjects, test_x, make=make, cfg=cfg,
                                                 pca_cache=caches["loop_same_step"]),
        "plain_optax_loop": lambda: plain_optax_loop(subjects, folds, test_x, make=make, cfg=cfg,
                                                     pcas=caches["plain_optax_loop"]),
        "torch_loop": lambda: _torch(subjects, folds, test_x, cfg, caches["torch_loop"]),
    }

    def run(name):
        result = timed(runners[name])
        result["mean_r"] = mean_r(result.pop("preds"), tests)
        return result

    out = {name: {"cold": run(name), "warm": []} for name in methods}
    for _ in range(repeats):
        for name in methods:
            out[name]["warm"].append(run(name))
    return out, folds


def _torch(subjects, folds, test_x, cfg, pcas):
    import torch_reference

    # On a GPU machine torch trains there too (a CUDA torch loop); on CPU at its fastest thread count.
    device = "cuda" if jax.default_backend() == "gpu" and torch_reference.torch.cuda.is_available() else "cpu"
    if device == "cpu" and "threads" not in _TORCH:
        n_features = next(iter(next(iter(subjects.values())).features.values())).shape[1]
        _TORCH.update(torch_reference.fastest_threads(n_features, cfg.n_components, hidden=HP["hidden"],
                                                      batch_size=cfg.batch_size))
    _TORCH["device"] = device
    return torch_reference.fit_predict(
        {s: (d.features, d.responses) for s, d in subjects.items()}, folds, test_x,
        n_components=cfg.n_components, hidden=HP["hidden"], dropout=HP["dropout"], lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, max_epochs=cfg.max_epochs, patience=cfg.patience,
        pca_cache=pcas, device=device,
    )


def breakdown(subjects, cfg, make, *, vectorized: bool) -> dict:
    """Where one epoch of the compiled program goes, by named scope, from a profiler trace.

    Returns
    -------
    dict
        ``epoch_s`` (the profiled call), ``epoch_s_unprofiled`` (three timed calls of the
        same epoch before it), ``categories`` (seconds per category; matmuls split
        into forward and backward; ``untraced_kernels``: device kernels the trace names no
        operation for; ``untraced``: the rest of the profiled call's time), ``share`` (of the
        profiled call), ``untraced_kernels`` (seconds per such kernel name) and
        ``kernel_array_passes_per_step``: reads and writes of arrays shaped like the first
        layer's kernel (n_features x hidden, per model) by the operations of one training step,
        counted in the compiled HLO.
    """
    stack = stack_subjects(subjects, cfg, resolve_grid(None, cfg))
    create, graphs = stack_initializer(make, stack.n_features, stack.n_outputs, cfg.max_epochs)
    data, carry = place(create, stack, None, "models")
    spec = ProgramSpec.of(cfg, stack)
    options = compiler_options(carry["params"], len(stack.keys)) if vectorized else ()
    program, _ = compiled_program(graphs[-1], spec, vectorized, options=options)
    if not vectorized:  # the first model alone
        carry = jax.tree.map(lambda a: a[0], carry)
        data = {k: (v if k in ("X", "Y") else v[0]) for k, v in data.items()}
    state = {"carry": program(carry, data, jnp.arange(1, dtype=jnp.int32))}
    epoch = jnp.arange(1, 2, dtype=jnp.int32)
    hlo = program.lower(state["carry"], data, epoch).compile().as_text()

    def run():
        t0 = time.perf_counter()
        state["carry"] = jax.block_until_ready(program(state["carry"], data, epoch))
        state["wall"] = time.perf_counter() - t0

    run()
    unprofiled = []
    for _ in range(3):
        run()
        unprofiled.append(state["wall"])
    trace = profile_ops(run, hlo)
    categories = collections.Counter()
    for op in trace["ops"].values():
        categories[_category(op, hlo)] += op["seconds"]
    total = sum(categories.values())
    # Device kernels the trace names no HLO instruction for (library GEMMs on a GPU): counted
    # apart, not guessed into a category.
    if trace["untraced"]["seconds"]:
        categories["untraced_kernels"] = trace["untraced"]["seconds"]
    # The rest of the call. On CPU: products that XLA:CPU runs through its own (Eigen) dot, as a
    # stack of large kernels does (jaxenc.train.program.compiler_options), appear in the trace
    # with their dispatch only, so this time is theirs in the main; on a GPU: time between kernels.
    categories["untraced"] = max(state["wall"] - total - trace["untraced"]["seconds"], 0.0)
    kernel = f"f32[{'' if not vectorized else str(len(stack.keys)) + ','}{stack.n_features},{HP['hidden']}]"
    return {
        "epoch_s": state["wall"],
        "epoch_s_unprofiled": unprofiled,
        "categories": dict(categories.most_common()),
        "share": {k: v / state["wall"] for k, v in categories.most_common()},
        "profiled_fraction_of_wall": total / state["wall"],
        "untraced_kernels": trace["untraced"]["kernels"],
        "kernel_array_passes_per_step": _passes(hlo, kernel),
        "xla_cost_analysis": {k: v for k, v in program.lower(state["carry"], data, epoch).compile()
                              .cost_analysis().items() if k in ("flops", "bytes accessed")},
    }


def _category(op, hlo) -> str:
    scopes = op["op_name"]
    if "validation" in scopes:
        return "validation"
    calls = re.search(r"calls=(%[\w.-]+)", op["line"])
    if " dot(" in " " + op["line"] or (calls and _has_dot(calls.group(1), hlo)):
        return "matmul_backward" if "transpose(" in scopes else "matmul_forward"
    return next((s for s in SCOPES if s in scopes), "other")


@functools.cache
def _computations(hlo: str) -> dict:
    blocks = re.split(r"\n(?=%?[\w.-]+ [({])", hlo)
    return {b.split(" ", 1)[0]: b for b in blocks}


def _has_dot(computation: str, hlo: str) -> bool:
    return " dot(" in _computations(hlo).get(computation, "")


def _passes(hlo: str, shape: str) -> int:
    """Operands and results of ``shape`` among the instructions of the AdamW step's computation."""
    # The training step's loop body: the computation that calls the AdamW fusions.
    body = max(_computations(hlo).values(),
               key=lambda b: sum(" fusion(" in line and "/adamw/" in line for line in b.splitlines()))
    shapes = {m.group(1): m.group(2) for m in re.finditer(r"^\s*(?:ROOT )?(%[\w.-]+) = (\S+)", body, re.M)}
    count = 0
    for m in re.finditer(r"^\s*(?:ROOT )?%[\w.-]+ = (\S+) ([\w-]+)\(([^)]*)\)", body, re.M):
        if m.group(2) in ("get-tuple-element", "tuple", "parameter", "bitcast"):
            continue
        operands = re.findall(r"%[\w.-]+", m.group(3))
        count += m.group(1).startswith(shape) + sum(shapes.get(o, "").startswith(shape) for o in operands)
    return count


def products(n_features: int, *, n_models: int = 15, repeats: int = 5) -> dict:
    """The first layer's two products in a training step of a stack of models, four ways each.

    ``forward`` is ``x @ W`` ([rows, in] x [in, hidden] per model), ``kernel_gradient`` is
    ``x.T @ g``. ``batched_library``: ``jax.vmap`` of the product compiled as XLA:CPU compiles
    it by default (its library fusions, YNNPACK); ``batched_xla``: the same with the library
    fusions off, what :func:`jaxenc.train.program.compiler_options` picks for large kernels;
    ``one_model``: one model's product (default compilation) times ``n_models``. Each of these
    runs 10 products inside one compiled loop (temporary buffers allocated once, as in the
    training program). ``one_model_calls``: each model's product as a jitted call of its own,
    10 rounds of ``n_models`` calls, as a loop over the models runs them. Variants interleaved.

    Returns
    -------
    dict
        Per product and variant: best wall GFLOP/s and GFLOP per CPU-second.
    """
    from jax import lax

    b, h, r = HP["batch_size"], HP["hidden"], 10
    x = jax.random.normal(jax.random.key(0), (n_models, b, n_features))
    w = jax.random.normal(jax.random.key(1), (n_models, n_features, h)) / np.sqrt(n_features)
    g = jax.random.normal(jax.random.key(2), (n_models, b, h))
    large = dict(WITHOUT_LIBRARY_DOTS)
    cases = {"forward": (lambda x, w: x @ w, w, (n_models, b, h)),
             "kernel_gradient": (lambda x, g: x.T @ g, g, (n_models, n_features, h))}

    def loop(product, out_shape, n, options):
        # One model: the unbatched product (a vmap of one is a batched product of batch 1, which
        # XLA:CPU runs slower).
        apply = jax.vmap(product) if n > 1 else (lambda a, b: product(a[0], b[0])[None])

        def run(x, other):
            # The carry feeds back into the operand so the products are not hoisted out of the
            # loop; the barrier keeps that addition out of the product's fusion.
            def body(i, c):
                return c + apply(lax.optimization_barrier(x[:n] + c[:, :1, :1]), other[:n])

            return lax.fori_loop(0, r, body, jnp.zeros((n,) + out_shape[1:]))

        return jax.jit(run, compiler_options=options or None)

    def calls(product):
        # Every model's product as its own jitted call, r rounds dispatched back to back, as a
        # loop over the models dispatches its steps.
        one = jax.jit(product)

        def run(x, other):
            operands = [(x[i], other[i]) for i in range(n_models)]
            results = []
            for _ in range(r):
                # Keep one round's results: the earlier ones are freed as a loop's would be.
                results = [one(a, b) for a, b in operands]
            return results

        return run

    out = {}
    for name, (product, other, out_shape) in cases.items():
        variants = {"batched_library": (loop(product, out_shape, n_models, None), n_models),
                    "batched_xla": (loop(product, out_shape, n_models, large), n_models),
                    "one_model": (loop(product, out_shape, 1, None), 1),
                    "one_model_calls": (calls(product), n_models)}
        if jax.default_backend() != "cpu":  # the option is XLA:CPU's
            del variants["batched_xla"]
        times = {k: [] for k in variants}
        for f, _ in variants.values():
            jax.block_until_ready(f(x, other))
        for _ in range(repeats):
            for v, (f, _) in variants.items():
                t0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(x, other))
                times[v].append((time.perf_counter() - t0, time.process_time() - c0))
        out[name] = {}
        for v, (_, n) in variants.items():
            flop = 2 * b * n_features * h * n * r
            out[name][v] = {"gflops": flop / min(t for t, _ in times[v]) / 1e9,
                            "gflop_per_cpu_s": flop / min(c for _, c in times[v]) / 1e9}
    return out


def ceiling(flops: dict, work: dict, rates: dict, peak: float, bandwidth: float, adamw_bytes: float) -> dict:
    """The highest share of the matmul peak one epoch could reach on this machine.

    An epoch's time is at least its first-layer products at the best rate measured for them
    (:func:`products`: any of the four ways), every other dense-layer FLOP at the matmul
    peak, and AdamW's minimum bytes at the measured memory bandwidth; nothing else (gathers,
    activations, dropout, validation bookkeeping) is counted.

    Parameters
    ----------
    flops : dict
        :func:`model_flops`.
    work : dict
        One epoch of all models (:func:`epoch_work`).
    rates : dict
        :func:`products`.
    peak, bandwidth : float
        GFLOP/s and GB/s.
    adamw_bytes : float
        Per step of one model.

    Returns
    -------
    dict
        ``floor_s_per_epoch``, its parts, and ``ceiling_fraction_of_peak``.
    """
    n_in, hidden = flops["kernels"][0]
    first = 2 * n_in * hidden
    best = {k: max(v["gflops"] for v in r.values()) * 1e9 for k, r in rates.items()}
    forward = first * (work["train_rows"] + work["val_rows"])
    gradient = first * work["train_rows"]
    total = work["flop"]
    parts = {"first_layer_forward_s": forward / best["forward"],
             "first_layer_kernel_gradient_s": gradient / best["kernel_gradient"],
             "other_layers_at_peak_s": (total - forward - gradient) / (peak * 1e9),
             "adamw_at_bandwidth_s": adamw_bytes * work["steps"] / (bandwidth * 1e9)}
    floor = sum(parts.values())
    return {"floor_s_per_epoch": floor, **parts, "ceiling_fraction_of_peak": total / floor / (peak * 1e9)}


def dropout_bits(*, n_models: int = 15, repeats: int = 5) -> dict:
    """One step's dropout masks for a stack of models (batch x hidden each), three ways.

    ``threefry``: what jaxenc does (each model's key, the default PRNG, vmapped);
    ``rbg_vmapped``: ``jax.random`` with ``impl="rbg"`` keys, vmapped; ``rbg_per_model``: the same
    keys, one ``RngBitGenerator`` per model (a custom vmap rule). Each is timed as 50 steps in
    one compiled loop, and checked for whether model ``i`` of the stack draws what it draws alone
    (its own stream: what makes the vmapped run equal a loop over the models and a re-packed
    stack equal the full one).

    Returns
    -------
    dict
        Per variant: ``ms_per_step`` (best of ``repeats``) and ``own_stream`` (bool).
    """
    from jax import lax
    from jax.custom_batching import custom_vmap

    shape, steps, keep = (HP["batch_size"], HP["hidden"]), 50, 1 - HP["dropout"]

    @custom_vmap
    def rbg_bits(key_data):
        return lax.rng_bit_generator(key_data, shape, dtype=jnp.uint32)[1]

    @rbg_bits.def_vmap
    def _(axis_size, in_batched, key_data):
        return jnp.stack([rbg_bits(key_data[i]) for i in range(axis_size)]), True

    def threefry(k, i):
        return jax.random.bernoulli(jax.random.fold_in(jax.random.wrap_key_data(k), i), keep, shape)

    def rbg(k, i):
        return jax.random.bernoulli(jax.random.fold_in(jax.random.wrap_key_data(k, impl="rbg"), i), keep, shape)

    def rbg_per_model(k, i):
        key = jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(k, impl="rbg"), i))
        return rbg_bits(key) < jnp.uint32(round(keep * 2**32))

    keys = {"threefry": jax.random.key_data(jax.random.split(jax.random.key(0), n_models)),
            "rbg": jax.random.key_data(jax.random.split(jax.random.key(0, impl="rbg"), n_models))}
    variants = {"threefry": (threefry, keys["threefry"]), "rbg_vmapped": (rbg, keys["rbg"]),
                "rbg_per_model": (rbg_per_model, keys["rbg"])}
    out = {}
    for name, (f, k) in variants.items():
        stacked = jax.jit(jax.vmap(f, in_axes=(0, None)))
        def steps_of(k, f=f):
            return lax.fori_loop(0, steps, lambda i, acc: acc + jax.vmap(f, in_axes=(0, None))(k, i).sum(), 0)

        run = jax.jit(steps_of)
        jax.block_until_ready(run(k))
        best = min(_seconds(lambda run=run, k=k: run(k)) for _ in range(repeats))
        own = bool(np.array_equal(np.asarray(stacked(k, 7))[3], np.asarray(jax.jit(f)(k[3], 7))))
        out[name] = {"ms_per_step": best / steps * 1e3, "own_stream": own}
    return out


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def summarize(runs, flops, peak, rows) -> dict:
    """Per method and run: seconds per model-epoch, GFLOP/s and the share of the matmul peak;
    ``best_warm`` is the warm run of least wall time."""
    out = {}
    for name, by in runs.items():
        def rates(res):
            work = case_flops(flops, rows, res["epochs_per_model"])
            return {**res, "s_per_model_epoch": res["wall_s"] / sum(res["epochs_per_model"]), "gflop": work / 1e9,
                    "gflops": work / res["wall_s"] / 1e9, "fraction_of_peak": work / res["wall_s"] / 1e9 / peak,
                    "gflop_per_cpu_s": work / res["cpu_s"] / 1e9}
        warm = [rates(r) for r in by["warm"]]
        out[name] = {"cold": rates(by["cold"]), "warm": warm, "best_warm": min(warm, key=lambda r: r["wall_s"]),
                     "best_warm_cpu_s": min(r["cpu_s"] for r in warm)}
    return out


def main(argv=None):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--gpu", action="store_true", help="the paper's width at full size, on an accelerator")
    extra, rest = own.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0], rest)
    if extra.gpu and jax.default_backend() == "cpu":
        sys.exit("--gpu: JAX sees no accelerator (backend 'cpu'); install jax's CUDA or TPU build (README)")
    load_before = list(os.getloadavg())
    make = functools.partial(MLP, hidden=HP["hidden"], dropout=HP["dropout"])
    base = TrainConfig(n_folds=5, n_components=HP["n_components"], batch_size=HP["batch_size"],
                       learning_rate=HP["learning_rate"], weight_decay=HP["weight_decay"], epochs_per_call=1,
                       checkpoint_every=1)
    paper_width = 4 * (4096 + 1280)
    all_methods = ("fold_parallel", "loop_same_step", "loop_same_program", "plain_optax_loop", "torch_loop")
    if extra.gpu:
        cases = {"paper": (dict(n_subjects=3, n_stories=30, trs=300, n_features=paper_width, n_voxels=20000), 10,
                           all_methods[:4], None)}
    elif args.fast:
        cases = {"paper": (dict(n_subjects=3, n_stories=6, trs=120, n_features=4 * 1024, n_voxels=300), 2,
                           all_methods[:4], None),
                 "current": (dict(n_subjects=3, n_stories=6, trs=120, n_features=512, n_voxels=300), 4,
                             all_methods, None),
                 "early_stopping": (dict(n_subjects=3, n_stories=6, trs=120, n_features=512, n_voxels=300,
                                         noise=8.0), 30, all_methods[:4] + ("fold_parallel_no_repack",), 3)}
    else:
        cases = {"paper": (dict(n_subjects=3, n_stories=10, trs=120, n_features=paper_width, n_voxels=1000), 3,
                           all_methods[:4], None),
                 "current": (dict(n_subjects=3, n_stories=12, trs=150, n_features=512, n_voxels=2000), 30,
                             all_methods, None),
                 "early_stopping": (dict(n_subjects=3, n_stories=12, trs=150, n_features=512, n_voxels=2000,
                                         noise=8.0), 100, all_methods[:4] + ("fold_parallel_no_repack",), 3)}
    n_components = 64 if args.fast else HP["n_components"]
    # An accelerator needs larger products than the CPU to reach its peak.
    matmul_n = 8192 if extra.gpu else 2048
    peak = {"gflops": matmul_peak_gflops(matmul_n), "n": matmul_n}
    bandwidth = memory_bandwidth_gbs(2**28 if args.fast else 2**30)
    print(f"matmul peak {peak['gflops']:.0f} GFLOP/s, bandwidth {bandwidth['gbs']:.1f} GB/s", file=sys.stderr)
    rates = {case: products(size["n_features"], repeats=args.repeats + 2)
             for case, (size, _, _, patience) in cases.items() if patience is None}
    prng = dropout_bits(repeats=args.repeats + 2)
    results, ratios, checks = {}, {}, {}
    for case, (size, epochs, methods, patience) in cases.items():
        # Fixed epochs (patience = epochs: no model stops) unless the case is about stopping.
        cfg = TrainConfig(**{**base.__dict__, "max_epochs": epochs, "patience": patience or epochs,
                             "n_components": n_components})
        subjects, tests = make_data(**size)
        print(f"{case}: {size}, {epochs} epochs, patience {cfg.patience}: {methods}", file=sys.stderr)
        runs, folds = run_methods(subjects, tests, cfg, methods, make=make, repeats=args.repeats)
        flops = model_flops(make, size["n_features"], n_components)
        rows = model_rows(subjects, folds)
        res = summarize(runs, flops, peak["gflops"], rows)
        entry = {"size": {**size, "epochs": epochs, "patience": cfg.patience, "n_components": n_components},
                 "flops_per_row": {k: v for k, v in flops.items() if k != "kernels"}, "methods": res}
        if patience is None:
            entry["breakdown"] = {"fold_parallel": breakdown(subjects, cfg, make, vectorized=True),
                                  "one_model_program": breakdown(subjects, cfg, make, vectorized=False)}
            entry["adamw_bytes_per_step_min"] = _adamw_bytes(flops["kernels"], 5 * size["n_subjects"])
            entry["products"] = rates[case]
            work = epoch_work(flops, rows, cfg.batch_size)
            entry["ceiling"] = ceiling(flops, work, rates[case], peak["gflops"], bandwidth["gbs"],
                                       _adamw_bytes(flops["kernels"], 1)["bytes"])
            ratios[f"{case}/ceiling_fraction_of_peak"] = entry["ceiling"]["ceiling_fraction_of_peak"]
            # The compiled programs alone, one epoch (no stacking, initialisation or prediction):
            # the stack against the one-model program run once per model.
            stacked = min(entry["breakdown"]["fold_parallel"]["epoch_s_unprofiled"])
            one = min(entry["breakdown"]["one_model_program"]["epoch_s_unprofiled"])
            ratios[f"{case}/fold_parallel_epoch_vs_one_model_program_epochs"] = one * work["n_models"] / stacked
            ratios[f"{case}/fold_parallel_epoch_fraction_of_peak"] = work["flop"] / stacked / (peak["gflops"] * 1e9)
        results[case] = entry
        fp = res["fold_parallel"]
        for other in res:
            if other == "fold_parallel":
                continue
            ratios[f"{case}/fold_parallel_vs_{other}"] = res[other]["best_warm"]["wall_s"] / fp["best_warm"]["wall_s"]
            ratios[f"{case}/fold_parallel_vs_{other}_cold"] = res[other]["cold"]["wall_s"] / fp["cold"]["wall_s"]
            ratios[f"{case}/fold_parallel_vs_{other}_cpu"] = res[other]["best_warm_cpu_s"] / fp["best_warm_cpu_s"]
            same = other in ("fold_parallel_no_repack", "loop_same_program", "loop_same_step")
            tolerance = 1e-3 if same and patience is None else R_TOLERANCE
            diff = max(abs(fp["cold"]["mean_r"][s] - r["mean_r"][s]) for r in [res[other]["cold"], *res[other]["warm"]]
                       for s in tests)
            checks[f"{case}/mean_r_{other}"] = {"max_abs_diff": diff, "tolerance": tolerance, "ok": diff <= tolerance}
            if same:
                checks[f"{case}/mean_r_{other}"]["models_stopping_elsewhere"] = int(np.sum(
                    np.asarray(fp["cold"]["epochs_per_model"]) != np.asarray(res[other]["cold"]["epochs_per_model"])))
        ratios[f"{case}/fold_parallel_fraction_of_peak"] = fp["best_warm"]["fraction_of_peak"]
    payload = {
        "load_average_1_5_15": {"before": load_before, "after": list(os.getloadavg())},
        "matmul_peak": peak, "memory_bandwidth": bandwidth, "hyperparameters": HP, "r_tolerance": R_TOLERANCE,
        "checks": checks, "results": results, "peak_rss_mb": peak_rss_mb(), "fast": args.fast, "gpu": extra.gpu,
        "device": str(jax.devices()[0]), "torch_threads": _TORCH,
        "dropout_bits": prng,
    }
    name = "train_gpu" if extra.gpu else ("train_fast" if args.fast else "train")
    write_results(name, payload, ratios=ratios, out=args.out)
    failed = [k for k, v in checks.items() if not v["ok"]]
    if failed:
        sys.exit(f"results disagree beyond tolerance: {failed}")


def _adamw_bytes(kernels, n_models) -> dict:
    """Bytes AdamW must move per step at least: read parameters, gradients and both moments,
    write parameters and moments (7 float32 passes over every parameter), all models."""
    n = sum(a * b for a, b in kernels)
    return {"parameters_per_model": n, "bytes": 7 * 4 * n * n_models}


if __name__ == "__main__":
    main()
