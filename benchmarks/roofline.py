"""Roofline estimates of the paper's three heavy computations on one H100, one H200 and one TPU v5e.

    python benchmarks/roofline.py          # writes benchmarks/results/roofline.json (~1 min on CPU)
    PYTHONPATH=DIR python benchmarks/roofline.py --tpu  # and XLA:TPU's kernels (libtpu in DIR; ~10 min)
    python benchmarks/roofline.py --no-xla # the analytic counts only, no kernels (seconds)

Estimates, not measurements: each workload's time on a chip is at least its FLOPs at the chip's
peak for the precision it runs at, at least its bytes at the chip's memory bandwidth, and at
least its kernels times the time one kernel launch takes (``launch_us`` of :data:`CHIPS`, an
assumption); the estimate is the largest of the three (the roofline with a launch floor), so
real runs are slower (kernels below peak, gaps, host work). Replace them with
benchmarks/device_check.py's measurements.

Kernels per step are counted (:func:`count_kernels`) in the optimized HLO of the programs
jaxenc compiles for each workload, from abstract inputs (nothing runs). For the TPU, with
``--tpu``, XLA:TPU compiles them for one v5e chip without a TPU (:func:`deviceless_tpu`). For
the GPUs the counts are XLA:CPU's, an estimate of the order of magnitude: XLA:GPU fuses
differently (XLA:CPU, for one, runs the dropout's random bits as a loop of small kernels), and
XLA:GPU compiles only with a GPU present (or the CUDA plugin given a topology by hand, which
JAX does not expose). :func:`moment_bytes` measures, on the same compiled training step, the
bytes AdamW's moments would save in bfloat16.

Workloads (sizes from ds003020's respdict, /work/shared/ds003020, and the paper's protocol):

- ``extraction_whisper``: Whisper large (32 layers, d_model 1280) on every 0.1 s window of every
  story, each window a 30 s input (3000 mel frames, 1500 positions), the last layer at the
  window's frame only (``frames_at``); bf16. Audio seconds per story: ``2 * n_trs - 20`` (the
  TR grid of jaxenc.conventions: sound onset 10 s after the first of ``n_trs - 5`` triggers).
  ``extraction_whisper`` writes and reads the attention scores (jaxenc's blocked attention),
  ``extraction_whisper_flash_attention`` keeps them on chip (a fused attention kernel).
- ``extraction_llama``: LLaMA-7B up to layer 12 (the paper's), grow-and-reset windows of 512
  words advancing by 256 (one causal pass per window gives every word's context), bf16;
  words per story at :data:`WORDS_PER_SECOND` of audio, :data:`TOKENS_PER_WORD` LLaMA tokens per
  word (assumptions, stated in the JSON).
- ``training``: Table 1's networks on 512 PCA components (MLLinear and MLP on audio, semantic
  and audio+semantic features, DIMLP on audio+semantic), 3 subjects x 5 folds each, AdamW,
  batch 128, per epoch and for 200 epochs (the cap; early stopping ends sooner); float32 at
  full precision, TF32 and bf16 compute beside it. Bytes per step: AdamW's 7 passes over the
  float32 parameters (read parameters, gradients, two moments; write three), the kernel
  read forward and its gradient written, the minibatch read twice.
- ``ridge``: ``RidgeCV`` (5 story folds + refit, 11 alphas, the primal route of
  jaxenc.models.ridge_solvers) from 21,504 features on all training rows to every voxel of
  the largest main subject (UTS03) and to 512 PCA components: Gram matrices and
  eigendecompositions in float64 (``9 p^3`` FLOPs each) where the chip has float64, float32
  elsewhere; everything touching voxels in float32 at full precision.

FLOPs are counted from the shapes (2 per multiply-add, matmuls and attention products only;
:func:`whisper_window_flops`, :func:`llama_window_flops`, :func:`mlp_epoch`, :func:`ridge_fit`)
and, unless ``--no-xla``, cross-checked against XLA's own count
(``jit(...).lower(...).compile().cost_analysis()`` on CPU) for one layer of each encoder at
full shape; tests/benchmarks/test_device_check.py checks the two agree at small shapes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import math
import re
from pathlib import Path

from jaxenc.conventions import DELAYS

HERE = Path(__file__).resolve().parent
RESPDICT = Path("/work/shared/ds003020/respdict.json")
TEST_STORY = "wheretheressmoke"

# Peak rates (TFLOP/s, dense) and memory bandwidth (TB/s) assumed per chip, with their sources.
# "float32": float32 products at full precision (H100/H200: the FP32 units, not tensor cores;
# TPU v5e: float32 emulated in 6 bf16 passes, XLA's HIGHEST); "tf32": NVIDIA's TF32 tensor
# cores (TPU: 3 bf16 passes, XLA's HIGH); "float64": None where the chip has none.
#
# "launch_us": time per kernel that kernels launched back to back cannot go below (an
# assumption, not a datasheet figure): on the GPUs a kernel launched from the host through
# XLA's thunk executor, a few microseconds (XLA's command buffers, CUDA graphs, lower it); on
# the TPU the compiled program runs as one, its operations issued by the chip's own scalar
# unit, so an operation's fixed cost is taken as a microsecond.
LAUNCH_SOURCE = ("assumed: a host-launched CUDA kernel ~4 us (XLA's thunk executor, without CUDA graphs); "
                 "a TPU operation ~1 us (issued on the chip, no host launch)")
CHIPS = {
    "H100 SXM": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9, "tb_per_s": 3.35,
                 "memory_gb": 80, "launch_us": 4.0, "compiler": "gpu",
                 "source": "NVIDIA H100 Tensor Core GPU datasheet (SXM5; dense, without sparsity)"},
    "H200 SXM": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9, "tb_per_s": 4.8,
                 "memory_gb": 141, "launch_us": 4.0, "compiler": "gpu",
                 "source": "NVIDIA H200 Tensor Core GPU datasheet (SXM; same compute as H100 SXM, HBM3e)"},
    "TPU v5e": {"bfloat16": 197.0, "tf32": 197.0 / 3, "float32": 197.0 / 6, "float64": None, "tb_per_s": 0.819,
                "memory_gb": 16, "launch_us": 1.0, "compiler": "tpu",
                "source": "Google Cloud TPU v5e documentation (197 TFLOP/s bf16, 819 GB/s HBM2, 16 GB); "
                          "float32 as 6 and TF32-like as 3 bf16 passes (XLA's HIGHEST / HIGH)"},
}
# Assumptions of the extraction estimate: speech rate of the stories and LLaMA tokens per word.
WORDS_PER_SECOND = 2.5
TOKENS_PER_WORD = 1.3
LLAMA_CONTEXT = (256, 512)  # words: windows of 512 advancing by 256 (the reference's lookbacks)
WHISPER_STRIDE_S = 0.1
WHISPER_FRAMES = 3000  # 30 s of 10 ms mel frames per window
PCA_COMPONENTS = 512
N_ALPHAS = 11
N_FOLDS = 5
EPOCHS = 200
BATCH = 128
HIDDEN = 256
N_DELAYS = len(DELAYS)
AUDIO_WIDTH, SEMANTIC_WIDTH = 1280, 4096  # Whisper large's d_model, LLaMA-7B's hidden size
RIDGE_VOXELS = 95_556  # voxels of UTS03, the largest main subject
BATCH_WINDOWS = 16  # windows per forward, over which the weights are read once
LLAMA_DEPTH = 12  # the paper's LLaMA layer
# The smallest TPU v5e slice libtpu compiles for (2x2 chips per host); programs use one chip.
TPU_TOPOLOGY = "v5e:2x2"


def whisper_window_flops(cfg, n_frames: int) -> float:
    """FLOPs of ``WhisperEncoder.frames_at`` for one window, the last layer at one frame.

    Parameters
    ----------
    cfg : jaxenc.nn.WhisperEncoderConfig
    n_frames : int
        Mel frames of the input (positions ``s = n_frames / 2``).

    Returns
    -------
    float
        Convolutions, ``encoder_layers - 1`` full layers (four projections, the two attention
        products, the feed-forward) and the last layer's key and value projections over every
        position with its query, output projection and feed-forward at one position.
    """
    d, f, s, mels = cfg.d_model, cfg.encoder_ffn_dim, n_frames // 2, cfg.num_mel_bins
    convs = 2 * n_frames * 3 * mels * d + 2 * s * 3 * d * d
    full = 2 * s * 4 * d * d + 2 * 2 * s * s * d + 2 * 2 * s * d * f
    last = 2 * s * 2 * d * d + 2 * 2 * d * d + 2 * 2 * s * d + 2 * 2 * d * f
    return float(convs + (cfg.encoder_layers - 1) * full + last)


def llama_window_flops(cfg, tokens: int, n_layers: int) -> float:
    """FLOPs of ``n_layers`` LLaMA decoder layers over one window of ``tokens`` (no head).

    Projections ``2 t d (2 h_q + 2 h_kv) head_dim``-style counted from the config, the gated
    feed-forward ``3 x 2 t d f``, and the two attention products over the full (padded, not
    causally halved) ``t x t`` scores, as jaxenc computes them.
    """
    d, f, t = cfg.hidden_size, cfg.intermediate_size, tokens
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_layer = 2 * t * d * (2 * q + 2 * kv) + 3 * 2 * t * d * f + 2 * 2 * t * t * q
    return float(n_layers * per_layer)


def stories() -> dict:
    """Story -> TRs of ds003020's respdict (the 84 stories of UTS01-03)."""
    return json.loads(RESPDICT.read_text())


