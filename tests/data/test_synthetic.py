"""The synthetic twin of ds003020: real layout, determinism, and the planted truth.

The tiny preset is written once per module. The planted truth is checked against computations
written here (the Schoppe noise ceiling, an HRF from the gamma closed form with np.convolve,
least squares with numpy, spectra with scipy.signal.welch), never against the generator's
own functions.
"""

from __future__ import annotations

import json
import math
import os
import re

import h5py
import numpy as np
import pytest
import soundfile
from praatio import textgrid as praat_textgrid
from scipy import signal as sps

from jaxenc import conventions
from jaxenc.data import LeBelDataset
from jaxenc.data.synth_response import canonical_hrf, simulate_responses
from jaxenc.data.synth_stimulus import (
    PHONES,
    Story,
    make_story,
    make_vocabulary,
    synthesize_audio,
)
from jaxenc.data.synthetic import (
    AUDIO_NAMES,
    CLASS_NAMES,
    SyntheticConfig,
    VoxelClass,
    load_truth,
    main,
    real_respdict,
    write_synthetic,
)
from jaxenc.errors import ConfigError, DataError

TEST = conventions.TEST_STORY


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_tiny")
    return write_synthetic(root, SyntheticConfig.tiny(), progress=False)


def _small(**changes):
    """One subject, one 40 s training story and a 40 s test story."""
    fields = dict(
        subjects=("UTS01",),
        n_voxels=(40,),
        n_repeats=(3,),
        n_train_stories=1,
        fewer_stories=(),
        length_scale=0.01,
        min_respdict=30,
        n_vocab=50,
    )
    return SyntheticConfig.tiny(**{**fields, **changes})


def _hf5(root, subject, story):
    return root / "derivative" / "preprocessed_data" / subject / f"{story}.hf5"


def _read(path, key="data"):
    with h5py.File(path, "r") as file:
        return file[key][()]


def _hrf(dt=0.1, length=32.0):
    """SPM canonical HRF from the gamma density's closed form t^(k-1) e^-t / Gamma(k)."""
    t = np.arange(round(length / dt)) * dt
    gamma = lambda k: t ** (k - 1) * np.exp(-t) / math.gamma(k)  # noqa: E731
    return gamma(6) - gamma(16) / 6


def _convolved_at_rows(frames, respdict):
    """Frames at k * 0.1 s from sound onset -> HRF-convolved values at the hf5 row centres."""
    onset = round(conventions.SOUND_START / 0.1)
    n_fine = round((respdict - conventions.PAD) * conventions.TR / 0.1)
    fine = np.zeros((n_fine, frames.shape[1]))
    fine[onset : onset + frames.shape[0]] = frames
    hrf = _hrf()
    convolved = np.stack([np.convolve(fine[:, k], hrf)[:n_fine] for k in range(fine.shape[1])], 1)
    rows = np.arange(conventions.TRIM_START, respdict - conventions.PAD - conventions.TRIM_END)
    return convolved[np.round((conventions.TR * rows + conventions.TR / 2) / 0.1).astype(int)]


def _r2(regressors, responses):
    """In-sample R2 of an ordinary least-squares fit with intercept, per response column."""
    design = np.column_stack([regressors, np.ones(len(regressors))])
    coefficients, *_ = np.linalg.lstsq(design, responses, rcond=None)
    residual = responses - design @ coefficients
    return 1 - residual.var(axis=0) / responses.var(axis=0)


