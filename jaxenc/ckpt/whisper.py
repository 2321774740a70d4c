"""Loading a Whisper encoder from a Hugging Face checkpoint (the decoder is left on disk)."""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from jaxenc.ckpt.files import checkpoint_shards, read_hf_config, resolve_checkpoint, resolve_dtype, tensor_names
from jaxenc.ckpt.keymap import CONV1D, IDENTITY, LINEAR, Target, load_into, placement
from jaxenc.errors import CheckpointError, ConfigError
from jaxenc.nn.whisper import WhisperEncoder, WhisperEncoderConfig

__all__ = ["whisper_key_map", "load_whisper_encoder"]

# Where the encoder sits in each kind of checkpoint, and what else that kind holds.
_LAYOUTS = (
    # WhisperForConditionalGeneration: the decoder and its tied output projection are not needed.
    ("model.encoder.", (r"model\.decoder\..*", r"proj_out\..*")),
    # WhisperModel.
    ("encoder.", (r"decoder\..*",)),
    # A bare WhisperEncoder.
    ("", ()),
)


def whisper_key_map(config: WhisperEncoderConfig) -> dict[str, Target]:
    """Every tensor of a transformers ``WhisperEncoder`` -> its parameter in :class:`WhisperEncoder`.

    Parameters
    ----------
    config : WhisperEncoderConfig
        Model shape (only ``encoder_layers`` matters).

    Returns
    -------
    dict of str to Target
        Keyed by transformers' names relative to the encoder, e.g. ``"layers.0.fc1.weight"``.
    """
    key_map = {
        "conv1.weight": Target(("conv1", "kernel"), CONV1D),
        "conv1.bias": Target(("conv1", "bias")),
        "conv2.weight": Target(("conv2", "kernel"), CONV1D),
        "conv2.bias": Target(("conv2", "bias")),
        "embed_positions.weight": Target(("embed_positions", "embedding"), IDENTITY),
        "layer_norm.weight": Target(("layer_norm", "scale")),
        "layer_norm.bias": Target(("layer_norm", "bias")),
    }
    for i in range(config.encoder_layers):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            key_map[f"layers.{i}.self_attn.{proj}.weight"] = Target(("layers", i, "self_attn", proj, "kernel"), LINEAR)
            if proj != "k_proj":  # Whisper's keys carry no bias
                key_map[f"layers.{i}.self_attn.{proj}.bias"] = Target(("layers", i, "self_attn", proj, "bias"))
        for fc in ("fc1", "fc2"):
            key_map[f"layers.{i}.{fc}.weight"] = Target(("layers", i, fc, "kernel"), LINEAR)
            key_map[f"layers.{i}.{fc}.bias"] = Target(("layers", i, fc, "bias"))
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            key_map[f"layers.{i}.{norm}.weight"] = Target(("layers", i, norm, "scale"))
            key_map[f"layers.{i}.{norm}.bias"] = Target(("layers", i, norm, "bias"))
    return key_map


def load_whisper_encoder(
    path_or_hub_id,
    *,
    dtype=jnp.float32,
    param_dtype=None,
    revision: str | None = None,
    download: bool = False,
    mesh=None,
    axis: str = "data",
    fsdp: bool | None = None,
    precision: str = "auto",
    attention: str = "auto",
) -> tuple[WhisperEncoder, WhisperEncoderConfig]:
    """Load the encoder of a Hugging Face Whisper checkpoint.

    Parameters
    ----------
    path_or_hub_id : str or os.PathLike
        A local checkpoint directory (``config.json`` plus ``model.safetensors``, a sharded
        safetensors index, or ``pytorch_model.bin``), or a Hub id such as
        ``"openai/whisper-large"``. Full ``WhisperForConditionalGeneration`` checkpoints,
        ``WhisperModel`` ones and bare encoders are accepted; decoder tensors are never read.
    dtype : jnp.dtype or "auto"
        Compute dtype of the returned model; ``"auto"``: bfloat16 for a checkpoint stored in
        float16 or bfloat16, float32 otherwise (OpenAI's Whisper large v1 is float32).
    param_dtype : jnp.dtype, optional
        Parameter dtype; the compute dtype when omitted. Tensors stored in float32, float16 or
        bfloat16 are cast to it.
    revision : str, optional
        Hub revision (Hub ids only).
    download : bool
        Whether a Hub id absent from the local cache may be downloaded (default: cache only).
    mesh, axis, fsdp
        Place the parameters on a mesh as they are read; see :func:`jaxenc.ckpt.load_llama`.
    precision : str
        Matrix-product precision of the forward pass (:mod:`jaxenc.precision`); ``"auto"``:
        full float32 for a float32 compute dtype, the operands' own for a 16-bit one.
    attention : str
        Attention implementation (:data:`jaxenc.nn.layers.ATTENTION_ROUTES`); ``"auto"`` by
        platform.

    Returns
    -------
    model : WhisperEncoder
    config : WhisperEncoderConfig

    Raises
    ------
    CheckpointError
        For a missing directory or Hub id, a config of another model type, or tensors that do
        not match the encoder (unexpected or missing keys, wrong shapes), naming key and file.
    """
    directory = resolve_checkpoint(path_or_hub_id, revision=revision, download=download)
    try:
        config = WhisperEncoderConfig.from_hf(read_hf_config(directory, "whisper"))
    except ConfigError as err:
        raise CheckpointError(str(err), path=directory / "config.json") from None
    shards, source, weight_map = checkpoint_shards(directory)
    names = tensor_names(shards, weight_map)
    layout = next(((prefix, ignored) for prefix, ignored in _LAYOUTS if f"{prefix}conv1.weight" in names), None)
    if layout is None:
        raise CheckpointError(
            "no Whisper encoder found: expected 'model.encoder.conv1.weight', 'encoder.conv1.weight' "
            "or 'conv1.weight'", path=source)
    prefix, ignored = layout
    dtype = resolve_dtype(dtype, directory)
    param_dtype = dtype if param_dtype is None else param_dtype
    model = nnx.eval_shape(lambda: WhisperEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0),
                                                  precision=precision, attention=attention))
    load_into(
        model, whisper_key_map(config), shards, source, weight_map, prefix=prefix,
        ignore=tuple(re.compile(p) for p in ignored), skip=frozenset(), param_dtype=param_dtype,
        sharding=placement(model, mesh, axis, fsdp),
    )
    return model, config
