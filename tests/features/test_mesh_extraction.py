"""Extraction on 8 host devices: windows split along a mesh axis, parameters replicated or
FSDP-sharded, equal to the single-device features.

Each check runs in a child process that sees 8 CPU devices (tests/_sharded.py). The models
are the embedded default writers' (no torch needed), at widths whose kernels have at least
65,536 entries, so FSDP really splits them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests._sharded import run_sharded
from tests._tolerance import rounding_bound

# Sharded and single-device extraction run the same float32 forward, in other summation orders
# (FSDP splits the contractions across devices): within rounding_bound of two computations of
# every reduction on the path, for these 2-layer models of 128 (LLaMA) and 64 (Whisper) wide,
# 512 and 1024 feed-forward, about 1e-5 of the features' scale. A window placed on the wrong
# device's rows moves the features by their own size.
LLAMA_PATH = [128] * 10 + [512, 32, 48, 48]
WHISPER_PATH = [240, 192] + [128, 64, 64, 64, 16, 31, 31, 64, 128, 64, 1024]


def tolerance(features, lengths, depth) -> dict:
    """assert_allclose's tolerances for features of a layer ``depth`` deep."""
    return dict(rtol=0, atol=rounding_bound(lengths * max(depth, 1) * 2, scale=float(np.abs(features).max())))


def check_llama_on_a_mesh():
    import jax
    from jax.sharding import PartitionSpec as P
    from transformers import AutoTokenizer

    from jaxenc.ckpt import load_llama
    from jaxenc.distributed import make_mesh
    from jaxenc.features import defaults, llama_word_features

    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(60)]
    words = list(rng.choice(vocabulary, 200))
    directory = defaults.write_default_llama(
        Path(tempfile.mkdtemp()) / "llama", vocabulary, hidden_size=128, intermediate_size=512,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    kwargs = dict(layers=(0, 1, 2), context_words=(16, 32), batch_size=16, pad_multiple=16)
    one, _ = load_llama(directory)
    expected = llama_word_features(one, tokenizer, words, **kwargs)
    mesh = make_mesh(("data",))  # Explicit axes, as jax.make_mesh gives: converted inside
    for fsdp, spec in ((False, P()), (True, P(None, "data"))):
        model, _ = load_llama(directory, mesh=mesh, fsdp=fsdp)
        kernel = model.layers[0].mlp.up_proj.kernel[...]
        assert kernel.sharding.spec == spec and len(kernel.devices()) == 8, kernel.sharding
        got = llama_word_features(model, tokenizer, words, mesh=mesh, **kwargs)
        for layer in kwargs["layers"]:
            np.testing.assert_allclose(got[layer], expected[layer], **tolerance(expected[layer], LLAMA_PATH, layer))
    # A model loaded on one device is placed on the mesh by the extractor itself.
    got = llama_word_features(one, tokenizer, words, mesh=mesh, **kwargs)
    assert len(one.embed_tokens.embedding[...].devices()) == jax.device_count()
    np.testing.assert_allclose(got[2], expected[2], **tolerance(expected[2], LLAMA_PATH, 2))


def check_whisper_on_a_mesh():
    from jaxenc.ckpt import load_whisper_encoder
    from jaxenc.distributed import make_mesh
    from jaxenc.features import LogMelFrontend, defaults, whisper_features

    directory = defaults.write_default_whisper(
        Path(tempfile.mkdtemp()) / "whisper", d_model=64, encoder_layers=1, encoder_attention_heads=4,
        encoder_ffn_dim=1024, max_source_positions=64)
    frontend = LogMelFrontend.from_pretrained(directory)
    wave = np.random.default_rng(1).standard_normal(3 * 16000).astype(np.float32) * 0.1
    kwargs = dict(layers=(0, 1), context_s=0.5, chunk_s=0.1, stride_s=0.1, input_s=0.62, batch_size=4)
    one, _ = load_whisper_encoder(directory)
    times, expected = whisper_features(one, frontend, wave, 16000, **kwargs)
    mesh = make_mesh(("data",))
    model, _ = load_whisper_encoder(directory, mesh=mesh, fsdp=True)
    assert "data" in model.layers[0].fc1.kernel[...].sharding.spec
    got_times, got = whisper_features(model, frontend, wave, 16000, mesh=mesh, **kwargs)
    np.testing.assert_array_equal(got_times, times)
    for layer in kwargs["layers"]:
        np.testing.assert_allclose(got[layer], expected[layer], **tolerance(expected[layer], WHISPER_PATH, layer + 1))


def check_extraction_on_a_mesh():
    check_llama_on_a_mesh()
    check_whisper_on_a_mesh()


@pytest.mark.slow
def test_features_on_eight_devices_equal_one_device():
    """Both extractors in one child process (one interpreter start-up)."""
    run_sharded(__file__, "check_extraction_on_a_mesh")
