"""Feature extraction throughput: jaxenc's windowed LLaMA pass and Whisper encoder against
transformers (PyTorch), with each forward's achieved FLOP/s against this machine's matmul peak.

    python benchmarks/extract.py          # full sizes, about 10 minutes on 2 shared cores
    python benchmarks/extract.py --fast   # small sizes, a quick check

LLaMA (words/s). A LLaMA-architecture model (hidden 512, feed-forward 1376, 4 layers, 8 heads;
random weights of the embedded default writer, whose word-level tokenizer gives one token per
word) reads a story of 4096 words drawn from 2000 pseudo-words under the paper's (256, 512)
scheme. jaxenc: ``llama_word_features``, one causal pass per window of words. Reference: the
reference code's method in transformers, one forward of ``LlamaModel`` (no language-model
head, which the reference also ran) per word over that word's own context; too slow to run
for every word, it runs on a sample of words spread evenly over the story, whose mean time per
word (their contexts hold 257 to 513 words, as the story's do) extrapolates to the story. The
sampled words' hidden states are compared with jaxenc's.

Forwards (items/s and FLOP/s). One compiled forward of each model against transformers on the
same inputs, timed in alternation: LLaMA on the story's batch of windows (right-padded and
masked as jaxenc pads them), Whisper base (d_model 512, 6 layers) on 16.1 s windows of a
waveform padded to 30 s (the reference pipeline's input, 3000 mel frames): transformers'
encoder, then the last layer's state at each window's last frame, against what
``whisper_features`` runs (``WhisperEncoder.frames_at``: the same, with the last layer computed
for that frame's query only), outputs compared. FLOPs are counted from the shapes each
framework executes: every matmul (projections, feed-forward, convolutions as matmuls) and
attention's two products over the padded length, 2 FLOPs per multiply-add; LLaMA's count over
real tokens only (causal half of the attention) is recorded beside it. The float32 matmul peak
is the better of a jitted XLA and a numpy 2048 x 2048 matmul, timed in the same rounds as the
two forwards.

The machine may be shared: torch's threads can spin against other processes, so torch is
timed with 1 thread and with all cores and the faster is its reference; the calls of a race
alternate, so changing outside load falls on all alike; process CPU seconds are recorded beside
wall seconds, and the load average in the JSON. Shares of the peak are given per wall second
and per CPU second of this process (the forward's FLOPs per CPU second against the matmul's),
the second robust to other processes' load.

GPU: ``pip install -e ".[cuda]"`` plus a CUDA build of torch; both frameworks then run on the
GPU (torch moved to ``cuda``), and the peak is XLA's float32 matmul on the device (which may
use TF32 on Ampere and later: record ``jax_default_matmul_precision``). Not measured here: no
GPU was available.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from common import block, parse_args, peak_rss_mb, time_call, write_results
from flax import nnx

from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.features import context_starts, defaults, llama_word_features, window_log_mel, window_times
from jaxenc.features.audio import story_log_mel
from jaxenc.features.semantic import _batches, _Windows, word_tokens

LLAMA = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=8, max_position_embeddings=2048)
WHISPER = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048)
CONTEXT = (256, 512)
TORCH_DEVICE = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
TORCH_THREADS = torch.get_num_threads()


def cpu_timed(fn, cpu_seconds: list):
    """Wrap ``fn`` to append the process CPU seconds of each (completed) call to ``cpu_seconds``."""

    def wrapped():
        start = time.process_time()
        result = block(fn())
        cpu_seconds.append(time.process_time() - start)
        return result

    return wrapped


def matmul_contestants(n: int = 2048) -> dict:
    """The float32 peak's contestants, timed in every race's rounds: an XLA (jitted) and a numpy
    n x n matmul, each returning 2 n^3 FLOPs' worth of work."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    return {"xla_matmul": lambda: dot(aj, bj), "numpy_matmul": lambda: a @ b}


MATMUL_N = 2048