def extraction(respdict: dict) -> dict:
    """FLOPs and bytes of Whisper-large and LLaMA-7B (layer 12) extraction over every story."""
    from jaxenc.nn import LlamaConfig, WhisperEncoderConfig

    seconds = {s: 2 * n - 20 for s, n in respdict.items()}
    total_s = sum(seconds.values())
    windows = sum(math.floor(sec / WHISPER_STRIDE_S) for sec in seconds.values())
    wcfg = WhisperEncoderConfig()
    w_flops = whisper_window_flops(wcfg, WHISPER_FRAMES)
    s, d = WHISPER_FRAMES // 2, wcfg.d_model
    w_params = wcfg.encoder_layers * (4 * d * d + 2 * d * wcfg.encoder_ffn_dim)
    # bf16 bytes per window: the weights once per batch of windows; per layer about 24 reads and
    # writes of (s, d) activations (the feed-forward's 4d hidden counted as four) and, unless the
    # attention is fused (flash), its scores written and read once.
    w_bytes = 2 * (w_params / BATCH_WINDOWS + wcfg.encoder_layers * 24 * s * d)
    w_scores = 2 * wcfg.encoder_layers * 2 * wcfg.encoder_attention_heads * s * s
    lcfg = LlamaConfig()
    depth = LLAMA_DEPTH
    words = {st: sec * WORDS_PER_SECOND for st, sec in seconds.items()}
    step = LLAMA_CONTEXT[1] - LLAMA_CONTEXT[0]
    l_windows = sum(1 + max(0, math.ceil((w - LLAMA_CONTEXT[1]) / step)) for w in words.values())
    tokens = round(LLAMA_CONTEXT[1] * TOKENS_PER_WORD) + 1  # + BOS
    l_flops = llama_window_flops(lcfg, tokens, depth)
    h, f = lcfg.hidden_size, lcfg.intermediate_size
    l_params = depth * (4 * h * h + 3 * h * f)
    l_bytes = 2 * (l_params / BATCH_WINDOWS + depth * (24 * tokens * h + 2 * lcfg.num_attention_heads * tokens**2))
    return {
        "audio_hours": total_s / 3600, "n_stories": len(respdict),
        "whisper": {"windows": windows, "flop_per_window": w_flops, "bytes_per_window": w_bytes + w_scores,
                    "flop": windows * w_flops, "bytes": windows * (w_bytes + w_scores), "precision": "bfloat16"},
        "whisper_flash": {"windows": windows, "flop_per_window": w_flops, "bytes_per_window": w_bytes,
                          "flop": windows * w_flops, "bytes": windows * w_bytes, "precision": "bfloat16"},
        "llama": {"words": sum(words.values()), "windows": l_windows, "tokens_per_window": tokens, "layers": depth,
                  "flop_per_window": l_flops, "bytes_per_window": l_bytes, "flop": l_windows * l_flops,
                  "bytes": l_windows * l_bytes, "precision": "bfloat16"},
    }


