"""Stimulus audio of the LeBel stories: mono float32 waveforms at a chosen rate.

The ds003020 stimuli are 2-channel int16 wav files at 44.1 kHz; Whisper wants mono 16 kHz.
:func:`read_wav` reads through soundfile, averages the channels and resamples with soxr.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile
import soxr

from jaxenc import conventions
from jaxenc.errors import ConfigError, DataError, DataWarning

__all__ = ["read_wav", "MIN_SAMPLE_RATE"]

# Below this rate (Hz) a file cannot hold speech up to the 4 kHz that Whisper's features use.
MIN_SAMPLE_RATE = 8000


def read_wav(
    path,
    *,
    sample_rate: int | None = None,
    expected_rate: int = conventions.AUDIO_RATE,
    story: str | None = None,
) -> tuple[np.ndarray, int]:
    """Read a wav file as a mono float32 waveform.

    Channels are averaged. A file whose rate differs from ``expected_rate`` is resampled to it
    with a :class:`~jaxenc.errors.DataWarning`, so every story reaches later stages at the
    same rate; ``sample_rate`` then resamples (without warning) to the rate a model needs.
    Resampling uses soxr's high-quality filter; its slight overshoot near full scale is
    clipped so the result stays in [-1, 1] (a float file with samples beyond full scale is
    clipped too, with a warning).

    Parameters
    ----------
    path : str or os.PathLike
        The wav file (any format libsndfile reads).
    sample_rate : int, optional
        Rate of the returned waveform in Hz, e.g. 16000 for Whisper; default ``expected_rate``.
    expected_rate : int, default :data:`jaxenc.conventions.AUDIO_RATE`
        The rate the dataset's files should have, in Hz.
    story : str, optional
        Story named in errors and warnings; defaults to the file's stem.

    Returns
    -------
    waveform : ndarray of shape (n_samples,), float32
        Mono samples in [-1, 1].
    sample_rate : int
        Rate of ``waveform`` in Hz.

    Raises
    ------
    DataError
        If the file is missing or unreadable, holds no samples, has a rate below
        :data:`MIN_SAMPLE_RATE`, or holds non-finite samples.
    ConfigError
        If ``sample_rate`` or ``expected_rate`` is not an integer of at least
        :data:`MIN_SAMPLE_RATE`.
    """
    path = Path(path)
    story = path.stem if story is None else story
    for name, rate in (("sample_rate", sample_rate), ("expected_rate", expected_rate)):
        if rate is not None and (int(rate) != rate or rate < MIN_SAMPLE_RATE):
            raise ConfigError(
                f"{name} must be an integer of at least {MIN_SAMPLE_RATE} Hz, got {rate}",
                path=path,
                story=story,
            )
    if not path.is_file():
        raise DataError("audio file not found", path=path, story=story)
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"cannot read audio: {exc}", path=path, story=story) from exc
    if samples.shape[0] == 0:
        raise DataError("audio file holds zero samples", path=path, story=story)
    if file_rate < MIN_SAMPLE_RATE:
        raise DataError(
            f"sample rate {file_rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum",
            path=path,
            story=story,
        )
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise DataError(
            f"{int((~finite).sum())} non-finite samples, the first at {first / file_rate:.3f} s",
            path=path,
            story=story,
        )
    beyond = int((np.abs(samples) > 1.0).sum())
    if beyond:
        warnings.warn(
            f"story {story!r}, file {path}: {beyond} samples lie outside [-1, 1] and are clipped",
            DataWarning,
            stacklevel=2,
        )
    waveform = samples.mean(axis=1, dtype=np.float32)
    rate = file_rate
    if rate != expected_rate:
        warnings.warn(
            f"story {story!r}, file {path}: sample rate {rate} Hz instead of the expected "
            f"{expected_rate} Hz; resampling to {expected_rate} Hz",
            DataWarning,
            stacklevel=2,
        )
        waveform = soxr.resample(waveform, rate, expected_rate)
        rate = expected_rate
    target = expected_rate if sample_rate is None else int(sample_rate)
    if rate != target:
        waveform = soxr.resample(waveform, rate, target)
        rate = target
    return np.clip(waveform, -1.0, 1.0).astype(np.float32, copy=False), int(rate)