def best_torch_threads(torch_fn) -> dict:
    """Time ``torch_fn`` warm at 1 thread and at torch's default; keep the faster setting."""
    by_threads = {}
    for threads in sorted({1, TORCH_THREADS}):
        torch.set_num_threads(threads)
        by_threads[threads] = time_call(torch_fn, repeats=1)["median_s"]
    best = min(by_threads, key=by_threads.get)
    torch.set_num_threads(best)
    return {"torch_threads": best, "torch_warm_s_by_threads": by_threads}


def race(name: str, torch_fn, jax_fn, n_items: int, repeats: int, flops: dict) -> dict:
    """Time both forwards and the matmul peak's contestants in alternation (rounds of one call
    each, so changing outside load falls on all alike), torch at its faster thread count.

    ``flops``: the FLOPs each framework's forward executes, ``{"jax": .., "torch": ..}``.
    Returns times, items/s, FLOP/s and the share of the peak per wall second and per CPU second
    of this process (FLOPs per CPU second against the best matmul's FLOPs per CPU second).
    """
    compiled = time_call(jax_fn, repeats=1)
    with torch.inference_mode():
        threads = best_torch_threads(torch_fn)
        fns = {"torch": torch_fn, "jax": jax_fn, **matmul_contestants(MATMUL_N)}
        for fn in fns.values():
            block(fn())
        wall, cpu, results = {f: [] for f in fns}, {f: [] for f in fns}, {}
        for _ in range(repeats):
            for framework, fn in fns.items():
                run = time_call(cpu_timed(fn, cpu[framework]), repeats=1, warmup=0)
                wall[framework] += [run["first_s"], *run["times_s"]]
                results[framework] = run["result"]
    med = {f: statistics.median(wall[f]) for f in fns}
    med_cpu = {f: statistics.median(cpu[f]) for f in fns}
    matmul = 2 * MATMUL_N**3
    peak = {f"{f}_flops_per_s": matmul / med[f] for f in ("xla_matmul", "numpy_matmul")}
    peak.update({f"{f}_flops_per_cpu_s": matmul / med_cpu[f] for f in ("xla_matmul", "numpy_matmul")})
    peak_wall = max(peak["xla_matmul_flops_per_s"], peak["numpy_matmul_flops_per_s"])
    peak_cpu = max(peak["xla_matmul_flops_per_cpu_s"], peak["numpy_matmul_flops_per_cpu_s"])
    row = {
        "items": n_items, **threads, "jax_flops_per_forward": flops["jax"], "torch_flops_per_forward": flops["torch"],
        "torch_median_s": med["torch"], "torch_times_s": wall["torch"], "torch_cpu_s": med_cpu["torch"],
        "jax_median_s": med["jax"], "jax_times_s": wall["jax"], "jax_cpu_s": med_cpu["jax"],
        "jax_first_s": compiled["first_s"],
        "torch_items_per_s": n_items / med["torch"], "jax_items_per_s": n_items / med["jax"],
        "speedup": med["torch"] / med["jax"], "cpu_time_speedup": med_cpu["torch"] / med_cpu["jax"],
        "matmul_peak": {"n": MATMUL_N, **peak, "peak_flops_per_s": peak_wall, "peak_flops_per_cpu_s": peak_cpu},
        "jax_flops_per_s": flops["jax"] / med["jax"], "torch_flops_per_s": flops["torch"] / med["torch"],
        "jax_share_of_peak": flops["jax"] / med["jax"] / peak_wall,
        "torch_share_of_peak": flops["torch"] / med["torch"] / peak_wall,
        "jax_share_of_peak_cpu_time": flops["jax"] / med_cpu["jax"] / peak_cpu,
        "torch_share_of_peak_cpu_time": flops["torch"] / med_cpu["torch"] / peak_cpu,
    }
    print(f"{name}: torch {row['torch_items_per_s']:.2f}/s, jax {row['jax_items_per_s']:.2f}/s, "
          f"x{row['speedup']:.2f} (CPU time x{row['cpu_time_speedup']:.2f}); jax {row['jax_flops_per_s'] / 1e9:.1f} "
          f"GFLOP/s of a {peak_wall / 1e9:.1f} GFLOP/s matmul peak ({100 * row['jax_share_of_peak']:.0f}%; "
          f"{100 * row['jax_share_of_peak_cpu_time']:.0f}% per CPU second)")
    return row, results