def mlp_epoch(n_in: int | tuple[int, ...], n_train: int, n_val: int, *, hidden: int = HIDDEN,
              n_out: int = PCA_COMPONENTS, batch: int = BATCH) -> dict:
    """FLOPs and float32 bytes of one epoch of one model of the paper's networks.

    Parameters
    ----------
    n_in : int or tuple of int
        Input width; a tuple gives DIMLP's one hidden layer per modality (widths of the parts).
    n_train, n_val : int
        Training and validation rows.

    Returns
    -------
    dict
        ``flop`` (forward and backward of the training rows, forward of the validation rows;
        no gradient for the input layer's input), ``bytes`` and ``steps``.
    """
    parts = n_in if isinstance(n_in, tuple) else (n_in,)
    first = sum(p * hidden for p in parts)
    second = len(parts) * hidden * n_out
    flop = n_train * (2 * 2 * first + 3 * 2 * second) + n_val * 2 * (first + second)
    steps = math.ceil(n_train / batch)
    params = first + second
    per_step = 4 * (7 * params + 2 * first + 2 * batch * sum(parts))
    validation = 4 * (n_val * sum(parts) + params)
    return {"flop": float(flop), "bytes": float(steps * per_step + validation), "steps": steps,
            "parameters": params}


def training(respdict: dict) -> dict:
    """Table 1's networks on PCA targets: FLOPs and bytes per epoch and for the epoch cap."""
    rows = sum(n - 20 for s, n in respdict.items() if s != TEST_STORY)
    n_val = rows // N_FOLDS
    n_train = rows - n_val
    audio, semantic = N_DELAYS * AUDIO_WIDTH, N_DELAYS * SEMANTIC_WIDTH
    fits = {f"{name}/{features}": width
            for features, width in (("audio", audio), ("semantic", semantic), ("audio+semantic", audio + semantic))
            for name in ("MLLinear", "MLP")}
    fits["DIMLP/audio+semantic"] = (audio, semantic)
    n_models = 3 * N_FOLDS
    per_epoch = {k: mlp_epoch(w, n_train, n_val) for k, w in fits.items()}
    flop = n_models * sum(v["flop"] for v in per_epoch.values())
    nbytes = n_models * sum(v["bytes"] for v in per_epoch.values())
    return {"training_rows": rows, "models_per_fit": n_models, "fits": list(fits), "epochs": EPOCHS,
            "steps_per_epoch": math.ceil(n_train / BATCH),
            "per_epoch": {"flop": flop, "bytes": nbytes}, "flop": EPOCHS * flop, "bytes": EPOCHS * nbytes,
            "precision": "float32"}


def ridge_fit(n: int, p: int, v: int, *, folds: int = N_FOLDS, n_alphas: int = N_ALPHAS) -> dict:
    """FLOPs and bytes of a RidgeCV fit by the primal route (see jaxenc.models.ridge_solvers).

    Per split (``folds`` of them, then the refit on all rows): the Gram matrix ``2 n_train p^2``
    and its eigendecomposition ``9 p^3`` (``decomposition_flop``, float64 where available);
    ``A = X_val V`` ``2 n_val p^2``, ``X_train^T Y_train`` as ``X^T Y`` minus the held-out rows'
    product ``2 n_val p v``, ``Q = V^T X_train^T Y_train`` ``2 p^2 v``, the validation predictions
    of every alpha ``2 n_alphas n_val p v``; once, ``X^T Y`` ``2 n p v``; the refit's
    coefficients ``2 p^2 v`` twice. Bytes: X and Y (float32) read once per split and the
    predictions of every alpha written and read once.
    """
    n_val = n // folds
    n_tr = n - n_val
    decomposition = folds * (2 * n_tr * p * p + 9 * p**3) + (2 * n * p * p + 9 * p**3)
    voxels = (2 * n * p * v + folds * (2 * n_val * p * p + 2 * n_val * p * v + 2 * p * p * v
                                       + 2 * n_alphas * n_val * p * v)
              + 2 * 2 * p * p * v)
    nbytes = 4 * ((folds + 1) * (n * p + n * v) + folds * 2 * n_alphas * n_val * v)
    return {"n": n, "p": p, "v": v, "decomposition_flop": float(decomposition), "voxel_flop": float(voxels),
            "flop": float(decomposition + voxels), "bytes": float(nbytes)}


