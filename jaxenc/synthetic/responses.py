"""Responses of the synthetic twin: neural drive, HRF, voxels, noise and noise ceilings.

Every voxel's signal is a weighted sum of a few latent time courses (the planted audio
properties, the semantic events, and audio x semantic interaction terms), each convolved with
the canonical HRF and sampled at the TR centres of the response rows, so a subject of any size
is simulated chunk by chunk over voxels from a (n_rows, n_latent) matrix per story.
"""

from __future__ import annotations

import enum

import numpy as np
from scipy import signal, stats
from scipy.ndimage import gaussian_filter1d

from jaxenc import conventions
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.synthetic.properties import FRAME_PERIOD

__all__ = [
    "VoxelClass",
    "CLASS_NAMES",
    "FINE_PERIOD",
    "canonical_hrf",
    "row_fine_indices",
    "story_latents",
    "pooled_covariance",
    "draw_voxels",
    "simulate_responses",
    "true_cc_max",
]

# Step of the time grid on which the neural drive is built and convolved, in seconds: the
# period of the planted property frames, so that frame k is fine point k + SOUND_START / step.
FINE_PERIOD = FRAME_PERIOD
# Length of the HRF kernel, in seconds.
HRF_LENGTH = 32.0


class VoxelClass(enum.IntEnum):
    """What drives a synthetic voxel; the integer codes are those saved in the truth files."""

    NOISE = 0
    AUDIO = 1
    SEMANTIC = 2
    AUDIO_SEMANTIC = 3
    INTERACTION = 4


# Human-readable name of each VoxelClass code, in code order.
CLASS_NAMES = ("noise", "audio", "semantic", "audio+semantic", "interaction")


def canonical_hrf(dt: float = FINE_PERIOD, length: float = HRF_LENGTH) -> np.ndarray:
    """SPM's canonical double-gamma haemodynamic response function.

    ``h(t) = g(t; 6) - g(t; 16) / 6`` with ``g(t; k)`` the gamma density of shape ``k`` and
    unit scale: a response peaking about 5 s after a brief event and an undershoot around 15 s.

    Parameters
    ----------
    dt : float
        Sampling period in seconds.
    length : float
        Kernel length in seconds.

    Returns
    -------
    ndarray of shape (round(length / dt),)
        ``h`` at times ``0, dt, 2 dt, ...``, scaled to unit sum.
    """
    t = np.arange(round(length / dt)) * dt
    h = stats.gamma.pdf(t, 6.0) - stats.gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


def row_fine_indices(respdict: int) -> np.ndarray:
    """Fine-grid points at the TR centres of a story's hf5 rows.

    Fine point ``j`` is at ``j * FINE_PERIOD - SOUND_START`` seconds from sound onset: the grid
    starts at the first simulated trigger.

    Parameters
    ----------
    respdict : int
        TRs acquired for the story.

    Returns
    -------
    ndarray of shape (respdict - 20,), int
    """
    grid_rows = np.arange(conventions.TRIM_START, respdict - conventions.PAD - conventions.TRIM_END)
    return np.round((conventions.TR * grid_rows + conventions.TR / 2) / FINE_PERIOD).astype(int)