def llama_flops(rows: int, seq: int, lengths=None) -> float:
    """FLOPs of one forward of the LLaMA above: ``rows`` x ``seq`` tokens, or, with ``lengths``
    (real tokens per row), only real tokens and the causal half of attention."""
    m, f, h = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["num_attention_heads"]
    d, kv, n_layers = m // h, LLAMA["num_key_value_heads"], LLAMA["num_hidden_layers"]
    per_token = 2 * (m * h * d + 2 * m * kv * d + h * d * m + 3 * m * f)
    if lengths is None:
        tokens, pairs = rows * seq, rows * seq * seq
    else:
        lengths = np.asarray(lengths, np.float64)
        tokens, pairs = lengths.sum(), (lengths * (lengths + 1) / 2).sum()
    return n_layers * (tokens * per_token + 2 * 2 * h * d * pairs)


def whisper_flops(rows: int, n_frames: int, *, one_query_on_top: bool, n_mels: int = 80) -> float:
    """FLOPs of one Whisper encoder forward over ``rows`` inputs of ``n_frames`` mel frames;
    ``one_query_on_top``: the last layer for one query (jaxenc's ``frames_at``)."""
    m, f, n_layers = WHISPER["d_model"], WHISPER["encoder_ffn_dim"], WHISPER["encoder_layers"]
    t = n_frames // 2
    convs = 2 * n_frames * 3 * n_mels * m + 2 * t * 3 * m * m
    layer = 2 * t * (4 * m * m + 2 * m * f) + 2 * 2 * t * t * m
    top = 2 * t * 2 * m * m + 2 * (2 * m * m + 2 * m * f) + 2 * 2 * t * m if one_query_on_top else layer
    return rows * (convs + (n_layers - 1) * layer + top)


