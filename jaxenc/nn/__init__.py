"""Flax NNX ports of the networks jaxenc reads features from.

``WhisperEncoder`` (OpenAI Whisper tiny .. large-v3, audio) and ``LlamaModel`` (the LLaMA family,
text) keep the module names of their transformers counterparts, return every hidden state as
transformers' ``output_hidden_states=True`` does, and are loaded from Hugging Face checkpoints by
:mod:`jaxenc.ckpt`. :mod:`jaxenc.nn.sharding` places their parameters on a device mesh
(replicated, or FSDP-sharded) for data-parallel extraction. This subpackage imports nothing of
jaxenc but :mod:`jaxenc.errors` and :mod:`jaxenc.precision` (the models' matrix-product
precision, which they apply themselves).
"""

from jaxenc.nn.llama import LlamaConfig, LlamaModel, RopeParameters
from jaxenc.nn.whisper import WhisperEncoder, WhisperEncoderConfig

__all__ = ["WhisperEncoderConfig", "WhisperEncoder", "LlamaConfig", "LlamaModel", "RopeParameters"]
