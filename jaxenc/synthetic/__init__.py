"""The synthetic twin of ds003020: the real layout, written with a planted ground truth.

:func:`write_synthetic` writes, under a root folder, exactly the files that
:class:`~jaxenc.data.LeBelDataset` reads from the real dataset (LeBel et al. 2023)::

    derivative/respdict.json                              story -> TRs acquired
    derivative/preprocessed_data/<SUBJECT>/<story>.hf5    "data" float64 (respdict - 20, n_voxels)
                                                          + "individual_repeats" for the test story
    derivative/TextGrids/<story>.TextGrid                 Praat long format, tiers "phone", "word"
    stimuli/<story>.wav                                   2-channel int16, 44.1 kHz by default

and beside them, in ``synthetic_truth/``, the planted truth: a :class:`SyntheticTruth`, which
saves and loads its own files (:mod:`jaxenc.synthetic.truth` lists them; :func:`load_truth`
reads them back).

The modules follow the making of a twin: :mod:`~jaxenc.synthetic.config` (what determines it,
the presets), :mod:`~jaxenc.synthetic.words` (phones and pseudo-words),
:mod:`~jaxenc.synthetic.stimulus` (stories and their timing), :mod:`~jaxenc.synthetic.audio`
(speech synthesis), :mod:`~jaxenc.synthetic.properties` (the planted audio and semantic
properties), :mod:`~jaxenc.synthetic.responses` (latents, voxels, noise, noise ceilings),
:mod:`~jaxenc.synthetic.truth` (the truth and its files), :mod:`~jaxenc.synthetic.cortex`
(with the ``cortex`` option: voxels on a pycortex subject's cortex, the audio voxels in one of
its ROIs), :mod:`~jaxenc.synthetic.files` (atomic writes, checked reads),
:mod:`~jaxenc.synthetic.writer` (the dataset on disk, the command line). The readers of
:mod:`jaxenc.data` read a twin as they read the real dataset; nothing of :mod:`jaxenc.data` imports this package.

What is planted
---------------
Timing. A story of respdict ``R`` TRs has ``(R - 10) * TR`` seconds of audio (the real
adollshouse, R = 261, lasts 503.6 s), so the Huth-lab grid of ``R - PAD`` TRs centred at
``TR * i - SOUND_START + TR / 2`` seconds ends 1 s before the audio does; the hf5 rows are grid
rows ``[TRIM_START : R - PAD - TRIM_END]``. Every boundary lies on a 10 ms grid.

Words. A vocabulary of ``n_vocab`` lowercase pseudo-words built from syllables of ARPAbet-like
phones (shorter words more frequent, Zipf-Mandelbrot frequencies ``~ 1 / (rank + 2.7)``). Each
word has a latent semantic vector (``n_semantic`` standard normal entries). A story draws its
words with probabilities tilted towards a topic vector that drifts smoothly over the word
sequence (Gaussian width ``topic_words`` words), so semantic content has slow, multi-TR
structure. Words come in phrases of 2-10, separated by pauses of 0.15-1.4 s labelled "sp",
"br" or left empty, from about 1 s after sound onset to 1 s before the end; phones tile each
word. The TextGrids hold exactly these phones and words.

Audio. Per phone: vowels are voiced (formant wave functions at f0 with three formants, a
loudness, pitch and formant shift that depend on the word); consonants are shaped noise, voiced
ones with a low formant buzz; pauses are silent (plus a -70 dB noise floor). Prosody is drawn
per phrase independently of the words (pitch offset and declination, loudness offset and
slope), so audio and semantic properties are only weakly correlated (mainly through speech
versus silence). The planted audio properties (:data:`AUDIO_NAMES`: loudness, voicing, pitch,
formant1-3, frication, brightness, onset) are computed from the synthesis parameters, averaged
over 0.1 s frames centred at ``k * 0.1`` s from sound onset.

Semantic events. On the same 0.1 s frames, the sum of the semantic vectors of the words each
frame overlaps, weighted by the fraction of the frame each covers.

Responses. On a 0.1 s grid from the first trigger, the neural drive of a voxel is
``audio @ w_a + semantic @ w_s + interaction @ w_i``, where ``interaction`` has
``n_interaction`` columns ``(a_k - mean) * (s_k - mean)``, products of a projection of the audio
properties and one of the semantic events, each smoothed by a Gaussian of
``interaction_smoothing`` seconds (slow enough that TR-level delayed features can learn them),
minus the part of each product that a least-squares fit on the story's audio and semantic
frames explains (the two share the speech-versus-silence envelope, so a raw product would be
partly linear). With ``interaction_depth = 2`` each interaction column is instead the product
of two of the products ``k`` and ``k + 1`` (each scaled to unit variance), residualised the
same way: a two-stage composition for the data-scaling curves of deeper networks.
The drive is convolved with SPM's canonical double-gamma HRF and sampled at
the rows' TR centres, giving ``signal = latent_rows @ weights``. Voxel classes
(:class:`VoxelClass`): noise (no signal), audio, semantic, audio+semantic (linear, audio share
U(0.25, 0.75)), interaction.
Weights are scaled so the signal has unit variance pooled over all stories (each centred);
per-voxel SNR (signal std / noise std) is log-uniform in ``snr_range``. Noise is Gaussian,
AR(1) over rows with coefficient ``noise_ar``. Each story, and each repeat of the test story
(same signal, independent noise), is z-scored per voxel; the test story's ``data`` is the mean
of its z-scored repeats.

Noise ceiling. The saved ``cc_max`` is the correlation between the noiseless signal and the
mean of N repeats, ``sqrt(SP / (SP + noise_std**2 / N))`` with SP the signal variance over the
test story's rows: Schoppe et al.'s (2016) ``1 / sqrt(1 + (TP / SP - 1) / N)`` with the
expected single-repeat power ``TP = SP + noise_std**2``. It ignores the per-repeat z-scoring,
which rescales each repeat by nearly the same factor.

Everything is deterministic given the config (the seed included). A re-run on a complete tree
is a no-op; an interrupted run resumes, since every file is written under a temporary name and
renamed when complete. Usage::

    python -m jaxenc.synthetic /tmp/ds003020-synth --preset tiny   # or: jaxenc synth ...
"""


from jaxenc.synthetic.config import PRESETS, SyntheticConfig, real_respdict
from jaxenc.synthetic.properties import AUDIO_NAMES
from jaxenc.synthetic.responses import CLASS_NAMES, VoxelClass
from jaxenc.synthetic.truth import FORMAT_VERSION, TRUTH_DIR, PlantedStimulus, SyntheticTruth
from jaxenc.synthetic.writer import main, write_synthetic

# The reader of a written twin's truth (SyntheticTruth.load), under its familiar name.
load_truth = SyntheticTruth.load

__all__ = [
    "SyntheticConfig",
    "PRESETS",
    "SyntheticTruth",
    "PlantedStimulus",
    "VoxelClass",
    "CLASS_NAMES",
    "AUDIO_NAMES",
    "FORMAT_VERSION",
    "TRUTH_DIR",
    "real_respdict",
    "write_synthetic",
    "load_truth",
    "main",
]
