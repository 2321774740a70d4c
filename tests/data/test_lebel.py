"""LeBelDataset against a tree whose arrays, words and audio the tests wrote themselves."""

from __future__ import annotations

import importlib.resources
import json
import re
import warnings

import h5py
import numpy as np
import pytest
import soundfile
from scipy import signal

from jaxenc.data import LeBelDataset, lebel
from jaxenc.errors import ConfigError, DataError, DataWarning


def context(path, subject=None, story=None) -> str:
    """A regex matching the error's prefix, which must name subject, story and file."""
    parts = []
    if subject is not None:
        parts.append(f"subject {subject}")
    if story is not None:
        parts.append(f"story '{story}'")
    parts.append(f"file {path}")
    return re.escape(", ".join(parts))


def count_opens(monkeypatch):
    opened = []
    real = h5py.File

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lebel.h5py, "File", counting)
    return opened


def test_index(tree):
    ds = LeBelDataset(tree.root)
    assert ds.root == tree.root
    assert ds.respdict == tree.respdict
    assert ds.subjects == ["UTS01", "UTS02", "UTS03"]
    assert ds.stories("UTS01") == ["alpha", "bravo", "charlie"]
    assert ds.stories("UTS02") == ["alpha", "bravo"]
    assert ds.stories("UTS03") == ["charlie"]
    assert ds.test_story == "wheretheressmoke"
    text = repr(ds)
    assert "UTS01 (3 stories)" in text and "UTS03 (1 stories)" in text


def test_responses_equal_written_arrays(tree):
    ds = LeBelDataset(tree.root)
    for (subject, story), written in tree.responses.items():
        got = ds.responses(subject, story)
        assert got.dtype == np.float32
        assert got.shape == (tree.respdict[story] - 20, written.shape[1])
        np.testing.assert_array_equal(got, written.astype(np.float32))
        assert not got.flags.writeable
    for subject, written in tree.repeats.items():
        np.testing.assert_array_equal(ds.test_repeats(subject), written.astype(np.float32))
        mean = tree.responses[subject, "wheretheressmoke"]
        np.testing.assert_array_equal(ds.test_response(subject), mean.astype(np.float32))
        assert ds.test_repeats(subject).shape[1] == tree.respdict["wheretheressmoke"] - 20


