"""Every on-disk format loads to the same model as transformers reads from it (fp32).

The hidden states are compared within ``whisper_state_atols`` / ``llama_state_atols``
(tests/_tolerance.py): float32 rounding of the forward pass in both implementations, about 1e-5
of each state's scale. A weight read from the wrong tensor, transposed, or not upcast the way
transformers upcasts fp16/bf16 files moves the states by 1e-3 of their scale or more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.ckpt.files import stored_dtype
from tests._tolerance import llama_state_atols, whisper_state_atols

FORMATS = ["single", "sharded", "fp16", "bf16", "bare", "bin", "bin-sharded"]
forward = nnx.jit(lambda model, *inputs: model(*inputs))


def reference(model, dirs, fmt, cls):
    """The torch model holding the weights of ``fmt``: half-precision files are re-read upcast to fp32."""
    if fmt in ("fp16", "bf16"):
        return cls.from_pretrained(dirs[fmt], dtype=torch.float32).eval()
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_whisper_formats_match_transformers(whisper_dirs, fmt):
    model, dirs = whisper_dirs
    torch_model = reference(model, dirs, fmt, transformers.WhisperForConditionalGeneration)
    encoder, config = load_whisper_encoder(dirs[fmt])
    x = np.random.default_rng(0).standard_normal((2, 80, 2 * config.max_source_positions)).astype(np.float32)
    with torch.inference_mode():
        expected = torch_model.model.encoder(torch.from_numpy(x), output_hidden_states=True).hidden_states
    got = forward(encoder, jnp.asarray(x))
    assert len(got) == len(expected) == 3
    expected = [e.numpy() for e in expected]
    atols = whisper_state_atols(config, config.max_source_positions, expected)
    for g, e, atol in zip(got, expected, atols, strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=atol)


@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_formats_match_transformers(llama_dirs, fmt):
    model, dirs = llama_dirs
    torch_model = reference(model, dirs, fmt, transformers.LlamaForCausalLM)
    llama, config = load_llama(dirs[fmt])
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, 9))
    with torch.inference_mode():
        expected = torch_model.model(torch.from_numpy(ids), output_hidden_states=True).hidden_states
    got = forward(llama, jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32))
    assert len(got) == len(expected) == 4
    expected = [e.numpy() for e in expected]
    for g, e, atol in zip(got, expected, llama_state_atols(config, ids.shape[1], expected), strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=atol)


def param_dtypes(model) -> set:
    return {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("fmt", ["single", "bf16"])
def test_param_dtype_casts_and_defaults_to_compute_dtype(whisper_dirs, llama_dirs, fmt):
    f32, bf16 = {jnp.dtype(jnp.float32)}, {jnp.dtype(jnp.bfloat16)}
    for load, (_, dirs) in ((load_llama, llama_dirs), (load_whisper_encoder, whisper_dirs)):
        assert param_dtypes(load(dirs[fmt])[0]) == f32
        assert param_dtypes(load(dirs[fmt], dtype=jnp.bfloat16)[0]) == bf16
        assert param_dtypes(load(dirs[fmt], dtype=jnp.float32, param_dtype=jnp.bfloat16)[0]) == bf16


@pytest.mark.parametrize("fmt, stored", [("single", "float32"), ("fp16", "float16"), ("bf16", "bfloat16"),
                                         ("bin-sharded", "float32")])
def test_auto_dtype_computes_in_bfloat16_for_16_bit_checkpoints(whisper_dirs, llama_dirs, fmt, stored):
    """dtype="auto": the dtype the headers store most elements in decides; 16-bit -> bfloat16."""
    compute = jnp.dtype(jnp.bfloat16 if stored in ("float16", "bfloat16") else jnp.float32)
    for load, (_, dirs) in ((load_llama, llama_dirs), (load_whisper_encoder, whisper_dirs)):
        assert stored_dtype(dirs[fmt]) == stored
        model = load(dirs[fmt], dtype="auto")[0]
        assert jnp.dtype(model.dtype) == compute and param_dtypes(model) == {compute}
