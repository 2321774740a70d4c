"""Training the paper's MLP for every (subject, fold): jaxenc's one vmapped program against a
Python loop of the same jaxenc step and against a straightforward PyTorch loop.

    python benchmarks/train.py            # default, a few minutes on 2 CPU cores
    python benchmarks/train.py --fast     # seconds, a smoke check
    python benchmarks/train.py --gpu-size --peak-tflops 989   # real input size, FLOP/s vs peak

Default size: 3 subjects x 5 folds, 8 stories x 150 TRs per subject, 4 delays x 128 features,
800 voxels -> 512 PCA components, MLP 256 hidden, batch 128, 10 epochs (patience = epochs, so
every run does the same work). Data: random features with responses planted through a tanh
layer plus noise. Reports wall time (the jaxenc times include compilation), time per epoch
per model, and the mean test-story correlation of each, which must agree within noise.
``--gpu-size``: 4 x (4096 + 1280) features, ~9000 TRs per subject, only the vmapped jaxenc run,
with achieved FLOP/s against ``--peak-tflops`` of the device.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import numpy as np

from common import parse_args, peak_rss_mb, write_results

import jax

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


def mean_r(preds, tests):
    return {s: float(np.nanmean(np.asarray(pearson_r(tests[s][1], preds[s])))) for s in preds}


def main(argv=None):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--gpu-size", action="store_true", help="the paper's input size (run on a GPU)")
    own.add_argument("--peak-tflops", type=float, default=None, help="device fp32 peak, TFLOP/s")
    own.add_argument("--epochs", type=int, default=None, help="epochs per model")
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
        wall_loop, fit_loop, preds_loop = run_jax(False)
        results["jax_loop"] = {"wall_s": wall_loop, "mean_r": mean_r(preds_loop, tests),
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
        ratios = {"train_mlp_vs_torch_loop": wall_torch / wall, "train_mlp_vs_jax_loop": wall_loop / wall}
        results["ratios_warm"] = {"train_mlp_vs_torch_loop": wall_torch / warm, "train_mlp_vs_jax_loop": wall_loop / warm}
        results["max_abs_diff_mean_r_vs_torch"] = max(
            abs(results["jax_vmap"]["mean_r"][s] - results["torch_loop"]["mean_r"][s]) for s in tests
        )
    payload = {"sizes": {**size, "n_components": n_components, "epochs": epochs, "n_models": n_models, **hp},
               "results": results, "peak_rss_mb": peak_rss_mb(), "fast": args.fast, "gpu_size": extra.gpu_size}
    name = "train_gpu" if extra.gpu_size else ("train_fast" if args.fast else "train")
    write_results(name, payload, ratios=ratios, out=args.out)


if __name__ == "__main__":
    main()
