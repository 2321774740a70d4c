"""Extraction over many stories, resumable: each story is computed once, then read from the cache.

:func:`extract_stories` is the generic loop; :func:`whisper_story_features` and
:func:`llama_story_features` bind it to the two extractors, with keys that hold every parameter
that changes the features. With a :class:`jaxenc.data.LeBelDataset` ``ds``::

    audio = functools.partial(ds.audio, sample_rate=16000)
    words = lambda story: (ds.words(story).midpoints, ds.words(story).label)

A killed run loses at most the story it was computing (see :mod:`jaxenc.features.cache`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxenc import precision as matmul
from jaxenc.errors import DataError
from jaxenc.features.audio import whisper_features
from jaxenc.features.cache import FeatureCache, FeatureKey
from jaxenc.features.semantic import check_context_words, llama_word_features

__all__ = ["extract_stories", "whisper_story_features", "llama_story_features"]

# Bumped whenever an extractor's output changes for the same parameters, so old entries miss.
WHISPER_EXTRACTOR = "whisper_features/1"
LLAMA_EXTRACTOR = "llama_word_features/1"


def extract_stories(
    cache: FeatureCache,
    stories: Sequence[str],
    make_key: Callable[[str], FeatureKey],
    compute: Callable[[str, tuple[int, ...]], tuple[np.ndarray, Mapping[int, np.ndarray]]],
    *,
    desc: str = "features",
    progress: bool = True,
) -> dict[str, FeatureKey]:
    """Make sure every story's features are in the cache, computing only what is missing.

    Parameters
    ----------
    cache : FeatureCache
    stories : sequence of str
    make_key : callable
        ``make_key(story) -> FeatureKey``.
    compute : callable
        ``compute(story, layers) -> (times, {layer: array})`` for the missing ``layers``.
    desc : str
        Label of the progress bar.
    progress : bool, default True
        Show a tqdm bar over stories; cached stories are skipped without loading anything.

    Returns
    -------
    dict of str to FeatureKey
        The key of each story, for :meth:`FeatureCache.read`.
    """
    keys = {story: make_key(story) for story in stories}
    bar = tqdm(stories, desc=desc, unit="story", disable=not progress)
    n_cached = 0
    for story in bar:
        key = keys[story]
        missing = cache.missing_layers(key)
        if not missing:
            n_cached += 1
            bar.set_postfix(cached=n_cached)
            continue
        # Only the missing layers are computed; layers committed earlier stay as they are.
        times, features = compute(story, missing)
        cache.put(key.with_layers(missing), times, {layer: features[layer] for layer in missing})
    return keys


def _with_input(params: dict, inputs: Mapping[str, str] | None, story: str) -> dict:
    """The key parameters of one story, with its input file's digest when given."""
    return params if inputs is None else {**params, "input_sha256": inputs[story]}


def _dtype_names(module) -> dict:
    """The module's compute and parameter dtypes and the matrix-product precision it runs at."""
    params = jax.tree.leaves(nnx.state(module, nnx.Param))
    return {"compute_dtype": np.dtype(module.dtype).name, "param_dtype": np.dtype(params[0].dtype).name,
            "precision": matmul.resolve(module.precision, module.dtype, "extraction precision")}


