"""Jobs of several processes: joining them, who writes, lost processes; and a self-check.

The processes of a job
----------------------
:func:`add_process_options` gives ``jaxenc run`` (``extract``, ``fit``, ``evaluate``) and the
self-check below the same options (``--coordinator``, ``--num-processes``, ``--process-id``,
``--cpu-devices``, ``--heartbeat-timeout``, ``--join-timeout``); :func:`job_of` reads them, or
finds the job where JAX's cluster detection does (SLURM, Cloud TPU); :func:`supervise` runs the
command as a worker and turns a process of the job that stops answering or never joins into one
line naming it; :func:`join` calls :func:`jax.distributed.initialize` with the job's timeouts;
:class:`Processes` (:func:`processes`) tells the run folder (:class:`jaxenc.store.RunStore`)
who writes (process 0), where all wait (barriers) and what all agree on, through JAX's
coordination service.

The self-check
--------------
``python -m jaxenc.multihost`` checks a multi-process JAX setup: the sharded fits across every
process equal one process's. Run the same command on every host (or several times on one machine), each with its own
``--process-id``::

    python -m jaxenc.multihost --coordinator host0:1234 --num-processes 2 --process-id 0
    python -m jaxenc.multihost --coordinator host0:1234 --num-processes 2 --process-id 1

The processes join through :func:`jax.distributed.initialize` (on SLURM or Cloud TPU the three
options can be left out: JAX finds them) and build one mesh over the devices of all of
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

The ``jaxenc`` command imports this module for its options, and ``jaxenc --help`` loads no
JAX: everything that needs JAX is imported inside the functions that use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, JaxencError

__all__ = ["main", "run_checks", "TOLERANCES", "CHECKS", "Job", "Processes", "add_process_options", "job_of",
           "join", "processes", "supervise", "supervised", "HEARTBEAT_TIMEOUT_S", "JOIN_TIMEOUT_S"]

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
    # Inside: this module loads without JAX (see the module docstring).
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
    # Inside: this module loads without JAX (see the module docstring).
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
    # Inside: this module loads without JAX (see the module docstring).
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
    # Inside: this module loads without JAX (see the module docstring).
    import jax

    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x, np.float64) for x in jax.tree.leaves(state)]


def _check_fit(mesh) -> dict:
    # Inside: this module loads without JAX (see the module docstring).
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
    add_process_options(parser)
    parser.add_argument("--out", type=Path, help="folder for process<i>.json")
    return parser


def main(argv=None) -> int:
    """Command line entry point; returns the exit status (0: every check agrees)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        job = job_of(args)
        if job is not None and not supervised():
            return supervise(job, "jaxenc.multihost", argv)
        join(job, args.cpu_devices)
    except JaxencError as error:
        print(f"jaxenc: error: {error}", file=sys.stderr)
        return 2
    # Inside: this module loads without JAX (see the module docstring).
    import jax

    # Inside: this module loads without JAX (see the module docstring).
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


# -- the processes of a job: options, joining, supervision, barriers --------------------------------

# Seconds without a heartbeat after which JAX's coordination service declares a process lost
# and ends every other one (``--heartbeat-timeout``); a lost process ends the others within this
# bound plus a few seconds. JAX's own default is 100 s.
HEARTBEAT_TIMEOUT_S = 60
# Seconds every process waits for all of them to join (``--join-timeout``; JAX's default).
JOIN_TIMEOUT_S = 300
# Set in the environment of the worker process that :func:`supervise` starts.
_SUPERVISED = "JAXENC_SUPERVISED"
# How long a barrier or an agreement waits for the slowest process: as long as a stage may take
# (a lost process is caught by the heartbeat, not by this limit). Milliseconds, int32.
_WAIT_MS = 2_000_000_000


