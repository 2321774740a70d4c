"""Check a multi-process JAX setup: the sharded fits across every process equal one process's.

Run the same command on every host (or several times on one machine), each with its own
``--process-id``::

    python -m jaxenc.multihost --coordinator host0:1234 --num-processes 2 --process-id 0
    python -m jaxenc.multihost --coordinator host0:1234 --num-processes 2 --process-id 1

The processes join through :func:`jax.distributed.initialize` (on SLURM or Cloud TPU the three
options can be left out: JAX finds them itself) and build one mesh over the devices of all of
them. On a small planted problem, the same on every process, each process then runs

- the voxel-sharded PCA (:func:`jaxenc.decomp.pca_fit_sharded`, Gram and covariance solvers)
  and its sharded transform and inverse,
- the voxel-sharded ridge (:class:`jaxenc.models.ShardedRidgeCV`),
- the mesh-sharded training of 2 subjects x 3 folds of MLPs (:func:`jaxenc.train.fit_encoders`
  with ``mesh=``, 6 models padded to a multiple of the devices),

gathers every result to the host (:func:`jaxenc.distributed.to_host`) and compares it with the
same fit made by this process alone, without a mesh. Each check prints one line; the process
exits 1 if any result differs by more than float32 rounding allows (the tolerances of the
single-host tests: tests/decomp/test_pca_sharded.py, tests/models/test_ridge_sharded.py,
tests/train/test_fit_sharded.py). ``--out DIR`` writes ``DIR/process<i>.json`` with the
largest differences and a digest of every gathered result, so that a caller can also check
that all processes ended with the same arrays.

``--cpu-devices K`` gives each process K CPU devices (JAX's gloo collectives carry the traffic
between processes), which is how the test suite (tests/test_multihost.py) runs 2 processes
x 4 devices on one machine.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_checks", "TOLERANCES", "CHECKS"]

# Largest differences allowed between a sharded fit and the same fit in one process (float32
# compute): absolute for PCA components and MLP parameters, relative to the data's largest
# magnitude for scores, reconstructions, ridge coefficients and predictions, relative for
# explained variances and losses. Ridge penalties and best epochs must be identical.
TOLERANCES = {
    "pca_components": 2e-4,
    "pca_variance": 1e-4,
    "pca_scores": 1e-4,
    "ridge_coef": 1e-4,
    "ridge_cv_scores": 1e-5,
    "ridge_alphas": 0.0,
    "fit_params": 1e-4,
    "fit_losses": 1e-5,
    "fit_best_epoch": 0.0,
}
# The checks run_checks makes, by name.
CHECKS = ("pca_voxels", "pca_rows", "ridge", "fit_encoders")

_PCA_COMPONENTS = 6
_RIDGE_ALPHAS = np.logspace(-1, 4, 11)
_TRAIN = dict(n_folds=3, n_components=6, batch_size=32, val_batch_size=64, max_epochs=4,
              patience=4, learning_rate=3e-3, loss="mse", epochs_per_call=2)


def _planted_pca(n: int, p: int, seed: int) -> np.ndarray:
    """(n, p) responses: 6 well separated directions over a 0.05 noise floor, voxel offsets."""
    rng = np.random.default_rng(seed)
    scales = 10.0 * 0.75 ** np.arange(_PCA_COMPONENTS)
    left = np.linalg.qr(rng.standard_normal((n, _PCA_COMPONENTS)))[0] * np.sqrt(n)
    right = np.linalg.qr(rng.standard_normal((p, _PCA_COMPONENTS)))[0].T
    y = (left * scales) @ right + 0.05 * rng.standard_normal((n, p))
    return y + rng.normal(3.0, 1.0, size=p)


def _planted_ridge(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """120 TRs of 16 correlated features and 37 voxels from no signal to strong, 6 stories."""
    rng = np.random.default_rng(seed)
    n, p, v = 120, 16, 37
    X = rng.standard_normal((n, p)) @ (np.eye(p) + 0.3 * rng.standard_normal((p, p))) + 2.0
    W = rng.standard_normal((p, v)) * np.linspace(0.0, 0.6, v)
    Y = X @ W + rng.standard_normal((n, v)) + 5.0
    return X, Y, np.repeat(np.arange(6), n // 6)


def _planted_subject(seed: int, n_stories: int, n_voxels: int, rows: tuple[int, int]):
    from jaxenc.train import SubjectData

    rng = np.random.default_rng(seed)
    n_features = 10
    w = rng.standard_normal((n_features, n_voxels))
    features, responses = {}, {}
    for s in range(n_stories):
        n = int(rng.integers(*rows))
        x = rng.standard_normal((n, n_features)).astype(np.float32)
        features[f"story{s}"] = x
        noise = 0.5 * rng.standard_normal((n, n_voxels))
        responses[f"story{s}"] = (np.tanh(x) @ w + noise).astype(np.float32)
    return SubjectData(features, responses)


def _max_diff(a, b, scale: float = 1.0) -> float:
    """Largest |a - b| / scale; NaN in both at the same place counts 0, in one only inf."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} and {b.shape}")
    diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.max(np.nan_to_num(diff, nan=np.inf), initial=0.0) / scale)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes())
    return h.hexdigest()[:16]