def ridge(respdict: dict) -> dict:
    rows = sum(n - 20 for s, n in respdict.items() if s != TEST_STORY)
    p = N_DELAYS * (SEMANTIC_WIDTH + AUDIO_WIDTH)
    return {"all_voxels_UTS03": ridge_fit(rows, p, RIDGE_VOXELS), "pca_512": ridge_fit(rows, p, PCA_COMPONENTS)}


def seconds_on(chip: dict, flop: float, nbytes: float, precision: str, decomposition_flop: float = 0.0,
               kernels: float | None = None) -> dict:
    """The roofline time of a workload on a chip: the largest of its compute, memory and
    (given ``kernels``) launch times, the last ``kernels`` x the chip's ``launch_us``."""
    compute = (flop - decomposition_flop) / (chip[precision] * 1e12)
    if decomposition_flop:
        rate = chip["float64"] or chip["float32"]
        compute += decomposition_flop / (rate * 1e12)
    times = {"compute": compute, "memory": nbytes / (chip["tb_per_s"] * 1e12)}
    if kernels is not None:
        times["launch"] = kernels * chip["launch_us"] * 1e-6
    bound = max(times, key=times.get)
    return {"seconds": times[bound], **{f"{k}_s": v for k, v in times.items()}, "bound": bound, "precision": precision}


def workload_kernels(work: dict, kernels: dict) -> dict:
    """Kernels each workload of :func:`estimates` launches, from :func:`kernel_counts`."""
    ext, train = work["extraction"], work["training"]
    forwards = math.ceil(ext["whisper"]["windows"] / BATCH_WINDOWS)
    whisper = forwards * kernels["extraction"]["whisper"]["kernels_per_forward"]
    epoch = train["steps_per_epoch"] * sum(kernels["training"][fit]["kernels_per_step"] for fit in train["fits"])
    return {
        # The fused attention replaces the "xla" route's few attention kernels per layer by one:
        # the same count, an upper bound.
        "extraction_whisper": whisper, "extraction_whisper_flash_attention": whisper,
        "extraction_llama": (math.ceil(ext["llama"]["windows"] / BATCH_WINDOWS)
                             * kernels["extraction"]["llama"]["kernels_per_forward"]),
        # Training steps only: the validation pass and the shuffle are left out.
        "training_per_epoch": epoch, "training_200_epochs": EPOCHS * epoch,
        "ridge_all_voxels": kernels["ridge"]["all_voxels_UTS03"]["kernels"],
        "ridge_pca_512": kernels["ridge"]["pca_512"]["kernels"],
    }


def estimates(respdict: dict, kernels: dict | None = None) -> dict:
    """Every workload's FLOPs, bytes and roofline seconds on every chip of :data:`CHIPS`, with
    the launch floor of its kernels where ``kernels`` (target -> :func:`kernel_counts`, at
    least ``"cpu"``) is given."""
    ext, train, rdg = extraction(respdict), training(respdict), ridge(respdict)
    work = {
        "extraction_whisper": (ext["whisper"], ("bfloat16",)),
        "extraction_whisper_flash_attention": (ext["whisper_flash"], ("bfloat16",)),
        "extraction_llama": (ext["llama"], ("bfloat16",)),
        "training_per_epoch": (train["per_epoch"], ("float32", "tf32", "bfloat16")),
        "training_200_epochs": (train, ("float32", "tf32", "bfloat16")),
        "ridge_all_voxels": (rdg["all_voxels_UTS03"], ("float32",)),
        "ridge_pca_512": (rdg["pca_512"], ("float32",)),
    }
    workloads = {"extraction": ext, "training": train, "ridge": rdg}
    kernels = kernels or {}
    launched = {target: workload_kernels(workloads, counts) for target, counts in kernels.items()}
    out = {}
    for name, (w, precisions) in work.items():
        out[name] = {}
        for chip, spec in CHIPS.items():
            # A chip's own compiler's counts where they were made, XLA:CPU's otherwise.
            source = spec["compiler"] if spec["compiler"] in launched else "cpu"
            n = launched[source][name] if source in launched else None
            out[name][chip] = {prec: {**seconds_on(spec, w["flop"], w["bytes"], prec, w.get("decomposition_flop", 0.0),
                                                   n), **({"kernels": n, "kernels_from": source} if n else {})}
                               for prec in precisions}
    doc = {"workloads": workloads, "seconds": out}
    if kernels:
        doc["kernels"] = {target: {**counts, "per_workload": launched[target]} for target, counts in kernels.items()}
    return doc


