"""Story-level extraction with the real tiny models: keys, cache hits, and checkpoint revisions."""

import shutil

import numpy as np
import pytest

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
    np.testing.assert_allclose(features[2], ref[2], atol=1e-6, rtol=1e-6)

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