def _schoppe_cc_max(repeats):
    """Schoppe et al. 2016 noise ceiling of the repeat mean; repeats (N, n_rows, n_voxels)."""
    n = repeats.shape[0]
    total_power = repeats.var(axis=1, ddof=1).mean(axis=0)
    signal_power = (repeats.sum(axis=0).var(axis=0, ddof=1) - n * total_power) / (n * (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        cc_max = 1 / np.sqrt(1 + (total_power / signal_power - 1) / n)
    return np.where(signal_power > 0, cc_max, 0.0)


def test_files_have_the_real_paths_keys_dtypes_and_row_counts(tiny):
    root, config = tiny.root, tiny.config
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    real = real_respdict()
    assert respdict == {s: max(round(real[s] * 0.22), 70) for s in config.stories}
    assert TEST in respdict and len(respdict) == 4
    for subject, n_voxels in zip(config.subjects, config.n_voxels):
        folder = root / "derivative" / "preprocessed_data" / subject
        expected = set(config.subject_stories(subject)) | {TEST}
        assert {p.stem for p in folder.glob("*.hf5")} == expected
        for story in expected:
            with h5py.File(folder / f"{story}.hf5", "r") as file:
                rows = respdict[story] - 20
                assert file["data"].dtype == np.float64
                assert file["data"].shape == (rows, n_voxels)
                if story == TEST:
                    assert set(file) == {"data", "individual_repeats"}
                    assert file["individual_repeats"].dtype == np.float64
                    assert file["individual_repeats"].shape == (10, rows, n_voxels)
                else:
                    assert set(file) == {"data"}
    for story in config.stories:
        info = soundfile.info(str(root / "stimuli" / f"{story}.wav"))
        assert (info.format, info.subtype) == ("WAV", "PCM_16")
        assert (info.samplerate, info.channels) == (44100, 2)
        # (respdict - 10) * TR seconds: the real adollshouse (261 TRs) lasts 503.6 s.
        assert info.frames == (respdict[story] - 10) * 2 * 44100
    assert not list(root.rglob("*.partial"))


def test_textgrids_are_long_format_with_phone_and_word_tiers(tiny):
    for story in tiny.config.stories:
        path = tiny.root / "derivative" / "TextGrids" / f"{story}.TextGrid"
        text = path.read_text()
        assert text.startswith('File type = "ooTextFile"') and "intervals [1]:" in text
        grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
        assert list(grid.tierNames) == ["phone", "word"]
        duration = (tiny.respdict[story] - 10) * 2.0
        for name in ("phone", "word"):
            entries = grid.getTier(name).entries
            assert entries[0].start == 0 and entries[-1].end == pytest.approx(duration)
            assert all(a.end == pytest.approx(b.start) for a, b in zip(entries, entries[1:]))
        words = [e.label for e in grid.getTier("word").entries]
        assert {"", "sp", "br"} <= set(words)
        speech = [w for w in words if w not in conventions.NON_SPEECH_LABELS]
        assert all(re.fullmatch("[a-z]+", w) for w in speech)
        phones = {re.sub("[012]$", "", e.label) for e in grid.getTier("phone").entries}
        assert phones - conventions.NON_SPEECH_LABELS <= set(PHONES)


def test_phones_tile_words_within_one_second_of_the_edges(tiny):
    for story in tiny.config.stories:
        s = tiny.stimulus(story)
        assert s.word_start[0] >= 1.0 and s.word_end[-1] <= s.duration - 1.0
        assert np.all(s.word_start[1:] >= s.word_end[:-1])
        word_of_phone = np.searchsorted(s.word_end, s.phone_start, side="right")
        assert np.array_equal(np.unique(word_of_phone), np.arange(len(s.words)))
        first = np.searchsorted(word_of_phone, np.arange(len(s.words)))
        last = np.searchsorted(word_of_phone, np.arange(len(s.words)), side="right") - 1
        assert np.allclose(s.phone_start[first], s.word_start)
        assert np.allclose(s.phone_end[last], s.word_end)
        inner = np.flatnonzero(word_of_phone[1:] == word_of_phone[:-1])
        assert np.allclose(s.phone_end[inner], s.phone_start[inner + 1])


def test_repeats_average_to_data_and_every_story_is_zscored(tiny):
    for subject in tiny.subjects:
        for story in tiny.stories(subject):
            data = _read(_hf5(tiny.root, subject, story))
            np.testing.assert_allclose(data.mean(axis=0), 0, atol=1e-10)
            np.testing.assert_allclose(data.std(axis=0), 1, atol=1e-10)
        path = _hf5(tiny.root, subject, TEST)
        repeats, mean = _read(path, "individual_repeats"), _read(path)
        np.testing.assert_allclose(mean, repeats.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(repeats.mean(axis=1), 0, atol=1e-10)
        np.testing.assert_allclose(repeats.std(axis=1), 1, atol=1e-10)
        # The mean of z-scored repeats with independent noise has std below 1.
        assert np.all(mean.std(axis=0) < 1) and mean.std(axis=0).mean() < 0.9


def test_reader_round_trip(tiny):
    dataset = LeBelDataset(tiny.root)
    assert dataset.subjects == ["UTS01", "UTS02"]
    assert dataset.stories("UTS01") == ["adollshouse", "adventuresinsayingyes", "afatherscover"]
    assert dataset.stories("UTS02") == ["adollshouse", "adventuresinsayingyes"]
    for subject, n_voxels in zip(tiny.subjects, tiny.config.n_voxels):
        for story in dataset.stories(subject) + [TEST]:
            responses = dataset.responses(subject, story)
            assert responses.dtype == np.float32
            assert responses.shape == (tiny.respdict[story] - 20, n_voxels)
            expected = _read(_hf5(tiny.root, subject, story)).astype(np.float32)
            np.testing.assert_array_equal(responses, expected)
        assert dataset.test_repeats(subject).shape == (10, tiny.respdict[TEST] - 20, n_voxels)
        assert not dataset.bad_voxels(subject).any()
    for story in tiny.config.stories:
        planted = tiny.stimulus(story)
        words, phones = dataset.words(story), dataset.phones(story)
        assert list(words.label) == list(planted.words)
        np.testing.assert_allclose(words.start, planted.word_start, atol=1e-9)
        np.testing.assert_allclose(words.end, planted.word_end, atol=1e-9)
        assert list(phones.label) == list(planted.phones)
        np.testing.assert_allclose(phones.start, planted.phone_start, atol=1e-9)
        np.testing.assert_allclose(dataset.response_times(story), planted.row_times)
        waveform, rate = dataset.audio(story, sample_rate=16000)
        assert rate == 16000 and waveform.shape == (round(planted.duration * 16000),)


def test_truth_round_trip_and_voxel_classes(tiny):
    loaded = load_truth(tiny.root)
    assert loaded.config == SyntheticConfig.tiny()
    assert len(loaded.latent_names) == len(AUDIO_NAMES) + 12 + 4
    n_audio = len(AUDIO_NAMES)
    blocks = {
        VoxelClass.AUDIO: [slice(0, n_audio)],
        VoxelClass.SEMANTIC: [slice(n_audio, n_audio + 12)],
        VoxelClass.AUDIO_SEMANTIC: [slice(0, n_audio), slice(n_audio, n_audio + 12)],
        VoxelClass.INTERACTION: [slice(n_audio + 12, None)],
        VoxelClass.NOISE: [],
    }
    for subject, n_voxels in zip(tiny.subjects, tiny.config.n_voxels):
        for key in ("voxel_class", "weights", "snr", "noise_std", "cc_max", "part_variance"):
            saved, returned = getattr(loaded, key)[subject], getattr(tiny, key)[subject]
            np.testing.assert_array_equal(saved, returned)
        classes = tiny.voxel_class[subject]
        counts = np.bincount(classes, minlength=len(CLASS_NAMES))
        fractions = np.asarray(tiny.config.class_fractions)
        assert counts.sum() == n_voxels and np.all(np.abs(counts - fractions * n_voxels) < 1)
        for code, used in blocks.items():
            voxels = tiny.voxels_of(subject, code)
            mask = np.ones(len(loaded.latent_names), dtype=bool)
            for block in used:
                mask[block] = False
            assert np.all(tiny.weights[subject][np.ix_(mask, voxels)] == 0), CLASS_NAMES[code]
            assert np.all((tiny.cc_max[subject][voxels] == 0) == (code == VoxelClass.NOISE))
        snr = tiny.snr[subject][classes != VoxelClass.NOISE]
        assert snr.min() >= 0.5 and snr.max() <= 3.0


def test_noise_ceiling_matches_schoppe_estimate_from_repeats(tiny):
    for subject in tiny.subjects:
        repeats = _read(_hf5(tiny.root, subject, TEST), "individual_repeats")
        estimate, true = _schoppe_cc_max(repeats), tiny.cc_max[subject]
        signal_voxels = tiny.voxel_class[subject] != VoxelClass.NOISE
        # 10 repeats of 50 rows: the estimate is noisy per voxel but tracks the truth closely.
        assert np.corrcoef(estimate, true)[0, 1] > 0.9
        assert np.median(np.abs(estimate - true)[signal_voxels]) < 0.05
        assert estimate[~signal_voxels].mean() < 0.3 < true[signal_voxels].min()


def test_responses_carry_the_planted_signal_at_the_planted_snr(tiny):
    subject = "UTS01"
    weights, noise_std = tiny.weights[subject], tiny.noise_std[subject]
    signal_voxels = tiny.voxel_class[subject] != VoxelClass.NOISE
    for story in tiny.stories(subject):
        latents = tiny.stimulus(story).latent_rows
        clean = (latents - latents.mean(axis=0)) @ weights
        responses = _read(_hf5(tiny.root, subject, story))
        centred = responses - responses.mean(axis=0)
        r = (centred * clean).sum(0) / np.sqrt((centred**2).sum(0) * (clean**2).sum(0) + 1e-300)
        signal_var = clean.var(axis=0)
        expected = np.sqrt(signal_var / (signal_var + noise_std**2))
        # With ~60 rows the sampling error of r is about (1 - r^2) / sqrt(60) < 0.13.
        assert np.median(np.abs(r - expected)[signal_voxels]) < 0.06
        assert np.corrcoef(r[signal_voxels], expected[signal_voxels])[0, 1] > 0.8


def _design(truth, subject):
    """HRF-convolved planted audio and semantic frames at the rows of subject's stories."""
    audio, semantic, responses = [], [], []
    zscore = lambda x: (x - x.mean(0)) / x.std(0)  # noqa: E731
    for story in truth.stories(subject):
        planted = truth.stimulus(story)
        audio.append(zscore(_convolved_at_rows(planted.audio, planted.respdict)))
        semantic.append(zscore(_convolved_at_rows(planted.semantic, planted.respdict)))
        responses.append(_read(_hf5(truth.root, subject, story)))
    return np.concatenate(audio), np.concatenate(semantic), np.concatenate(responses)


def test_planted_features_explain_the_voxels_they_drive(tiny):
    subject = "UTS01"
    audio, semantic, responses = _design(tiny, subject)
    assert audio.shape[0] == sum(tiny.respdict[s] - 20 for s in tiny.stories(subject))

    def mean_r2(regressors, code):
        return _r2(regressors, responses[:, tiny.voxels_of(subject, code)]).mean()

    noise_audio = mean_r2(audio, VoxelClass.NOISE)
    noise_semantic = mean_r2(semantic, VoxelClass.NOISE)
    # Margins: audio-only and semantic-only voxels gain > 0.3 of R2 over noise voxels from
    # their own modality (about 0.5 observed), and > 0.15 more than from the other modality.
    assert mean_r2(audio, VoxelClass.AUDIO) > noise_audio + 0.3
    assert mean_r2(semantic, VoxelClass.SEMANTIC) > noise_semantic + 0.3
    assert mean_r2(audio, VoxelClass.AUDIO) > mean_r2(semantic, VoxelClass.AUDIO) + 0.15
    assert mean_r2(semantic, VoxelClass.SEMANTIC) > mean_r2(audio, VoxelClass.SEMANTIC) + 0.15
    # Interaction voxels are mostly beyond any linear model of both modalities.
    both = np.column_stack([audio, semantic])
    noise_both = mean_r2(both, VoxelClass.NOISE)
    joint_gain = mean_r2(both, VoxelClass.AUDIO_SEMANTIC) - noise_both
    interaction_gain = mean_r2(both, VoxelClass.INTERACTION) - noise_both
    assert joint_gain > 0.3 and interaction_gain < 0.5 * joint_gain


def test_audio_loudness_matches_the_waveform(tiny):
    for story in tiny.config.stories:
        planted = tiny.stimulus(story)
        samples, rate = soundfile.read(str(tiny.root / "stimuli" / f"{story}.wav"))
        assert np.array_equal(samples[:, 0], samples[:, 1])
        mono = samples[:, 0]
        hop = rate // 10
        # Frames of 0.1 s centred on k * 0.1 s, as the planted properties.
        padded = np.concatenate([np.zeros(hop // 2), mono])[: len(planted.audio_times) * hop]
        rms = np.sqrt((padded.reshape(-1, hop) ** 2).mean(axis=1))
        loudness = planted.audio[:, AUDIO_NAMES.index("loudness")]
        assert np.corrcoef(rms, loudness)[0, 1] > 0.8
        silent = (planted.audio_times < planted.word_start[0] - 0.1) | (
            planted.audio_times > planted.word_end[-1] + 0.1
        )
        assert rms[silent].max() < 0.02 * rms[loudness > 0.5].mean()


def _constant_story(n_frames, **controls):
    full = {"voiced": 0.0, "noise": 0.0, "f0": 120.0, "f1": 500.0, "f2": 1500.0, "f3": 2500.0}
    full["brightness"] = 0.5
    full.update(controls)
    empty = np.zeros(0, dtype=int)
    return Story(
        name="constant",
        n_frames=n_frames,
        word_ids=empty,
        word_start=empty,
        word_end=empty,
        topic=np.zeros((0, 1)),
        phone_ids=empty,
        phone_labels=(),
        phone_start=empty,
        phone_end=empty,
        pause_start=empty,
        pause_end=empty,
        pause_labels=(),
        controls={k: np.full(n_frames, float(v)) for k, v in full.items()},
    )


def test_synthesised_vowel_has_the_planted_pitch_and_first_formant(tmp_path):
    path = tmp_path / "vowel.wav"
    story = _constant_story(100, voiced=1.0, f0=150.0, f1=700.0, f2=1200.0, f3=2500.0)
    synthesize_audio(path, story, np.random.default_rng(0), 16000)
    samples, rate = soundfile.read(str(path))
    assert rate == 16000 and samples.shape == (16000, 2)
    mono = samples[:, 0]
    frequencies, power = sps.welch(mono, fs=rate, nperseg=4096)
    peak = frequencies[np.argmax(power)]
    assert abs(peak - 700) <= 100
    assert abs(peak / 150 - round(peak / 150)) * 150 < 6
    lags = np.arange(40, 400)
    autocorrelation = [np.dot(mono[:-lag], mono[lag:]) for lag in lags]
    assert rate / lags[np.argmax(autocorrelation)] == pytest.approx(150, rel=0.02)


def test_consonant_noise_brightness_tilts_the_spectrum(tmp_path):
    high_share = {}
    for brightness in (0.1, 0.95):
        path = tmp_path / f"noise{brightness}.wav"
        story = _constant_story(100, noise=1.0, brightness=brightness)
        synthesize_audio(path, story, np.random.default_rng(1), 16000)
        samples, rate = soundfile.read(str(path))
        frequencies, power = sps.welch(samples[:, 0], fs=rate, nperseg=1024)
        high_share[brightness] = power[frequencies > 4000].sum() / power.sum()
    assert high_share[0.95] > 0.8 > 0.2 > high_share[0.1]


def test_topic_makes_semantic_content_slow():
    vocabulary = make_vocabulary(np.random.default_rng(0), 200, 8)

    def lag_correlation(strength, lag=10):
        story = make_story(
            np.random.default_rng(1),
            vocabulary,
            "drift",
            1200.0,
            topic_words=40.0,
            topic_strength=strength,
            base_f0=120.0,
        )
        vectors = vocabulary.semantic[story.word_ids]
        vectors = vectors - vectors.mean(axis=0)
        return np.mean([np.corrcoef(v[:-lag], v[lag:])[0, 1] for v in vectors.T])

    # Words 10 apart (about 4 s) share the topic only when the topic biases word choice.
    assert lag_correlation(3.0) > 0.1
    assert abs(lag_correlation(0.0)) < 0.05


def test_vocabulary_words_are_lowercase_distinct_and_zipf_distributed(tiny):
    words = tiny.words
    assert len(set(words)) == len(words) == tiny.config.n_vocab
    assert all(re.fullmatch("[a-z]+", w) for w in words)
    assert not set(words) & conventions.NON_SPEECH_LABELS
    spoken = np.concatenate([tiny.stimulus(s).word_ids for s in tiny.config.stories])
    counts = np.bincount(spoken, minlength=len(words))
    # Frequencies fall with rank: the 10 most probable words are spoken far more often.
    assert counts[:10].mean() > 5 * counts[100:].mean()


def test_hrf_is_the_spm_canonical_double_gamma():
    reference = _hrf()
    np.testing.assert_allclose(canonical_hrf(), reference / reference.sum(), rtol=1e-10, atol=1e-14)
    t = np.arange(len(reference)) * 0.1
    assert 4.5 <= t[np.argmax(reference)] <= 5.5 and 14 <= t[np.argmin(reference)] <= 17


def test_noise_is_ar1_with_unit_variance():
    rng = np.random.default_rng(0)
    weights = np.zeros((3, 400))
    noise = simulate_responses(np.zeros((2000, 3)), weights, np.ones(400), rng, noise_ar=0.5)
    for lag in (1, 2, 3):
        r = np.mean([np.corrcoef(v[:-lag], v[lag:])[0, 1] for v in noise.T])
        assert r == pytest.approx(0.5**lag, abs=0.02)
    repeats = simulate_responses(np.zeros((50, 3)), weights, np.ones(400), rng, 0.5, n_repeats=4)
    assert repeats.shape == (4, 50, 400)
    assert abs(np.corrcoef(repeats[0].ravel(), repeats[1].ravel())[0, 1]) < 0.02


def test_write_is_deterministic_resumable_and_guarded(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    config = _small()
    write_synthetic(first, config, progress=False)
    write_synthetic(second, config, progress=False)
    write_synthetic(other, _small(seed=1), progress=False)
    data = {root: _read(_hf5(root, "UTS01", "adollshouse")) for root in (first, second, other)}
    assert data[first].tobytes() == data[second].tobytes()
    assert not np.allclose(data[first], data[other])
    wav = lambda root: (root / "stimuli" / f"{TEST}.wav").read_bytes()  # noqa: E731
    assert wav(first) == wav(second) != wav(other)

    files = sorted(p for p in first.rglob("*") if p.is_file())
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    write_synthetic(first, config, progress=False)
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps

    # An interrupted run: a missing response file and no completion marker.
    victim = _hf5(first, "UTS01", TEST)
    original = victim.read_bytes()
    victim.unlink()
    (first / "synthetic_truth" / "complete.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_truth(first)
    truth = write_synthetic(first, config, progress=False)
    assert victim.read_bytes() == original
    assert truth.cc_max["UTS01"].shape == (40,)

    with pytest.raises(ConfigError, match="another config"):
        write_synthetic(first, _small(seed=2), progress=False)
    foreign = tmp_path / "real"
    (foreign / "derivative").mkdir(parents=True)
    with pytest.raises(ConfigError, match="refusing"):
        write_synthetic(foreign, config, progress=False)
    with pytest.raises(DataError, match="no synthetic truth"):
        load_truth(foreign)


def test_config_validation_and_presets():
    for bad in (
        dict(n_voxels=(10,)),
        dict(class_fractions=(0.5, 0.5, 0.5, 0.0, 0.0)),
        dict(audio_rate=22050),
        dict(fewer_stories=(("UTS09", 1),)),
        dict(min_respdict=20),
        dict(n_repeats=(1, 10)),
        dict(snr_range=(2.0, 1.0)),
        dict(noise_ar=1.0),
    ):
        with pytest.raises(ConfigError):
            SyntheticConfig.tiny(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        SyntheticConfig.from_dict({"voxels": 3})
    tiny = SyntheticConfig.tiny(subjects=["UTS01", "UTS02"], n_voxels=np.array([320, 280]))
    assert tiny == SyntheticConfig.tiny() and hash(tiny) == hash(SyntheticConfig.tiny())
    assert SyntheticConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert all(50 <= n - 20 <= 80 for n in tiny.respdict().values())

    demo = SyntheticConfig.demo()
    assert demo == SyntheticConfig() and demo.subjects == ("UTS01", "UTS02", "UTS03")
    assert len(demo.train_stories) == 12 and demo.stories[-1] == TEST
    full = SyntheticConfig.full()
    assert full.respdict() == real_respdict()
    assert full.n_voxels == (81126, 94251, 95556) and len(full.stories) == 84


def test_command_line(tiny, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--preset" in help_text and "tiny" in help_text and "--seed" in help_text
    # The tiny tree is complete with the same config: the command returns without writing.
    assert main([str(tiny.root), "--preset", "tiny", "--quiet"]) == 0
    assert "UTS02: 280 voxels" in capsys.readouterr().out