def xla_counts() -> dict:
    """XLA's FLOPs and bytes for one layer of each encoder at full shape (CPU compile, abstract
    inputs: nothing is run), beside the analytic counts of the same program."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxenc.nn import LlamaConfig, LlamaModel, WhisperEncoder, WhisperEncoderConfig

    out = {}
    wcfg = WhisperEncoderConfig(encoder_layers=1)
    model = nnx.eval_shape(lambda: WhisperEncoder(wcfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                                  rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    mel = jax.ShapeDtypeStruct((1, wcfg.num_mel_bins, WHISPER_FRAMES), jnp.bfloat16)
    frame = jax.ShapeDtypeStruct((1,), jnp.int32)
    fn = jax.jit(lambda s, x, f: nnx.merge(graphdef, s).frames_at(x, f, (1,)))
    out["whisper_1_layer"] = _cost(fn, (state, mel, frame), whisper_window_flops(wcfg, WHISPER_FRAMES))
    lcfg = LlamaConfig(num_hidden_layers=1)
    model = nnx.eval_shape(lambda: LlamaModel(lcfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    tokens = round(LLAMA_CONTEXT[1] * TOKENS_PER_WORD) + 1
    ids = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[-1])
    out["llama_1_layer"] = _cost(fn, (state, ids), llama_window_flops(lcfg, tokens, 1))
    return out


def _cost(fn, args, analytic: float) -> dict:
    cost = fn.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"xla_flop": float(cost["flops"]), "xla_bytes": float(cost["bytes accessed"]), "analytic_flop": analytic,
            "analytic_vs_xla": analytic / float(cost["flops"])}


# Instructions of optimized HLO that launch nothing: they name, bundle or reinterpret buffers.
FREE_OPS = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "opt-barrier",
                      "after-all", "partition-id", "replica-id", "add-dependency"})
# The second half of an asynchronous operation (a DMA's copy-start / copy-done on a TPU): the
# start launched it.
ASYNC_ENDS = ("-done", "-update")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = (.*)$")
_OPCODE = re.compile(r"(?:^|[\s}\]])([a-z][a-z0-9\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+) .*\{$")


def count_kernels(hlo_text: str) -> dict:
    """Kernels one call of a compiled program launches, counted in its optimized HLO.

    Every instruction of the entry computation is one kernel (a fusion, a library call such
    as a GEMM or an eigensolver, a copy, a collective, a TPU's DMA), except those that only
    name or bundle buffers (:data:`FREE_OPS`) and the ends of asynchronous operations
    (:data:`ASYNC_ENDS`: a start and its done count once). A ``while`` loop counts its body's
    kernels once per iteration and its condition's once per test (XLA's ``known_trip_count``);
    a ``conditional`` its largest branch; a ``call`` its callee. A library call counts as one kernel although
    some (cuSOLVER's eigensolvers) launch several, so on a GPU this is a lower bound.

    Parameters
    ----------
    hlo_text : str
        ``jitted.lower(...).compile().as_text()``.

    Returns
    -------
    dict
        ``kernels`` (int), ``in_loops`` (those run inside ``while`` loops), ``by_op`` (kernels
        per opcode, ``while/`` before those in loops) and ``unknown_trip_counts`` (loops
        without a known trip count, counted as one iteration).
    """
    computations, entry, current = {}, None, None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and not line.startswith(" "):
            current = computations.setdefault(head.group(1), [])
            entry = head.group(1) if line.startswith("ENTRY") else entry
            continue
        m = _INSTRUCTION.match(line)
        if m and current is not None:
            rhs = m.group(1)
            current.append((_OPCODE.search(rhs).group(1), rhs))
    unknown = [0]

    @functools.cache
    def count(name: str) -> collections.Counter:
        out = collections.Counter()
        for op, rhs in computations[name]:
            if op in FREE_OPS or op.endswith(ASYNC_ENDS):
                continue
            if op == "while":
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rhs)
                unknown[0] += trips is None
                n = int(trips.group(1)) if trips else 1
                body = re.search(r"body=%?([\w.\-]+)", rhs).group(1)
                cond = re.search(r"condition=%?([\w.\-]+)", rhs).group(1)
                for k, v in count(body).items():
                    out[_in_loop(k)] += n * v
                for k, v in count(cond).items():
                    out[_in_loop(k)] += (n + 1) * v
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", rhs)
                names = (re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else
                         re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", rhs))
                out.update(max((count(b) for b in names), key=lambda c: sum(c.values())))
            elif op == "call":
                out.update(count(re.search(r"to_apply=%?([\w.\-]+)", rhs).group(1)))
            else:
                out[op] += 1
        return out

    by_op = count(entry)
    return {"kernels": sum(by_op.values()), "in_loops": sum(v for k, v in by_op.items() if k.startswith("while/")),
            "by_op": dict(by_op.most_common()), "unknown_trip_counts": unknown[0]}


def _in_loop(op: str) -> str:
    return op if op.startswith("while/") else f"while/{op}"


def compile_on_cpu(fn, *args, **kwargs):
    """``fn`` (a :func:`jax.jit` function) compiled by XLA:CPU for these arguments."""
    return fn.lower(*args, **kwargs).compile()


def cpu_only_with_libtpu() -> None:
    """Keep JAX on its CPU backend although libtpu is importable, and tell libtpu the slice it
    compiles for (it would otherwise look for TPU metadata); call before JAX's first use."""
    import os

    import jax

    for key, value in {"TPU_ACCELERATOR_TYPE": "v5litepod-4", "TPU_WORKER_HOSTNAMES": "localhost",
                       "TPU_SKIP_MDS_QUERY": "1"}.items():
        os.environ.setdefault(key, value)
    jax.config.update("jax_platforms", "cpu")


def deviceless_tpu(topology: str = TPU_TOPOLOGY):
    """A compile function like :func:`compile_on_cpu` for one chip of a TPU v5e, without a TPU.

    XLA:TPU compiles ahead of time for a topology given by name (``jax.experimental.topologies``),
    through libtpu, which needs no TPU to compile: ``pip install --target DIR "libtpu==0.0.42.*"``
    (the version jax 0.10.2's ``tpu`` extra pins; 213 MB), ``DIR`` on ``PYTHONPATH``. JAX itself
    keeps its CPU backend (``jax_platforms``), and libtpu is told the slice it would run on.
    Positional arguments become abstract values placed on the topology's first chip; keyword
    arguments are passed as they are (the static ones of jaxenc's programs).
    """
    import jax
    from jax.experimental import topologies
    from jax.sharding import SingleDeviceSharding

    cpu_only_with_libtpu()
    chip = SingleDeviceSharding(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices[0])

    def compile_on_tpu(fn, *args, **kwargs):
        placed = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=chip), args)
        return fn.trace(*placed, **kwargs).lower(lowering_platforms=("tpu",)).compile()

    return compile_on_tpu