def story_latents(
    audio: np.ndarray,
    semantic: np.ndarray,
    respdict: int,
    audio_projection: np.ndarray,
    semantic_projection: np.ndarray,
    smoothing: float,
    depth: int = 1,
) -> np.ndarray:
    """Latent time courses of a story, HRF-convolved and sampled at its response rows.

    Columns: the audio properties, the semantic events, then one interaction term per row of
    the projections: ``(a * s)`` with ``a = smooth(audio @ p_a) - mean`` and
    ``s = smooth(semantic @ p_s) - mean``, Gaussian smoothing of width ``smoothing`` seconds
    and means over the audio's duration, both 0 before sound onset; each product is then
    replaced by its residual after a least-squares fit on the story's audio and semantic frames
    and a constant, so that no instantaneous linear function of the stimulus explains it.
    With ``depth = 2`` the interaction terms are two-stage: term ``k`` is the product of the
    first-stage products ``k`` and ``k + 1`` (cyclically; each first divided by its standard
    deviation over the story, then centred), a degree-4 function of four projections, before
    the same residualisation.

    Parameters
    ----------
    audio : ndarray of shape (n_frames, n_audio)
        Planted audio properties, frame ``k`` at ``k * FINE_PERIOD`` s from sound onset.
    semantic : ndarray of shape (n_frames, n_semantic)
        Semantic events on the same frames.
    respdict : int
        TRs acquired for the story; the frames must cover its audio, ``(respdict - PAD) * TR -
        SOUND_START`` seconds.
    audio_projection : ndarray of shape (n_interaction, n_audio)
    semantic_projection : ndarray of shape (n_interaction, n_semantic)
    smoothing : float
        Gaussian width in seconds.
    depth : {1, 2}
        Stages of the interaction terms (:attr:`jaxenc.synthetic.SyntheticConfig.interaction_depth`).

    Returns
    -------
    ndarray of shape (respdict - 20, n_audio + n_semantic + n_interaction), float64
    """
    onset = round(conventions.SOUND_START / FINE_PERIOD)
    sigma = smoothing / FINE_PERIOD
    a = gaussian_filter1d(audio @ audio_projection.T, sigma, axis=0, mode="constant")
    s = gaussian_filter1d(semantic @ semantic_projection.T, sigma, axis=0, mode="constant")
    interaction = (a - a.mean(axis=0)) * (s - s.mean(axis=0))  # [frame, k]
    if depth == 2:
        first = interaction / interaction.std(axis=0)
        second = first * np.roll(first, -1, axis=1)  # [frame, k]: first-stage k times k + 1
        interaction = second - second.mean(axis=0)
    # Both projections share the speech-versus-silence envelope, so the raw product carries a
    # linear copy of the audio and semantic drives; keep only what no linear model can explain.
    linear = np.concatenate([audio, semantic, np.ones((audio.shape[0], 1))], axis=1)
    coefficients, *_ = np.linalg.lstsq(linear, interaction, rcond=None)
    interaction -= linear @ coefficients
    drive = np.concatenate([audio, semantic, interaction], axis=1)  # [frame, latent]
    drive = np.concatenate([np.zeros((onset, drive.shape[1])), drive])  # [fine, latent]
    # The fine grid runs from the first simulated trigger to the audio's end.
    n_fine = round((respdict - conventions.PAD) * conventions.TR / FINE_PERIOD)
    if drive.shape[0] != n_fine:
        raise AlignmentError(
            f"{drive.shape[0] - onset} frames do not cover a story of respdict {respdict}"
        )
    convolved = signal.fftconvolve(drive, canonical_hrf()[:, None], axes=0)[: drive.shape[0]]
    return convolved[row_fine_indices(respdict)]


def pooled_covariance(latents: list[np.ndarray]) -> np.ndarray:
    """Covariance of latent rows pooled over stories, each centred on its own mean.

    Responses are z-scored per story, so only within-story variation is signal.

    Parameters
    ----------
    latents : list of ndarray of shape (n_rows_i, n_latent)

    Returns
    -------
    ndarray of shape (n_latent, n_latent)
    """
    centred = np.concatenate([x - x.mean(axis=0) for x in latents])
    return centred.T @ centred / centred.shape[0]


