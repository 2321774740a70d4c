"""One prepared check for a lent GPU machine: accelerator tests and benchmarks in one command.

On a machine with network, once (about 2.5 MB; ``/.whl/`` is ignored by git)::

    pip download -c constraints.txt --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
        -d .whl praatio soundfile soxr himalaya cffi pycparser pytest pluggy iniconfig

On the GPU machine, from the repository root (the wheels and the working tree travel along)::

    python benchmarks/device_check.py            # under 8 minutes on one H200
    python benchmarks/device_check.py --dry-run  # the same code at tiny shapes on CPU (~50 CPU s)

The machine's python is expected to hold jax with its CUDA plugin, flax, optax, orbax,
tensorstore, transformers, CUDA torch, h5py, scipy and scikit-learn, and nothing can be
fetched: the wheels of ``.whl/`` whose distributions are missing are installed with
``pip install --no-index --no-deps --target .whl/site`` and every step runs with
``PYTHONPATH=<repository>:.whl/site`` (jaxenc itself is never installed).

Steps, each in a process of its own with a time budget (:data:`STEPS`; the run stops starting
steps at :data:`TOTAL_BUDGET_S`); a step that fails or runs out of time is recorded and the
next one runs:

1. ``environment``: versions, devices, the backend (the run stops here unless it is ``gpu``,
   or on a dry run), matmul peaks at explicit precision (float32 at ``highest``, TF32, bf16;
   :func:`common.matmul_peak_gflops`) and the streaming memory bandwidth.
2. ``tests_ports``, ``tests_train``, ``tests_ridge_pca``: pytest over tests/nn and tests/ckpt
   (ports against transformers), tests/train (training equivalence; not test_planted.py, 146 s
   of the 345 s these tests took on the shared 2-core CPU), tests/models/test_ridge.py and
   tests/decomp (ridge against himalaya / scikit-learn, PCA), with
   ``JAX_DEFAULT_MATMUL_PRECISION=highest``: these tests compare float32 programs with float32
   references, which a GPU's default TF32 products would miss. The ``*_sharded.py`` files are
   left out (they check sharding over 8 host CPU devices in child processes, not the GPU).
3. ``train``: the paper's MLP (256 hidden, 512 PCA components, 15 models) at the paper's width
   (21,504 features) and at 512 features, float32 at ``highest``: jaxenc's fold-parallel
   program against the loop over the same compiled step, a plain optax loop and a CUDA torch
   loop (benchmarks/train.py's methods), their test correlations compared.
4. ``forwards``: Whisper-large-shaped (d_model 1280, 20 heads, ffn 5120, 30 s inputs of 3000
   mel frames; ``frames_at`` the last layer, as extraction runs it) and LLaMA-7B-shaped (4096
   wide, 32 heads, ffn 11008; windows of 512 tokens) random-init encoders in bfloat16, with
   fewer layers than the real models (:data:`FORWARD_LAYERS`, every layer of the real shape)
   to keep compilation and initialisation within the budget: windows/s as run and at the
   extraction's depth (:data:`EXTRACTION_DEPTH`, at the FLOP rate measured), and the share of
   the bf16 matmul peak measured by the environment step.
5. ``ridge``: jaxenc ``RidgeCV`` at benchmarks/ridge.py's full size (6000 TRs x 2000 features x
   10,000 voxels, 11 alphas, 5 story folds) at ``highest`` against himalaya's ``torch_cuda``
   backend on the same data, and both against a float64 refit.

Results: ``benchmarks/results/device_<step>.json`` (``machine.jax_backend`` says where they
ran), the pytest logs and JUnit files, and ``device_check.json`` (every step's status, time and
output tail); everything is also copied to ``$OUT/results`` when ``OUT`` is set. ``--dry-run``
writes to a temporary folder (or ``--results``), runs one tiny test per pytest step, and
the benchmarks at tiny shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WHEELS = ROOT / ".whl"
SITE = WHEELS / "site"
TOTAL_BUDGET_S = 450.0
# Layers built for the forwards (device run; the dry run builds 1 of each), fewer than the real
# models' to keep initialisation and compilation within the step's budget: every layer has the
# real shape, and windows/s at the real depth assume the FLOP rate measured.
FORWARD_LAYERS = {"whisper": 4, "llama": 4}
# Real depths the extraction runs: Whisper large's final layer, LLaMA-7B's layer 12 (the paper's).
EXTRACTION_DEPTH = {"whisper": 32, "llama": 12}


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: its time budget on the device and on a dry run (seconds), and what it runs."""

    # Seconds the step may take on the GPU machine.
    budget_s: float
    # Seconds it may take on a dry run (CPU, tiny shapes).
    dry_budget_s: float
    # pytest arguments for a test step (None: a benchmark function of this file, run_<name>).
    pytest: tuple[str, ...] | None = None
    # pytest node ids of the dry run: one tiny test, so the step's plumbing is exercised.
    dry_pytest: tuple[str, ...] = ()


