"""Roofline estimates of the paper's three heavy computations on one H100, one H200 and one TPU v5e.

    python benchmarks/roofline.py          # writes benchmarks/results/roofline.json (~1 min on CPU)
    python benchmarks/roofline.py --no-xla # the analytic counts only (seconds)

Estimates, not measurements: each workload's time on a chip is at least its FLOPs at the chip's
peak for the precision it runs at and at least its bytes at the chip's memory bandwidth; the
estimate is the larger of the two (the roofline), so real runs are slower (kernels below peak,
launch gaps, host work). Replace them with benchmarks/device_check.py's measurements.

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
import dataclasses
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESPDICT = Path("/work/shared/ds003020/respdict.json")
TEST_STORY = "wheretheressmoke"

# Peak rates (TFLOP/s, dense) and memory bandwidth (TB/s) assumed per chip, with their sources.
# "float32": float32 products at full precision (H100/H200: the FP32 units, not tensor cores;
# TPU v5e: float32 emulated in 6 bf16 passes, XLA's HIGHEST); "tf32": NVIDIA's TF32 tensor
# cores (TPU: 3 bf16 passes, XLA's HIGH); "float64": None where the chip has none.
CHIPS = {
    "H100 SXM": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9, "tb_per_s": 3.35,
                 "memory_gb": 80,
                 "source": "NVIDIA H100 Tensor Core GPU datasheet (SXM5; dense, without sparsity)"},
    "H200 SXM": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9, "tb_per_s": 4.8,
                 "memory_gb": 141,
                 "source": "NVIDIA H200 Tensor Core GPU datasheet (SXM; same compute as H100 SXM, HBM3e)"},
    "TPU v5e": {"bfloat16": 197.0, "tf32": 197.0 / 3, "float32": 197.0 / 6, "float64": None, "tb_per_s": 0.819,
                "memory_gb": 16,
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
BATCH_WINDOWS = 16  # windows per forward, over which the weights are read once


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
    depth = 12
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
    audio, semantic = 4 * 1280, 4 * 4096
    fits = {f"{name}/{features}": width
            for features, width in (("audio", audio), ("semantic", semantic), ("audio+semantic", audio + semantic))
            for name in ("MLLinear", "MLP")}
    fits["DIMLP/audio+semantic"] = (audio, semantic)
    n_models = 3 * N_FOLDS
    per_epoch = {k: mlp_epoch(w, n_train, n_val) for k, w in fits.items()}
    flop = n_models * sum(v["flop"] for v in per_epoch.values())
    nbytes = n_models * sum(v["bytes"] for v in per_epoch.values())
    return {"training_rows": rows, "models_per_fit": n_models, "fits": list(fits), "epochs": EPOCHS,
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
    p = 4 * (4096 + 1280)
    return {"all_voxels_UTS03": ridge_fit(rows, p, 95_556), "pca_512": ridge_fit(rows, p, PCA_COMPONENTS)}


def seconds_on(chip: dict, flop: float, nbytes: float, precision: str, decomposition_flop: float = 0.0) -> dict:
    """The roofline time of a workload on a chip: the larger of compute and memory time."""
    compute = (flop - decomposition_flop) / (chip[precision] * 1e12)
    if decomposition_flop:
        rate = chip["float64"] or chip["float32"]
        compute += decomposition_flop / (rate * 1e12)
    memory = nbytes / (chip["tb_per_s"] * 1e12)
    return {"seconds": max(compute, memory), "compute_s": compute, "memory_s": memory,
            "bound": "compute" if compute >= memory else "memory", "precision": precision}


def estimates(respdict: dict) -> dict:
    """Every workload's FLOPs, bytes and roofline seconds on every chip of :data:`CHIPS`."""
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
    out = {}
    for name, (w, precisions) in work.items():
        out[name] = {chip: {prec: seconds_on(spec, w["flop"], w["bytes"], prec, w.get("decomposition_flop", 0.0))
                            for prec in precisions} for chip, spec in CHIPS.items()}
    return {"workloads": {"extraction": ext, "training": train, "ridge": rdg}, "seconds": out}


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-xla", action="store_true", help="skip XLA's cost analysis cross-check")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "roofline.json")
    args = parser.parse_args(argv)
    respdict = stories()
    doc = {"benchmark": "roofline", "kind": "estimate (roofline: max of FLOPs / peak and bytes / bandwidth)",
           "chips": CHIPS, "assumptions": {"words_per_second": WORDS_PER_SECOND, "tokens_per_word": TOKENS_PER_WORD,
                                           "llama_context_words": LLAMA_CONTEXT, "whisper_stride_s": WHISPER_STRIDE_S,
                                           "whisper_frames": WHISPER_FRAMES, "batch_windows": BATCH_WINDOWS,
                                           "epochs": EPOCHS, "n_alphas": N_ALPHAS, "n_folds": N_FOLDS},
           **estimates(respdict)}
    if not args.no_xla:
        doc["xla_cross_check"] = xla_counts()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=lambda x: dataclasses.asdict(x)) + "\n")
    for name, by_chip in doc["seconds"].items():
        print(name, {chip: {p: round(r["seconds"], 1) for p, r in v.items()} for chip, v in by_chip.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