def draw_voxels(
    rng: np.random.Generator,
    n_voxels: int,
    class_fractions,
    snr_range,
    n_audio: int,
    n_semantic: int,
    covariance: np.ndarray,
    audio_voxels: np.ndarray | None = None,
) -> dict:
    """Draw the planted voxels of one subject.

    Class counts follow ``class_fractions`` (largest remainders), in random voxel order; with
    ``audio_voxels``, those voxels are the audio class and the other classes fill the rest in
    proportion to their fractions (largest remainders, random order). Weights
    are standard normal on the latents of the class (audio, semantic, both, or interaction),
    scaled so the signal has unit variance under ``covariance``; an audio+semantic voxel mixes
    unit-variance audio and semantic parts with an audio share drawn from U(0.25, 0.75). SNR
    (signal std over noise std) is log-uniform in ``snr_range``; noise voxels have no signal
    and noise std 1.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_voxels : int
    class_fractions : sequence of 5 floats
        Fractions of the :class:`VoxelClass` codes 0..4.
    snr_range : (float, float)
    n_audio, n_semantic : int
        Sizes of the first two latent blocks; the rest are interaction latents.
    covariance : ndarray of shape (n_latent, n_latent)
        Pooled covariance of the latent rows.
    audio_voxels : ndarray of shape (n_voxels,), bool, optional
        The voxels of the audio class (an auditory ROI of a cortical mask,
        :mod:`jaxenc.synthetic.cortex`); ``class_fractions``' audio entry is then not used.

    Returns
    -------
    dict
        ``voxel_class`` (n_voxels,) int8, ``weights`` (n_latent, n_voxels), ``snr`` and
        ``noise_std`` (n_voxels,), ``part_variance`` (n_voxels, 3): pooled variance of the
        audio, semantic and interaction parts of the signal (they sum to 1 up to the
        covariance between parts).

    Raises
    ------
    ValueError
        ``audio_voxels`` of another shape than ``(n_voxels,)``.
    ConfigError
        With ``audio_voxels``, voxels outside them but only the audio class has a fraction.
    """
    n_latent = covariance.shape[0]
    blocks = (
        slice(0, n_audio),
        slice(n_audio, n_audio + n_semantic),
        slice(n_audio + n_semantic, n_latent),
    )
    fractions = np.asarray(class_fractions, dtype=float)
    if audio_voxels is None:
        counts = _class_counts(fractions, n_voxels)
        voxel_class = rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int8)
    else:
        audio_voxels = np.asarray(audio_voxels, dtype=bool)
        if audio_voxels.shape != (n_voxels,):
            raise ValueError(f"audio_voxels must have shape ({n_voxels},), got {audio_voxels.shape}")
        others = np.flatnonzero(~audio_voxels)
        rest = np.where(np.arange(fractions.size) == VoxelClass.AUDIO, 0.0, fractions)
        if others.size and not rest.sum() > 0:
            raise ConfigError("class_fractions: the voxels outside the audio ROI need a class other than audio")
        counts = _class_counts(rest / rest.sum() if others.size else rest, others.size)
        voxel_class = np.full(n_voxels, int(VoxelClass.AUDIO), dtype=np.int8)
        voxel_class[others] = rng.permutation(np.repeat(np.arange(len(counts)), counts))

    def unit(weights, block):
        # Scale each voxel's weights on one block to unit signal variance.
        part = covariance[block, block]
        variance = np.einsum("lv,lm,mv->v", weights, part, weights)
        return weights / np.sqrt(variance)

    weights = np.zeros((n_latent, n_voxels))
    single = {VoxelClass.AUDIO: 0, VoxelClass.SEMANTIC: 1, VoxelClass.INTERACTION: 2}
    for code, b in single.items():
        v = np.flatnonzero(voxel_class == code)
        block = blocks[b]
        weights[block, v] = unit(rng.standard_normal((block.stop - block.start, v.size)), block)
    v = np.flatnonzero(voxel_class == VoxelClass.AUDIO_SEMANTIC)
    share = rng.uniform(0.25, 0.75, v.size)
    audio = unit(rng.standard_normal((n_audio, v.size)), blocks[0])
    semantic = unit(rng.standard_normal((n_semantic, v.size)), blocks[1])
    weights[blocks[0], v] = np.sqrt(share) * audio
    weights[blocks[1], v] = np.sqrt(1 - share) * semantic

    signal_voxels = voxel_class != VoxelClass.NOISE
    total = np.einsum("lv,lm,mv->v", weights, covariance, weights)
    weights[:, signal_voxels] /= np.sqrt(total[signal_voxels])
    part_variance = np.stack(
        [np.einsum("lv,lm,mv->v", weights[b], covariance[b, b], weights[b]) for b in blocks],
        axis=1,
    )

    low, high = np.log(snr_range[0]), np.log(snr_range[1])
    snr = np.where(signal_voxels, np.exp(rng.uniform(low, high, n_voxels)), 0.0)
    noise_std = np.where(signal_voxels, 1.0 / np.where(signal_voxels, snr, 1.0), 1.0)
    return {
        "voxel_class": voxel_class,
        "weights": weights,
        "snr": snr,
        "noise_std": noise_std,
        "part_variance": part_variance,
    }


