"""Shared plumbing of the benchmark scripts: machine description, timing and result files.

A benchmark is a standalone script ``python benchmarks/NAME.py [--fast]`` that warms up, blocks
until results are ready, times compilation and steady state apart, checks its result against
the reference it races, and writes ``benchmarks/results/NAME.json`` through
:func:`write_results`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(description: str, argv=None) -> argparse.Namespace:
    """Parse the options every benchmark shares.

    Parameters
    ----------
    description : str
        One line shown by ``--help``.
    argv : list of str, optional
        Arguments; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    argparse.Namespace
        ``fast`` (bool: small sizes for a quick check), ``repeats`` (int: timed steady-state
        runs) and ``out`` (Path: the JSON file to write, or None for the default).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", help="small sizes, for a quick check")
    parser.add_argument("--repeats", type=int, default=3, help="timed steady-state runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON result")
    return parser.parse_args(argv)


def block(x):
    """Wait until every JAX array and CUDA torch tensor in ``x`` (any pytree) is computed; return ``x``.

    JAX arrays are waited for one by one; torch queues CUDA kernels on streams that JAX does
    not see, so when ``x`` holds a torch tensor on a CUDA device the whole device is
    synchronised (``torch.cuda.synchronize``), without which a torch timing stops when the
    kernels are queued rather than when they are done.
    """
    import jax

    jax.block_until_ready(x)
    torch = sys.modules.get("torch")  # a torch tensor can only exist if torch was imported
    if torch is not None and torch.cuda.is_available():
        leaves = jax.tree.leaves(x, is_leaf=lambda v: isinstance(v, torch.Tensor))
        devices = {v.device for v in leaves if isinstance(v, torch.Tensor) and v.is_cuda}
        for device in devices:
            torch.cuda.synchronize(device)
    return x


def time_call(fn, *, repeats: int = 3, warmup: int = 1) -> dict:
    """Time ``fn()`` cold (first call: tracing and compilation included) and warm.

    Parameters
    ----------
    fn : callable
        Takes no argument; its result is passed through :func:`block` so asynchronous JAX
        dispatch is timed to completion.
    repeats : int
        Timed warm calls.
    warmup : int
        Untimed warm calls after the first one.

    Returns
    -------
    dict
        ``first_s`` (seconds of the first call), ``times_s`` (list of warm seconds),
        ``median_s`` (their median) and ``result`` (the last call's return value).
    """
    t0 = time.perf_counter()
    result = block(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = block(fn())
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "times_s": times, "median_s": statistics.median(times), "result": result}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    """Describe the machine and the library versions a result was measured with."""
    import jax

    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def write_results(name: str, payload: dict, *, ratios: dict, out: Path | None = None) -> Path:
    """Write ``benchmarks/results/NAME.json`` with the machine, the raw times and the ratios.

    Parameters
    ----------
    name : str
        Benchmark name, the script's file stem.
    payload : dict
        Raw measurements (sizes, times in seconds, differences against the reference).
    ratios : dict
        Headline speed ratios, ``{"<what>_vs_<reference>": reference_time / jaxenc_time}``.
    out : Path, optional
        Destination; ``benchmarks/results/NAME.json`` when omitted.

    Returns
    -------
    Path
        The file written.
    """
    out = Path(out) if out is not None else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine_info(), "ratios": ratios, **payload}
    out.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    print(json.dumps({"benchmark": name, "ratios": ratios}, indent=2))
    print(f"wrote {out}")
    return out


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# Matmul peaks by label: (input dtype, jax.default_matmul_precision). float32 products at
# "highest" are true float32 on every backend; "tensorfloat32" lets an NVIDIA GPU round the
# inputs to TF32 (a TPU to bf16 passes), which JAX's default precision allows there; bfloat16
# inputs run at the bf16 rate (float32 accumulation) at the default setting, which a bf16
# forward also uses. XLA:CPU computes all float32 alike.
MATMUL_PRECISIONS = {
    "float32": ("float32", "highest"),
    "tf32": ("float32", "tensorfloat32"),
    "bfloat16": ("bfloat16", "default"),
    "float64": ("float64", "highest"),
}