def story(n_words: int, n_vocabulary: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Pseudo-words w0..w{n-1} and a story drawn from them with Zipf-like frequencies."""
    vocabulary = [f"w{i}" for i in range(n_vocabulary)]
    p = 1.0 / np.arange(1, n_vocabulary + 1)
    rng = np.random.default_rng(seed)
    return vocabulary, [vocabulary[i] for i in rng.choice(n_vocabulary, n_words, p=p / p.sum())]


def bench_llama(n_words: int, n_sampled: int, repeats: int, tmp: Path) -> dict:
    vocabulary, words = story(n_words, 2000)
    directory = defaults.write_default_llama(tmp / "llama", vocabulary, **LLAMA)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    layer = LLAMA["num_hidden_layers"]
    module, _ = load_llama(directory)
    reference = transformers.LlamaModel.from_pretrained(directory, dtype=torch.float32).eval().to(TORCH_DEVICE)

    # jaxenc end to end: tokenisation, windows, forwards, gathering, host copies.
    extract = time_call(lambda: llama_word_features(module, tokenizer, words, layers=(layer,), context_words=CONTEXT),
                        repeats=repeats)
    features = extract["result"][layer]

    # The reference: one forward per word over its own context string, on a sample of words.
    starts = context_starts(n_words, CONTEXT)
    sampled = np.unique(np.linspace(0, n_words - 1, n_sampled).round().astype(int))

    def torch_word(i):
        ids = tokenizer(" ".join(words[starts[i] : i + 1]), return_tensors="pt")["input_ids"].to(TORCH_DEVICE)
        return reference(ids, output_hidden_states=True).hidden_states[layer][0, -1].cpu().numpy()

    with torch.inference_mode():
        threads = best_torch_threads(lambda: torch_word(int(sampled[len(sampled) // 2])))
        cpu_start, t0 = time.process_time(), time.perf_counter()
        expected = np.stack([torch_word(int(i)) for i in sampled])
        torch_s, torch_cpu_s = time.perf_counter() - t0, time.process_time() - cpu_start
    diff = float(np.max(np.abs(features[sampled] - expected)))
    scale = float(np.max(np.abs(expected)))
    assert diff <= 1e-4 * max(1.0, scale), f"jaxenc differs from transformers by {diff} (scale {scale})"
    torch_per_word = torch_s / len(sampled)
    jax_per_word = extract["median_s"] / n_words
    context_tokens = np.array([len(tokenizer(" ".join(words[starts[i] : i + 1]))["input_ids"]) for i in sampled])

    # One compiled forward on the story's batch of windows, raced against transformers.
    tokens = word_tokens(tokenizer, words)
    windows = _Windows.of(tokens, starts)
    (ids, rows, seq, _), *rest = list(_batches(windows, 16, 64, 1))
    assert not rest, "the story's windows should form one batch"
    input_ids = np.zeros((rows, seq), np.int64)
    mask = np.zeros((rows, seq), np.int64)
    lengths = []
    for r, w in enumerate(ids):
        span = tokens.span(int(windows.start[w]), int(windows.last[w]))
        input_ids[r, : len(span)], mask[r, : len(span)] = span, 1
        lengths.append(len(span))
    mask[len(ids):, 0] = 1
    graphdef, state = nnx.split(module)
    forward = jax.jit(lambda state, i, m: nnx.merge(graphdef, state)(i, m)[layer])
    ij, mj = jnp.asarray(input_ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    it, mt = torch.from_numpy(input_ids).to(TORCH_DEVICE), torch.from_numpy(mask).to(TORCH_DEVICE)
    flops = dict.fromkeys(("jax", "torch"), llama_flops(rows, seq))
    row, results = race("llama forward", lambda: reference(it, mt, output_hidden_states=True).hidden_states[layer],
                        lambda: forward(state, ij, mj), len(ids), repeats, flops)
    real = mask.astype(bool)
    forward_diff = float(np.max(np.abs(np.asarray(results["jax"])[real] - results["torch"].cpu().numpy()[real])))
    print(f"llama words: torch {1 / torch_per_word:.2f} words/s, jax {1 / jax_per_word:.1f} words/s, "
          f"x{torch_per_word / jax_per_word:.0f}; max|diff| {diff:.2e}")
    return {
        "model": LLAMA, "n_words": n_words, "context_words": CONTEXT, "layer": layer,
        "tokens_per_word": 1.0, "n_windows": len(windows.start),
        "jax_first_s": extract["first_s"], "jax_times_s": extract["times_s"], "jax_median_s": extract["median_s"],
        "jax_words_per_s": 1 / jax_per_word,
        "torch_sampled_words": sampled.tolist(), "torch_sampled_context_tokens": context_tokens.tolist(),
        "torch_sampled_s": torch_s, "torch_sampled_cpu_s": torch_cpu_s, **threads,
        "torch_words_per_s_extrapolated": 1 / torch_per_word,
        "speedup": torch_per_word / jax_per_word,
        "max_abs_diff_sampled_words": diff, "max_abs_hidden": scale,
        "forward": {"rows": rows, "seq": seq, "real_tokens": lengths,
                    "useful_flops": llama_flops(rows, seq, lengths), **row, "max_abs_diff": forward_diff},
    }


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (norm weights near 1), as real checkpoints have; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.02
            param.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return model.eval()


def bench_whisper(batch: int, repeats: int, tmp: Path) -> dict:
    config = transformers.WhisperConfig(
        num_mel_bins=80, max_source_positions=1500, vocab_size=64, decoder_layers=1, decoder_attention_heads=2,
        decoder_ffn_dim=64, max_target_positions=8, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2, **WHISPER,
    )
    torch_model = randomize_(transformers.WhisperModel(config), 0)
    torch_model.save_pretrained(tmp / "whisper")
    encoder = torch_model.encoder.to(TORCH_DEVICE)
    module, _ = load_whisper_encoder(tmp / "whisper")
    frontend = transformers.WhisperFeatureExtractor(feature_size=80)

    # Full 16.1 s windows of a speech-like waveform, each padded to 30 s as the reference does.
    sr = 16000
    t = np.arange(20 * sr) / sr
    wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2.3 * t))
            + 0.02 * np.random.default_rng(0).standard_normal(t.shape)).astype(np.float32)
    starts, ends = window_times(len(wave), sr)
    full = np.arange(len(ends))[-batch:]
    assert np.all(ends[full] - starts[full] == round(16.1 * sr))
    mel = window_log_mel(wave, story_log_mel(wave, frontend), starts[full], ends[full], 3000, frontend)
    frames = jnp.asarray(((ends[full] - starts[full]) // 160 + 1) // 2)
    xj, xt = jnp.asarray(mel), torch.from_numpy(mel).to(TORCH_DEVICE)

    # What whisper_features runs: the last layer's state at each window's last frame.
    graphdef, state = nnx.split(module)
    top = (WHISPER["encoder_layers"],)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state).frames_at(x, frames, top)[0])
    rows_t = torch.arange(batch, device=TORCH_DEVICE)
    frames_t = torch.from_numpy(np.array(frames)).to(TORCH_DEVICE)
    flops = {"jax": whisper_flops(batch, 3000, one_query_on_top=True),
             "torch": whisper_flops(batch, 3000, one_query_on_top=False)}
    row, results = race("whisper encoder", lambda: encoder(xt).last_hidden_state[rows_t, frames_t],
                        lambda: forward(state, xj), batch, repeats, flops)
    diff = float(np.max(np.abs(np.asarray(results["jax"]) - results["torch"].cpu().numpy())))
    assert diff < 1e-3, f"jaxenc's encoder differs from transformers by {diff}"
    return {"model": WHISPER, "input_frames": 3000, "window_s": 16.1, **row, "max_abs_diff": diff}


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n_words, n_sampled, batch = (1024, 8, 2) if args.fast else (4096, 48, 4)
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        llama = bench_llama(n_words, n_sampled, args.repeats, Path(tmp))
        whisper = bench_whisper(batch, args.repeats, Path(tmp))
    ratios = {
        "llama_windowed_words_per_s_vs_torch_per_word": llama["speedup"],
        "llama_forward_vs_torch": llama["forward"]["speedup"],
        "whisper_encoder_windows_per_s_vs_torch": whisper["speedup"],
        "llama_forward_share_of_matmul_peak": llama["forward"]["jax_share_of_peak"],
        "whisper_forward_share_of_matmul_peak": whisper["jax_share_of_peak"],
        "llama_forward_share_of_matmul_peak_cpu_time": llama["forward"]["jax_share_of_peak_cpu_time"],
        "whisper_forward_share_of_matmul_peak_cpu_time": whisper["jax_share_of_peak_cpu_time"],
    }
    goals = {
        "llama_words_per_s_at_least_50x": llama["speedup"] >= 50,
        "whisper_windows_per_s_at_least_1.5x": whisper["speedup"] >= 1.5,
        "llama_forward_at_least_half_of_peak": llama["forward"]["jax_share_of_peak"] >= 0.5,
        "whisper_forward_at_least_half_of_peak": whisper["jax_share_of_peak"] >= 0.5,
    }
    payload = {
        "fast": args.fast, "dtype": "float32", "torch_device": TORCH_DEVICE, "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
        "goals_met": goals, "llama": llama, "whisper": whisper, "peak_rss_mb": peak_rss_mb(),
        "notes": "llama speedup: jaxenc's windowed pass over the whole story (median of warm runs) against "
                 "transformers' per-word forwards timed on a sample of words spread over the story and "
                 "extrapolated per word. Forward rows: one compiled forward each, FLOPs over the padded "
                 "shapes; the LLaMA count over real tokens is under forward.useful_flops.",
    }
    write_results("extract", payload, ratios=ratios, out=args.out)


if __name__ == "__main__":
    main()
