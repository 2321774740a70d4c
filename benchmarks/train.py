"""Training the paper's MLP for every (subject, fold): jaxenc's one vmapped program against
Python loops over the models (a standard JAX training loop, jaxenc's per-model program, PyTorch).

    python benchmarks/train.py            # default, a few minutes on 2 CPU cores
    python benchmarks/train.py --fast     # seconds, a smoke check
    python benchmarks/train.py --gpu-size --peak-tflops 989   # real input size, FLOP/s vs peak

Default size: 3 subjects x 5 folds, 8 stories x 150 TRs per subject, 4 delays x 128 features,
800 voxels -> 512 PCA components, MLP 256 hidden, batch 128, 10 epochs (patience = epochs, so
every run does the same work). Data: random features with responses planted through a tanh
layer plus noise. Baselines, each a Python loop over the (subject, fold) models:

- ``jax_step_loop``: what a user writing a standard JAX loop would do: one ``nnx.jit``
  minibatch step, epochs, batches, validation and early stopping driven from Python;
- ``jax_program_loop``: jaxenc's own compiled per-model program (``vectorize=False``);
- ``torch_loop``: the same in PyTorch (torch_reference.py).

Reports wall time (compilation included; ``wall_warm_s`` for the vmapped program reused), time
per epoch per model, and the mean test-story correlation of each, which must agree within noise
(same initialisation, AdamW, BatchNorm, dropout, MAE loss and batch logic everywhere).
``--gpu-size``: 4 x (4096 + 1280) features, ~9000 TRs per subject, only the vmapped jaxenc run,
with achieved FLOP/s against ``--peak-tflops`` of the device.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import os

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

    The loop a user would write with flax and optax: PCA targets per fold, numpy shuffles,
    ``nnx.jit`` step and validation, early stopping keeping the best state. Same settings as
    the jaxenc run.

    Returns
    -------
    (dict of str to ndarray of shape (n_test, n_voxels), int)
        Fold-averaged voxel predictions per subject, and the total epochs run.
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

    rng = np.random.default_rng(seed)
    preds, total_epochs = {}, 0
    for si, (subject, data) in enumerate(subjects.items()):
        fold_preds = []
        for k, (train, val) in enumerate(folds[subject]):
            pca = PCA(cfg.n_components).fit([data.responses[s] for s in train])
            x_train = np.concatenate([data.features[s] for s in train])
            z_train = np.asarray(pca.transform(np.concatenate([data.responses[s] for s in train])))
            x_val = jnp.asarray(np.concatenate([data.features[s] for s in val]))
            z_val = jnp.asarray(pca.transform(np.concatenate([data.responses[s] for s in val])))
            model = make(x_train.shape[1], cfg.n_components, rngs=nnx.Rngs(params=seed + 100 * si + k, dropout=k))
            opt = nnx.Optimizer(model, optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay), wrt=nnx.Param)
            best, best_state, bad = np.inf, None, 0
            for _ in range(cfg.max_epochs):
                order = rng.permutation(len(x_train))
                for start in range(0, len(order), cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    step(model, opt, jnp.asarray(x_train[idx]), jnp.asarray(z_train[idx]))
                total_epochs += 1
                val_loss = float(jnp.mean(jnp.abs(predict(model, x_val) - z_val)))
                if val_loss < best:
                    best, best_state, bad = val_loss, nnx.state(model), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
            nnx.update(model, best_state)
            fold_preds.append(np.asarray(pca.inverse_transform(predict(model, jnp.asarray(test_x[subject])))))
        preds[subject] = np.mean(fold_preds, axis=0)
    return preds, total_epochs


def mean_r(preds, tests):
    return {s: float(np.nanmean(np.asarray(pearson_r(tests[s][1], preds[s])))) for s in preds}


def main(argv=None):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--gpu-size", action="store_true", help="the paper's input size (run on a GPU)")
    own.add_argument("--peak-tflops", type=float, default=None, help="device fp32 peak, TFLOP/s")
    own.add_argument("--epochs", type=int, default=None, help="epochs per model")
    own.add_argument("--subjects", type=int, default=None, help="subjects (default 3)")
    extra, rest = own.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0], rest)

    if extra.gpu_size:
        size = dict(n_subjects=3, n_stories=30, trs=300, n_features=4 * (4096 + 1280), n_voxels=20000)
        epochs = extra.epochs or 20
    elif args.fast:
        size = dict(n_subjects=2, n_stories=5, trs=120, n_features=4 * 32, n_voxels=200)
        epochs = extra.epochs or 3
    else:
        size = dict(n_subjects=3, n_stories=8, trs=150, n_features=4 * 128, n_voxels=800)
        epochs = extra.epochs or 10
    if extra.subjects:
        size["n_subjects"] = extra.subjects
    n_components = 64 if args.fast else 512
    hp = dict(hidden=256, dropout=0.2, lr=1e-3, weight_decay=1e-4, batch_size=128)
    cfg = TrainConfig(n_folds=5, n_components=n_components, batch_size=hp["batch_size"], max_epochs=epochs,
                      patience=epochs, learning_rate=hp["lr"], weight_decay=hp["weight_decay"],
                      epochs_per_call=min(5, epochs), checkpoint_every=min(5, epochs))
    make = functools.partial(MLP, hidden=hp["hidden"], dropout=hp["dropout"])
    subjects, tests = make_data(**size)
    test_x = {s: t[0] for s, t in tests.items()}
    n_models = size["n_subjects"] * cfg.n_folds
    rows_per_model = size["n_stories"] * size["trs"] * (cfg.n_folds - 1) / cfg.n_folds
    print(f"sizes: {size}, {n_components} components, {epochs} epochs, {n_models} models", file=sys.stderr)

    results = {}

    def run_jax(vectorize):
        t0 = time.perf_counter()
        fit = fit_encoders(make, subjects, cfg, vectorize=vectorize, progress=False)
        preds = fit.predict(test_x)
        jax.block_until_ready(jax.tree.leaves(fit.best_state))
        return time.perf_counter() - t0, fit, preds

    wall, fit, preds = run_jax(True)
    warm, _, _ = run_jax(True)  # the compiled program is cached: this run has no compilation
    results["jax_vmap"] = {"wall_s": wall, "wall_warm_s": warm, "mean_r": mean_r(preds, tests),
                           "s_per_epoch_per_model": wall / (epochs * n_models), "n_traces": fit.n_traces}
    # Forward + backward of the two dense layers: 3 x 2 x rows x (F x H + H x K) per epoch and model.
    flops = 6 * rows_per_model * (size["n_features"] * hp["hidden"] + hp["hidden"] * n_components) * epochs * n_models
    results["jax_vmap"]["achieved_tflops_warm"] = flops / warm / 1e12
    if extra.peak_tflops:
        results["jax_vmap"]["fraction_of_peak"] = flops / warm / 1e12 / extra.peak_tflops
    ratios = {}
    if not extra.gpu_size:
        t0 = time.perf_counter()
        preds_step, step_epochs = jax_step_loop(subjects, fit.folds, test_x, make=make, cfg=cfg)
        wall_step = time.perf_counter() - t0
        results["jax_step_loop"] = {"wall_s": wall_step, "mean_r": mean_r(preds_step, tests),
                                    "s_per_epoch_per_model": wall_step / step_epochs}
        wall_loop, fit_loop, preds_loop = run_jax(False)
        results["jax_program_loop"] = {"wall_s": wall_loop, "mean_r": mean_r(preds_loop, tests),
                                       "s_per_epoch_per_model": wall_loop / (epochs * n_models)}
        import torch_reference

        folds = fit.folds
        t0 = time.perf_counter()
        preds_torch, torch_epochs = torch_reference.fit_predict(
            {s: (d.features, d.responses) for s, d in subjects.items()}, folds, test_x,
            n_components=n_components, hidden=hp["hidden"], dropout=hp["dropout"], lr=hp["lr"],
            weight_decay=hp["weight_decay"], batch_size=hp["batch_size"], max_epochs=epochs, patience=epochs,
        )
        wall_torch = time.perf_counter() - t0
        results["torch_loop"] = {"wall_s": wall_torch, "mean_r": mean_r(preds_torch, tests),
                                 "s_per_epoch_per_model": wall_torch / torch_epochs, "torch_threads": torch_reference.torch.get_num_threads()}
        walls = {"torch_loop": wall_torch, "jax_step_loop": wall_step, "jax_program_loop": wall_loop}
        ratios = {f"train_mlp_vs_{k}": v / wall for k, v in walls.items()}
        results["ratios_warm"] = {f"train_mlp_vs_{k}": v / warm for k, v in walls.items()}
        for other in ("torch_loop", "jax_step_loop"):
            results[f"max_abs_diff_mean_r_vs_{other}"] = max(
                abs(results["jax_vmap"]["mean_r"][s] - results[other]["mean_r"][s]) for s in tests
            )
    # Other engineers share the CPU cores: the load average qualifies every wall time.
    payload = {"load_average_1_5_15": list(os.getloadavg()), "sizes": {**size, "n_components": n_components, "epochs": epochs, "n_models": n_models, **hp},
               "results": results, "peak_rss_mb": peak_rss_mb(), "fast": args.fast, "gpu_size": extra.gpu_size}
    name = "train_gpu" if extra.gpu_size else ("train_fast" if args.fast else "train")
    write_results(name, payload, ratios=ratios, out=args.out)


if __name__ == "__main__":
    main()
