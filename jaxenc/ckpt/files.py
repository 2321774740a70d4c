"""Finding and streaming the tensor files of a Hugging Face checkpoint directory.

A checkpoint is read one shard at a time and, within a shard, one tensor at a time: the caller
looks at a tensor's name, shape and dtype (header only) before deciding to read it, so tensors it
skips are never read and a 7B model never sits in host memory twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.errors import CheckpointError

__all__ = [
    "resolve_checkpoint", "read_hf_config", "load_tokenizer", "refuse_remote_code", "checkpoint_shards",
    "tensor_names", "iter_tensor_names", "Shard",
    "stored_dtype", "resolve_dtype",
]

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_SAFETENSORS = "model.safetensors"
_BIN_INDEX = "pytorch_model.bin.index.json"
_BIN = "pytorch_model.bin"
# Safetensors dtype codes -> the numpy/torch names the rest of jaxenc uses.
_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
# Float dtypes a checkpoint may store its weights in; "auto" computes in bfloat16 for the 16-bit ones.
_HALF_DTYPES = ("float16", "bfloat16")
# The files of a checkpoint folder through which transformers would import the folder's own
# Python code (their "auto_map" names classes in .py files beside them).
_CODE_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
# A Hub id is "name" or "owner/name"; anything else that does not exist is a wrong local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_checkpoint(path_or_hub_id, *, revision: str | None = None, download: bool = False) -> Path:
    """Return the local directory holding a checkpoint.

    Parameters
    ----------
    path_or_hub_id : str or os.PathLike
        An existing local directory, or a Hub id such as ``"openai/whisper-large"``.
    revision : str, optional
        Hub branch, tag or commit; only for Hub ids.
    download : bool
        Whether a Hub id missing from the local Hugging Face cache may be downloaded. When False
        (the default) only the cache is consulted, so nothing is fetched at run time.

    Returns
    -------
    Path
        The checkpoint directory.

    Raises
    ------
    CheckpointError
        If the argument is neither an existing directory nor a Hub id that can be found.
    """
    path = Path(os.path.expanduser(os.fspath(path_or_hub_id)))
    if path.exists():
        if not path.is_dir():
            raise CheckpointError("expected a checkpoint directory holding config.json", path=path)
        return path
    name = os.fspath(path_or_hub_id)
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise CheckpointError("no such checkpoint directory", path=name)
    from huggingface_hub import snapshot_download

    try:
        # Safetensors first: Hub repos often hold .bin, TF and Flax copies of the same weights.
        local = Path(snapshot_download(
            name, revision=revision, local_files_only=not download, allow_patterns=["*.json", "*.safetensors"]
        ))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(
                name, revision=revision, local_files_only=not download, allow_patterns=["*.json", "*.bin"]
            ))
    except Exception as err:  # huggingface_hub raises many unrelated types for "not there"
        where = "on the Hub" if download else "in the local Hugging Face cache (download=False)"
        raise CheckpointError(
            f"{name!r} is not a local directory and was not found {where}: {type(err).__name__}"
        ) from None
    return local


def read_hf_config(directory: Path, model_type: str):
    """Read ``directory/config.json`` as a transformers config of the given ``model_type``.

    Raises
    ------
    CheckpointError
        If config.json is missing, unreadable or describes another kind of model.
    """
    from transformers import AutoConfig

    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError("missing config.json", path=directory)
    refuse_remote_code(directory)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"unreadable config: {_first_line(err)}", path=path) from None
    if config.model_type != model_type:
        raise CheckpointError(f"model_type is {config.model_type!r}, expected {model_type!r}", path=path)
    return config


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (transformers' and torch's run to several)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def refuse_remote_code(directory: Path) -> None:
    """Refuse a checkpoint folder that asks transformers to import its own Python code.

    jaxenc never runs code from a checkpoint folder: every transformers loader it calls passes
    ``trust_remote_code=False``. A folder whose configuration carries an ``auto_map`` (classes
    defined in ``.py`` files of the folder) would make transformers ask, or fail; it is refused
    here first, naming the file.

    Parameters
    ----------
    directory : Path
        A local checkpoint folder.

    Raises
    ------
    CheckpointError
        Naming the file that holds the ``auto_map``.
    """
    for name in _CODE_FILES:
        path = Path(directory) / name
        if not path.is_file():
            continue
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"unreadable JSON ({_first_line(err)})", path=path) from None
        if isinstance(content, dict) and "auto_map" in content:
            raise CheckpointError(
                f"the checkpoint folder {directory} asks to run its own Python code (\"auto_map\" in {name}); "
                "jaxenc never runs code from a checkpoint folder: use a checkpoint of a standard "
                "transformers architecture without auto_map", path=path)


def load_tokenizer(path_or_hub_id):
    """The tokenizer of a checkpoint, without running code from its folder or downloading.

    Parameters
    ----------
    path_or_hub_id : str or os.PathLike
        A local checkpoint folder, or a Hub id in the local Hugging Face cache
        (:func:`resolve_checkpoint`).

    Returns
    -------
    transformers.PreTrainedTokenizerBase

    Raises
    ------
    CheckpointError
        A folder that asks for its own code (:func:`refuse_remote_code`) or whose tokenizer
        cannot be read, naming the folder.
    """
    from transformers import AutoTokenizer

    directory = resolve_checkpoint(path_or_hub_id)
    refuse_remote_code(directory)
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"unreadable tokenizer: {_first_line(err)}", path=directory) from None


class Shard:
    """One tensor file, opened lazily: names, shapes and dtypes from the header, tensors on demand.

    Use as a context manager; :meth:`read` is only valid inside it.

    Parameters
    ----------
    path : Path
        A ``.safetensors`` or PyTorch ``.bin`` file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def __enter__(self) -> Shard:
        try:
            if self.path.suffix == ".safetensors":
                from safetensors import safe_open

                # The "flax" framework yields jax arrays, which (unlike numpy) can hold bfloat16.
                self._handle = safe_open(self.path, framework="flax")
            else:
                # torch is imported only here: .bin checkpoints are the one place jaxenc needs it.
                import torch

                self._handle = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # safetensors and torch raise assorted types for corrupt files
            if type(err).__name__ == "UnpicklingError":
                # torch's weights_only refusal spans several lines of advice on trusting the file;
                # the line of its unpickler says what the file holds.
                found = re.search(r"WeightsUnpickler error: (.+?)\.(?:\s|$)", str(err))
                what = found.group(1) if found else _first_line(err)
                raise CheckpointError(
                    f"the pickle holds more than tensors, which jaxenc never unpickles (torch.load with "
                    f"weights_only=True: {what}); convert the checkpoint to safetensors where it can be trusted",
                    path=self.path) from None
            raise CheckpointError(f"unreadable tensor file: {_first_line(err)}", path=self.path) from None
        if self.path.suffix != ".safetensors" and not isinstance(self._handle, dict):
            raise CheckpointError("expected a state dict of tensors", path=self.path)
        return self

    def __exit__(self, *exc) -> None:
        self._handle = None

    def keys(self) -> list[str]:
        """Tensor names stored in the file."""
        return list(self._handle.keys())

    def info(self, key: str) -> tuple[tuple[int, ...], str]:
        """Shape and dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``, ...) without reading."""
        if isinstance(self._handle, dict):
            tensor = self._handle[key]
            return tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")
        view = self._handle.get_slice(key)
        dtype = view.get_dtype()
        return tuple(view.get_shape()), _DTYPE_NAMES.get(dtype, dtype)

    def read(self, key: str) -> jax.Array | np.ndarray:
        """Read one tensor into host memory, in the dtype it is stored in."""
        if isinstance(self._handle, dict):
            tensor = self._handle[key]
            # numpy has no bfloat16; the float32 detour is exact and lasts one tensor.
            return tensor.float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.numpy()
        return self._handle.get_tensor(key)


