"""Small random-weight Whisper and LLaMA checkpoints that jaxenc can write offline, for the demo.

Pretrained Whisper and LLaMA weights cannot be downloaded on a machine without network, so the
demo extracts its features with small models whose weights are drawn here from a seed:
:func:`write_default_whisper` and :func:`write_default_llama` write ordinary Hugging Face
checkpoint folders (``config.json``, ``model.safetensors``, the front end or tokenizer files),
which :func:`jaxenc.ckpt.load_whisper_encoder`, :func:`jaxenc.ckpt.load_llama` and transformers'
own ``from_pretrained`` all read. Real use points the same loaders at Hub ids or local copies of
the pretrained models instead.

A random network is a fixed, rich nonlinear function of its input: a linear readout of its hidden
states can still recover the stimulus properties a voxel responds to, which is what the demo's
synthetic twin plants. The weights carry no knowledge of speech or language, so any structure the
demo recovers through them comes from the stimulus, not from pretraining.

Every folder also holds ``jaxenc_default.json`` (seed, sizes, a note that the weights are random);
a folder whose ``jaxenc_default.json`` matches the request is reused as it is. Folders are written
under a temporary name and renamed when complete, so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError
from jaxenc.store import named_os_errors

__all__ = [
    "DEFAULT_WHISPER_SIZES",
    "DEFAULT_LLAMA_SIZES",
    "DEFAULT_WHISPER_LAYERS",
    "DEFAULT_WHISPER_LAYER",
    "DEFAULT_LLAMA_LAYERS",
    "DEFAULT_LLAMA_LAYER",
    "DEFAULT_WHISPER_WINDOW",
    "REFERENCE_WHISPER_WINDOW",
    "DEFAULT_LLAMA_WINDOW",
    "write_default_whisper",
    "write_default_llama",
]

# Version of the files written here; a folder written by another version is rewritten.
FORMAT_VERSION = 1

# Shape of the default Whisper encoder (field names of transformers.WhisperConfig). Narrow on
# purpose: the ridge fits of the demo cost grow with the width of every delayed feature set.
DEFAULT_WHISPER_SIZES = {
    "d_model": 64,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 256,
    # 1500 positions take Whisper's full 30 s input (jaxenc.features.whisper_features' default).
    "max_source_positions": 1500,
}
# Shape of the default LLaMA (field names of transformers.LlamaConfig); the vocabulary size
# follows from the words the tokenizer is built on.
DEFAULT_LLAMA_SIZES = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}
# Hidden states the demo extracts: all of them (0 is the input of the first layer), so layer
# sweeps come free.
DEFAULT_WHISPER_LAYERS = tuple(range(DEFAULT_WHISPER_SIZES["encoder_layers"] + 1))
DEFAULT_LLAMA_LAYERS = tuple(range(DEFAULT_LLAMA_SIZES["num_hidden_layers"] + 1))
# The layer of the main table: the last encoder layer, as in the paper.
DEFAULT_WHISPER_LAYER = DEFAULT_WHISPER_LAYERS[-1]
# The paper's LLaMA layer 12 of 32 sits about a third of the way up the stack: here the first
# layer's output, which mixes each word with its context.
DEFAULT_LLAMA_LAYER = 1
# Keyword arguments of jaxenc.features.whisper_story_features for the default encoder: 1 s of
# causal context in 1.12 s of input keeps extraction of the demo twin to seconds; the paper's
# 16 s context in 30 s of input costs about 30 times more.
DEFAULT_WHISPER_WINDOW = {"context_s": 1.0, "chunk_s": 0.1, "stride_s": 0.1, "input_s": 1.12}
# The windows of the reference code (Antonello et al. 2023) and the paper, for checkpoints:
# 16 s of context before each 0.1 s chunk, every 0.1 s, padded to Whisper's 30 s input.
REFERENCE_WHISPER_WINDOW = {"context_s": 16.0, "chunk_s": 0.1, "stride_s": 0.1, "input_s": 30.0}
# Keyword arguments of jaxenc.features.llama_story_features for the default LLaMA: one token per
# word, so windows are padded in steps of 16 tokens.
DEFAULT_LLAMA_WINDOW = {"pad_multiple": 16}

_MARKER = "jaxenc_default.json"
_NOTE = (
    "Random weights drawn by jaxenc.features.defaults from the seed below: a stand-in for a "
    "pretrained model where none can be downloaded. It knows nothing of speech or language."
)
# Whisper's log-mel front end has 80 bins for every checkpoint before large-v3.
_N_MELS = 80
_SPECIALS = ("<unk>", "<s>", "</s>")
# Metaspace's stand-in for the space before a word (sentencepiece's convention).
_SPACE = "\u2581"


def _check_sizes(kind: str, defaults: Mapping[str, int], sizes: Mapping, directory: Path) -> dict[str, int]:
    unknown = sorted(set(sizes) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {kind} sizes {unknown}; expected some of {sorted(defaults)}", path=directory)
    merged = {**defaults, **sizes}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{kind} size {name}={value!r}, expected a positive integer", path=directory)
    return {name: int(value) for name, value in merged.items()}


def _normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's fixed position table: sines then cosines of geometric timescales 1..10000."""
    increment = np.log(10000.0) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv_timescales[None, :]  # [positions, channels // 2]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _is_complete(directory: Path, marker: dict, files: tuple[str, ...]) -> bool:
    try:
        found = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return found == marker and all((directory / name).is_file() for name in files)


