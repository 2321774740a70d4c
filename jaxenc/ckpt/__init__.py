"""Hugging Face checkpoints -> the NNX models of :mod:`jaxenc.nn`.

Conversion is an explicit key map (transformers tensor name -> NNX parameter path and layout)
applied strictly to an ``nnx.eval_shape``-built model: an unexpected, missing or misshapen
tensor raises :class:`jaxenc.errors.CheckpointError` naming the key and the file. Tensors are
streamed one at a time from safetensors files (single or sharded); PyTorch ``.bin`` files are
read through a lazily imported ``torch.load(weights_only=True)``. No loader runs code from a
checkpoint folder: transformers is always called with ``trust_remote_code=False``, and a folder
whose configuration asks for its own code (an ``auto_map``) is refused naming the file;
:func:`load_tokenizer` reads a checkpoint's tokenizer the same way.
"""

from jaxenc.ckpt.files import load_tokenizer
from jaxenc.ckpt.llama import llama_key_map, load_llama
from jaxenc.ckpt.whisper import load_whisper_encoder, whisper_key_map

__all__ = ["load_tokenizer", "load_whisper_encoder", "load_llama", "whisper_key_map", "llama_key_map"]