def test_n_voxels_reads_no_data(tree, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("n_voxels read data")

    monkeypatch.setattr(h5py.Dataset, "read_direct", refuse)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", refuse)
    ds = LeBelDataset(tree.root)
    assert [ds.n_voxels(s) for s in ds.subjects] == [7, 5, 6]
    np.testing.assert_array_equal(ds.bad_voxels("UTS02"), np.zeros(5, dtype=bool))


def test_times_follow_the_huth_convention(tree):
    ds = LeBelDataset(tree.root)
    for story, acquired in tree.respdict.items():
        # Triggers every 2 s starting 10 s before sound onset, each TR timed at its centre.
        expected = np.array([2.0 * i - 10.0 + 1.0 for i in range(acquired - 5)])
        np.testing.assert_array_equal(ds.tr_times(story), expected)
        kept = expected[10 : len(expected) - 5]
        np.testing.assert_array_equal(ds.response_times(story), kept)
        assert len(ds.response_times(story)) == acquired - 20
    assert ds.response_times("alpha").shape[0] == ds.responses("UTS01", "alpha").shape[0]
    with pytest.raises(DataError, match="story 'nosuchstory'.*absent from respdict"):
        ds.tr_times("nosuchstory")


@pytest.mark.parametrize("story", ["alpha", "bravo", "charlie", "wheretheressmoke"])
def test_words_and_phones(tree, tg, story):
    ds = LeBelDataset(tree.root)
    words = ds.words(story)
    speech = [w for w in tg.words if w[3]]
    assert list(words.label) == [label.strip().lower() for _, _, label, _ in speech]
    np.testing.assert_array_equal(words.start, [w[0] for w in speech])
    np.testing.assert_array_equal(words.end, [w[1] for w in speech])
    np.testing.assert_allclose(words.midpoints, [(w[0] + w[1]) / 2 for w in speech])
    phones = ds.phones(story)
    assert list(phones.label) == [p[2] for p in tg.phones if p[3]]
    assert len(phones) == sum(p[3] for p in tg.phones)


def test_missing_textgrid(tree):
    ds = LeBelDataset(tree.root)
    path = tree.root / "derivative" / "TextGrids" / "onlyinrespdict.TextGrid"
    with pytest.raises(DataError, match=context(path, story="onlyinrespdict") + ".*not found"):
        ds.words("onlyinrespdict")


def test_audio_downmix_and_whisper_rate(tree, wav):
    ds = LeBelDataset(tree.root)
    stereo = tree.audio["alpha"].astype(np.float64) / 32768
    waveform, rate = ds.audio("alpha")
    assert rate == 44100 and waveform.dtype == np.float32
    np.testing.assert_allclose(waveform, stereo.mean(axis=1), atol=1e-7)
    at_16k, rate = ds.audio("alpha", sample_rate=16000)
    assert rate == 16000
    reference = signal.resample_poly(stereo.mean(axis=1), 160, 441)
    assert at_16k.shape == reference.shape
    middle = slice(400, -400)
    np.testing.assert_allclose(at_16k[middle], reference[middle], atol=2e-3)


def test_audio_at_another_rate_is_resampled_with_a_warning(tree, wav):
    stereo = wav.stereo_tones(wav.story_seconds("alpha"), rate=48000)
    soundfile.write(tree.wav("alpha"), stereo, 48000, subtype="PCM_16")
    ds = LeBelDataset(tree.root)
    with pytest.warns(DataWarning, match="alpha.*48000 Hz"):
        waveform, rate = ds.audio("alpha")
    assert rate == 44100
    t = np.arange(waveform.shape[0]) / 44100
    analytic = sum(amp * np.sin(2 * np.pi * f * t) for f, amp in wav.tones) / 2
    np.testing.assert_allclose(waveform[400:-400], analytic[400:-400], atol=2e-3)


def test_bad_voxels_are_zeroed_warned_and_masked(tree):
    path = tree.hf5("UTS01", "bravo")
    data = tree.responses["UTS01", "bravo"].copy()
    data[3, 1] = np.nan
    data[0, 4] = np.inf
    data[:, 6] = 0.25
    with h5py.File(path, "w") as file:
        file["data"] = data
    reps = tree.repeats["UTS01"].copy()
    reps[2, 5, 0] = -np.inf
    with h5py.File(tree.hf5("UTS01", "wheretheressmoke"), "w") as file:
        file["data"] = reps.mean(axis=0)
        file["individual_repeats"] = reps
    ds = LeBelDataset(tree.root, cache_bytes=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ds.responses("UTS01", "bravo")
        ds.responses("UTS01", "bravo")
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "UTS01" in messages[0] and "'bravo'" in messages[0] and str(path) in messages[0]
    assert "3 of 7 voxels" in messages[0]
    bad = np.zeros(7, dtype=bool)
    bad[[1, 4, 6]] = True
    np.testing.assert_array_equal(got[:, bad], 0.0)
    np.testing.assert_array_equal(got[:, ~bad], data[:, ~bad].astype(np.float32))
    np.testing.assert_array_equal(ds.bad_voxels("UTS01"), bad)
    np.testing.assert_array_equal(ds.bad_voxels("UTS02"), np.zeros(5, dtype=bool))
    with pytest.warns(DataWarning):
        full = ds.scan_voxels("UTS01")
    bad[0] = True
    np.testing.assert_array_equal(full, bad)
    repeats = ds.test_repeats("UTS01")
    np.testing.assert_array_equal(repeats[..., 0], 0.0)
    np.testing.assert_array_equal(repeats[..., 1:], reps[..., 1:].astype(np.float32))


def test_second_read_comes_from_the_cache(tree, monkeypatch):
    opened = count_opens(monkeypatch)
    ds = LeBelDataset(tree.root)
    first = ds.responses("UTS01", "alpha")
    assert opened == [str(tree.hf5("UTS01", "alpha"))]
    assert ds.responses("UTS01", "alpha") is first
    assert len(opened) == 1
    ds.n_voxels("UTS01")
    assert len(opened) == 1


def test_cache_is_bounded_lru_and_can_be_disabled(tree, monkeypatch):
    opened = count_opens(monkeypatch)
    one_array = tree.responses["UTS01", "bravo"].astype(np.float32).nbytes
    ds = LeBelDataset(tree.root, cache_bytes=one_array)
    ds.responses("UTS01", "bravo")
    ds.responses("UTS01", "bravo")
    assert len(opened) == 1
    ds.responses("UTS01", "charlie")  # smaller, evicts bravo
    ds.responses("UTS01", "charlie")
    assert len(opened) == 2
    ds.responses("UTS01", "bravo")
    assert len(opened) == 3
    opened.clear()
    off = LeBelDataset(tree.root, cache_bytes=0)
    off.responses("UTS01", "alpha")
    off.responses("UTS01", "alpha")
    assert len(opened) == 2
    with pytest.raises(ConfigError, match="cache_bytes"):
        LeBelDataset(tree.root, cache_bytes=-1)


def test_unknown_subject_lists_the_present_ones(tree):
    ds = LeBelDataset(tree.root)
    with pytest.raises(DataError, match=r"subject UTS99.*\['UTS01', 'UTS02', 'UTS03'\]"):
        ds.responses("UTS99", "alpha")
    with pytest.raises(DataError, match="subject UTS99"):
        ds.stories("UTS99")


def test_missing_story_lists_the_known_ones(tree):
    ds = LeBelDataset(tree.root)
    path = tree.hf5("UTS02", "charlie")
    known = r".*\['alpha', 'bravo'"
    with pytest.raises(DataError, match=context(path, "UTS02", "charlie") + known):
        ds.responses("UTS02", "charlie")
    path = tree.hf5("UTS03", "wheretheressmoke")
    with pytest.raises(DataError, match=context(path, "UTS03", "wheretheressmoke")):
        ds.test_repeats("UTS03")


def test_story_absent_from_respdict(tree):
    path = tree.hf5("UTS01", "extra")
    with h5py.File(path, "w") as file:
        file["data"] = np.zeros((5, 7))
    ds = LeBelDataset(tree.root)
    assert "extra" in ds.stories("UTS01")
    with pytest.raises(DataError, match=context(path, "UTS01", "extra") + ".*absent from respdict"):
        ds.responses("UTS01", "extra")


@pytest.mark.parametrize(
    ("datasets", "expected"),
    [
        ({"data": np.ones((9, 7))}, "expected 10 rows .*found 9"),
        ({"data": np.ones((10, 8))}, "8 voxels, but story 'alpha' of the same subject has 7"),
        ({"data": np.ones((10, 7, 1))}, r"must be 2-D.*\(10, 7, 1\)"),
        (
            {"responses": np.ones((10, 7)), "mask": np.ones(7)},
            r"no 'data'.*\['mask', 'responses'\]",
        ),
        ({"data": np.array([b"x"] * 10 * 7).reshape(10, 7)}, "expected floating-point"),
    ],
)
def test_malformed_hf5(tree, datasets, expected):
    path = tree.hf5("UTS01", "charlie")
    with h5py.File(path, "w") as file:
        for name, value in datasets.items():
            file[name] = value
    ds = LeBelDataset(tree.root)
    ds.responses("UTS01", "alpha")
    with pytest.raises(DataError, match=context(path, "UTS01", "charlie") + ".*" + expected):
        ds.responses("UTS01", "charlie")


def test_truncated_and_garbage_hf5(tree):
    path = tree.hf5("UTS01", "alpha")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    ds = LeBelDataset(tree.root)
    with pytest.raises(DataError, match=context(path, "UTS01", "alpha") + ".*truncated or corrupt"):
        ds.responses("UTS01", "alpha")
    path.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(DataError, match=context(path, "UTS01", "alpha") + ".*truncated or corrupt"):
        LeBelDataset(tree.root).responses("UTS01", "alpha")


@pytest.mark.parametrize(
    ("repeats", "expected"),
    [
        (None, r"no 'individual_repeats'.*\['data'\]"),
        (np.ones((2, 13, 5)), "13 rows and 5 voxels per repeat, expected 14 and 5"),
        (np.ones((2, 14, 4)), "14 rows and 4 voxels per repeat, expected 14 and 5"),
        (np.ones((14, 5)), "must be 3-D"),
    ],
)
def test_malformed_repeats(tree, repeats, expected):
    path = tree.hf5("UTS02", "wheretheressmoke")
    with h5py.File(path, "w") as file:
        file["data"] = tree.responses["UTS02", "wheretheressmoke"]
        if repeats is not None:
            file["individual_repeats"] = repeats
    ds = LeBelDataset(tree.root)
    prefix = context(path, "UTS02", "wheretheressmoke")
    with pytest.raises(DataError, match=prefix + ".*" + expected):
        ds.test_repeats("UTS02")


@pytest.mark.parametrize(
    ("content", "expected", "story"),
    [
        (None, "respdict.json not found", None),
        ("{not json", "not readable JSON", None),
        ("[1, 2]", "non-empty JSON object", None),
        (json.dumps({"alpha": 31, "bravo": "33"}), "integer above 20, found '33'", "bravo"),
        (json.dumps({"alpha": 20}), "integer above 20, found 20", "alpha"),
    ],
)
def test_bad_respdict(tree, content, expected, story):
    path = tree.root / "derivative" / "respdict.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + expected) as caught:
        LeBelDataset(tree.root)
    assert caught.value.story == story


def test_root_without_derivative(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + ".*not a ds003020 root"):
        LeBelDataset(tmp_path)


def test_shipped_respdict_gives_the_documented_row_counts(tmp_path):
    # ds003020 documents adollshouse 261 TRs -> 241 rows and 291 rows for the test story.
    shipped = importlib.resources.files("jaxenc.data").joinpath("respdict.json").read_text()
    derivative = tmp_path / "derivative"
    (derivative / "preprocessed_data" / "UTS01").mkdir(parents=True)
    (derivative / "respdict.json").write_text(shipped)
    rng = np.random.default_rng(7)
    reps = rng.standard_normal((2, 291, 3))
    with h5py.File(derivative / "preprocessed_data" / "UTS01" / "wheretheressmoke.hf5", "w") as f:
        f["data"] = reps.mean(axis=0)
        f["individual_repeats"] = reps
    ds = LeBelDataset(tmp_path)
    assert len(ds.respdict) == 84 and sum(ds.respdict.values()) == 29768
    assert ds.response_times("adollshouse").shape == (241,)
    assert ds.tr_times("wheretheressmoke").shape == (306,)
    np.testing.assert_array_equal(ds.test_repeats("UTS01"), reps.astype(np.float32))
    assert ds.stories("UTS01") == [] and ds.n_voxels("UTS01") == 3
