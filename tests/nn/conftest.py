"""Tiny random-init transformers models, saved once per test module, for the equivalence tests.

Every parameter (norm weights and biases included) is drawn at random after construction, so a
weight loaded into the wrong place, left at its default or transposed wrongly cannot pass.
"""

import pytest
import torch
import transformers

# Whisper shapes: both mel-bin counts of the OpenAI models, two depths, two head counts.
WHISPER_SHAPES = {
    "mel80-depth2": dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                         encoder_ffn_dim=128, max_source_positions=32),
    "mel128-depth3": dict(num_mel_bins=128, d_model=48, encoder_layers=3, encoder_attention_heads=2,
                          encoder_ffn_dim=96, max_source_positions=24),
}

# LLaMA variants: MHA/GQA/MQA, tied/untied embeddings, the three rope types, biases, head_dim.
LLAMA_VARIANTS = {
    "mha-untied": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "gqa-tied-llama3": dict(
        num_key_value_heads=2, tie_word_embeddings=True, head_dim=32, rms_norm_eps=1e-5,
        attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64),
    ),
    "mqa-linear": dict(num_key_value_heads=1, rms_norm_eps=1e-4,
                       rope_parameters=dict(rope_type="linear", rope_theta=1000.0, factor=2.0)),
}


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with noise (norm weights with 1 + noise); return the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * std
            param.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return model.eval()


def whisper_config(**shape) -> transformers.WhisperConfig:
    """A WhisperConfig with the given encoder shape and a one-layer, 128-token decoder."""
    return transformers.WhisperConfig(
        vocab_size=128, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_target_positions=16, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
        **shape,
    )


def llama_config(**variant) -> transformers.LlamaConfig:
    """A three-layer, 64-wide LlamaConfig with the given variant options."""
    base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
    return transformers.LlamaConfig(**{**base, **variant})


@pytest.fixture(scope="module", params=list(WHISPER_SHAPES))
def whisper_checkpoint(request, tmp_path_factory):
    """(torch WhisperForConditionalGeneration, its safetensors checkpoint directory), per shape."""
    model = randomize_(transformers.WhisperForConditionalGeneration(whisper_config(**WHISPER_SHAPES[request.param])), 0)
    path = tmp_path_factory.mktemp(f"whisper-{request.param}")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module", params=list(LLAMA_VARIANTS))
def llama_checkpoint(request, tmp_path_factory):
    """(torch LlamaForCausalLM, its safetensors checkpoint directory), per variant."""
    model = randomize_(transformers.LlamaForCausalLM(llama_config(**LLAMA_VARIANTS[request.param])), 1)
    path = tmp_path_factory.mktemp(f"llama-{request.param}")
    model.save_pretrained(path)
    return model, path