def _check_pca(mesh, shard: str) -> dict:
    from jaxenc.decomp import pca_fit, pca_inverse, pca_transform
    from jaxenc.decomp.sharded import pca_fit_sharded, pca_inverse_sharded, pca_transform_sharded
    from jaxenc.distributed import to_host

    # Wide data (TRs < voxels) for the Gram solver, tall for the covariance solver; 163 and 40
    # voxels do not divide by the device count, so the padding is exercised too.
    method, (n, p) = {"voxels": ("gram", (48, 163)), "rows": ("covariance", (163, 40))}[shard]
    y = _planted_pca(n, p, seed=n + p)
    state = pca_fit_sharded(y, _PCA_COMPONENTS, mesh, shard=shard)
    full = state.gather()
    single = pca_fit(y, _PCA_COMPONENTS, method=method)
    z = pca_transform_sharded(state, y)
    rec = to_host(pca_inverse_sharded(state, z))[:, :p]
    z = to_host(z)
    z_single = pca_transform(single, y)
    scale = float(np.abs(y).max())
    return {
        "pca_components": _max_diff(full.components, single.components),
        "pca_variance": _max_diff(full.explained_variance, single.explained_variance,
                                  float(np.max(single.explained_variance))),
        "pca_scores": max(_max_diff(z, z_single, scale),
                          _max_diff(rec, pca_inverse(single, z_single), scale)),
        "digest": _digest(full.components, full.mean, full.explained_variance, z, rec),
    }


def _check_ridge(mesh) -> dict:
    from jaxenc.distributed import to_host
    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_sharded import ShardedRidgeCV

    X, Y, groups = _planted_ridge(seed=0)
    v = Y.shape[1]
    ref = RidgeCV(_RIDGE_ALPHAS, cv=3).fit(X, Y, groups)
    sharded = ShardedRidgeCV(mesh, alphas=_RIDGE_ALPHAS, cv=3, voxel_batch=2).fit(X, Y, groups)
    coef = to_host(sharded.coef_)[:, :v]
    intercept = to_host(sharded.intercept_)[:v]
    alphas = to_host(sharded.best_alphas_)[:v]
    pred = to_host(sharded.predict(X))[:, :v]
    scale = float(np.abs(Y).max())
    return {
        "ridge_alphas": _max_diff(alphas, ref.best_alphas_),
        "ridge_cv_scores": _max_diff(to_host(sharded.cv_scores_)[:, :v], ref.cv_scores_),
        "ridge_coef": max(_max_diff(coef, ref.coef_, scale), _max_diff(intercept, ref.intercept_, scale),
                          _max_diff(pred, ref.predict(X), scale),
                          _max_diff(sharded.score(X, Y), ref.score(X, Y))),
        "digest": _digest(coef, intercept, alphas, pred),
    }


def _leaves(state) -> list[np.ndarray]:
    import jax

    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x, np.float64) for x in jax.tree.leaves(state)]


