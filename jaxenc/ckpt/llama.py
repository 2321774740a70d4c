"""Loading a LLaMA-family model from a Hugging Face checkpoint, optionally only its first layers."""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from jaxenc.ckpt.files import checkpoint_shards, read_hf_config, resolve_checkpoint, resolve_dtype, tensor_names
from jaxenc.ckpt.keymap import IDENTITY, LINEAR, Target, load_into, placement
from jaxenc.errors import CheckpointError, ConfigError
from jaxenc.nn.llama import LlamaConfig, LlamaModel

__all__ = ["llama_key_map", "load_llama"]

# Rotary frequencies are recomputed from the config; early LLaMA-1 conversions stored them.
_INV_FREQ = r"(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq"
# Where the decoder stack sits in each kind of checkpoint, and what else that kind holds.
_LAYOUTS = (
    # LlamaForCausalLM: the language-model head (absent when tied) is not needed.
    ("model.", (r"lm_head\.weight", _INV_FREQ)),
    # A bare LlamaModel.
    ("", (_INV_FREQ,)),
)


def llama_key_map(config: LlamaConfig) -> dict[str, Target]:
    """Every tensor of a transformers ``LlamaModel`` -> its parameter in :class:`LlamaModel`.

    Parameters
    ----------
    config : LlamaConfig
        Model shape (``num_hidden_layers`` and the bias flags matter).

    Returns
    -------
    dict of str to Target
        Keyed by transformers' names without the ``model.`` prefix, e.g.
        ``"layers.0.mlp.up_proj.weight"``, for all ``num_hidden_layers`` layers.
    """
    key_map = {
        "embed_tokens.weight": Target(("embed_tokens", "embedding"), IDENTITY),
        "norm.weight": Target(("norm", "scale")),
    }
    projections = [("self_attn", p, config.attention_bias) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    projections += [("mlp", p, config.mlp_bias) for p in ("gate_proj", "up_proj", "down_proj")]
    for i in range(config.num_hidden_layers):
        for block, proj, bias in projections:
            key_map[f"layers.{i}.{block}.{proj}.weight"] = Target(("layers", i, block, proj, "kernel"), LINEAR)
            if bias:
                key_map[f"layers.{i}.{block}.{proj}.bias"] = Target(("layers", i, block, proj, "bias"))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            key_map[f"layers.{i}.{norm}.weight"] = Target(("layers", i, norm, "scale"))
    return key_map


def load_llama(
    path_or_hub_id,
    *,
    dtype=jnp.float32,
    param_dtype=None,
    revision: str | None = None,
    max_layer: int | None = None,
    download: bool = False,
    mesh=None,
    axis: str = "data",
    fsdp: bool | None = None,
    precision: str = "auto",
    attention: str = "auto",
) -> tuple[LlamaModel, LlamaConfig]:
    """Load a LLaMA-family (``model_type="llama"``) Hugging Face checkpoint.

    Parameters
    ----------
    path_or_hub_id : str or os.PathLike
        A local checkpoint directory (``config.json`` plus ``model.safetensors``, a sharded
        safetensors index, or ``pytorch_model.bin`` and its index), or a Hub id such as
        ``"huggyllama/llama-7b"``. ``LlamaForCausalLM`` checkpoints (``lm_head`` is ignored)
        and bare ``LlamaModel`` ones are accepted.
    dtype : jnp.dtype or "auto"
        Compute dtype of the returned model; ``"auto"``: bfloat16 for a checkpoint stored in
        float16 or bfloat16 (LLaMA-7B's), float32 otherwise.
    param_dtype : jnp.dtype, optional
        Parameter dtype; the compute dtype when omitted. Tensors stored in float32, float16 or
        bfloat16 are cast to it.
    revision : str, optional
        Hub revision (Hub ids only).
    max_layer : int, optional
        Build only the first ``max_layer`` decoder layers (see :class:`LlamaModel`); the
        tensors of later layers and of the final norm are never read.
    download : bool
        Whether a Hub id absent from the local cache may be downloaded (default: cache only).
    mesh : jax.sharding.Mesh, optional
        Place the parameters on this mesh as they are read (see :mod:`jaxenc.nn.sharding`):
        replicated, or split along ``axis`` when ``fsdp``.
    axis : str
        Mesh axis of the data-parallel batch.
    fsdp : bool, optional
        Shard the weights over ``axis``; default: only when they take more than half of one
        device's memory.
    precision : str
        Matrix-product precision of the forward pass (:mod:`jaxenc.precision`); ``"auto"``:
        full float32 for a float32 compute dtype, the operands' own for a 16-bit one.
    attention : str
        Attention implementation (:data:`jaxenc.nn.layers.ATTENTION_ROUTES`); ``"auto"`` by
        platform.

    Returns
    -------
    model : LlamaModel
    config : LlamaConfig
        The checkpoint's full config (``num_hidden_layers`` is not reduced by ``max_layer``).

    Raises
    ------
    CheckpointError
        For a missing directory or Hub id, a config of another model type, or tensors that do
        not match the model (unexpected or missing keys, wrong shapes), naming key and file.
    """
    directory = resolve_checkpoint(path_or_hub_id, revision=revision, download=download)
    try:
        config = LlamaConfig.from_hf(read_hf_config(directory, "llama"))
    except ConfigError as err:
        raise CheckpointError(str(err), path=directory / "config.json") from None
    n = config.num_hidden_layers
    max_layer = n if max_layer is None else max_layer
    if not 0 <= max_layer <= n:
        raise CheckpointError(f"max_layer={max_layer} is outside 0..num_hidden_layers={n}", path=directory)
    shards, source, weight_map = checkpoint_shards(directory)
    names = tensor_names(shards, weight_map)
    layout = next(((prefix, ignored) for prefix, ignored in _LAYOUTS if f"{prefix}embed_tokens.weight" in names), None)
    if layout is None:
        raise CheckpointError(
            "no LLaMA model found: expected 'model.embed_tokens.weight' or 'embed_tokens.weight'", path=source)
    prefix, ignored = layout
    key_map = llama_key_map(config)
    unbuilt = tuple(f"layers.{i}." for i in range(max_layer, n)) + (("norm.",) if max_layer < n else ())
    dtype = resolve_dtype(dtype, directory)
    param_dtype = dtype if param_dtype is None else param_dtype
    model = nnx.eval_shape(lambda: LlamaModel(
        config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0), max_layer=max_layer, precision=precision,
        attention=attention))
    load_into(
        model, key_map, shards, source, weight_map, prefix=prefix,
        ignore=tuple(re.compile(p) for p in ignored),
        skip=frozenset(k for k in key_map if k.startswith(unbuilt)), param_dtype=param_dtype,
        sharding=placement(model, mesh, axis, fsdp),
    )
    return model, config