def encoder_kernels(compile_fn=compile_on_cpu) -> dict:
    """Kernels of one Whisper-large and one LLaMA-7B (to layer 12) forward, bf16, at full shape.

    Compiled by ``compile_fn`` (:func:`compile_on_cpu` or :func:`deviceless_tpu`'s, from
    abstract inputs) with 1 and 2 layers, on the ``"xla"``
    attention route (``jax.nn.dot_product_attention``: the TPU's, and a GPU's without cuDNN,
    which fuses the attention into one library call); the difference is one layer's kernels,
    extrapolated to the depth the extraction runs.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxenc.nn import LlamaConfig, LlamaModel, WhisperEncoder, WhisperEncoderConfig

    def whisper(layers):
        cfg = WhisperEncoderConfig(encoder_layers=layers)
        model = nnx.eval_shape(lambda: WhisperEncoder(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                                      attention="xla", rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        fn = jax.jit(lambda s, x, f: nnx.merge(graphdef, s).frames_at(x, f, (layers,)))
        mel = jax.ShapeDtypeStruct((BATCH_WINDOWS, cfg.num_mel_bins, WHISPER_FRAMES), jnp.bfloat16)
        frame = jax.ShapeDtypeStruct((BATCH_WINDOWS,), jnp.int32)
        return count_kernels(compile_fn(fn, state, mel, frame).as_text())

    def llama(layers):
        cfg = LlamaConfig(num_hidden_layers=layers)
        model = nnx.eval_shape(lambda: LlamaModel(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention="xla",
                                                  rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[-1])
        tokens = round(LLAMA_CONTEXT[1] * TOKENS_PER_WORD) + 1
        return count_kernels(compile_fn(fn, state, jax.ShapeDtypeStruct((BATCH_WINDOWS, tokens), jnp.int32)).as_text())

    def layers_of(build, depth):
        one, two = build(1), build(2)
        return {"kernels_1_layer": one["kernels"], "kernels_2_layers": two["kernels"],
                "kernels_per_layer": two["kernels"] - one["kernels"], "layers": depth,
                "kernels_per_forward": one["kernels"] + (depth - 1) * (two["kernels"] - one["kernels"]),
                "by_op_2_layers": two["by_op"], "windows_per_forward": BATCH_WINDOWS}

    return {"whisper": layers_of(whisper, WhisperEncoderConfig().encoder_layers),
            "llama": layers_of(llama, LLAMA_DEPTH)}


def table1_networks() -> dict:
    """Table 1's fits: name -> ``make(n_in, n_out, rngs)`` at the paper's width, and its input width."""
    from jaxenc.models.nonlinear import DIMLP, MLP, MLLinear, delayed_columns

    audio, semantic = AUDIO_WIDTH, SEMANTIC_WIDTH
    block = audio + semantic
    fits = {}
    for features, width in (("audio", audio), ("semantic", semantic), ("audio+semantic", block)):
        fits[f"MLLinear/{features}"] = (functools.partial(MLLinear, hidden=HIDDEN), N_DELAYS * width)
        fits[f"MLP/{features}"] = (functools.partial(MLP, hidden=HIDDEN), N_DELAYS * width)
    modalities = [delayed_columns(0, audio, block, N_DELAYS), delayed_columns(audio, block, block, N_DELAYS)]
    fits["DIMLP/audio+semantic"] = (lambda n_in, n_out, rngs: DIMLP(modalities, n_out, hidden=HIDDEN, rngs=rngs),
                                    N_DELAYS * block)
    return fits


def training_step(make, n_features: int, n_models: int = 3 * N_FOLDS, moments=None,
                  compile_fn=compile_on_cpu):
    """jaxenc's training step vmapped over a stack of models, compiled from abstract inputs.

    The step of :func:`jaxenc.train.program.train_step`, as the fold-parallel program runs it
    once per minibatch for every model of a fit; the data hold one minibatch of rows (XLA's
    cost analysis counts a gather's whole operand, so larger data would count bytes the step
    never reads).

    Parameters
    ----------
    make : callable
        ``make(n_in, n_out, rngs)``, a model of :func:`table1_networks`.
    n_features : int
    n_models : int
        Models of the stack (3 subjects x 5 folds in Table 1).
    moments : (str, str), optional
        Storage dtypes of AdamW's first and second moments; None: jaxenc's AdamW as it is
        (both float32). Otherwise the step of :func:`adamw_stored_moments`.
    compile_fn : callable
        :func:`compile_on_cpu` or :func:`deviceless_tpu`'s.

    Returns
    -------
    jax.stages.Compiled
    """
    import jax
    import jax.numpy as jnp

    from jaxenc.train import _adamw
    from jaxenc.train import program as prog

    create, graphs = prog.stack_initializer(make, n_features, PCA_COMPONENTS, EPOCHS)
    m = n_models
    carry = jax.eval_shape(create, jax.ShapeDtypeStruct((m, 2), jnp.uint32), jax.ShapeDtypeStruct((m,), jnp.float32),
                           jax.ShapeDtypeStruct((m,), jnp.float32), jax.ShapeDtypeStruct((m,), bool))
    opt = carry["opt"]
    if moments is not None:
        opt = {**opt, **{k: jax.tree.map(lambda a, d=d: jax.ShapeDtypeStruct(a.shape, jnp.dtype(d)), opt[k])
                         for k, d in zip(("mu", "nu"), moments, strict=True)}}
    spec = prog.ProgramSpec(BATCH, BATCH, "l1", EPOCHS, 10, 0.0, BATCH, BATCH)
    data = {"X": jax.ShapeDtypeStruct((1, BATCH, n_features), jnp.float32),
            "Y": jax.ShapeDtypeStruct((1, BATCH, PCA_COMPONENTS), jnp.float32),
            "subj": jax.ShapeDtypeStruct((m,), jnp.int32), "tgt": jax.ShapeDtypeStruct((m,), jnp.int32)}
    step = jax.vmap(functools.partial(prog.train_step, graphs[-1], spec),
                    in_axes=({"X": None, "Y": None, "subj": 0, "tgt": 0}, 0, 0, 0, 0))
    args = (data, (carry["params"], carry["rest"], opt), jax.ShapeDtypeStruct((m, BATCH), jnp.int32),
            jax.ShapeDtypeStruct((m, BATCH), bool), jax.ShapeDtypeStruct((m,), bool))
    if moments is None:
        return compile_fn(jax.jit(step, donate_argnums=1), *args)
    original = _adamw.update
    _adamw.update = adamw_stored_moments
    try:
        return compile_fn(jax.jit(step, donate_argnums=1), *args)
    finally:
        _adamw.update = original


def adamw_stored_moments(params, grads, state, apply):
    """:func:`jaxenc.train._adamw.update` with each moment stored in its state's dtype.

    For the measurement of :func:`moment_bytes` only: the moments are read in their stored
    dtype, updated in float32 and rounded to their stored dtype before the barrier that
    materialises them (so the parameter update reads them in that dtype), optax's
    ``mu_dtype`` placed as jaxenc's AdamW would place it. With float32 moments it computes
    what ``_adamw.update`` does (tests/test_device_check.py).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from jaxenc.train import _adamw

    def up(tree):
        return jax.tree.map(lambda a: a.astype(jnp.float32), tree)

    def stored(tree, like):
        return jax.tree.map(lambda a, b: a.astype(b.dtype), tree, like)

    old_mu, old_nu = up(state["mu"]), up(state["nu"])
    mu = optax.tree.where(apply, optax.tree.update_moment(grads, old_mu, _adamw.B1, 1), old_mu)
    nu = optax.tree.where(apply, optax.tree.update_moment_per_elem_norm(grads, old_nu, _adamw.B2, 2), old_nu)
    mu, nu = jax.lax.optimization_barrier((stored(mu, state["mu"]), stored(nu, state["nu"])))
    count = optax.safe_increment(state["count"])
    mu_hat = optax.tree.bias_correction(up(mu), _adamw.B1, count)
    nu_hat = optax.tree.bias_correction(up(nu), _adamw.B2, count)
    lr, wd = state["learning_rate"], state["weight_decay"]

    def step(p, m, v):  # _adamw.update's parameter update, term for term
        u = -lr * (m / (jnp.sqrt(v + _adamw.EPS_ROOT) + _adamw.EPS) + wd * p)
        return jnp.where(apply, jnp.asarray(p + u).astype(p.dtype), p)

    new_params = jax.tree.map(step, params, mu_hat, nu_hat)
    return new_params, {**state, "count": jnp.where(apply, count, state["count"]), "mu": mu, "nu": nu}