_NO_SHARDED = ("--ignore-glob=*_sharded.py",)
STEPS = {
    "environment": Step(35, 30),
    "tests_ports": Step(45, 40, ("tests/nn", "tests/ckpt", *_NO_SHARDED),
                        ("tests/nn/test_layers.py::test_attention_matches_torch_sdpa[4-4-False-None]",)),
    # Equivalence of the training programs (vmapped vs loop, re-packed vs full stack, one model
    # vs plain optax); test_planted.py, a planted-truth fit of minutes, is left out.
    "tests_train": Step(70, 40, ("tests/train", *_NO_SHARDED, "--ignore=tests/train/test_planted.py"),
                        ("tests/train/test_stack.py::test_from_arrays_takes_views_and_names_stories",)),
    "tests_ridge_pca": Step(55, 40, ("tests/models/test_ridge.py", "tests/decomp", *_NO_SHARDED),
                            ("tests/models/test_ridge.py::test_score_is_per_voxel_r2",
                             "tests/decomp/test_pca.py::test_reductions_match_numpy")),
    "train": Step(110, 90),
    "forwards": Step(70, 60),
    "ridge": Step(45, 40),
}


# --------------------------------------------------------------------------- orchestration


def missing_wheels(wheels: list[Path]) -> list[Path]:
    """The wheels whose distribution this python does not have installed."""
    out = []
    for wheel in wheels:
        name = wheel.name.split("-")[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(wheel)
    return out


def install_wheels(dry_run: bool) -> dict:
    """Install the missing distributions among ``.whl/*.whl`` into ``.whl/site``, offline.

    With pip (``--no-index --no-deps --upgrade --target``); where this python has no pip, the
    wheels are unpacked there instead (a wheel is a zip of its import layout; none of these
    needs an install-time step).

    Returns
    -------
    dict
        ``wheels`` (file names found), ``installed`` (those installed now), ``pip`` (its exit
        status and output tail when it ran), ``unpacked`` (True when pip failed and the wheels
        were unpacked).
    """
    import zipfile

    wheels = sorted(WHEELS.glob("*.whl"))
    missing = missing_wheels(wheels)
    out = {"wheels": [w.name for w in wheels], "installed": []}
    if missing and not dry_run:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--target", str(SITE),
               *map(str, missing)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        out["pip"] = {"returncode": res.returncode, "output_tail": (res.stdout + res.stderr)[-2000:]}
        if res.returncode != 0:
            for wheel in missing:
                with zipfile.ZipFile(wheel) as z:
                    z.extractall(SITE)
            out["unpacked"] = True
        out["installed"] = [w.name for w in missing]
    return out


def step_env(dry_run: bool) -> dict:
    """The environment of every step's process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(SITE), env.get("PYTHONPATH")) if p)
    # JAX takes half the GPU's memory, leaving the rest to torch in the steps that race it.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    if dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_process(cmd: list[str], env: dict, timeout: float, log: Path) -> dict:
    """Run ``cmd`` with its output in ``log``; kill its process group after ``timeout`` s."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=max(timeout, 1.0)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    tail = log.read_text(errors="replace")[-3000:]
    return {"returncode": rc, "timed_out": timed_out, "seconds": time.perf_counter() - t0,
            "ok": rc == 0 and not timed_out, "output_tail": tail}


# pytest-xdist's options, with their values: dropped from the addopts of a pytest step.
_XDIST_OPTIONS = ("-n", "--numprocesses", "--dist")


def addopts_without_xdist(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """pyproject.toml's pytest ``addopts`` less pytest-xdist's options (``-n``, ``--dist``).

    The device machine has no pytest-xdist, so its pytest steps run in one process with the
    suite's other options, read from the one place they are set.
    """
    config = tomllib.loads(pyproject.read_text())
    words = iter(shlex.split(config["tool"]["pytest"]["ini_options"]["addopts"]))
    kept = []
    for word in words:
        if word in _XDIST_OPTIONS:
            next(words, None)  # its value
        elif not word.startswith(tuple(f"{o}=" for o in _XDIST_OPTIONS) + ("-n",)):
            kept.append(word)
    return shlex.join(kept)


def step_command(name: str, step: Step, dry_run: bool, results: Path) -> list[str]:
    """The command line of a step."""
    if step.pytest is not None:
        targets = step.dry_pytest if dry_run else step.pytest
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                "-o", f"addopts={addopts_without_xdist()}", "--durations=15",
                f"--junitxml={results}/{name}.xml", *targets]
    return [sys.executable, str(Path(__file__).resolve()), "--step", name, "--results", str(results),
            *(["--dry-run"] if dry_run else [])]


def orchestrate(dry_run: bool, results: Path, only: list[str] | None) -> dict:
    """Run the steps in order within their budgets; write and return ``device_check.json``."""
    results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"dry_run": dry_run, "total_budget_s": TOTAL_BUDGET_S, "wheels": install_wheels(dry_run), "steps": {}}
    env = step_env(dry_run)
    for name, step in STEPS.items():
        if only and name not in only:
            continue
        left = TOTAL_BUDGET_S - (time.perf_counter() - start)
        budget = min(step.dry_budget_s if dry_run else step.budget_s, left)
        if budget < 5:
            summary["steps"][name] = {"ok": False, "skipped": f"{left:.0f} s left of the run's budget"}
            continue
        step_env_ = dict(env)
        if step.pytest is not None:
            step_env_["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
        print(f"[device_check] {name}: budget {budget:.0f} s", flush=True)
        record = run_process(step_command(name, step, dry_run, results), step_env_, budget, results / f"{name}.log")
        summary["steps"][name] = {"budget_s": budget, **record}
        print(f"[device_check] {name}: {'ok' if record['ok'] else 'FAILED'} in {record['seconds']:.0f} s", flush=True)
        if name == "environment" and not record["ok"]:
            summary["stopped"] = "the environment step failed (no GPU backend?): see its output"
            break
    summary["seconds"] = time.perf_counter() - start
    (results / "device_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    if os.environ.get("OUT"):
        dest = Path(os.environ["OUT"]) / "results"
        dest.mkdir(parents=True, exist_ok=True)
        for f in results.iterdir():
            if f.is_file() and (f.name.startswith("device_") or f.suffix in (".log", ".xml")):
                shutil.copy2(f, dest / f.name)
    return summary


# --------------------------------------------------------------------------- steps (child processes)


def _write(name: str, payload: dict, ratios: dict, results: Path) -> None:
    from common import write_results

    write_results(f"device_{name}", payload, ratios=ratios, out=results / f"device_{name}.json")


def _peaks(results: Path, dry_run: bool) -> dict:
    """The environment step's matmul peaks (GFLOP/s by label), measured again if it left none."""
    from common import matmul_peak_gflops

    try:
        return json.loads((results / "device_environment.json").read_text())["matmul_peak_gflops"]
    except (OSError, KeyError, ValueError):
        n = 256 if dry_run else 8192
        return {label: matmul_peak_gflops(n, label) for label in ("float32", "tf32", "bfloat16")}


def run_environment(results: Path, dry_run: bool) -> None:
    import jax
    from common import matmul_peak_gflops, memory_bandwidth_gbs

    backend = jax.default_backend()
    if backend != "gpu" and not dry_run:
        sys.exit(f"environment: JAX's backend is {backend!r}, expected 'gpu' (jax's CUDA plugin installed?)")
    versions = {}
    for dist in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint",
                 "tensorstore", "transformers", "torch", "numpy", "scipy", "scikit-learn", "himalaya", "pytest"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    import torch

    n = 256 if dry_run else 8192
    peaks = {label: matmul_peak_gflops(n, label) for label in ("float32", "tf32", "bfloat16")}
    bandwidth = memory_bandwidth_gbs(2**22 if dry_run else 2**30)
    payload = {"versions": versions, "devices": [str(d) for d in jax.devices()],
               "device_kind": jax.devices()[0].device_kind, "torch_cuda": torch.cuda.is_available(),
               "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "matmul_n": n, "matmul_peak_gflops": peaks, "memory_bandwidth": bandwidth}
    _write("environment", payload, {"tf32_vs_float32_peak": peaks["tf32"] / peaks["float32"],
                                    "bfloat16_vs_float32_peak": peaks["bfloat16"] / peaks["float32"]}, results)


def run_train(results: Path, dry_run: bool) -> None:
    """benchmarks/train.py's methods at two widths, float32 at full precision."""
    import functools

    import jax
    import numpy as np
    import train as tb

    from jaxenc.models.nonlinear import MLP
    from jaxenc.train import TrainConfig

    methods = ("fold_parallel", "loop_same_step", "plain_optax_loop", "torch_loop")
    if dry_run:  # one case: the second would run the same code again, compilation included
        cases = {"current": (dict(n_subjects=1, n_stories=5, trs=30, n_features=32, n_voxels=24), 2)}
        n_components, hidden = 8, 16
    else:
        # 512 features first: the goals are stated there, and a step cut short keeps the first case.
        cases = {"current": (dict(n_subjects=3, n_stories=12, trs=150, n_features=512, n_voxels=2000), 30),
                 "paper": (dict(n_subjects=3, n_stories=10, trs=120, n_features=4 * (4096 + 1280), n_voxels=1000), 5)}
        n_components, hidden = tb.HP["n_components"], tb.HP["hidden"]
    make = functools.partial(MLP, hidden=hidden, dropout=tb.HP["dropout"])
    import torch

    # torch at full float32 too (its defaults, stated: TF32 off for matmuls and convolutions).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if dry_run:  # torch on CPU at its current threads: the thread search is not the GPU run's code
        tb._TORCH["threads"] = torch.get_num_threads()
    peaks = _peaks(results, dry_run)
    out, ratios, checks = {"precision": "highest", "peaks_gflops": peaks, "cases": {}}, {}, {}
    for case, (size, epochs) in cases.items():
        cfg = TrainConfig(n_folds=5, n_components=n_components, batch_size=tb.HP["batch_size"],
                          learning_rate=tb.HP["learning_rate"], weight_decay=tb.HP["weight_decay"],
                          epochs_per_call=1, checkpoint_every=1, max_epochs=epochs, patience=epochs)
        subjects, tests = tb.make_data(**size)
        with jax.default_matmul_precision("highest"):
            runs, folds = tb.run_methods(subjects, tests, cfg, methods, make=make, repeats=1)
        flops = tb.model_flops(make, size["n_features"], n_components)
        res = tb.summarize(runs, flops, peaks["float32"], tb.model_rows(subjects, folds))
        out["cases"][case] = {"size": {**size, "epochs": epochs, "n_components": n_components, "hidden": hidden},
                              "methods": res, "torch": dict(tb._TORCH)}
        fp = res["fold_parallel"]
        for other in methods[1:]:
            ratios[f"{case}/fold_parallel_vs_{other}"] = res[other]["best_warm"]["wall_s"] / fp["best_warm"]["wall_s"]
            tolerance = 1e-3 if other == "loop_same_step" else tb.R_TOLERANCE
            diff = max(abs(fp["cold"]["mean_r"][s] - res[other]["cold"]["mean_r"][s]) for s in tests)
            # A dry run's tiny noisy fits say nothing about methods that draw other minibatches;
            # the loop of the same step is held to its tolerance there too.
            vacuous = dry_run and other != "loop_same_step"
            checks[f"{case}/mean_r_{other}"] = {"max_abs_diff": diff, "tolerance": tolerance,
                                                "ok": bool(diff <= tolerance or vacuous), "checked": not vacuous}
        ratios[f"{case}/fold_parallel_fraction_of_float32_peak"] = fp["best_warm"]["fraction_of_peak"]
        out["checks"] = checks
        if case == "current":
            out["goals"] = {"current/fold_parallel_vs_torch_loop >= 8":
                                ratios["current/fold_parallel_vs_torch_loop"] >= 8,
                            "current/fold_parallel_vs_loop_same_step >= 2":
                                ratios["current/fold_parallel_vs_loop_same_step"] >= 2}
        _write("train", out, ratios, results)  # after each case, so a step cut short keeps the first
    failed = [k for k, v in checks.items() if not v["ok"]]
    if failed:
        sys.exit(f"train: results disagree beyond tolerance: {failed}")
    np.testing.assert_(all(np.isfinite(v) for v in ratios.values()), "train: non-finite ratio")


def run_forwards(results: Path, dry_run: bool) -> None:
    """Whisper-large- and LLaMA-7B-shaped random-init forwards in bfloat16."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import roofline
    from common import time_call
    from flax import nnx

    from jaxenc.nn import LlamaConfig, LlamaModel, WhisperEncoder, WhisperEncoderConfig

    peaks = _peaks(results, dry_run)
    if dry_run:
        whisper_cfg = WhisperEncoderConfig(d_model=64, encoder_layers=1, encoder_attention_heads=4,
                                           encoder_ffn_dim=128, max_source_positions=50)
        llama_cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=176, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=4, head_dim=16)
        n_frames, seq, batches = 100, 32, {"whisper": 2, "llama": 2}
    else:
        whisper_cfg = WhisperEncoderConfig(encoder_layers=FORWARD_LAYERS["whisper"])
        llama_cfg = LlamaConfig(num_hidden_layers=FORWARD_LAYERS["llama"])
        n_frames, seq, batches = 3000, 512, {"whisper": 16, "llama": 16}
    out, ratios = {"dtype": "bfloat16", "precision": "bfloat16", "peaks_gflops": peaks,
                   "extraction_depth": EXTRACTION_DEPTH}, {}
    key = jax.random.key(0)
    with jax.default_matmul_precision("bfloat16"):
        # Whisper: 30 s inputs (3000 mel frames), the last layer's state at each window's frame.
        model = WhisperEncoder(whisper_cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        layers = (whisper_cfg.encoder_layers,)
        mel = jax.random.normal(key, (batches["whisper"], whisper_cfg.num_mel_bins, n_frames), jnp.bfloat16)
        frame = jnp.full((batches["whisper"],), n_frames // 4, jnp.int32)
        whisper = jax.jit(lambda s, x, f: nnx.merge(graphdef, s).frames_at(x, f, layers))
        flops = roofline.whisper_window_flops(whisper_cfg, n_frames)
        depth_flops = roofline.whisper_window_flops(
            dataclasses.replace(whisper_cfg, encoder_layers=EXTRACTION_DEPTH["whisper"]), n_frames)
        out["whisper"] = _forward_record(whisper, (state, mel, frame), flops, depth_flops, batches["whisper"], peaks,
                                         time_call)
        _write("forwards", out, {}, results)  # kept if the step is cut short in the LLaMA part
        del model, state
        # LLaMA: a batch of 512-token windows, every position real.
        model = LlamaModel(llama_cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        ids = jax.random.randint(key, (batches["llama"], seq), 0, llama_cfg.vocab_size, jnp.int32)
        llama = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, jnp.ones_like(x))[-1])
        flops = roofline.llama_window_flops(llama_cfg, seq, llama_cfg.num_hidden_layers)
        depth_flops = roofline.llama_window_flops(llama_cfg, seq, EXTRACTION_DEPTH["llama"])
        out["llama"] = _forward_record(llama, (state, ids), flops, depth_flops, batches["llama"], peaks, time_call)
    out["shapes"] = {"whisper": dataclasses.asdict(whisper_cfg), "llama": dataclasses.asdict(llama_cfg),
                     "n_frames": n_frames, "llama_tokens": seq, "batches": batches}
    for name in ("whisper", "llama"):
        ratios[f"{name}/fraction_of_bf16_peak"] = out[name]["fraction_of_bf16_peak"]
        ratios[f"{name}/windows_per_s_at_extraction_depth"] = out[name]["windows_per_s_at_extraction_depth"]
    out["goals"] = {f"{name}: >= 50% of the bf16 peak": out[name]["fraction_of_bf16_peak"] >= 0.5
                    for name in ("whisper", "llama")}
    _write("forwards", out, ratios, results)
    np.testing.assert_(all(np.isfinite(v) for v in ratios.values()), "forwards: non-finite ratio")


def _forward_record(fn, args, window_flops, depth_flops, batch, peaks, time_call) -> dict:
    """Time a jitted forward of ``batch`` windows: windows/s, FLOP/s and share of the bf16 peak.

    ``window_flops`` and ``depth_flops``: analytic FLOPs of one window as built and at the
    extraction's depth; XLA's count of the compiled program is recorded beside them.
    """
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()  # timed apart; the calls below reuse it
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    timing = time_call(lambda: compiled(*args), repeats=5)
    seconds = min(timing["times_s"])
    rate = window_flops * batch / seconds
    return {"batch": batch, "compile_s": compile_s, "first_s": timing["first_s"], "times_s": timing["times_s"],
            "flop_per_window": window_flops, "xla_cost_flop_per_window": float(cost.get("flops", "nan")) / batch,
            "windows_per_s": batch / seconds, "windows_per_s_at_extraction_depth": rate / depth_flops,
            "tflops": rate / 1e12, "fraction_of_bf16_peak": rate / 1e9 / peaks["bfloat16"]}


def run_ridge(results: Path, dry_run: bool) -> None:
    """jaxenc RidgeCV against himalaya (torch_cuda on a GPU) at benchmarks/ridge.py's full size."""
    import jax
    import numpy as np
    import ridge as rb
    import torch
    from common import time_call
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score

    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_splits import resolve_splits

    sizes = dict(n_trs=400, n_features=40, n_voxels=64) if dry_run else rb.SIZES["default"]
    X, Y, X_test, groups = rb.make_data(**sizes)
    splits = resolve_splits(rb.N_FOLDS, len(X), groups)
    backend = "torch_cuda" if torch.cuda.is_available() and not dry_run else "torch"
    set_backend(backend)
    himalaya = HimalayaRidgeCV(alphas=rb.ALPHAS.astype(np.float32), cv=splits, fit_intercept=True,
                               solver_params=dict(score_func=r2_score, warn=False))
    model = RidgeCV(alphas=rb.ALPHAS, cv=splits)
    with jax.default_matmul_precision("highest"):
        jax_t = time_call(lambda: model.fit(X, Y).coef_, repeats=2, warmup=0)
        pred = np.asarray(model.predict(X_test))
    him_t = time_call(lambda: himalaya.fit(X, Y).coef_, repeats=2, warmup=0)
    him_pred = rb.to_numpy(himalaya.predict(X_test).cpu() if backend == "torch_cuda" else himalaya.predict(X_test))
    alphas = np.asarray(model.best_alphas_, np.float64)
    reference = rb.reference_predictions(X, Y, X_test, alphas)
    out = {"sizes": sizes, "himalaya_backend": backend, "precision": "highest",
           "jaxenc": {k: v for k, v in jax_t.items() if k != "result"},
           "himalaya": {k: v for k, v in him_t.items() if k != "result"},
           "jaxenc_vs_float64": rb.diff(pred, reference), "jaxenc_vs_himalaya": rb.diff(pred, him_pred),
           "alphas_equal_fraction": float(np.isclose(alphas, rb.to_numpy(
               himalaya.best_alphas_.cpu() if backend == "torch_cuda" else himalaya.best_alphas_), rtol=1e-5).mean())}
    ratios = {"ridgecv_vs_himalaya": him_t["median_s"] / jax_t["median_s"],
              "ridgecv_cold_vs_himalaya": him_t["median_s"] / jax_t["first_s"]}
    _write("ridge", out, ratios, results)


# --------------------------------------------------------------------------- entry point


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, one tiny test per pytest step")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of the JSON files (default benchmarks/results; a temporary one on a dry run)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run these steps only")
    parser.add_argument("--step", choices=[n for n, s in STEPS.items() if s.pytest is None], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:  # a child process: one benchmark step
        sys.path.insert(0, str(HERE))
        globals()[f"run_{args.step}"](args.results, args.dry_run)
        return 0
    results = args.results or (Path(tempfile.mkdtemp(prefix="device_check_")) if args.dry_run else HERE / "results")
    summary = orchestrate(args.dry_run, results, args.only)
    failed = [name for name, s in summary["steps"].items() if not s["ok"]]
    print(f"[device_check] {results}/device_check.json: {len(summary['steps']) - len(failed)} steps ok, "
          f"failed: {failed or 'none'}, {summary['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