@dataclasses.dataclass(frozen=True)
class Job:
    """Where this process belongs in a job of several processes.

    Attributes
    ----------
    coordinator : str or None
        ``host:port`` of process 0's coordination service (None: JAX finds it, SLURM or Cloud TPU).
    num_processes : int
        Processes in the job.
    process_id : int
        This process's index, 0 .. num_processes - 1.
    heartbeat_s : int
        Seconds without a heartbeat after which a process counts as lost.
    join_s : int
        Seconds every process waits for all to join.
    """

    coordinator: str | None
    num_processes: int
    process_id: int
    heartbeat_s: int = HEARTBEAT_TIMEOUT_S
    join_s: int = JOIN_TIMEOUT_S

    def options(self) -> list[str]:
        """The command-line options that name this job (handed to the supervised worker)."""
        found = ["--coordinator", self.coordinator] if self.coordinator else []
        return found + ["--num-processes", str(self.num_processes), "--process-id", str(self.process_id),
                        "--heartbeat-timeout", str(self.heartbeat_s), "--join-timeout", str(self.join_s)]

    def describe(self) -> str:
        return f"process {self.process_id} of {self.num_processes}"


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of a job of several processes (the same for ``jaxenc`` and the self-check)."""
    group = parser.add_argument_group(
        "several processes",
        "Run the same command on every host, each with its own --process-id (on SLURM and Cloud TPU "
        "the first three options can be left out: JAX finds them). Every process computes its shards; "
        "process 0 alone writes the output folder, which must be on a file system every host shares.")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="host:port of process 0's coordination service")
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 .. N-1")
    group.add_argument("--cpu-devices", type=int, metavar="K",
                       help="run on K CPU devices per process (gloo collectives between processes) instead of "
                            "the accelerators, e.g. to test on one machine")
    group.add_argument("--heartbeat-timeout", type=int, default=HEARTBEAT_TIMEOUT_S, metavar="S",
                       help="seconds of silence after which a process counts as lost and the others stop "
                            f"(default {HEARTBEAT_TIMEOUT_S})")
    group.add_argument("--join-timeout", type=int, default=JOIN_TIMEOUT_S, metavar="S",
                       help=f"seconds to wait for every process to join (default {JOIN_TIMEOUT_S})")


def job_of(args: argparse.Namespace) -> Job | None:
    """The job the options of :func:`add_process_options` name, or what JAX detects; None: one process.

    Without ``--coordinator``, ``--num-processes`` and ``--process-id``, the job is the one JAX's
    own cluster detection finds (SLURM, Cloud TPU, Open MPI, Kubernetes: the environments
    ``jax.distributed.initialize()`` reads) when it has more than one process.

    Raises
    ------
    ConfigError
        A partial or inconsistent set of options, or a timeout below 1 s.
    """
    for name in ("cpu_devices", "heartbeat_timeout", "join_timeout"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    given = (args.coordinator, args.num_processes, args.process_id)
    coordinator, count, index = given if any(v is not None for v in given) else _detected()
    if count is None and index is None and coordinator is None:
        return None
    if count is None or index is None:
        raise ConfigError("--num-processes and --process-id go together (and --coordinator, outside SLURM and "
                          f"Cloud TPU); got --num-processes {count}, --process-id {index}")
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--process-id must lie in 0 .. --num-processes - 1 = {count - 1}, got {index}")
    if count == 1:
        return None
    if coordinator is None:
        raise ConfigError("--coordinator HOST:PORT (process 0's host and a free port) is needed outside SLURM "
                          "and Cloud TPU")
    if not re.fullmatch(r".+:\d+", coordinator):
        raise ConfigError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    return Job(coordinator, count, index, args.heartbeat_timeout, args.join_timeout)


def _detected() -> tuple:
    """(coordinator, processes, index) that JAX's cluster detection finds, or Nones."""
    from jax._src import clusters

    # JAX's detectors of these clusters read environment variables (Cloud TPU: the VM's metadata
    # server); others, such as Kubernetes', would warn on every run where their package is missing.
    env = next((e for e in clusters.ClusterEnv._cluster_types
                if e.__name__ in _CLUSTERS and e.is_env_present()), None)
    if env is None or env.get_process_count() <= 1:
        return None, None, None
    coordinator = env.get_coordinator_address(timeout_secs=JOIN_TIMEOUT_S,
                                              override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT"))
    return coordinator, env.get_process_count(), env.get_process_id()


# The clusters whose processes `jaxenc` finds by itself, by the names of JAX's detectors.
_CLUSTERS = ("SlurmCluster", "OmpiCluster", "GceTpuCluster", "GkeTpuCluster")


def supervised() -> bool:
    """Whether this process is the worker that :func:`supervise` started."""
    return os.environ.get(_SUPERVISED) == "1"


def join(job: Job | None, cpu_devices: int | None = None) -> Processes:
    """Join the job (:func:`jax.distributed.initialize`) and return this process's :class:`Processes`.

    Parameters
    ----------
    job : Job or None
        None: one process (only ``cpu_devices`` is applied).
    cpu_devices : int, optional
        Run on this many CPU devices per process, talking through gloo between processes.
        Must come before anything starts JAX's backend.
    """
    # Inside: this module loads without JAX (see the module docstring).
    import jax

    if cpu_devices is not None:
        # Inside: this module loads without JAX (see the module docstring).
        from jaxenc.distributed import PATIENT_CPU_COLLECTIVES

        # Read when the backend starts, which jax.distributed.initialize does below.
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {PATIENT_CPU_COLLECTIVES}"
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", cpu_devices)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if supervised():
        _end_with_parent()
        # Ctrl-C comes from the supervisor, which passes it on: heed it even where the shell
        # started this job's processes with SIGINT ignored (background jobs of a script).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if job is not None:
        # A process that never joins or stops answering ends this one inside JAX (an abort,
        # which supervise() turns into one line naming it), after join_s or heartbeat_s.
        jax.distributed.initialize(job.coordinator, job.num_processes, job.process_id,
                                   initialization_timeout=job.join_s, heartbeat_timeout_seconds=job.heartbeat_s)
    return processes()


def _end_with_parent() -> None:
    """End this worker when its supervisor ends (killed, say), as the process of the job it is."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="jaxenc-supervisor-watch", daemon=True).start()


class Processes:
    """The processes of a run as the run folder sees them: who writes, where all wait, what all agree on.

    One process (the default) writes and never waits. In a job of several processes, process 0
    alone writes; :meth:`barrier` and :meth:`agree` go through JAX's coordination service (not
    through the devices), so they cost no compilation and wait as long as a stage may take.

    Parameters
    ----------
    index, count : int
        This process's index and the number of processes.
    client : optional
        The job's coordination client (``jax.distributed``), needed when ``count > 1``.
    """

    def __init__(self, index: int = 0, count: int = 1, client=None):
        if count > 1 and client is None:
            raise ValueError("several processes need the coordination client of jax.distributed")
        self.index, self.count, self._client = index, count, client

    def __repr__(self) -> str:
        return f"Processes(index={self.index}, count={self.count})"

    @property
    def writer(self) -> bool:
        """Whether this process writes the run folder (process 0)."""
        return self.index == 0

    # Every process makes the same calls in the same order (through however many Processes
    # objects), so the n-th call of the process has one key in the whole job.
    _calls = itertools.count(1)

    def _key(self, name: str) -> str:
        return f"jaxenc/{next(self._calls)}/{name}"

    def barrier(self, name: str) -> None:
        """Wait until every process reaches this barrier (named for the error messages)."""
        if self.count > 1:
            self._client.wait_at_barrier(self._key(name), _WAIT_MS)

    def agree(self, value, name: str = "value"):
        """Process 0's ``value`` (JSON-able), on every process: one decision for all."""
        if self.count == 1:
            return value
        key = self._key(name)
        if self.writer:
            self._client.key_value_set(key, json.dumps(value))
            return value
        return json.loads(self._client.blocking_key_value_get(key, _WAIT_MS))


