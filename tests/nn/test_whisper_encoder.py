"""WhisperEncoder against the transformers PyTorch encoder (fp32, eval mode).

Each hidden state is compared within ``whisper_state_atols`` (tests/_tolerance.py): float32
rounding of every reduction on the path to it (the two convolutions over 80 or 128 mel bins,
2 or 3 layers of 64 or 48 wide), in both implementations, scaled by the state's largest value:
about 1e-5 of it. The bugs guarded against (a weight in the wrong place or transposed, the
wrong positions, the tanh GELU for the exact one, a norm's eps off by 10x) move the states by
1e-3 of their scale or more.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxenc.ckpt import load_whisper_encoder
from jaxenc.errors import ConfigError
from jaxenc.nn import WhisperEncoderConfig
from tests._tolerance import whisper_state_atols

# One compilation per model shape and input length, shared by the tests (eager dispatch is slower).
# The bf16 test runs on one shape only, to save a compilation.
forward = nnx.jit(lambda model, x: model(x))


def to_numpy(hidden_states) -> list[np.ndarray]:
    return [np.asarray(h, dtype=np.float32) for h in hidden_states]


def torch_encoder_states(encoder, features: torch.Tensor) -> list[np.ndarray]:
    """Hidden states of a transformers WhisperEncoder at any frame count, from its submodules.

    transformers' forward refuses inputs shorter than 30 s; these are the same operations in the
    same order (convolutions, GELU, the first positions, the layers, the final norm on the last).
    """
    with torch.inference_mode():
        x = torch.nn.functional.gelu(encoder.conv1(features))
        x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.embed_positions.weight[: x.shape[1]]
        states = [x]
        for layer in encoder.layers:
            x = layer(x, None)
            states.append(x)
        states[-1] = encoder.layer_norm(x)
    return to_numpy(states)


def features(config, n_frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, config.num_mel_bins, n_frames)).astype(np.float32)


def test_full_length_matches_transformers(whisper_checkpoint):
    torch_model, path = whisper_checkpoint
    model, config = load_whisper_encoder(path)
    x = features(config, 2 * config.max_source_positions)
    with torch.inference_mode():
        expected = to_numpy(torch_model.model.encoder(torch.from_numpy(x), output_hidden_states=True).hidden_states)
    got = to_numpy(forward(model, jnp.asarray(x)))
    assert len(got) == len(expected) == config.encoder_layers + 1
    atols = whisper_state_atols(config, config.max_source_positions, expected)
    for g, e, atol in zip(got, expected, atols, strict=True):
        assert g.shape == (2, config.max_source_positions, config.d_model)
        np.testing.assert_allclose(g, e, rtol=0, atol=atol)


@pytest.mark.parametrize("n_frames", [2, 20])
def test_short_window_matches_torch_submodules(whisper_checkpoint, n_frames):
    torch_model, path = whisper_checkpoint
    model, config = load_whisper_encoder(path)
    x = features(config, n_frames, seed=n_frames)
    got = to_numpy(forward(model, jnp.asarray(x)))
    expected = torch_encoder_states(torch_model.model.encoder, torch.from_numpy(x))
    assert [g.shape for g in got] == [(2, n_frames // 2, config.d_model)] * (config.encoder_layers + 1)
    for g, e, atol in zip(got, expected, whisper_state_atols(config, n_frames // 2, expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=atol)


def test_submodule_reference_equals_full_forward(whisper_checkpoint):
    # Guards the short-window reference itself: at full length it must equal the real forward.
    torch_model, _ = whisper_checkpoint
    encoder = torch_model.model.encoder
    x = torch.from_numpy(features(encoder.config, 2 * encoder.config.max_source_positions, seed=3))
    with torch.inference_mode():
        full = to_numpy(encoder(x, output_hidden_states=True).hidden_states)
    for a, b in zip(torch_encoder_states(encoder, x), full, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("whisper_checkpoint", ["mel80-depth2"], indirect=True)
def test_bfloat16_compute_close_to_float32(whisper_checkpoint):
    _, path = whisper_checkpoint
    model32, config = load_whisper_encoder(path)
    model16, _ = load_whisper_encoder(path, dtype=jnp.bfloat16)
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    x = jnp.asarray(features(config, 20))
    for a, b in zip(forward(model32, x), forward(model16, x), strict=True):
        assert b.dtype == jnp.bfloat16
        # bf16 keeps 8 bits of mantissa; a few layers of rounding stay within a few percent.
        np.testing.assert_allclose(np.asarray(b, np.float32), a, rtol=0, atol=0.05 * float(jnp.abs(a).max()))


def test_config_from_hf_copies_fields(whisper_checkpoint):
    torch_model, _ = whisper_checkpoint
    config = WhisperEncoderConfig.from_hf(torch_model.config)
    for field in dataclasses.fields(config):
        assert getattr(config, field.name) == getattr(torch_model.config, field.name)


def test_bad_inputs_raise(whisper_checkpoint):
    _, path = whisper_checkpoint
    model, config = load_whisper_encoder(path)
    with pytest.raises(ConfigError, match="mel bins"):
        model(jnp.zeros((1, config.num_mel_bins + 1, 8)))
    with pytest.raises(ConfigError, match="frames"):
        model(jnp.zeros((1, config.num_mel_bins, 2 * config.max_source_positions + 2)))
    with pytest.raises(ConfigError, match="activation_function"):
        WhisperEncoderConfig(activation_function="relu")


def test_frames_at_equals_the_full_forward_at_those_frames(whisper_checkpoint):
    """The reference is the transformers encoder's hidden states at one frame per row; layers
    above the highest requested are skipped and the highest runs for one query."""
    torch_model, path = whisper_checkpoint
    model, config = load_whisper_encoder(path)
    x = features(config, 2 * config.max_source_positions, seed=3)
    expected = torch_encoder_states(torch_model.model.encoder, torch.from_numpy(x))
    frame = np.array([config.max_source_positions - 1, 5])
    n = config.encoder_layers
    at = nnx.jit(lambda m, v, f, layers: m.frames_at(v, f, layers), static_argnames="layers")
    atols = whisper_state_atols(config, config.max_source_positions, expected)
    for layers in [(0, 1, n), (n - 1,)]:
        got = at(model, jnp.asarray(x), jnp.asarray(frame), layers)
        for layer, g in zip(layers, got, strict=True):
            np.testing.assert_allclose(np.asarray(g), expected[layer][[0, 1], frame], rtol=0, atol=atols[layer])
    with pytest.raises(ConfigError, match="layers"):
        model.frames_at(jnp.asarray(x), jnp.asarray(frame), (n + 1,))