def _check_fit(mesh) -> dict:
    from jaxenc.models.nonlinear import MLP
    from jaxenc.train import TrainConfig, fit_encoders

    make = functools.partial(MLP, hidden=16, dropout=0.1)
    # Stories of equal length within a subject: one PCA shape per subject, so fewer compiles.
    data = {"A": _planted_subject(0, 6, 20, (40, 41)), "B": _planted_subject(1, 6, 24, (56, 57))}
    cfg = TrainConfig(**_TRAIN)
    ref = fit_encoders(make, data, cfg, progress=False)
    fit = fit_encoders(make, data, cfg, progress=False, mesh=mesh, axis=mesh.axis_names[0])
    if fit.keys != ref.keys:
        raise AssertionError(f"model keys differ: {fit.keys} and {ref.keys}")
    params = [_max_diff(a, b) for a, b in zip(_leaves(fit.best_state) + _leaves(fit.final_state),
                                              _leaves(ref.best_state) + _leaves(ref.final_state), strict=True)]
    losses = max(_max_diff(fit.history, ref.history, float(np.nanmax(np.abs(ref.history)))),
                 _max_diff(fit.best_val, ref.best_val, float(np.max(np.abs(ref.best_val)))))
    return {
        "fit_params": max(params),
        "fit_losses": losses,
        "fit_best_epoch": _max_diff(fit.best_epoch, ref.best_epoch),
        "digest": _digest(*_leaves(fit.best_state), fit.history),
    }


def run_checks(mesh) -> tuple[dict, list[str]]:
    """Run every sharded fit on ``mesh`` and compare it with the same fit in this process alone.

    Parameters
    ----------
    mesh : jax.sharding.Mesh
        A one-axis mesh, usually over the devices of every process.

    Returns
    -------
    results : dict
        Per check, the largest difference per :data:`TOLERANCES` entry and a digest of the
        gathered arrays.
    failures : list of str
        One line per difference beyond its tolerance (empty when all agree).
    """
    checks = dict(zip(CHECKS, (functools.partial(_check_pca, shard="voxels"),
                               functools.partial(_check_pca, shard="rows"), _check_ridge,
                               _check_fit), strict=True))
    results, failures = {}, []
    for name, check in checks.items():
        started = time.perf_counter()
        results[name] = check(mesh)
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        for key, value in results[name].items():
            if key in TOLERANCES and not value <= TOLERANCES[key]:
                failures.append(f"{name}: {key} differs by {value:.3g} > {TOLERANCES[key]:.0e}")
    return results, failures


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxenc.multihost",
        description="Check that the sharded PCA, ridge and encoder training across all "
                    "processes of a jax.distributed job equal one process's results.")
    parser.add_argument("--coordinator", help="host:port of process 0 (omit on SLURM or TPU)")
    parser.add_argument("--num-processes", type=int, help="processes in the job")
    parser.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
    parser.add_argument("--cpu-devices", type=int,
                        help="run on K CPU devices per process (gloo collectives) instead of "
                             "the accelerators")
    parser.add_argument("--out", type=Path, help="folder for process<i>.json")
    return parser


def main(argv=None) -> int:
    """Command line entry point; returns the exit status (0: every check agrees)."""
    args = _parser().parse_args(argv)
    import jax

    if args.cpu_devices is not None:
        if args.cpu_devices < 1:
            print(f"--cpu-devices must be at least 1, got {args.cpu_devices}", file=sys.stderr)
            return 2
        from jaxenc.distributed import PATIENT_CPU_COLLECTIVES

        # Read when the backend starts, which jax.distributed.initialize does below.
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {PATIENT_CPU_COLLECTIVES}"
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from jaxenc.distributed import make_mesh

    index, count = jax.process_index(), jax.process_count()
    mesh = make_mesh(("data",))
    print(f"process {index} of {count}: {jax.local_device_count()} local of "
          f"{jax.device_count()} devices ({jax.devices()[0].platform})", flush=True)
    results, failures = run_checks(mesh)
    for name, values in results.items():
        shown = ", ".join(f"{k} {v:.2g}" for k, v in values.items() if k in TOLERANCES)
        print(f"process {index}: {name} ({values['seconds']:.1f} s): largest difference to one "
              f"process: {shown}", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"process": index, "processes": count, "devices": jax.device_count(),
                  "local_devices": jax.local_device_count(), "results": results,
                  "failures": failures}
        (args.out / f"process{index}.json").write_text(json.dumps(record, indent=1))
    for line in failures:
        print(f"process {index}: FAILED {line}", file=sys.stderr, flush=True)
    if not failures:
        print(f"process {index}: all sharded fits equal one process's", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