def checkpoint_shards(directory: Path) -> tuple[list[Shard], Path, dict[str, str] | None]:
    """List the tensor files of a checkpoint directory.

    Looks, in this order, for ``model.safetensors.index.json`` (sharded), ``model.safetensors``,
    ``pytorch_model.bin.index.json`` and ``pytorch_model.bin``.

    Returns
    -------
    shards : list of Shard
        The files, in the order they should be read.
    source : Path
        The index file or the single tensor file, for error messages about missing keys.
    weight_map : dict or None
        The index's tensor name -> file name map; None for a single file.

    Raises
    ------
    CheckpointError
        If there is no tensor file, or the index is unreadable or names a missing file.
    """
    for index_name, single_name in ((_SAFETENSORS_INDEX, _SAFETENSORS), (_BIN_INDEX, _BIN)):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"unreadable index, expected a 'weight_map': {err}", path=index) from None
            files = sorted(set(weight_map.values()))
            for name in files:
                if not (directory / name).is_file():
                    raise CheckpointError(f"names shard {name!r}, which does not exist", path=index)
            return [Shard(directory / name) for name in files], index, weight_map
        single = directory / single_name
        if single.is_file():
            return [Shard(single)], single, None
    raise CheckpointError(
        f"no weights found: expected {_SAFETENSORS}, {_SAFETENSORS_INDEX}, {_BIN} or {_BIN_INDEX}",
        path=directory,
    )


