"""One tiny Whisper and one tiny LLaMA, each saved once in every on-disk format the loaders read.

Formats: ``single`` (model.safetensors), ``sharded`` (model.safetensors.index.json), ``fp16`` and
``bf16`` (half-precision safetensors), ``bare`` (WhisperModel / LlamaModel without the task
head's prefix), ``bin`` (pytorch_model.bin) and ``bin-sharded`` (pytorch_model.bin.index.json).
"""

import copy
import json

import pytest
import torch
import transformers


def randomize_(model: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with noise (norm weights with 1 + noise); return the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * std
            param.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return model.eval()


def save_bin(model: torch.nn.Module, path, shards: int = 1) -> None:
    """Save config.json and the state dict as pytorch_model.bin, or as ``shards`` files plus an index."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if shards == 1:
        torch.save(state, path / "pytorch_model.bin")
        return
    keys, weight_map = sorted(state), {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, path / name)
        weight_map.update(dict.fromkeys(part, name))
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def save_all_formats(model, bare, root) -> dict:
    """Save ``model`` (and its prefix-less base ``bare``) in every format; return {format: dir}."""
    dirs = {fmt: root / fmt for fmt in ("single", "sharded", "fp16", "bf16", "bare", "bin", "bin-sharded")}
    model.save_pretrained(dirs["single"])
    model.save_pretrained(dirs["sharded"], max_shard_size="40KB")
    bare.save_pretrained(dirs["bare"])
    save_bin(model, dirs["bin"])
    save_bin(model, dirs["bin-sharded"], shards=2)
    for fmt, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        copy.deepcopy(model).to(dtype).save_pretrained(dirs[fmt])
    return dirs


@pytest.fixture(scope="session")
def whisper_dirs(tmp_path_factory):
    """(torch WhisperForConditionalGeneration, {format: checkpoint dir})."""
    config = transformers.WhisperConfig(
        num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        max_source_positions=16, vocab_size=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_target_positions=8, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
    )
    model = randomize_(transformers.WhisperForConditionalGeneration(config), 0)
    return model, save_all_formats(model, model.model, tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def llama_dirs(tmp_path_factory):
    """(torch LlamaForCausalLM with an untied head, {format: checkpoint dir})."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False,
    )
    model = randomize_(transformers.LlamaForCausalLM(config), 1)
    return model, save_all_formats(model, model.model, tmp_path_factory.mktemp("llama"))
