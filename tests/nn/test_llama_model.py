"""LlamaModel against the transformers PyTorch LlamaModel (fp32, eval mode).

Each hidden state is compared within ``llama_state_atols`` (tests/_tolerance.py): float32
rounding of every reduction on the path to it (3 layers of 64 wide, 96 feed-forward, 10 tokens),
in both implementations, scaled by the state's largest value: about 1e-5 of it. The bugs guarded
against (a weight in the wrong place, a wrong rope frequency, position or mask, a norm's eps off
by 10x) move the states by 1e-3 of their scale or more; the embeddings must match exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxenc.ckpt import load_llama
from jaxenc.errors import ConfigError
from jaxenc.nn import LlamaConfig, LlamaModel
from tests._tolerance import llama_state_atols

BATCH, SEQ = 3, 10
# One compilation per model shape, shared by the tests (eager dispatch is slower). Tests of
# behaviour that does not depend on the variant run on one variant only, to save compilations.
forward = nnx.jit(lambda model, ids, mask: model(ids, mask))


def to_numpy(hidden_states) -> list[np.ndarray]:
    return [np.asarray(h, dtype=np.float32) for h in hidden_states]


def token_ids(config, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, (BATCH, SEQ))


def torch_states(torch_model, ids, mask, position_ids=None) -> list[np.ndarray]:
    with torch.inference_mode():
        out = torch_model.model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
            position_ids=None if position_ids is None else torch.from_numpy(position_ids),
            output_hidden_states=True,
        )
    return to_numpy(out.hidden_states)


def padded_mask(lengths, side: str) -> np.ndarray:
    mask = np.zeros((len(lengths), SEQ), np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return mask if side == "right" else mask[:, ::-1].copy()


def test_unpadded_matches_transformers(llama_checkpoint):
    torch_model, path = llama_checkpoint
    model, config = load_llama(path)
    ids, mask = token_ids(config), np.ones((BATCH, SEQ), np.int64)
    got = to_numpy(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
    expected = torch_states(torch_model, ids, mask)
    assert len(got) == len(expected) == config.num_hidden_layers + 1
    for g, e, atol in zip(got, expected, llama_state_atols(config, SEQ, expected), strict=True):
        assert g.shape == (BATCH, SEQ, config.hidden_size)
        np.testing.assert_allclose(g, e, rtol=0, atol=atol)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_matches_transformers_at_real_tokens(llama_checkpoint, side):
    torch_model, path = llama_checkpoint
    model, config = load_llama(path)
    ids, mask = token_ids(config, seed=1), padded_mask([SEQ, 7, 3], side)
    # transformers numbers positions 0.. from the first slot whatever the mask; giving it the
    # positions of the real tokens makes it the reference for jaxenc's mask-derived positions.
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    got = to_numpy(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
    expected = torch_states(torch_model, ids, mask, positions)
    real = mask.astype(bool)
    for g, e, atol in zip(got, expected, llama_state_atols(config, SEQ, expected), strict=True):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g[real], e[real], rtol=0, atol=atol)


@pytest.mark.parametrize("llama_checkpoint", ["gqa-tied-llama3"], indirect=True)
def test_left_padded_batch_equals_unpadded_rows(llama_checkpoint):
    _, path = llama_checkpoint
    model, config = load_llama(path)
    lengths = [SEQ, 6, 2]
    ids, mask = token_ids(config, seed=2), padded_mask(lengths, "left")
    batch = to_numpy(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
    for row, n in enumerate(lengths):
        alone = to_numpy(forward(model, jnp.asarray(ids[row:row + 1, SEQ - n:]), jnp.ones((1, n), jnp.int32)))
        for b, a, atol in zip(batch, alone, llama_state_atols(config, SEQ, alone), strict=True):
            np.testing.assert_allclose(b[row, SEQ - n:], a[0], rtol=0, atol=atol)


@pytest.mark.parametrize("llama_checkpoint", ["gqa-tied-llama3"], indirect=True)
def test_max_layer_equals_first_layers_of_full_model(llama_checkpoint):
    torch_model, path = llama_checkpoint
    full, config = load_llama(path)
    truncated, _ = load_llama(path, max_layer=2)
    assert len(truncated.layers) == 2 and truncated.norm is None
    ids, mask = token_ids(config, seed=3), np.ones((BATCH, SEQ), np.int64)
    got = to_numpy(forward(truncated, jnp.asarray(ids), jnp.asarray(mask)))
    expected = torch_states(torch_model, ids, mask)
    assert len(got) == 3
    # Entry 2 is layer 2's raw output (transformers' hidden_states[2]), not normed.
    atols = llama_state_atols(config, SEQ, expected[:3], final_norm=False)
    for g, e, atol in zip(got, expected[:3], atols, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=atol)


def test_rotary_frequencies_match_transformers(llama_checkpoint):
    torch_model, path = llama_checkpoint
    config = LlamaConfig.from_hf(torch_model.config)
    # transformers computes theta ** (2 i / d) in float32: the exponent's rounding (u) is
    # multiplied by ln(theta) <= 13.2 (theta <= 5e5), pow, the scaling and the division add a few
    # u: at most 16 u, 1e-6. A wrong rope type or factor moves frequencies by 10% or more.
    np.testing.assert_allclose(
        config.rope_parameters.inv_freq(config.head_dim),
        torch_model.model.rotary_emb.inv_freq.numpy(), rtol=1e-6, atol=0,
    )


@pytest.mark.parametrize("llama_checkpoint", ["gqa-tied-llama3"], indirect=True)
def test_bfloat16_compute_close_to_float32(llama_checkpoint):
    _, path = llama_checkpoint
    model32, config = load_llama(path)
    model16, _ = load_llama(path, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    ids, mask = jnp.asarray(token_ids(config)), jnp.ones((BATCH, SEQ), jnp.int32)
    for a, b in zip(forward(model32, ids, mask), forward(model16, ids, mask), strict=True):
        assert b.dtype == jnp.bfloat16
        # bf16 keeps 8 bits of mantissa; three layers of rounding stay within a few percent.
        np.testing.assert_allclose(np.asarray(b, np.float32), a, rtol=0, atol=0.05 * float(jnp.abs(a).max()))


def test_bad_arguments_raise():
    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=4)
    with pytest.raises(ConfigError, match="max_layer=3"):
        LlamaModel(config, rngs=nnx.Rngs(0), max_layer=3)
    model = LlamaModel(config, rngs=nnx.Rngs(0), max_layer=0)
    with pytest.raises(ConfigError, match="attention_mask"):
        model(jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        LlamaConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="rope_type"):
        LlamaConfig.from_hf(type("C", (), dict(
            vars(config), rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}, max_position_embeddings=8)))
