"""RidgeCV: jaxenc against himalaya (numpy and torch backends) and scikit-learn, same data.

    python benchmarks/ridge.py           # 6000 TRs x 2000 features x 10000 voxels, ~10 min on 2 cores
    python benchmarks/ridge.py --fast    # 2000 TRs x 500 features x 2000 voxels, ~1 min

Data: 40 stories of equal length; features are 4 delays (1-4 TRs) of temporally smoothed
Gaussian features, as :func:`jaxenc.align.make_delayed` would build; voxels are a planted
linear map plus noise with signal-to-noise ratios from none to strong. All in float32.

Races (identical X, Y, alphas and 5 folds over stories, intercept fitted, R^2 validation score):

- jaxenc ``RidgeCV`` (float32, decompositions in float64) with ``lapack_threads=1``, the
  setting its docstring recommends on a shared CPU, and again with OpenBLAS's default
  threads: its first fit (compilation included) is timed apart, then ``--repeats`` rounds in
  which every contender fits once, in turn, so that on a shared machine all see the same
  load; ratios of medians over rounds, and of the best round (the least disturbed);
- himalaya ``RidgeCV`` with its numpy backend and its torch (CPU) backend, float32, R^2 as
  ``score_func``: the same estimator, so best alphas and predictions must agree;
- scikit-learn ``RidgeCV(alpha_per_target=True)``: efficient leave-one-out (GCV), its only
  per-target mode, so its folds and chosen alphas differ; timed for scale only.

Accuracy: predictions on 500 held-out TRs, jaxenc and himalaya against each other and each
against a float64 refit (numpy eigendecomposition of X^T X) with the alphas it chose.
Memory: jaxenc's peak resident memory above the data, in a fresh process per voxel count, at
half and all of the voxels.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import block, parse_args, write_results

ALPHAS = np.logspace(0, 5, 11)
N_FOLDS = 5
N_STORIES = 40
N_TEST = 500
SIZES = {"fast": dict(n_trs=2000, n_features=500, n_voxels=2000),
         "default": dict(n_trs=6000, n_features=2000, n_voxels=10000)}


def make_data(n_trs, n_features, n_voxels, seed=0):
    """Delayed smoothed features and planted voxels, float32; the last N_TEST rows held out."""
    rng = np.random.default_rng(seed)
    n_total, n_base = n_trs + N_TEST, n_features // 4
    base = rng.standard_normal((n_total + 4, n_base)).astype(np.float32)
    for t in range(1, len(base)):  # AR(1) smoothing, as slowly varying stimulus features
        base[t] = 0.7 * base[t - 1] + 0.71 * base[t]
    X = np.concatenate([base[4 - d:4 - d + n_total] for d in (1, 2, 3, 4)], axis=1)
    X = (X - X.mean(0)) / X.std(0)
    Y = np.empty((n_total, n_voxels), np.float32)
    snr = np.linspace(0.0, 1.0, n_voxels).astype(np.float32)
    for s in range(0, n_voxels, 2048):
        w = rng.standard_normal((n_features, min(2048, n_voxels - s))).astype(np.float32)
        signal = X @ w
        signal /= signal.std(0)
        Y[:, s:s + w.shape[1]] = signal * snr[s:s + w.shape[1]] + rng.standard_normal(
            (n_total, w.shape[1])).astype(np.float32)
    groups = np.repeat(np.arange(N_STORIES), -(-n_trs // N_STORIES))[:n_trs]
    return (np.ascontiguousarray(X[:n_trs]), np.ascontiguousarray(Y[:n_trs]),
            np.ascontiguousarray(X[n_trs:]), groups)


def reference_predictions(X, Y, X_test, best_alphas):
    """float64 ridge with the given per-voxel alphas, by numpy eigh of X^T X."""
    x = X.astype(np.float64)
    x_mean = x.mean(0)
    x -= x_mean
    eig, V = np.linalg.eigh(x.T @ x)
    out = np.empty((len(X_test), Y.shape[1]))
    xt = (X_test.astype(np.float64) - x_mean) @ V
    for s in range(0, Y.shape[1], 4096):
        y = Y[:, s:s + 4096].astype(np.float64)
        y_mean = y.mean(0)
        q = V.T @ (x.T @ (y - y_mean))
        out[:, s:s + 4096] = xt @ (q / (eig[:, None] + best_alphas[None, s:s + 4096])) + y_mean
    return out


def timed(fn) -> float:
    """Seconds of one call of ``fn``, its result computed to completion."""
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def to_numpy(x) -> np.ndarray:
    """A numpy copy of a numpy array or a torch tensor (himalaya's torch backend)."""
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def diff(a, b) -> dict:
    err = np.abs(np.asarray(a, np.float64) - b)
    return {"max_abs": float(err.max()), "max_rel": float(err.max() / np.abs(b).max()),
            "rms_rel": float(np.sqrt((err ** 2).mean() / (b ** 2).mean()))}


def _proc_status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def memory_probe(n_voxels: int, sizes: dict) -> dict:
    """Run in a fresh process: resident memory before and at the peak of one jaxenc fit.

    The peak is VmHWM, the high-water mark of this process's own memory map, reset just before
    the fit: ``ru_maxrss`` (``common.peak_rss_mb``) survives ``exec`` on Linux and would report
    the parent's peak.
    """
    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_splits import resolve_splits

    X, Y, _, groups = make_data(**{**sizes, "n_voxels": n_voxels})
    splits = resolve_splits(N_FOLDS, len(X), groups)
    RidgeCV(alphas=ALPHAS, cv=splits).fit(X[:, :8], Y[:, :8])  # loads jax, not the big kernels
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, so the peak is the fit's, not the data generation's
    before = _proc_status_mb("VmRSS")
    RidgeCV(alphas=ALPHAS, cv=splits, lapack_threads=1).fit(X, Y)
    peak = _proc_status_mb("VmHWM")
    return {"n_voxels": n_voxels, "rss_before_fit_mb": before, "peak_rss_mb": peak,
            "fit_overhead_mb": peak - before, "Y_mb": Y.nbytes / 2**20,
            "coef_mb": X.shape[1] * n_voxels * 4 / 2**20}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-probe":
        print(json.dumps(memory_probe(int(sys.argv[2]), json.loads(sys.argv[3]))))
        return
    args = parse_args(__doc__.splitlines()[0])
    sizes = SIZES["fast" if args.fast else "default"]
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score
    from sklearn.linear_model import RidgeCV as SklearnRidgeCV

    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_splits import resolve_splits

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    X, Y, X_test, groups = make_data(**sizes)
    splits = resolve_splits(N_FOLDS, len(X), groups)
    print(f"data {X.shape} x {Y.shape[1]} voxels in {time.perf_counter() - t0:.1f} s", flush=True)
    results = {"sizes": {**sizes, "n_test": N_TEST, "n_folds": N_FOLDS, "n_stories": N_STORIES,
                         "n_alphas": len(ALPHAS), "alphas": ALPHAS, "dtype": "float32"}}

    # Under a shared, fluctuating load, the competitors run in alternation, one fit each per
    # round, so that each sees the same load; jaxenc's first fit (compilation) is timed apart.
    jax_model = RidgeCV(alphas=ALPHAS, cv=splits, lapack_threads=1)
    jax_default_threads = RidgeCV(alphas=ALPHAS, cv=splits)
    himalaya = {b: HimalayaRidgeCV(alphas=ALPHAS.astype(np.float32), cv=splits,
                                   fit_intercept=True,
                                   solver_params=dict(score_func=r2_score, warn=False))
                for b in ("numpy", "torch")}
    times = {"jaxenc": [], "jaxenc_default_lapack_threads": [], "himalaya_numpy": [],
             "himalaya_torch": []}
    first_s = timed(lambda: jax_model.fit(X, Y))
    print(f"jaxenc first fit {first_s:.1f} s", flush=True)
    for _ in range(args.repeats):
        times["jaxenc"].append(timed(lambda: jax_model.fit(X, Y)))
        times["jaxenc_default_lapack_threads"].append(timed(lambda: jax_default_threads.fit(X, Y)))
        for backend, model in himalaya.items():
            set_backend(backend)
            times[f"himalaya_{backend}"].append(timed(lambda m=model: m.fit(X, Y)))
        set_backend("numpy")
        print({k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    results["jaxenc"] = {"first_s": first_s, "times_s": times["jaxenc"],
                         "median_s": median["jaxenc"], "lapack_threads": 1}
    results["jaxenc_default_lapack_threads"] = {
        "times_s": times["jaxenc_default_lapack_threads"],
        "median_s": median["jaxenc_default_lapack_threads"]}
    pred_jax = jax_model.predict(X_test)
    him_pred, him_alphas = {}, {}
    for backend, model in himalaya.items():
        set_backend(backend)
        him_pred[backend] = to_numpy(model.predict(X_test))
        him_alphas[backend] = to_numpy(model.best_alphas_).astype(np.float64)
    set_backend("numpy")
    fastest = min(("numpy", "torch"), key=lambda b: median[f"himalaya_{b}"])

    sk = SklearnRidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=True)
    sk_s = timed(lambda: sk.fit(X, Y))
    results["sklearn_gcv"] = {"times_s": [sk_s], "median_s": sk_s}
    print("sklearn", results["sklearn_gcv"], flush=True)

    ref_jax = reference_predictions(X, Y, X_test, jax_model.best_alphas_)
    ref_him = reference_predictions(X, Y, X_test, him_alphas[fastest])
    results["himalaya"] = {b: {"times_s": times[f"himalaya_{b}"],
                               "median_s": median[f"himalaya_{b}"]} for b in himalaya}
    results["himalaya"]["fastest_backend"] = fastest
    results["accuracy"] = {
        "jaxenc_vs_himalaya": diff(pred_jax, him_pred[fastest]),
        "jaxenc_vs_float64": diff(pred_jax, ref_jax),
        "himalaya_vs_float64": diff(him_pred[fastest], ref_him),
        "himalaya_numpy_vs_torch": diff(him_pred["numpy"], him_pred["torch"]),
        "same_best_alpha_fraction": float(np.isclose(
            jax_model.best_alphas_, him_alphas[fastest], rtol=1e-5).mean()),
        "sklearn_gcv_same_best_alpha_fraction": float(np.isclose(
            sk.alpha_, jax_model.best_alphas_, rtol=1e-5).mean()),
    }
    print("accuracy", results["accuracy"], flush=True)

    probes = []
    for n_voxels in (sizes["n_voxels"] // 2, sizes["n_voxels"]):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(n_voxels),
                              json.dumps(sizes)], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        probes.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print("memory", probes[-1], flush=True)
    results["memory"] = probes
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    results["note"] = ("2-core machine shared with other engineers running jobs at the same "
                       "time (see load_average); absolute times are noisy, the ratios less so")
    jax_s = median["jaxenc"]
    best = {k: min(v) for k, v in times.items()}
    write_results("ridge", results, out=args.out, ratios={
        "ridgecv_vs_himalaya": median[f"himalaya_{fastest}"] / jax_s,
        "ridgecv_vs_himalaya_best_of_rounds": min(best["himalaya_numpy"],
                                                  best["himalaya_torch"]) / best["jaxenc"],
        "ridgecv_cold_vs_himalaya": median[f"himalaya_{fastest}"] / first_s,
        "ridgecv_vs_himalaya_numpy": median["himalaya_numpy"] / jax_s,
        "ridgecv_vs_himalaya_torch": median["himalaya_torch"] / jax_s,
        "ridgecv_default_lapack_threads_vs_himalaya": median[f"himalaya_{fastest}"]
        / median["jaxenc_default_lapack_threads"],
        "ridgecv_vs_sklearn": sk_s / jax_s,
    })


if __name__ == "__main__":
    main()