def _cost_of(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"flop": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}


def training_kernels(compile_fn=compile_on_cpu) -> dict:
    """Kernels, FLOPs and bytes of one step of each Table 1 fit (15 models vmapped)."""
    out = {}
    for name, (make, width) in table1_networks().items():
        compiled = training_step(make, width, compile_fn=compile_fn)
        counted = count_kernels(compiled.as_text())
        out[name] = {"n_features": width, "kernels_per_step": counted["kernels"], "by_op": counted["by_op"],
                     **{f"xla_{k}_per_step": v for k, v in _cost_of(compiled).items()}}
    return out


def moment_bytes(compile_fn=compile_on_cpu) -> dict:
    """Bytes per training step with AdamW's moments stored in float32 or bfloat16.

    The MLP at the paper's width (4 delays x (1280 + 4096) features, 256 hidden, 512
    outputs, batch 128, 15 models vmapped), from XLA's cost analysis of the compiled step.
    ``float32``: jaxenc's AdamW; ``mu_bfloat16``: the first moment in bfloat16 (optax's
    ``mu_dtype``); ``mu_nu_bfloat16``: both moments. A bfloat16 second moment is not usable
    with AdamW's ``b2 = 0.999``: bfloat16 keeps 8 significant bits, so ``0.999 * nu`` rounds
    back to ``nu`` (a relative change of 1e-3, below half bfloat16's spacing, 2^-9 to 2^-8
    relative) and ``nu`` stops decaying; ``unsafe_nu`` records it.
    """
    import jax.numpy as jnp

    make, width = table1_networks()["MLP/audio+semantic"]
    variants = {"float32": None, "mu_bfloat16": ("bfloat16", "float32"), "mu_nu_bfloat16": ("bfloat16", "bfloat16")}
    out = {k: _cost_of(training_step(make, width, moments=v, compile_fn=compile_fn)) for k, v in variants.items()}
    base = out["float32"]["bytes"]
    for v in out.values():
        v["saving_vs_float32"] = 1 - v["bytes"] / base
    nu = jnp.ones((), jnp.bfloat16)
    out["unsafe_nu"] = {"b2": 0.999, "bfloat16(b2 * 1.0)": float((nu * jnp.bfloat16(0.999)).astype(jnp.float32))}
    return out


