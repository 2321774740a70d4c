"""Training the paper's MLP for every (subject, fold): jaxenc's one vmapped program against
Python loops over the models (a standard JAX training loop, jaxenc's per-model program, PyTorch).

    python benchmarks/train.py            # the paper's setting: 40 CPU-minutes, an hour on 2 shared cores
    python benchmarks/train.py --fast     # a minute, a smoke check
    python benchmarks/train.py --gpu-size --peak-tflops 989   # real input size, FLOP/s vs peak

Default: the paper's training setting on data of the synthetic twin's demo size or larger:
3 subjects x 5 story-grouped folds, 12 stories x 150 TRs per subject (the demo preset has 12
training stories of about 110 TRs), 4 delays x 128 features, 2000 voxels -> 512 PCA components,
MLP 256 hidden, dropout 0.2, AdamW 1e-3, batch 128, up to 200 epochs with early stopping
(patience 10) on each model's validation loss. Data: random features with responses planted
through a tanh layer plus noise; at this size no model stops early (all run 200 epochs, test
r about 0.79), so every method does the same work. Baselines, each a Python loop over the (subject, fold) models:

- ``jax_step_loop``: what a user writing a standard JAX loop would do: one ``nnx.jit``
  minibatch step, epochs, batches, validation and early stopping driven from Python;
- ``jax_program_loop``: jaxenc's own compiled per-model program (``vectorize=False``);
- ``torch_loop``: the same in PyTorch (torch_reference.py).

Reported per run: wall time, the part of it spent tracing, lowering and compiling (from
``jax.monitoring``), the epochs each model trained before early stopping, the time per epoch
per model, and the mean test-story correlation per subject, which must agree within noise
(same initialisation, AdamW, BatchNorm, dropout, MAE loss, batch logic and stopping rule
everywhere; the minibatch order and dropout draws differ). The vmapped program runs cold
(``wall_s``: the first call in the process, compilation included) and warm (``wall_warm_s``:
the same fit again, reusing the compiled program); the headline ``ratios`` are cold, those
under ``results.ratios_warm`` warm. The loops run once, after the vmapped run: the small eager
computations they share with it (PCA, initialisation) are already compiled, which favours them.
No persistent compilation cache is used.

``--gpu-size``: 4 x (4096 + 1280) features, ~9000 TRs per subject, only the vmapped jaxenc run,
with achieved FLOP/s against ``--peak-tflops`` of the device.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time

import numpy as np
import optax

from common import parse_args, peak_rss_mb, write_results

import jax
import jax.numpy as jnp
from flax import nnx

from jaxenc.decomp import PCA
from jaxenc.metrics import pearson_r
from jaxenc.models.nonlinear import MLP
from jaxenc.train import SubjectData, TrainConfig, fit_encoders

# Seconds spent tracing, lowering and compiling, accumulated by event name for the whole process.
_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_compile_s",
}
_compile_totals: dict = collections.defaultdict(float)
_chunk_compile: list = []


def _on_event(name, seconds, **kwargs):
    if name in _COMPILE_EVENTS:
        _compile_totals[_COMPILE_EVENTS[name]] += seconds
        if name.endswith("backend_compile_duration") and kwargs.get("fun_name") == "jit(chunk)":
            _chunk_compile.append(seconds)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def timed(fn):
    """Run ``fn()``; return its result, wall seconds and the compilation seconds inside them.

    Returns
    -------
    (object, float, dict)
        The result, the wall time and ``{"trace_s", "lower_s", "backend_compile_s",
        "compile_total_s", "chunk_program_compile_s"}`` (seconds; the last is the XLA
        compilation of fit_encoders' training program alone).
    """
    before, n_chunk = dict(_compile_totals), len(_chunk_compile)
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    compile_s = {k: _compile_totals[k] - before.get(k, 0.0) for k in _COMPILE_EVENTS.values()}
    compile_s["compile_total_s"] = sum(compile_s.values())
    compile_s["chunk_program_compile_s"] = sum(_chunk_compile[n_chunk:])
    return result, wall, compile_s


def make_data(n_subjects, n_stories, trs, n_features, n_voxels, seed=0):
    """Random delayed features; responses = tanh(features @ A) @ B + noise, per subject."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_features, 64)).astype(np.float32) / np.sqrt(n_features)
    subjects, tests = {}, {}
    for s in range(n_subjects):
        b = rng.standard_normal((64, n_voxels)).astype(np.float32)

        def story(n):
            x = rng.standard_normal((n, n_features)).astype(np.float32)
            return x, (np.tanh(3 * x @ a) @ b + 2 * rng.standard_normal((n, n_voxels))).astype(np.float32)

        parts = {f"story{i:02d}": story(trs) for i in range(n_stories)}
        subjects[f"S{s}"] = SubjectData({k: v[0] for k, v in parts.items()}, {k: v[1] for k, v in parts.items()})
        tests[f"S{s}"] = story(trs)
    return subjects, tests


def jax_step_loop(subjects, folds, test_x, *, make, cfg, seed=0):
    """Train every (subject, fold) MLP with a jitted minibatch step driven from Python.

    The loop a careful user would write with flax and optax: PCA targets per fold, numpy
    shuffles, an ``nnx.jit`` step and validation compiled once for all models, early stopping
    keeping a copy of the best state. Same settings as the jaxenc run.

    Returns
    -------
    (dict of str to ndarray of shape (n_test, n_voxels), list of int)
        Fold-averaged voxel predictions per subject, and the epochs each model ran.
    """

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            return jnp.mean(jnp.abs(model(x, train=True) - y))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def predict(model, x):
        return model(x, train=False)

    # One transformation for all models: nnx.jit keys its cache on the optimizer's graph, which
    # holds it, so a fresh optax.adamw per model would recompile the step for every model.
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    preds, epochs_run = {}, []
    for si, (subject, data) in enumerate(subjects.items()):
        fold_preds = []
        for k, (train, val) in enumerate(folds[subject]):
            pca = PCA(cfg.n_components).fit([data.responses[s] for s in train])
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
                    step(model, opt, jnp.asarray(x_train[idx]), jnp.asarray(z_train[idx]))
                epochs += 1
                val_loss = float(jnp.mean(jnp.abs(predict(model, x_val) - z_val)))
                if val_loss < best - cfg.min_delta:
                    best, best_state, bad = val_loss, nnx.clone(nnx.state(model)), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
            epochs_run.append(epochs)
            nnx.update(model, best_state)
            fold_preds.append(np.asarray(pca.inverse_transform(predict(model, jnp.asarray(test_x[subject])))))
        preds[subject] = np.mean(fold_preds, axis=0)
    return preds, epochs_run


def mean_r(preds, tests):
    return {s: float(np.nanmean(np.asarray(pearson_r(tests[s][1], preds[s])))) for s in preds}


def epochs_of(fit) -> list[int]:
    """Epochs each model of a fit trained: up to its early stop, or all of them."""
    return [int(e) + 1 if e >= 0 else fit.config.max_epochs for e in fit.stop_epoch]


def summary(wall, compile_s, epochs, preds, tests, **extra) -> dict:
    """One run's record: wall, compile share, epochs per model, s per epoch per model, r."""
    return {
        "wall_s": wall,
        **compile_s,
        "wall_minus_compile_s": wall - compile_s["compile_total_s"],
        "epochs_per_model": epochs,
        "s_per_epoch_per_model": wall / sum(epochs),
        "mean_r": mean_r(preds, tests),
        **extra,
    }


def main(argv=None):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--gpu-size", action="store_true", help="the paper's input size (run on a GPU)")
    own.add_argument("--peak-tflops", type=float, default=None, help="device fp32 peak, TFLOP/s")
    own.add_argument("--epochs", type=int, default=None, help="upper bound on epochs per model")
    own.add_argument("--subjects", type=int, default=None, help="subjects (default 3)")
    extra, rest = own.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0], rest)

    if extra.gpu_size:
        size = dict(n_subjects=3, n_stories=30, trs=300, n_features=4 * (4096 + 1280), n_voxels=20000)
        epochs = extra.epochs or 20
    elif args.fast:
        size = dict(n_subjects=2, n_stories=5, trs=120, n_features=4 * 32, n_voxels=200)
        epochs = extra.epochs or 30
    else:
        size = dict(n_subjects=3, n_stories=12, trs=150, n_features=4 * 128, n_voxels=2000)
        epochs = extra.epochs or 200
    if extra.subjects:
        size["n_subjects"] = extra.subjects
    n_components = 64 if args.fast else 512
    hp = dict(hidden=256, dropout=0.2, lr=1e-3, weight_decay=1e-4, batch_size=128, patience=10)
    # --gpu-size measures throughput: every model runs every epoch.
    patience = epochs if extra.gpu_size else hp["patience"]
    cfg = TrainConfig(n_folds=5, n_components=n_components, batch_size=hp["batch_size"], max_epochs=epochs,
                      patience=patience, learning_rate=hp["lr"], weight_decay=hp["weight_decay"],
                      epochs_per_call=5, checkpoint_every=5)
    make = functools.partial(MLP, hidden=hp["hidden"], dropout=hp["dropout"])
    subjects, tests = make_data(**size)
    test_x = {s: t[0] for s, t in tests.items()}
    n_models = size["n_subjects"] * cfg.n_folds
    rows_per_model = size["n_stories"] * size["trs"] * (cfg.n_folds - 1) / cfg.n_folds
    print(f"sizes: {size}, {n_components} components, up to {epochs} epochs, {n_models} models", file=sys.stderr)

    def run_jax(vectorize):
        def go():
            fit = fit_encoders(make, subjects, cfg, vectorize=vectorize, progress=False)
            preds = fit.predict(test_x)
            jax.block_until_ready(jax.tree.leaves(fit.best_state))
            return fit, preds

        (fit, preds), wall, compile_s = timed(go)
        return fit, preds, wall, compile_s

    results = {}
    fit, preds, wall, compile_s = run_jax(True)
    # The vmapped program advances every model until the last one stops, in chunks of
    # epochs_per_call: the epochs it computes, useful or not.
    program_epochs = int(np.isfinite(fit.history[:, :, 1]).any(axis=0).sum())
    program_epochs = -(-program_epochs // cfg.epochs_per_call) * cfg.epochs_per_call
    fit_warm, preds_warm, warm, compile_warm = run_jax(True)
    results["jax_vmap"] = summary(
        wall, compile_s, epochs_of(fit), preds, tests, n_traces=fit.n_traces,
        program_epochs=program_epochs, wall_warm_s=warm, compile_total_warm_s=compile_warm["compile_total_s"],
        s_per_epoch_per_model_warm=warm / sum(epochs_of(fit_warm)),
    )
    # Forward + backward of the two dense layers: 3 x 2 x rows x (F x H + H x K) per epoch and model,
    # counted over the epochs the program computes (stopped models included).
    flops = 6 * rows_per_model * (size["n_features"] * hp["hidden"] + hp["hidden"] * n_components) * program_epochs * n_models
    results["jax_vmap"]["achieved_tflops_warm"] = flops / warm / 1e12
    if extra.peak_tflops:
        results["jax_vmap"]["fraction_of_peak"] = flops / warm / 1e12 / extra.peak_tflops
    ratios = {}
    if not extra.gpu_size:
        (preds_step, step_epochs), wall_step, compile_step = timed(
            lambda: jax_step_loop(subjects, fit.folds, test_x, make=make, cfg=cfg)
        )
        results["jax_step_loop"] = summary(wall_step, compile_step, step_epochs, preds_step, tests)
        fit_loop, preds_loop, wall_loop, compile_loop = run_jax(False)
        results["jax_program_loop"] = summary(wall_loop, compile_loop, epochs_of(fit_loop), preds_loop, tests)
        import torch_reference

        (preds_torch, torch_epochs), wall_torch, _ = timed(lambda: torch_reference.fit_predict(
            {s: (d.features, d.responses) for s, d in subjects.items()}, fit.folds, test_x,
            n_components=n_components, hidden=hp["hidden"], dropout=hp["dropout"], lr=hp["lr"],
            weight_decay=hp["weight_decay"], batch_size=hp["batch_size"], max_epochs=epochs, patience=patience,
        ))
        results["torch_loop"] = {
            "wall_s": wall_torch, "epochs_per_model": torch_epochs,
            "s_per_epoch_per_model": wall_torch / sum(torch_epochs), "mean_r": mean_r(preds_torch, tests),
            "torch_threads": torch_reference.torch.get_num_threads(),
        }
        walls = {"torch_loop": wall_torch, "jax_step_loop": wall_step, "jax_program_loop": wall_loop}
        ratios = {f"train_mlp_vs_{k}": v / wall for k, v in walls.items()}
        results["ratios_warm"] = {f"train_mlp_vs_{k}": v / warm for k, v in walls.items()}
        for other in ("torch_loop", "jax_step_loop", "jax_program_loop"):
            results[f"max_abs_diff_mean_r_vs_{other}"] = max(
                abs(results["jax_vmap"]["mean_r"][s] - results[other]["mean_r"][s]) for s in tests
            )
    # Other engineers share the CPU cores: the load average qualifies every wall time.
    payload = {
        "load_average_1_5_15": list(os.getloadavg()),
        "sizes": {**size, "n_components": n_components, "max_epochs": epochs, "n_models": n_models, **hp,
                  "patience": patience, "epochs_per_call": cfg.epochs_per_call},
        "results": results, "peak_rss_mb": peak_rss_mb(), "fast": args.fast, "gpu_size": extra.gpu_size,
    }
    name = "train_gpu" if extra.gpu_size else ("train_fast" if args.fast else "train")
    write_results(name, payload, ratios=ratios, out=args.out)


if __name__ == "__main__":
    main()
