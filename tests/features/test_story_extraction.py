"""Story-level extraction with the real tiny models: keys, cache hits, and checkpoint revisions."""

import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxenc.ckpt import load_llama
from jaxenc.errors import DataError
from jaxenc.features import (
    FeatureCache,
    checkpoint_revision,
    llama_story_features,
    llama_word_features,
    whisper_features,
    whisper_story_features,
)

SR = 16000
WINDOW = dict(context_s=1.0, chunk_s=0.1, stride_s=0.1, input_s=1.2)


def test_whisper_stories_are_computed_once(whisper_checkpoint, waveform, tmp_path):
    directory, module, _, fe = whisper_checkpoint
    waves = {"alpha": waveform(1.7, seed=2), "bravo": waveform(2.1, seed=3)}
    loaded = []

    def audio(story):
        loaded.append(story)
        return waves[story], SR

    cache = FeatureCache(tmp_path)
    kwargs = dict(
        model="tiny-whisper",
        revision=checkpoint_revision(directory),
        layers=(1, 2),
        batch_size=8,
        progress=False,
        **WINDOW,
    )
    keys = whisper_story_features(cache, module, fe, audio, ["alpha", "bravo"], **kwargs)
    assert loaded == ["alpha", "bravo"]
    assert whisper_story_features(cache, module, fe, audio, ["alpha", "bravo"], **kwargs) == keys
    assert loaded == ["alpha", "bravo"]

    times, features = cache.read(keys["bravo"])
    ref_times, ref = whisper_features(module, fe, waves["bravo"], SR, layers=(1, 2), batch_size=8, **WINDOW)
    np.testing.assert_array_equal(times, ref_times)
    # Read back against recomputed by the same float32 program on the same audio: equal up to how
    # XLA compiles the two calls, a few u of the O(1) features (1e-6 is 16 u); another story's or
    # layer's features differ by their own size.
    for layer in (1, 2):
        np.testing.assert_allclose(features[layer], ref[layer], atol=1e-6, rtol=1e-6)
    params = dict(keys["alpha"].params)
    assert params["input_s"] == 1.2 and params["compute_dtype"] == "float32" and params["feature_size"] == 80


def test_llama_stories_are_computed_once_with_word_times(llama_checkpoint, story_words, tmp_path):
    directory, module, _, tokenizer = llama_checkpoint
    stories = {"alpha": story_words[:12], "bravo": story_words[5:]}
    loaded = []

    def words(story):
        loaded.append(story)
        w = stories[story]
        return np.arange(len(w)) * 0.4 + 0.2, w

    cache = FeatureCache(tmp_path)
    kwargs = dict(
        model="tiny-llama",
        revision=checkpoint_revision(directory),
        layers=(2,),
        context_words=4,
        batch_size=8,
        pad_multiple=16,
        progress=False,
    )
    keys = llama_story_features(cache, module, tokenizer, words, ["alpha", "bravo"], **kwargs)
    llama_story_features(cache, module, tokenizer, words, ["alpha", "bravo"], **kwargs)
    assert loaded == ["alpha", "bravo"]
    times, features = cache.read(keys["alpha"])
    np.testing.assert_allclose(times, np.arange(12) * 0.4 + 0.2)
    ref = llama_word_features(
        module, tokenizer, stories["alpha"], layers=(2,), context_words=4, batch_size=8, pad_multiple=16
    )
    np.testing.assert_allclose(features[2], ref[2], atol=1e-6, rtol=1e-6)  # same program, as above

    with pytest.raises(DataError, match="story 'charlie'.*one time per word"):
        llama_story_features(
            cache, module, tokenizer, lambda s: (np.zeros(3), ["a", "b"]), ["charlie"], **kwargs
        )


def test_checkpoint_revision_follows_content_not_location(whisper_checkpoint, tmp_path):
    directory = whisper_checkpoint[0]
    revision = checkpoint_revision(directory)
    assert revision.startswith("sha256:") and len(revision) == len("sha256:") + 64
    copy = shutil.copytree(directory, tmp_path / "copy")
    assert checkpoint_revision(copy) == revision
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert checkpoint_revision(copy) != revision


def test_every_whisper_setting_keys_its_own_features(whisper_checkpoint, waveform, tmp_path):
    """Changing any window setting computes anew (the audio is loaded again) and gives other
    features; the first entry stays readable. (The compute dtype is keyed as for LLaMA below.)"""
    directory, module, _, fe = whisper_checkpoint
    loaded = []

    def audio(story):
        loaded.append(story)
        return waveform(1.5, seed=4), SR

    cache = FeatureCache(tmp_path)
    base = dict(model="tiny-whisper", revision=checkpoint_revision(directory), layers=(2,), batch_size=8,
                progress=False, **WINDOW)
    first = whisper_story_features(cache, module, fe, audio, ["alpha"], **base)["alpha"]
    changes = [{"context_s": 0.5}, {"chunk_s": 0.05}, {"stride_s": 0.2}, {"input_s": 1.4}]
    seen = {first.digest: cache.read(first)[1][2]}
    for change in changes:
        key = whisper_story_features(cache, module, fe, audio, ["alpha"], **{**base, **change})["alpha"]
        assert key.digest not in seen, change
        seen[key.digest] = cache.read(key)[1][2]
    assert len(loaded) == 1 + len(changes)
    values = list(seen.values())
    assert all(v.shape != values[0].shape or not np.allclose(v, values[0]) for v in values[1:])
    np.testing.assert_array_equal(cache.read(first)[1][2], values[0])


def test_every_llama_setting_keys_its_own_features(llama_checkpoint, story_words, tmp_path):
    """The context scheme (an int, the paper's pair, another pair) and the compute dtype each
    key their own entry and recompute."""
    directory, module, _, tokenizer = llama_checkpoint
    loaded = []

    def words(story):
        loaded.append(story)
        return np.arange(12) * 0.4, story_words[:12]

    cache = FeatureCache(tmp_path)
    base = dict(model="tiny-llama", revision=checkpoint_revision(directory), layers=(2,), batch_size=8,
                pad_multiple=16, progress=False)
    bf16 = load_llama(directory, dtype=jnp.bfloat16)[0]
    settings = [(4, module), ((4, 8), module), ((2, 8), module), ((4, 8), bf16)]
    digests = set()
    for context_words, model in settings:
        key = llama_story_features(cache, model, tokenizer, words, ["alpha"], context_words=context_words,
                                   **base)["alpha"]
        digests.add(key.digest)
    assert len(digests) == len(settings) and len(loaded) == len(settings)
    assert dict(key.params)["context_words"] == (4, 8) and dict(key.params)["compute_dtype"] == "bfloat16"
