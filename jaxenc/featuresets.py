"""Feature sets and feature sources by name: the one place their names are declared.

A *feature set* of the table is a modality (``"audio"``, ``"semantic"``) or their
concatenation (``"audio+semantic"``). A *feature source* is where one modality's features come
from: the table's model at its table layer, another layer of it (the layer sweep), another
model (the model-size sweep), or the audio model over another window (the window sweep).
Sources are values, never strings parsed back: their labels in tables and file names are
derived from them (:attr:`FeatureSource.name`).

Features travel as ``{story: (times, values)}`` (:data:`FeatureSet`): time stamps in seconds
from sound onset (word midpoints or frame times) and the matching rows, so planted features of
the synthetic twin, Whisper frames and LLaMA word vectors all flow through the same alignment.
This module imports nothing of jaxenc but its errors, so every layer may use its names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from jaxenc.errors import ConfigError

__all__ = [
    "AUDIO",
    "SEMANTIC",
    "JOINT",
    "MODALITIES",
    "FEATURE_SETS",
    "FeatureSet",
    "FeatureSource",
    "modalities",
]

AUDIO = "audio"
SEMANTIC = "semantic"
# Audio and semantic designs side by side, audio first.
JOINT = f"{AUDIO}+{SEMANTIC}"
MODALITIES = (AUDIO, SEMANTIC)
# Feature sets of the table, in the order the paper's Table 1 reads them.
FEATURE_SETS = (AUDIO, SEMANTIC, JOINT)

# story -> (times (n_samples,) seconds from sound onset, values (n_samples, n_features))
FeatureSet = Mapping[str, tuple[np.ndarray, np.ndarray]]


def modalities(feature_set: str) -> tuple[str, ...]:
    """The modalities of a feature set, in design column order (``JOINT`` -> audio, semantic).

    Raises
    ------
    ConfigError
        A name not in :data:`FEATURE_SETS`.
    """
    if feature_set == JOINT:
        return MODALITIES
    if feature_set in MODALITIES:
        return (feature_set,)
    raise ConfigError(f"unknown feature set {feature_set!r}; expected one of {list(FEATURE_SETS)}")


@dataclass(frozen=True)
class FeatureSource:
    """Where one modality's features come from.

    Attributes
    ----------
    modality : str
        :data:`AUDIO` or :data:`SEMANTIC`.
    model : str
        ``""``: the table's model of that modality; otherwise the label of another model
        (an entry of the model-size sweep).
    layer : int or None
        None: the model's table layer; otherwise that hidden layer (the layer sweep).
    window : float or None
        None: the table's audio window; otherwise seconds of audio context before each chunk
        (``audio.context_s``, the window sweep; audio only), extracted on its own.
    """

    modality: str
    model: str = ""
    layer: int | None = None
    window: float | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ConfigError(f"unknown modality {self.modality!r}; expected one of {list(MODALITIES)}")
        if self.window is not None and (self.modality != AUDIO or not self.window > 0):
            raise ConfigError(f"a window must be positive seconds of an audio source, got {self.modality!r} "
                              f"window {self.window!r}")

    @property
    def extraction(self) -> str:
        """Key of the extraction it reads in the run's feature index (one per model and window)."""
        key = f"{self.modality}/{self.model}" if self.model else self.modality
        return key if self.window is None else f"{key}/{self.window:g}s"

    @property
    def name(self) -> str:
        """Its label in tables and file names: ``"semantic"``, ``"semantic/L3"``,
        ``"semantic/llama-7b"``, ``"audio/8s"``."""
        return self.extraction if self.layer is None else f"{self.extraction}/L{self.layer}"