def whisper_story_features(
    cache: FeatureCache,
    module,
    feature_extractor,
    audio: Callable[[str], tuple[np.ndarray, int]],
    stories: Sequence[str],
    *,
    model: str,
    revision: str,
    layers: Sequence[int],
    context_s: float = 16.0,
    chunk_s: float = 0.1,
    stride_s: float = 0.1,
    input_s: float = 30.0,
    batch_size: int = 32,
    dtype=np.float32,
    progress: bool = True,
    mesh=None,
    axis: str = "data",
    inputs: Mapping[str, str] | None = None,
) -> dict[str, FeatureKey]:
    """Whisper features of many stories into the cache (see :func:`whisper_features`).

    Parameters
    ----------
    cache : FeatureCache
    module : jaxenc.nn.WhisperEncoder
    feature_extractor : WhisperFeatureExtractor or LogMelFrontend
    audio : callable
        ``audio(story) -> (waveform, sample_rate)``, mono at 16 kHz; called only for stories
        not yet cached.
    stories : sequence of str
    model, revision : str
        Checkpoint identity for the key (see :func:`jaxenc.features.checkpoint_revision`).
    layers : sequence of int
    context_s, chunk_s, stride_s, input_s : float
        Window parameters, in seconds.
    batch_size : int
        Windows per encoder call (not part of the key).
    dtype : numpy dtype
        Dtype the features are stored in.
    progress : bool
        Show progress bars.
    mesh, axis
        Data-parallel extraction over a device mesh (not part of the key).
    inputs : mapping of str to str, optional
        Each story's content digest of the file its features are computed from (see
        :mod:`jaxenc.provenance`), part of its key: a changed file misses the cache.

    Returns
    -------
    dict of str to FeatureKey
        Feature times are window ends, in seconds from sound onset.
    """
    params = {
        "context_s": context_s,
        "chunk_s": chunk_s,
        "stride_s": stride_s,
        "input_s": input_s,
        "feature_size": int(np.asarray(feature_extractor.mel_filters).shape[1]),
        "sampling_rate": feature_extractor.sampling_rate,
        "n_fft": feature_extractor.n_fft,
        "hop_length": feature_extractor.hop_length,
        "dtype": dtype,
        **_dtype_names(module),
    }

    def make_key(story):
        return FeatureKey(model, revision, WHISPER_EXTRACTOR, _with_input(params, inputs, story), story,
                          tuple(layers))

    def compute(story, missing):
        waveform, sample_rate = audio(story)
        return whisper_features(
            module,
            feature_extractor,
            waveform,
            sample_rate,
            layers=missing,
            context_s=context_s,
            chunk_s=chunk_s,
            stride_s=stride_s,
            input_s=input_s,
            batch_size=batch_size,
            dtype=dtype,
            story=story,
            progress=progress,
            mesh=mesh,
            axis=axis,
        )

    return extract_stories(cache, stories, make_key, compute, desc=f"whisper {model}", progress=progress)


def llama_story_features(
    cache: FeatureCache,
    module,
    tokenizer,
    words: Callable[[str], tuple[np.ndarray, Sequence[str]]],
    stories: Sequence[str],
    *,
    model: str,
    revision: str,
    layers: Sequence[int],
    context_words=(256, 512),
    batch_size: int = 16,
    pad_multiple: int = 64,
    dtype=np.float32,
    progress: bool = True,
    mesh=None,
    axis: str = "data",
    inputs: Mapping[str, str] | None = None,
) -> dict[str, FeatureKey]:
    """LLaMA word features of many stories into the cache (see :func:`llama_word_features`).

    Parameters
    ----------
    cache : FeatureCache
    module : jaxenc.nn.LlamaModel
    tokenizer : transformers fast tokenizer
    words : callable
        ``words(story) -> (times, words)``: each word's time in seconds from sound onset (the
        word midpoints, by the Huth-lab convention) and the words themselves.
    stories : sequence of str
    model, revision : str
        Checkpoint identity for the key (see :func:`jaxenc.features.checkpoint_revision`); the
        tokenizer should come from the same checkpoint.
    layers : sequence of int
    context_words : (int, int) or int
        The paper's grow-and-reset look-back ``(lookback1, lookback2)``, or a fixed look-back.
    batch_size, pad_multiple : int
        Batching (not part of the key).
    dtype : numpy dtype
        Dtype the features are stored in.
    progress : bool
        Show progress bars.
    mesh, axis
        Data-parallel extraction over a device mesh (not part of the key).
    inputs : mapping of str to str, optional
        Each story's content digest of the file its features are computed from (see
        :mod:`jaxenc.provenance`), part of its key: a changed file misses the cache.

    Returns
    -------
    dict of str to FeatureKey
    """
    # The tokenizer is hashed too: one loaded from elsewhere than the checkpoint changes the ids.
    tokenizer_sha256 = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
    params = {
        "context_words": check_context_words(context_words),
        "dtype": dtype,
        "tokenizer_sha256": tokenizer_sha256,
        **_dtype_names(module),
    }

    def make_key(story):
        return FeatureKey(model, revision, LLAMA_EXTRACTOR, _with_input(params, inputs, story), story,
                          tuple(layers))

    def compute(story, missing):
        times, story_words = words(story)
        times = np.asarray(times, np.float64)
        if times.shape != (len(story_words),):
            raise DataError(
                f"{times.shape[0] if times.ndim else 0} word times for {len(story_words)} words, "
                "expected one time per word",
                story=story,
            )
        features = llama_word_features(
            module,
            tokenizer,
            [str(w) for w in story_words],
            layers=missing,
            context_words=context_words,
            batch_size=batch_size,
            pad_multiple=pad_multiple,
            dtype=dtype,
            story=story,
            progress=progress,
            mesh=mesh,
            axis=axis,
        )
        return times, features

    return extract_stories(cache, stories, make_key, compute, desc=f"llama {model}", progress=progress)