def processes() -> Processes:
    """This process's :class:`Processes`: those of ``jax.distributed`` once initialised, else one."""
    from jax._src import distributed

    state = distributed.global_state
    if state.client is None:
        return Processes()
    return Processes(state.process_id, state.num_processes, state.client)


# A line of XLA's C++ log (glog): severity, date, time, thread, source file and line.
_XLA_LOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (\S+):\d+\] ")
# Sources whose errors mean the job is ending: the coordination service and its client.
_COORDINATION = re.compile(r"coordination|client\.h|distributed")


def supervise(job: Job, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` as this process's worker; turn a lost process into one line.

    When a process of the job stops answering (killed, crashed, its host gone) or never joins,
    JAX's coordination service ends every other process with an abort and a C++ stack trace.
    The worker's standard error passes through this supervisor, which holds back everything
    from the first error of the coordination service on and, when the worker ends that way,
    prints instead one line naming the lost process, e.g.::

        jaxenc: error: process 1 of 2 stopped answering (no heartbeat for 60 s: it ended, or its
        host is unreachable); process 0 stops too

    and returns 1. Standard output is the worker's own. The worker runs in a process group of its
    own, so that Ctrl-C reaches it once, passed on by the supervisor (as SIGTERM is); it ends
    when the supervisor does.

    Returns
    -------
    int
        The worker's exit status, 1 when a lost process ended it, ``128 + signal`` when a signal did.
    """
    env = {**os.environ, _SUPERVISED: "1"}
    worker = subprocess.Popen([sys.executable, "-m", module, *argv, *job.options()],
                              stderr=subprocess.PIPE, env=env, process_group=0)

    def forward(signum, frame):
        worker.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    held: list[str] = []
    try:
        _pass_stderr(worker.stderr, held)
        code = worker.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    text = "".join(held)
    if code == 0:
        sys.stderr.write(text)
        return 0
    verdict = _verdict(text, job)
    if verdict is None:
        sys.stderr.write(text)
        if code < 0:
            name = signal.Signals(-code).name
            print(f"jaxenc: error: {job.describe()} was ended by {name}", file=sys.stderr)
            return 128 - code
        return code
    print(f"jaxenc: error: {verdict}", file=sys.stderr, flush=True)
    return 1


def _pass_stderr(stream, held: list[str]) -> None:
    """Copy the worker's standard error to ours as it comes (progress bars too), holding back
    every line from the coordination service's first error on into ``held``."""
    pending = b""
    holding = False
    while chunk := os.read(stream.fileno(), 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace") + "\n"
            match = _XLA_LOG.match(line)
            if match and match.group(1) in "EF" and _COORDINATION.search(match.group(2)):
                holding = True
            if holding:
                held.append(line)
            else:
                sys.stderr.write(line)
        # A progress bar redraws its line with \r and no newline: show it now.
        if not holding and b"\r" in pending and not _XLA_LOG.match(pending.decode(errors="replace")):
            sys.stderr.write(pending.decode(errors="replace"))
            pending = b""
        sys.stderr.flush()
    if pending:
        (held.append if holding else sys.stderr.write)(pending.decode(errors="replace"))


def _verdict(text: str, job: Job) -> str | None:
    """One line saying which process was lost, from the coordination service's errors; None if none."""
    if not text:
        return None
    me = job.describe()
    if "RegisterTask" in text or ("DEADLINE_EXCEEDED" in text and "onnect" in text):
        if job.process_id == 0:
            return (f"not all {job.num_processes} processes joined within {job.join_s} s ({me}, the coordinator at "
                    f"{job.coordinator}); start every one with the same --coordinator and --num-processes")
        return (f"process 0 of {job.num_processes} (the coordinator at {job.coordinator}) did not answer within "
                f"{job.join_s} s; start it, check the address and that the port is open ({me})")
    lost = re.search(r"stopped sending heartbeats\):\s*\n((?:\s*(?:\S*task:)?\d+\s*\n)+)", text)
    ids = sorted({int(i) for i in re.findall(r"(\d+)\s*\n", lost.group(1))}) if lost else []
    ids = ids or sorted({int(i) for i in re.findall(r"Task (\d+) heartbeat timeout", text)})
    if not ids and re.search(r"leader task|Failed to send RPC to coordination service|Socket closed", text):
        ids = [0]
    if not ids:
        status = next((line.split("absl::Status:", 1)[1].strip() for line in text.splitlines()
                       if "absl::Status:" in line), text.strip().splitlines()[0])
        return f"the job's coordination service stopped {me}: {status}"
    names = " and ".join(f"process {i}" for i in ids)
    how = (f"no heartbeat for {job.heartbeat_s} s: it ended, or its host is unreachable" if ids != [0]
           else f"the coordinator at {job.coordinator} closed its connection or stopped answering")
    return f"{names} of {job.num_processes} stopped answering ({how}); {me} stops too"


if __name__ == "__main__":
    sys.exit(main())