def tensor_names(shards: list[Shard], weight_map: dict[str, str] | None) -> set[str]:
    """Every tensor name of a checkpoint, from its index or, for a single file, its header."""
    if weight_map is not None:
        return set(weight_map)
    (shard,) = shards
    with shard:
        return set(shard.keys())


def iter_tensor_names(
    shards: list[Shard], source: Path, weight_map: dict[str, str] | None
) -> Iterator[tuple[Shard, str]]:
    """Yield ``(shard, name)`` for every tensor, opening one shard at a time.

    Parameters
    ----------
    shards, source, weight_map
        As returned by :func:`checkpoint_shards`.

    Raises
    ------
    CheckpointError
        If a tensor name occurs in two shards, or a shard and the index disagree.
    """
    seen: dict[str, Path] = {}
    for shard in shards:
        with shard:
            for name in shard.keys():
                if name in seen:
                    raise CheckpointError(f"key {name!r} also stored in {seen[name]}", path=shard.path)
                if weight_map is not None and weight_map.get(name) != shard.path.name:
                    raise CheckpointError(f"key {name!r} is not listed for this shard in {source}", path=shard.path)
                seen[name] = shard.path
                yield shard, name
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(seen))
        if absent:
            raise CheckpointError(f"key {absent[0]!r} is listed but not stored in its shard", path=source)


def stored_dtype(directory: Path) -> str:
    """The float dtype holding most parameter elements of a checkpoint, from the file headers.

    Parameters
    ----------
    directory : Path
        A checkpoint directory (see :func:`checkpoint_shards`).

    Returns
    -------
    str
        ``"float32"``, ``"float16"``, ``"bfloat16"`` (or ``"float64"``).

    Raises
    ------
    CheckpointError
        No float tensor, or unreadable files.
    """
    shards, source, weight_map = checkpoint_shards(directory)
    elements: dict[str, int] = {}
    for shard, name in iter_tensor_names(shards, source, weight_map):
        shape, dtype = shard.info(name)
        if dtype.startswith(("float", "bfloat")):
            elements[dtype] = elements.get(dtype, 0) + int(np.prod(shape))
    if not elements:
        raise CheckpointError("no float tensor found", path=source)
    return max(elements, key=elements.get)


def resolve_dtype(dtype, directory: Path):
    """A loader's compute dtype: ``dtype`` itself (a name such as ``"bfloat16"`` or a dtype), or
    for ``"auto"`` the checkpoint's choice.

    ``"auto"`` is bfloat16 for checkpoints stored in 16 bits (float16 or bfloat16; bfloat16 keeps
    float32's range, so float16 weights never overflow in it) and float32 otherwise.
    """
    if isinstance(dtype, str) and dtype == "auto":
        return jnp.bfloat16 if stored_dtype(directory) in _HALF_DTYPES else jnp.float32
    return jnp.dtype(dtype) if isinstance(dtype, str) else dtype