def _write_atomically(directory, marker: dict, files: tuple[str, ...], write: Callable[[Path], None]) -> Path:
    """Write a checkpoint folder through ``write(tmp)`` unless an identical one is already there."""
    directory = Path(directory).expanduser().absolute()
    if _is_complete(directory, marker, files):
        return directory
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError("exists and is not a folder; expected a checkpoint folder", path=directory)
        # Only a folder this module wrote (or an empty one) is ever replaced.
        if any(directory.iterdir()) and not (directory / _MARKER).is_file():
            raise ConfigError(
                f"folder holds files but no {_MARKER}; expected an empty folder or one written by "
                "jaxenc.features.defaults",
                path=directory,
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    from safetensors import SafetensorError

    try:
        with named_os_errors(directory, (SafetensorError,)):
            write(tmp)
            (tmp / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def _save_config(config, directory: Path) -> None:
    # transformers records its own version in config.json; dropping it keeps the bytes identical
    # across transformers releases, since the version only informs, never changes, loading.
    values = config.to_dict()
    values.pop("transformers_version", None)
    (directory / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_default_whisper(directory, *, seed: int = 0, **sizes) -> Path:
    """Write a random-weight Whisper encoder checkpoint folder (nothing is downloaded).

    Files: ``config.json`` (a ``transformers.WhisperConfig`` of 80 mel bins and the given
    encoder shape; the decoder fields describe a one-layer decoder that is not stored),
    ``model.safetensors`` (the ``encoder.*`` tensors of a ``WhisperModel``, float32),
    ``preprocessor_config.json`` (``WhisperFeatureExtractor(feature_size=80)``, read by
    :meth:`jaxenc.features.LogMelFrontend.from_pretrained` and by transformers) and
    ``jaxenc_default.json``. Load with :func:`jaxenc.ckpt.load_whisper_encoder`.

    Initialisation, drawn with ``numpy.random.default_rng(seed)``: every convolution and linear
    weight is normal with variance 1 / fan_in (fan_in = in_channels x width for the
    convolutions), biases are zero, layer norms have unit scale and zero shift, and the position
    table is Whisper's fixed sinusoids. Variance-preserving weights keep every residual branch
    about as large as the stream it adds to, so each layer adds its own random nonlinear
    function of the window; transformers' ``normal(0, 0.02)`` (about 1 / sqrt(fan_in) only for
    widths near 2500) would make the branches of a 64-wide model almost vanish, so every layer
    would repeat the convolutional front end.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder to write; created with its parents. An existing folder is reused when its
        ``jaxenc_default.json`` matches, replaced when it was written by this function with other
        parameters, and refused when it holds other files.
    seed : int, default 0
        Seed of the weights.
    **sizes : int
        Overrides of :data:`DEFAULT_WHISPER_SIZES` (``d_model``, ``encoder_layers``,
        ``encoder_attention_heads``, ``encoder_ffn_dim``, ``max_source_positions``).

    Returns
    -------
    Path
        The checkpoint folder (absolute).

    Raises
    ------
    ConfigError
        Unknown or non-positive sizes, ``d_model`` not a multiple of the heads or below 4, or a
        folder that cannot be written; the error names the folder.
    """
    path = Path(directory).expanduser().absolute()
    sizes = _check_sizes("Whisper", DEFAULT_WHISPER_SIZES, sizes, path)
    m, heads = sizes["d_model"], sizes["encoder_attention_heads"]
    if m % heads or m < 4 or m % 2:
        raise ConfigError(
            f"d_model={m} with encoder_attention_heads={heads}: expected an even d_model of at least 4 "
            "that is a multiple of the heads",
            path=path,
        )
    marker = {"format_version": FORMAT_VERSION, "model": "whisper", "seed": int(seed), "sizes": sizes, "note": _NOTE}

    def write(tmp: Path) -> None:
        import transformers
        from safetensors.numpy import save_file

        f = sizes["encoder_ffn_dim"]
        config = transformers.WhisperConfig(
            num_mel_bins=_N_MELS,
            d_model=m,
            encoder_layers=sizes["encoder_layers"],
            encoder_attention_heads=heads,
            encoder_ffn_dim=f,
            max_source_positions=sizes["max_source_positions"],
            decoder_layers=1,
            decoder_attention_heads=heads,
            decoder_ffn_dim=f,
            vocab_size=64,
            max_target_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
            architectures=["WhisperModel"],
        )
        rng = np.random.default_rng(seed)
        tensors = {
            "encoder.conv1.weight": _normal(rng, (m, _N_MELS, 3), _N_MELS * 3),
            "encoder.conv1.bias": np.zeros(m, np.float32),
            "encoder.conv2.weight": _normal(rng, (m, m, 3), m * 3),
            "encoder.conv2.bias": np.zeros(m, np.float32),
            "encoder.embed_positions.weight": _sinusoids(sizes["max_source_positions"], m),
        }
        for i in range(sizes["encoder_layers"]):
            prefix = f"encoder.layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                tensors[f"{prefix}self_attn.{proj}.weight"] = _normal(rng, (m, m), m)
                if proj != "k_proj":
                    tensors[f"{prefix}self_attn.{proj}.bias"] = np.zeros(m, np.float32)
            tensors[f"{prefix}fc1.weight"] = _normal(rng, (f, m), m)
            tensors[f"{prefix}fc1.bias"] = np.zeros(f, np.float32)
            tensors[f"{prefix}fc2.weight"] = _normal(rng, (m, f), f)
            tensors[f"{prefix}fc2.bias"] = np.zeros(m, np.float32)
            for norm in ("self_attn_layer_norm", "final_layer_norm"):
                tensors[f"{prefix}{norm}.weight"] = np.ones(m, np.float32)
                tensors[f"{prefix}{norm}.bias"] = np.zeros(m, np.float32)
        tensors["encoder.layer_norm.weight"] = np.ones(m, np.float32)
        tensors["encoder.layer_norm.bias"] = np.zeros(m, np.float32)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        _save_config(config, tmp)
        transformers.WhisperFeatureExtractor(feature_size=_N_MELS).save_pretrained(tmp)

    files = ("config.json", "model.safetensors", "preprocessor_config.json")
    return _write_atomically(path, marker, files, write)


def _vocabulary(words: Iterable[str], directory: Path) -> list[str]:
    if isinstance(words, str):
        raise ConfigError("words is one string; expected an iterable of words or transcripts", path=directory)
    unique = set()
    for text in words:
        if not isinstance(text, str):
            raise ConfigError(f"words holds {type(text).__name__} {text!r}; expected str", path=directory)
        unique.update(text.split())
    if not unique:
        raise ConfigError("no words to build the tokenizer from", path=directory)
    if any(_SPACE in word for word in unique):
        raise ConfigError(f"a word holds {_SPACE!r}, the tokenizer's word marker", path=directory)
    return sorted(unique)


def _word_tokenizer(vocabulary: list[str]):
    """A BPE tokenizer in which every word of ``vocabulary`` is one token.

    The merges only ever extend a word's prefix by its next character (``▁a`` + ``b`` ->
    ``▁ab``), so a known word merges into one token and an unknown one into its longest known
    prefix followed by single characters (``<unk>`` for characters never seen). Built by hand
    rather than trained, so the same words always give the same files.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for char in [_SPACE] + sorted({c for word in vocabulary for c in word}):
        vocab.setdefault(char, len(vocab))
    merges = []
    for word in vocabulary:
        prefix = _SPACE
        for char in word:
            longer = prefix + char
            if longer not in vocab:
                vocab[longer] = len(vocab)
                merges.append((prefix, char))
            prefix = longer
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="first")
    # LLaMA's convention: a beginning-of-sequence token before every text.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def write_default_llama(directory, words: Iterable[str], *, seed: int = 0, **sizes) -> Path:
    """Write a random-weight LLaMA checkpoint folder with a tokenizer built on ``words``.

    Files: ``config.json`` (a ``transformers.LlamaConfig``; ``vocab_size`` is the tokenizer's),
    ``model.safetensors`` (the tensors of a bare ``LlamaModel``: ``embed_tokens.weight``,
    ``layers.*``, ``norm.weight``; float32), the tokenizer files of a transformers fast tokenizer
    (``tokenizer.json``, ``tokenizer_config.json``) and ``jaxenc_default.json``. Load with
    :func:`jaxenc.ckpt.load_llama` and :func:`jaxenc.ckpt.load_tokenizer`.

    The tokenizer is a BPE of the sentencepiece/Metaspace design (``▁`` marks the start of a
    word, ``<s>`` opens every text) whose merges make every distinct word of ``words`` a single
    token, so the random model still tells all of them apart; a word it was not built on splits
    into its longest known prefix and single characters (``<unk>`` for an unseen character).

    Initialisation, drawn with ``numpy.random.default_rng(seed)``: token embeddings are standard
    normal (unit root mean square, like the normalised input every branch sees); every linear
    weight is normal with variance 1 / fan_in; RMSNorm scales are one. Variance-preserving
    weights make each layer add a random nonlinear function of the current word and its context
    that is as large as what it adds to, so every hidden state mixes word identity and context;
    transformers' ``normal(0, 0.02)`` would leave a 256-wide model's embeddings buried under
    nearly uniform attention.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder to write; reused, replaced or refused as in :func:`write_default_whisper`.
    words : iterable of str
        Words or transcripts (split on whitespace) the tokenizer is built on; their order and
        repetitions do not matter.
    seed : int, default 0
        Seed of the weights.
    **sizes : int
        Overrides of :data:`DEFAULT_LLAMA_SIZES` (``hidden_size``, ``intermediate_size``,
        ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
        ``max_position_embeddings``).

    Returns
    -------
    Path
        The checkpoint folder (absolute).

    Raises
    ------
    ConfigError
        Unknown or non-positive sizes, heads that do not divide ``hidden_size`` (or key/value
        heads that do not divide the heads), an odd head width, no words, or a folder that
        cannot be written; the error names the folder.
    """
    path = Path(directory).expanduser().absolute()
    sizes = _check_sizes("LLaMA", DEFAULT_LLAMA_SIZES, sizes, path)
    m, heads, kv_heads = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_key_value_heads"]
    if m % heads or heads % kv_heads or (m // heads) % 2:
        raise ConfigError(
            f"hidden_size={m}, num_attention_heads={heads}, num_key_value_heads={kv_heads}: expected "
            "heads dividing hidden_size into an even head width and key/value heads dividing the heads",
            path=path,
        )
    vocabulary = _vocabulary(words, path)
    words_sha256 = hashlib.sha256("\n".join(vocabulary).encode()).hexdigest()
    marker = {
        "format_version": FORMAT_VERSION, "model": "llama", "seed": int(seed), "sizes": sizes,
        "n_words": len(vocabulary), "words_sha256": words_sha256, "note": _NOTE,
    }

    def write(tmp: Path) -> None:
        import transformers
        from safetensors.numpy import save_file

        tokenizer = _word_tokenizer(vocabulary)
        n_vocab = tokenizer.get_vocab_size()
        f, d = sizes["intermediate_size"], m // heads
        config = transformers.LlamaConfig(
            vocab_size=n_vocab,
            hidden_size=m,
            intermediate_size=f,
            num_hidden_layers=sizes["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=sizes["max_position_embeddings"],
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
            architectures=["LlamaModel"],
        )
        rng = np.random.default_rng(seed)
        tensors = {"embed_tokens.weight": rng.standard_normal((n_vocab, m)).astype(np.float32)}
        for i in range(sizes["num_hidden_layers"]):
            prefix = f"layers.{i}."
            tensors[f"{prefix}self_attn.q_proj.weight"] = _normal(rng, (heads * d, m), m)
            tensors[f"{prefix}self_attn.k_proj.weight"] = _normal(rng, (kv_heads * d, m), m)
            tensors[f"{prefix}self_attn.v_proj.weight"] = _normal(rng, (kv_heads * d, m), m)
            tensors[f"{prefix}self_attn.o_proj.weight"] = _normal(rng, (m, heads * d), heads * d)
            tensors[f"{prefix}mlp.gate_proj.weight"] = _normal(rng, (f, m), m)
            tensors[f"{prefix}mlp.up_proj.weight"] = _normal(rng, (f, m), m)
            tensors[f"{prefix}mlp.down_proj.weight"] = _normal(rng, (m, f), f)
            tensors[f"{prefix}input_layernorm.weight"] = np.ones(m, np.float32)
            tensors[f"{prefix}post_attention_layernorm.weight"] = np.ones(m, np.float32)
        tensors["norm.weight"] = np.ones(m, np.float32)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        _save_config(config, tmp)
        wrapped = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        wrapped.save_pretrained(tmp)

    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return _write_atomically(path, marker, files, write)