def ridge_kernels(n_voxels: dict, compile_fn=compile_on_cpu, platform: str = "cpu") -> dict:
    """Kernels of a ``RidgeCV`` fit by the primal route (:func:`ridge_fit`'s programs).

    Runs ``jaxenc.models.ridge_solvers``' ``cv_scores`` and ``refit`` on a small problem of the
    same structure (5 story folds, :data:`N_ALPHAS` alphas, ``n_features < n_train`` so the
    route is the primal one, as many voxel batches as the full size has) with every compiled
    program of the module wrapped to count its calls and the kernels of each call; kernels
    per call do not depend on the sizes (loop trip counts are the folds' and alphas').

    Parameters
    ----------
    n_voxels : dict
        Name -> voxels of the full-size fit (1024 per batch, RidgeCV's default).
    compile_fn : callable
        Compiles each program for the count (:func:`compile_on_cpu` or
        :func:`deviceless_tpu`'s); the programs run on the CPU.
    platform : str
        The platform whose ``solver_dtype="auto"`` the fit takes (float64 decompositions on
        CPUs and GPUs, float32 on TPUs).

    Returns
    -------
    dict
        Per name: ``kernels``, ``calls`` (per program) and ``kernels_per_call``.
    """
    import jax
    import numpy as np

    from jaxenc.models import ridge_solvers as solvers

    full_batch, batch, n_stories, rows = 1024, 4, 10, 40
    x = np.random.default_rng(0).standard_normal((n_stories * rows, 16)).astype(np.float32)
    story = np.repeat(np.arange(n_stories), rows)
    splits = [(np.flatnonzero(story % N_FOLDS != k), np.flatnonzero(story % N_FOLDS == k)) for k in range(N_FOLDS)]
    alphas = np.logspace(0, 4, N_ALPHAS)
    programs = {name: fn for name, fn in vars(solvers).items() if hasattr(fn, "lower") and hasattr(fn, "trace")}
    out = {}
    for label, v in n_voxels.items():
        batches = -(-v // full_batch)
        y = np.random.default_rng(1).standard_normal((len(x), batches * batch)).astype(np.float32)
        calls, per_call = collections.Counter(), {}

        def counted(name, fn, calls=calls, per_call=per_call):
            def call(*args, **kwargs):
                calls[name] += 1
                if name not in per_call:
                    per_call[name] = count_kernels(compile_fn(fn, *args, **kwargs).as_text())["kernels"]
                return fn(*args, **kwargs)
            return call

        solver_dtype = solvers.resolve_solver_dtype("auto", platform)
        kw = dict(fit_intercept=True, voxel_batch=batch, dtype=np.dtype(np.float32), solver_dtype=solver_dtype)
        try:
            for name, fn in programs.items():
                setattr(solvers, name, counted(name, fn))
            with solvers.solver_scope(solver_dtype):
                xc = jax.device_put(x - x.mean(axis=0))
                solvers.cv_scores(xc, y, splits, alphas, scoring="r2", split_batch=None, **kw)
                solvers.refit(xc, y, np.full(y.shape[1], alphas[0]), x_offset=np.zeros(x.shape[1]), **kw)
        finally:
            for name, fn in programs.items():
                setattr(solvers, name, fn)
        out[label] = {"n_voxels": v, "voxel_batches": batches, "calls": dict(calls), "kernels_per_call": per_call,
                      "kernels": sum(calls[k] * per_call[k] for k in calls)}
    return out


def kernel_counts(target: str = "cpu") -> dict:
    """Kernels per step of every workload (see :func:`count_kernels`) and the bytes AdamW's
    moments take (:func:`moment_bytes`), from the programs compiled by XLA:CPU (``"cpu"``) or
    by XLA:TPU for a TPU v5e chip (``"tpu"``, :func:`deviceless_tpu`)."""
    if target == "tpu":
        compile_fn, platform = deviceless_tpu(), "tpu"
        backend = f"tpu (XLA:TPU's optimized HLO for one chip of a {TPU_TOPOLOGY} slice, compiled without a TPU)"
    else:
        compile_fn, platform = compile_on_cpu, "cpu"
        backend = "cpu (XLA:CPU's optimized HLO; XLA:GPU fuses differently: an estimate for the GPUs)"
    return {"backend": backend, "extraction": encoder_kernels(compile_fn), "training": training_kernels(compile_fn),
            "ridge": ridge_kernels({"all_voxels_UTS03": RIDGE_VOXELS, "pca_512": PCA_COMPONENTS}, compile_fn, platform),
            "adam_moment_bytes": moment_bytes(compile_fn)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-xla", action="store_true",
                        help="skip everything compiled: XLA's FLOP cross-check, kernel counts and moment bytes")
    parser.add_argument("--tpu", action="store_true",
                        help="also count kernels in XLA:TPU's programs for a TPU v5e, compiled without one "
                             "(needs libtpu: see deviceless_tpu)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "roofline.json")
    args = parser.parse_args(argv)
    if args.tpu:
        cpu_only_with_libtpu()
    kernels = None
    if not args.no_xla:
        kernels = {"cpu": kernel_counts("cpu"), **({"tpu": kernel_counts("tpu")} if args.tpu else {})}
    respdict = stories()
    doc = {"benchmark": "roofline", "kind": "estimate (roofline: max of FLOPs / peak and bytes / bandwidth)",
           "chips": CHIPS, "assumptions": {"words_per_second": WORDS_PER_SECOND, "tokens_per_word": TOKENS_PER_WORD,
                                           "llama_context_words": LLAMA_CONTEXT, "whisper_stride_s": WHISPER_STRIDE_S,
                                           "whisper_frames": WHISPER_FRAMES, "batch_windows": BATCH_WINDOWS,
                                           "epochs": EPOCHS, "n_alphas": N_ALPHAS, "n_folds": N_FOLDS,
                                           "launch": LAUNCH_SOURCE},
           **estimates(respdict, kernels)}
    if not args.no_xla:
        doc["xla_cross_check"] = xla_counts()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=lambda x: dataclasses.asdict(x)) + "\n")
    for name, by_chip in doc["seconds"].items():
        print(name, {chip: {p: round(r["seconds"], 1) for p, r in v.items()} for chip, v in by_chip.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
