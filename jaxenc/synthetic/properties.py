"""The planted stimulus properties of the synthetic twin, on frames of 0.1 s.

:func:`audio_properties` computes the audio properties (:data:`AUDIO_NAMES`) from a story's
synthesis parameters, so they are exact rather than estimated from the waveform;
:func:`semantic_frames` spreads the words' semantic vectors over the frames they cover. Both are
the oracle features a model of the twin's responses can recover.

Planted time scales. :func:`causal_mean` averages a sequence (frames or words) over a causal
window; the twin's ``audio_time_scale`` and ``semantic_context`` make the voxels respond to the
properties averaged that way, and the planted feature sources of the sweeps
(:func:`jaxenc.pipeline.planted_features`) average them over each window of the audio window
sweep, or over the :func:`planted_layer_words` of each layer of the *planted language model*
(layer ``L`` averages the last ``4**L`` words: deeper layers integrate longer contexts, as
language models' deeper layers do), so the sweeps' best window and layer are known.
"""

from __future__ import annotations

import numpy as np

from jaxenc.synthetic.stimulus import Story
from jaxenc.synthetic.words import CONTROL_RATE, NEUTRAL_FORMANTS, Vocabulary

__all__ = [
    "FRAME_PERIOD",
    "AUDIO_NAMES",
    "frame_average",
    "audio_properties",
    "semantic_frames",
    "causal_mean",
    "planted_layer_words",
]

# Period of the planted property frames, in seconds (frame k is centred on k * FRAME_PERIOD).
FRAME_PERIOD = 0.1
_FRAME_HOP = round(FRAME_PERIOD * CONTROL_RATE)

# Names of the planted audio properties, the columns of audio_properties().
AUDIO_NAMES = (
    "loudness",
    "voicing",
    "pitch",
    "formant1",
    "formant2",
    "formant3",
    "frication",
    "brightness",
    "onset",
)

# Words averaged by layer L of the planted language model: PLANTED_LAYER_BASE ** L.
PLANTED_LAYER_BASE = 4

# Scales that bring every planted audio property to order 1 (they enter the neural drive as is).
_PITCH_SCALE = 4.0
_FORMANT_CENTRE = np.array(NEUTRAL_FORMANTS)
_FORMANT_SCALE = np.array([200.0, 500.0, 400.0])
_FRICATION_SCALE = 2.0
_ONSET_LAG = 5
_ONSET_SCALE = 2.0


def frame_average(values: np.ndarray) -> np.ndarray:
    """Average control-rate values over frames of :data:`FRAME_PERIOD` centred on their times.

    Frame ``k`` (time ``k * FRAME_PERIOD`` seconds from sound onset) averages the control
    frames whose centres lie within ``FRAME_PERIOD / 2`` of it; control frames before sound
    onset count as 0 (silence).

    Parameters
    ----------
    values : ndarray of shape (n_control, ...)
        ``n_control`` a multiple of ``FRAME_PERIOD * CONTROL_RATE``.

    Returns
    -------
    ndarray of shape (n_control // 10, ...)
    """
    n_out = values.shape[0] // _FRAME_HOP
    half = _FRAME_HOP // 2
    padded = np.concatenate(
        [np.zeros((half,) + values.shape[1:]), values[: values.shape[0] - half]]
    )
    return padded.reshape((n_out, _FRAME_HOP) + values.shape[1:]).mean(axis=1)


def audio_properties(story: Story, base_f0: float) -> np.ndarray:
    """The planted audio properties of a story on the frame grid, computed from its parameters.

    Columns (:data:`AUDIO_NAMES`), each scaled to order 1 and 0 in silence: loudness (total
    amplitude), voicing (voiced share of the amplitude), pitch (log2 f0 / base_f0, times 4,
    where voiced), formant1-3 (centred and scaled formant frequencies, where voiced),
    frication (noise amplitude), brightness (centred noise brightness, where there is noise),
    onset (rise of loudness over 50 ms).

    Parameters
    ----------
    story : Story
    base_f0 : float
        The speaker's mean f0, in Hz.

    Returns
    -------
    ndarray of shape (n_frames, len(AUDIO_NAMES)), float64
        Frame ``k`` is at ``k * FRAME_PERIOD`` seconds from sound onset.
    """
    c = story.controls
    voiced, noise = c["voiced"], c["noise"]
    loudness = np.sqrt(voiced**2 + noise**2)
    total = voiced + noise
    voicing = np.divide(voiced, total, out=np.zeros_like(total), where=total > 0)
    is_voiced = voiced > 0
    formants = np.stack([c["f1"], c["f2"], c["f3"]], axis=1)  # [control, formant]
    formants = is_voiced[:, None] * (formants - _FORMANT_CENTRE) / _FORMANT_SCALE
    rise = loudness - np.concatenate([np.zeros(_ONSET_LAG), loudness[:-_ONSET_LAG]])
    columns = [
        loudness,
        voicing,
        is_voiced * _PITCH_SCALE * np.log2(c["f0"] / base_f0),
        formants[:, 0],
        formants[:, 1],
        formants[:, 2],
        _FRICATION_SCALE * noise,
        (noise > 0) * 2.0 * (c["brightness"] - 0.5),
        _ONSET_SCALE * np.maximum(rise, 0.0),
    ]
    return frame_average(np.stack(columns, axis=1))


def semantic_frames(story: Story, vocabulary: Vocabulary, context: int = 1) -> np.ndarray:
    """Semantic events of a story on the frame grid.

    Each word contributes its semantic vector over its duration: frame ``k`` holds the sum of
    the vectors of the words it overlaps, each weighted by the fraction of the frame covered.

    Parameters
    ----------
    story : Story
    vocabulary : Vocabulary
    context : int
        Words each word's vector is averaged over (:func:`causal_mean`): 1, its own vector.

    Returns
    -------
    ndarray of shape (n_frames, n_semantic), float64
    """
    n_semantic = vocabulary.semantic.shape[1]
    per_control = np.zeros((story.n_frames, n_semantic))
    lengths = story.word_end - story.word_start
    word_of = np.repeat(np.arange(lengths.size), lengths)
    offset = np.arange(word_of.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    vectors = causal_mean(vocabulary.semantic[story.word_ids], context)
    per_control[story.word_start[word_of] + offset] = vectors[word_of]
    return frame_average(per_control)


def causal_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Running mean of each row with the ``n - 1`` rows before it (fewer at the start).

    ``out[i] = mean(values[max(0, i - n + 1) : i + 1])``: over frames, the properties averaged
    over the preceding ``n`` frames; over words, each word with its ``n - 1`` predecessors.

    Parameters
    ----------
    values : ndarray of shape (n_rows, ...)
    n : int
        Rows per window, at least 1 (1 returns ``values``).

    Returns
    -------
    ndarray of shape (n_rows, ...), float64
    """
    values = np.asarray(values, dtype=np.float64)
    if n == 1:
        return values
    sums = np.cumsum(np.concatenate([np.zeros((1,) + values.shape[1:]), values]), axis=0)
    end = np.arange(1, values.shape[0] + 1)
    start = np.maximum(end - n, 0)
    counts = (end - start).reshape((-1,) + (1,) * (values.ndim - 1))
    return (sums[end] - sums[start]) / counts


def planted_layer_words(layer: int) -> int:
    """Words averaged by ``layer`` of the planted language model: ``4 ** layer`` (layer 0: the word alone)."""
    return PLANTED_LAYER_BASE ** int(layer)

