"""Forward throughput of jaxenc's Flax ports against the transformers PyTorch models, on CPU, fp32.

Races the Whisper encoder over a batch of 16 s windows (1600 mel frames) at whisper-tiny and
whisper-base shapes, and a small LLaMA over a batch of word contexts, each with the same random
weights (saved by transformers, loaded through jaxenc.ckpt) and the same inputs. Records items/s,
compile time, the max abs difference over every hidden state, and torch's thread count.

    python benchmarks/forward.py          # full sizes, a few minutes on 2 cores
    python benchmarks/forward.py --fast   # small sizes, a quick check
"""

from __future__ import annotations

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

WHISPER = {
    "tiny": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536),
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
}
LLAMA = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=8)


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (norm weights near 1), as real checkpoints have; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.02
            param.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return model.eval()


def cpu_timed(fn, cpu_seconds: list):
    """Wrap ``fn`` to append the process CPU seconds of each (completed) call to ``cpu_seconds``."""

    def wrapped():
        start = time.process_time()
        result = block(fn())
        cpu_seconds.append(time.process_time() - start)
        return result

    return wrapped


def race(name: str, torch_fn, jax_fn, n_items: int, repeats: int) -> dict:
    """Time both forwards in alternation, torch at its faster thread count; compare hidden states.

    The machine may be shared: torch's OpenMP threads can spin against other processes and run
    several times slower with two threads than with one, so torch is first timed with 1 thread
    and with all cores and the faster setting is its reference; the timed calls of the two
    frameworks then alternate in rounds of two calls, so that changing outside load falls on
    both alike. Process CPU seconds per call are recorded beside wall seconds: they measure the
    work done and are far less sensitive to other load.
    """
    compiled = time_call(jax_fn, repeats=1)
    default_threads = torch.get_num_threads()
    by_threads = {}
    with torch.inference_mode():
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            by_threads[threads] = time_call(torch_fn, repeats=1)["median_s"]
        best = min(by_threads, key=by_threads.get)
        torch.set_num_threads(best)
        fns = {"torch": torch_fn, "jax": jax_fn}
        wall, cpu, results = {f: [] for f in fns}, {f: [] for f in fns}, {}
        for _ in range(repeats):
            for framework, fn in fns.items():
                # Both calls of a round are warm: time_call's "first" is a steady-state sample here.
                run = time_call(cpu_timed(fn, cpu[framework]), repeats=1, warmup=0)
                wall[framework] += [run["first_s"], *run["times_s"]]
                results[framework] = run["result"]
    torch.set_num_threads(default_threads)
    diff = max(float(np.max(np.abs(np.asarray(j) - t.numpy()))) for j, t in zip(results["jax"], results["torch"]))
    med = {f: statistics.median(wall[f]) for f in fns}
    med_cpu = {f: statistics.median(cpu[f]) for f in fns}
    row = {
        "items": n_items,
        "torch_threads": best,
        "torch_warm_s_by_threads": by_threads,
        "torch_median_s": med["torch"], "torch_times_s": wall["torch"], "torch_cpu_s": med_cpu["torch"],
        "jax_median_s": med["jax"], "jax_times_s": wall["jax"], "jax_cpu_s": med_cpu["jax"],
        "jax_first_s": compiled["first_s"],
        "torch_items_per_s": n_items / med["torch"], "jax_items_per_s": n_items / med["jax"],
        "speedup": med["torch"] / med["jax"], "cpu_time_speedup": med_cpu["torch"] / med_cpu["jax"],
        "max_abs_diff": diff,
    }
    print(f"{name}: torch {row['torch_items_per_s']:.2f}/s ({best} threads), jax {row['jax_items_per_s']:.2f}/s, "
          f"x{row['speedup']:.2f} (CPU time x{row['cpu_time_speedup']:.2f}), max|diff| {diff:.2e}")
    return row


def bench_whisper(shape: str, batch: int, n_frames: int, repeats: int, tmp: Path) -> dict:
    config = transformers.WhisperConfig(
        num_mel_bins=80, max_source_positions=1500, vocab_size=64, decoder_layers=1, decoder_attention_heads=2,
        decoder_ffn_dim=64, max_target_positions=8, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2, **WHISPER[shape],
    )
    torch_model = randomize_(transformers.WhisperForConditionalGeneration(config), 0)
    torch_model.save_pretrained(tmp / f"whisper-{shape}")
    encoder = torch_model.model.encoder
    model, _ = load_whisper_encoder(tmp / f"whisper-{shape}")
    x = np.random.default_rng(0).standard_normal((batch, 80, n_frames)).astype(np.float32)
    xt, xj = torch.from_numpy(x), jnp.asarray(x)

    def torch_fn():
        # The transformers forward insists on 3000 frames: run its submodules, as the tests do.
        h = torch.nn.functional.gelu(encoder.conv1(xt))
        h = torch.nn.functional.gelu(encoder.conv2(h)).permute(0, 2, 1)
        h = h + encoder.embed_positions.weight[: h.shape[1]]
        states = [h]
        for layer in encoder.layers:
            h = layer(h, None)
            states.append(h)
        states[-1] = encoder.layer_norm(h)
        return states

    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    row = race(f"whisper-{shape}", torch_fn, lambda: fwd(state, xj), batch, repeats)
    return {"shape": shape, "batch": batch, "n_frames": n_frames, **WHISPER[shape], **row}


def bench_llama(layers: int, batch: int, seq: int, repeats: int, tmp: Path) -> dict:
    config = transformers.LlamaConfig(num_hidden_layers=layers, **LLAMA)
    torch_model = randomize_(transformers.LlamaForCausalLM(config), 1)
    torch_model.save_pretrained(tmp / "llama")
    model, _ = load_llama(tmp / "llama")
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (batch, seq))
    mask = np.ones((batch, seq), np.int64)
    idt, maskt = torch.from_numpy(ids), torch.from_numpy(mask)
    idj, maskj = jnp.asarray(ids), jnp.asarray(mask)

    def torch_fn():
        return torch_model.model(input_ids=idt, attention_mask=maskt, output_hidden_states=True).hidden_states

    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))
    row = race("llama", torch_fn, lambda: fwd(state, idj, maskj), batch, repeats)
    return {"num_hidden_layers": layers, "batch": batch, "seq": seq, **LLAMA, **row}


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    if args.fast:
        whisper_runs, llama_run = [("tiny", 2, 1600)], (2, 4, 128)
    else:
        whisper_runs, llama_run = [("tiny", 4, 1600), ("base", 4, 1600)], (6, 8, 256)
    with tempfile.TemporaryDirectory() as tmp:
        whisper = [bench_whisper(*run, args.repeats, Path(tmp)) for run in whisper_runs]
        llama = bench_llama(*llama_run, args.repeats, Path(tmp))
    ratios = {
        "whisper_encoder_vs_torch": float(np.exp(np.mean([np.log(w["speedup"]) for w in whisper]))),
        "llama_vs_torch": llama["speedup"],
    }
    payload = {
        "fast": args.fast, "dtype": "float32", "torch_version": torch.__version__,
        "torch_default_num_threads": torch.get_num_threads(), "transformers_version": transformers.__version__,
        "whisper_encoder": whisper, "llama": llama, "peak_rss_mb": peak_rss_mb(),
        "notes": "Ratios are wall-time medians (torch at its faster thread count); whisper_encoder_vs_torch "
                 "is the geometric mean over the Whisper shapes. cpu_time_speedup compares process CPU "
                 "seconds, robust to other load on a shared machine.",
    }
    write_results("forward", payload, ratios=ratios, out=args.out)


if __name__ == "__main__":
    main()