def matmul_peak_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """This machine's matmul rate now: the best of ``repeats`` jitted ``n x n x n`` products,
    at an explicit precision.

    Parameters
    ----------
    n : int
        Matrix size.
    dtype : {"float32", "tf32", "bfloat16", "float64"}
        A key of :data:`MATMUL_PRECISIONS`: ``"float32"`` is float32 at full precision
        (``jax.default_matmul_precision("highest")``), the peak for float32 programs run at
        full precision; ``"tf32"`` the same inputs with TF32 products allowed, labelled apart
        because it is not a float32 peak; ``"bfloat16"`` bf16 inputs and output (float32
        accumulation on GPUs and TPUs); ``"float64"`` needs ``jax.enable_x64``, enabled around
        the measurement.
    repeats : int
        Timed products after one warm-up.

    Returns
    -------
    float
        GFLOP/s of the fastest product, counting ``2 n^3`` flops.
    """
    import jax
    import jax.numpy as jnp

    if dtype not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_peak_gflops: dtype={dtype!r}, expected one of {sorted(MATMUL_PRECISIONS)}")
    array_dtype, precision = MATMUL_PRECISIONS[dtype]
    # The precision is read when the product is traced, so the context covers the first call.
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision(precision):
        a = jnp.ones((n, n), array_dtype) / n
        product = jax.jit(lambda x: x @ x)
        block(product(a))
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            block(product(a))
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def memory_bandwidth_gbs(n_bytes: int = 2**30, repeats: int = 5) -> dict:
    """Streaming memory bandwidth: ``x <- 0.5 * x + y`` over arrays far larger than the caches.

    Each pass reads two arrays and writes one in place (inside a compiled loop, so no fresh
    allocation is timed), the pattern of an optimizer's elementwise update.

    Parameters
    ----------
    n_bytes : int
        Size of each of the two float32 arrays.
    repeats : int
        Timed runs of 10 passes after a warm-up.

    Returns
    -------
    dict
        ``gbs`` (best rate, bytes read and written per second / 1e9), ``times_s`` (per pass).
    """
    import jax
    import jax.numpy as jnp

    n = n_bytes // 4
    x, y = jnp.ones(n, jnp.float32), jnp.full(n, 0.5, jnp.float32)
    passes = 10
    run = jax.jit(lambda x, y: jax.lax.fori_loop(0, passes, lambda i, x: 0.5 * x + y, x), donate_argnums=0)
    x = block(run(x, y))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = block(run(x, y))
        times.append((time.perf_counter() - t0) / passes)
    return {"gbs": 3 * n * 4 / min(times) / 1e9, "times_s": times, "bytes_per_array": n * 4}


def profile_ops(run, hlo_text: str) -> dict:
    """Seconds per compiled operation of one call, from a :mod:`jax.profiler` trace, and the
    device time the trace cannot attribute.

    On CPU, XLA reports each operation it runs only with
    ``XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true`` set before JAX starts; on a GPU the
    kernels of the device trace are used: a kernel is attributed to an HLO instruction when
    its name is the instruction's (XLA names fusion kernels after them) or when the trace
    records the instruction as its ``hlo_op``. Kernels with neither (library kernels such as
    cuBLAS GEMMs or cuDNN attention when the trace does not link them) are not guessed at:
    their time is returned as ``untraced`` with their names.

    Parameters
    ----------
    run : callable
        Takes no argument; runs the program once and blocks until it is done.
    hlo_text : str
        The compiled program's HLO (``jitted.lower(...).compile().as_text()``), to name the
        operations.

    Returns
    -------
    dict
        ``ops``: per HLO instruction name, ``seconds`` (summed over its calls), ``calls``,
        ``op_name`` (the instruction's metadata: the JAX function and named scopes it came
        from) and ``line`` (its HLO text). ``untraced``: ``seconds`` of device kernels that
        could not be attributed and ``kernels`` (seconds per kernel name, the 20 longest).
    """
    import collections
    import glob
    import re
    import tempfile

    import jax
    from jax.profiler import ProfileData

    instructions = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.-]+) = (.*)$", hlo_text, re.M):
        op = re.search(r'op_name="([^"]+)"', m.group(2))
        instructions[m.group(1)] = {"op_name": op.group(1) if op else "", "line": m.group(2)}
    by_kernel = {name.replace(".", "_"): name for name in instructions}
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            run()
        data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    seconds, calls, untraced = collections.Counter(), collections.Counter(), collections.Counter()
    for plane in data.planes:
        device = plane.name.startswith("/device:")
        lines = list(plane.lines)
        if device:
            # A device plane may hold, besides its kernels (per-stream lines), lines derived
            # from them ("XLA Ops", "XLA Modules"): the HLO-level one when present (each event
            # one instruction, library calls included), the kernel lines otherwise, never both.
            ops = [line for line in lines if line.name == "XLA Ops"]
            lines = ops or [line for line in lines if not line.name.startswith("XLA ")]
        for line in lines:
            if not device and "XLAPjRtCpuClient" not in line.name and "XLAEigen" not in line.name:
                continue
            for event in line.events:
                name = event.name if event.name in instructions else by_kernel.get(event.name)
                if name is None and device:
                    name = _stat(event, "hlo_op")
                    name = name if name in instructions else None
                if name is not None:
                    seconds[name] += event.duration_ns / 1e9
                    calls[name] += 1
                elif device:
                    untraced[event.name] += event.duration_ns / 1e9
    return {"ops": {name: {"seconds": seconds[name], "calls": calls[name], **instructions[name]} for name in seconds},
            "untraced": {"seconds": sum(untraced.values()), "kernels": dict(untraced.most_common(20))}}


def _stat(event, key: str):
    """The value of statistic ``key`` of a profiler event, or None."""
    try:
        return next((value for name, value in event.stats if name == key), None)
    except (TypeError, ValueError):  # statistics this jaxlib cannot read as (name, value) pairs
        return None
