"""Features of the stimuli: Whisper and LLaMA hidden states, extracted once into a cache.

``whisper_features`` runs the Whisper encoder over causal sliding windows of a story's audio;
``llama_word_features`` runs LLaMA over every word with its preceding words (the paper's
grow-and-reset look-back, one causal pass per window of words). Both take arrays and word lists
(not the dataset), run all requested layers in one forward pass with few shapes, optionally
data parallel over a device mesh, and return numpy arrays. ``FeatureCache`` stores them in
tensorstore zarr v3 arrays with atomic commits and provenance; ``whisper_story_features``, ``llama_story_features`` and
``extract_stories`` fill it story by story and resume a killed run where it stopped.
"""

from jaxenc.features.audio import (
    LogMelFrontend,
    story_log_mel,
    whisper_features,
    window_log_mel,
    window_times,
)
from jaxenc.features.cache import FeatureCache, FeatureKey, checkpoint_revision
from jaxenc.features.extract import extract_stories, llama_story_features, whisper_story_features
from jaxenc.features.semantic import WordTokens, context_starts, llama_word_features, word_tokens

__all__ = [
    "LogMelFrontend",
    "window_times",
    "story_log_mel",
    "window_log_mel",
    "whisper_features",
    "WordTokens",
    "word_tokens",
    "context_starts",
    "llama_word_features",
    "FeatureKey",
    "FeatureCache",
    "checkpoint_revision",
    "extract_stories",
    "whisper_story_features",
    "llama_story_features",
]