def _class_counts(fractions: np.ndarray, n: int) -> np.ndarray:
    """Voxels of each class among ``n``: ``fractions * n`` rounded by largest remainders."""
    counts = np.floor(fractions * n).astype(int)
    remainder = fractions * n - counts
    counts[np.argsort(-remainder, kind="stable")[: n - counts.sum()]] += 1
    return counts


def simulate_responses(
    latent_rows: np.ndarray,
    weights: np.ndarray,
    noise_std: np.ndarray,
    rng: np.random.Generator,
    noise_ar: float,
    n_repeats: int | None = None,
) -> np.ndarray:
    """Responses of a chunk of voxels to one story, z-scored per voxel (and per repeat).

    Parameters
    ----------
    latent_rows : ndarray of shape (n_rows, n_latent)
        From :func:`story_latents`.
    weights : ndarray of shape (n_latent, n_voxels)
    noise_std : ndarray of shape (n_voxels,)
    rng : numpy.random.Generator
        Source of the noise.
    noise_ar : float
        AR(1) coefficient of the noise over rows; its marginal std stays ``noise_std``.
    n_repeats : int, optional
        Draw this many repeats sharing the signal, with independent noise.

    Returns
    -------
    ndarray of shape (n_rows, n_voxels), or (n_repeats, n_rows, n_voxels) with ``n_repeats``
    """
    clean = latent_rows @ weights  # [row, voxel]
    shape = clean.shape if n_repeats is None else (n_repeats,) + clean.shape
    noise = rng.standard_normal(shape)
    if noise_ar:
        gain = np.sqrt(1.0 - noise_ar**2)
        # In place, row by row (each row vectorised over voxels and repeats); the first row is
        # left as drawn, the stationary state, so every row has unit variance.
        for row in range(1, shape[-2]):
            noise[..., row, :] *= gain
            noise[..., row, :] += noise_ar * noise[..., row - 1, :]
    responses = clean + noise * noise_std
    responses -= responses.mean(axis=-2, keepdims=True)
    responses /= responses.std(axis=-2, keepdims=True)
    return responses


def true_cc_max(
    latent_rows: np.ndarray, weights: np.ndarray, noise_std: np.ndarray, n_repeats: int
) -> np.ndarray:
    """The noise ceiling of the repeat mean, from the planted signal and noise.

    ``cc_max = sqrt(SP / (SP + noise_std**2 / n_repeats))``: the correlation of the noiseless
    signal with the mean of ``n_repeats`` repeats, with SP the signal's variance over the test
    story's rows. It equals Schoppe et al.'s ``1 / sqrt(1 + (TP / SP - 1) / N)`` with the
    expected total power ``TP = SP + noise_std**2`` of one repeat.

    Parameters
    ----------
    latent_rows : ndarray of shape (n_rows, n_latent)
        Latent rows of the test story.
    weights : ndarray of shape (n_latent, n_voxels)
    noise_std : ndarray of shape (n_voxels,)
    n_repeats : int

    Returns
    -------
    ndarray of shape (n_voxels,)
        0 for voxels without signal.
    """
    covariance = pooled_covariance([latent_rows])
    signal_power = np.einsum("lv,lm,mv->v", weights, covariance, weights)
    return np.sqrt(signal_power / (signal_power + noise_std**2 / n_repeats))
