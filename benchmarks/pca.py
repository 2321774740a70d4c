"""jaxenc PCA against scikit-learn PCA on identical fMRI-like data.

Races ``jaxenc.decomp.PCA`` (exact: the Gram solver when voxels outnumber TRs, the covariance
solver otherwise; and the randomized solver) against ``sklearn.decomposition.PCA`` with
``svd_solver="full"`` and ``"randomized"`` on the same float32 matrices, and records how far the
results are apart: the largest principal angle between the component subspaces and the largest
difference between the two reconstructions ``inverse_transform(transform(Y))``.

Run ``python benchmarks/pca.py`` (a few minutes on 2 CPU cores) or ``--fast`` for a quick
check. Ratios are sklearn time / jaxenc time (above 1: jaxenc is faster), taken on the largest
wide case (TRs < voxels, the shape of real data).
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.linalg
from common import RESULTS_DIR, parse_args, peak_rss_mb, time_call, write_results
from sklearn.decomposition import PCA as SkPCA

from jaxenc.decomp import PCA

# (n_trs, n_voxels, n_components): wide cases mimic TRs < voxels, the tall one the reverse.
FAST_SIZES = [(300, 1200, 32), (1200, 300, 32)]
DEFAULT_SIZES = [(800, 3200, 64), (1500, 6000, 128), (4000, 1000, 128)]


def fmri_like(n, p, seed=0):
    """Responses with a power-law spectrum (a few strong shared components) plus voxel noise."""
    rng = np.random.default_rng(seed)
    rank = min(n, p) // 2
    scales = 5.0 * (1.0 + np.arange(rank)) ** -0.7
    latent = rng.standard_normal((n, rank)).astype(np.float32) * scales.astype(np.float32)
    loadings = rng.standard_normal((rank, p)).astype(np.float32) / np.sqrt(rank, dtype=np.float32)
    y = latent @ loadings + rng.standard_normal((n, p)).astype(np.float32)
    return y + rng.normal(0, 1, p).astype(np.float32)


def max_angle_deg(a, b):
    return float(np.degrees(np.max(scipy.linalg.subspace_angles(np.asarray(a).T, np.asarray(b).T))))


def compare(ours, sk, y):
    recon_ours = np.asarray(ours.inverse_transform(ours.transform(y)))
    recon_sk = sk.inverse_transform(sk.transform(y))
    return {
        "max_principal_angle_deg": max_angle_deg(ours.components_, sk.components_),
        "top10_max_principal_angle_deg": max_angle_deg(ours.components_[:10], sk.components_[:10]),
        "reconstruction_max_abs_diff": float(np.max(np.abs(recon_ours - recon_sk))),
        "reconstruction_rel_frobenius_diff": float(
            np.linalg.norm(recon_ours - recon_sk) / np.linalg.norm(recon_sk - sk.mean_)
        ),
        # Share of the reference's explained variance the jaxenc components capture; for a
        # randomized fit this is the meaningful quality measure, since trailing components of
        # a flat spectrum are ill-determined and their principal angles large by nature.
        "captured_variance_vs_reference": float(
            np.sum(ours.explained_variance_ratio_) / np.sum(sk.explained_variance_ratio_)
        ),
    }


def run_size(n, p, k, repeats):
    y = fmri_like(n, p, seed=n + p)
    runs = {
        "jaxenc_exact": lambda: PCA(k).fit(y),
        "jaxenc_randomized": lambda: PCA(k, method="randomized", seed=0).fit(y),
        "sklearn_full": lambda: SkPCA(k, svd_solver="full").fit(y),
        "sklearn_randomized": lambda: SkPCA(k, svd_solver="randomized", random_state=0).fit(y),
    }
    timings, fitted = {}, {}
    for name, fn in runs.items():
        if name.startswith("jaxenc"):
            timed = time_call(lambda fn=fn: fn().components_, repeats=repeats)
            fitted[name] = fn()
        else:
            timed = time_call(fn, repeats=repeats)
            fitted[name] = timed["result"]
        timings[name] = {key: timed[key] for key in ("first_s", "times_s", "median_s")}
        cold, warm = timed["first_s"], timed["median_s"]
        print(f"  {name:20s} cold {cold:7.3f} s  warm median {warm:7.3f} s")
    return {
        "n_trs": n,
        "n_voxels": p,
        "n_components": k,
        "solver_chosen_by_auto": "gram" if p > n else "covariance",
        "timings": timings,
        "exact_vs_sklearn_full": compare(fitted["jaxenc_exact"], fitted["sklearn_full"], y),
        "randomized_vs_sklearn_randomized": compare(
            fitted["jaxenc_randomized"], fitted["sklearn_randomized"], y
        ),
        "randomized_vs_sklearn_full": compare(
            fitted["jaxenc_randomized"], fitted["sklearn_full"], y
        ),
    }


def main():
    args = parse_args(__doc__.splitlines()[0])
    sizes = FAST_SIZES if args.fast else DEFAULT_SIZES
    # The CPUs are shared; the load says how much the timings can be trusted.
    load_at_start = os.getloadavg()
    start = time.perf_counter()
    results = []
    for n, p, k in sizes:
        print(f"n_trs={n} n_voxels={p} k={k}")
        results.append(run_size(n, p, k, args.repeats))
    wide = [r for r in results if r["n_voxels"] > r["n_trs"]]
    headline = max(wide, key=lambda r: r["n_trs"] * r["n_voxels"])
    median = {name: t["median_s"] for name, t in headline["timings"].items()}
    ratios = {
        "pca_vs_sklearn_full": median["sklearn_full"] / median["jaxenc_exact"],
        "pca_vs_sklearn_randomized": median["sklearn_randomized"] / median["jaxenc_randomized"],
    }
    payload = {
        "fast": args.fast,
        "dtype": "float32",
        "headline_size": [headline["n_trs"], headline["n_voxels"], headline["n_components"]],
        "sizes": results,
        "peak_rss_mb": peak_rss_mb(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "total_wall_s": time.perf_counter() - start,
        "notes": "ratios = sklearn median warm time / jaxenc median warm time on headline_size; "
        "jaxenc_exact is PCA(method='auto'); randomized runs use jaxenc's defaults (n_iter=7, "
        "n_oversamples=10, QR) and sklearn's (n_iter='auto' = 7 here, 10 oversamples, LU). "
        "The 2 CPU cores are shared with other jobs: see the load averages.",
    }
    out = args.out
    if args.fast and out is None:
        # A quick check must not overwrite the committed default-size results.
        out = RESULTS_DIR / "pca_fast.json"
    write_results("pca", payload, ratios=ratios, out=out)


if __name__ == "__main__":
    main()
