"""Speech synthesis of the synthetic twin: a story's parameters -> its stimulus wav file.

Vowels and voiced consonants are formant wave functions at the story's f0, consonants are shaped
noise; the parameters per 10 ms control frame come from :class:`~jaxenc.synthetic.stimulus.Story`,
from which the planted audio properties are computed too.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile

from jaxenc import conventions
from jaxenc.synthetic.stimulus import Story
from jaxenc.synthetic.words import CONTROL_RATE

__all__ = ["synthesize_audio"]

# Formant wave function synthesis: relative formant amplitudes and bandwidth (Hz).
_FORMANT_AMPLITUDE = (1.0, 0.6, 0.35)
_FORMANT_BANDWIDTH = 80.0
# Gain from synthesis amplitude to full scale, and the recording's noise floor (full scale).
_OUTPUT_GAIN = 0.15
_NOISE_FLOOR = 3e-4
# Control frames synthesised at once, bounding memory for real-length stories (20 s).
_BLOCK_FRAMES = 2000


def synthesize_audio(path, story: Story, rng: np.random.Generator, sample_rate: int) -> None:
    """Synthesise a story's speech and write it as a 2-channel int16 wav file.

    Vowels and voiced consonants are formant wave functions: at every glottal pulse (rate f0)
    each formant starts a damped sinusoid, which gives harmonics of f0 shaped by formant peaks.
    Consonant noise is white noise tilted between a low-pass and a high-pass first difference
    by the phone's brightness. Amplitudes ramp linearly over each 10 ms control frame; pitch,
    formants and brightness are held per control frame, the glottal phase running on
    continuously. The work goes by blocks of 20 s, so memory stays bounded for real-length
    stories.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written as WAV whatever its extension).
    story : Story
    rng : numpy.random.Generator
        Source of the noise.
    sample_rate : int
        In Hz, a multiple of :data:`CONTROL_RATE`.
    """
    hop = sample_rate // CONTROL_RATE
    c = {k: v.astype(np.float32) for k, v in story.controls.items()}
    # Glottal cycles completed at the start of every control frame; f0 is constant within one.
    cycles = np.concatenate([[0.0], np.cumsum(story.controls["f0"] * (hop / sample_rate))])
    start_phase = np.mod(cycles[:-1], 1.0).astype(np.float32)
    step = (c["f0"] / np.float32(sample_rate))[:, None]  # [control, 1] cycles per sample
    inverse_f0 = (1.0 / c["f0"])[:, None]
    in_frame = np.arange(hop, dtype=np.float32)[None, :]
    ramp = (np.arange(1, hop + 1, dtype=np.float32) / hop)[None, :]
    previous = {"voiced": c["voiced"][:1], "noise": c["noise"][:1]}
    last_noise = np.zeros((1,), dtype=np.float32)
    with soundfile.SoundFile(
        os.fspath(path),
        "w",
        samplerate=sample_rate,
        channels=conventions.AUDIO_CHANNELS,
        subtype="PCM_16",
        format="WAV",
    ) as out:
        for begin in range(0, story.n_frames, _BLOCK_FRAMES):
            frames = slice(begin, begin + _BLOCK_FRAMES)
            amplitude = {}
            for key in ("voiced", "noise"):
                now = c[key][frames]
                before = np.concatenate([previous[key], now[:-1]])
                previous[key] = now[-1:]
                # [control, sample in frame]
                amplitude[key] = before[:, None] + (now - before)[:, None] * ramp

            phase = start_phase[frames, None] + in_frame * step[frames]
            phase -= np.floor(phase)
            since_pulse = phase * inverse_f0[frames]  # seconds, [control, sample]
            two_pi_tau = np.float32(2 * np.pi) * since_pulse
            wave = _FORMANT_AMPLITUDE[0] * np.sin(two_pi_tau * c["f1"][frames, None])
            wave += _FORMANT_AMPLITUDE[1] * np.sin(two_pi_tau * c["f2"][frames, None])
            wave += _FORMANT_AMPLITUDE[2] * np.sin(two_pi_tau * c["f3"][frames, None])
            wave *= np.exp(np.float32(-np.pi * _FORMANT_BANDWIDTH) * since_pulse)

            white = rng.standard_normal(wave.shape, dtype=np.float32)
            shifted = np.concatenate([last_noise, white.ravel()[:-1]]).reshape(white.shape)
            last_noise = white.ravel()[-1:]
            low, high = white + shifted, white - shifted
            noise = low + c["brightness"][frames, None] * (high - low)

            signal = amplitude["voiced"] * wave + amplitude["noise"] * noise
            signal += np.float32(_NOISE_FLOOR / _OUTPUT_GAIN) * white
            samples = np.round(signal.ravel() * np.float32(_OUTPUT_GAIN * 32767))
            samples = np.clip(samples, -32768, 32767).astype(np.int16)
            out.write(np.repeat(samples[:, None], conventions.AUDIO_CHANNELS, axis=1))

