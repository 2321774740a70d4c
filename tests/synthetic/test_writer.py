"""Writing the synthetic twin: the real layout, read back by LeBelDataset; determinism,
resuming and the guards of the writer; the command line.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
from praatio import textgrid as praat_textgrid

import jaxenc.data
from jaxenc import conventions
from jaxenc.data import LeBelDataset
from jaxenc.errors import ConfigError, DataError
from jaxenc.synthetic import load_truth, main, real_respdict, write_synthetic
from jaxenc.synthetic.words import PHONES

TEST = conventions.TEST_STORY


def test_files_have_the_real_paths_keys_dtypes_and_row_counts(tiny):
    root, config = tiny.root, tiny.config
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    real = real_respdict()
    assert respdict == {s: max(round(real[s] * 0.22), 70) for s in config.stories}
    assert TEST in respdict and len(respdict) == 4
    for subject, n_voxels in zip(config.subjects, config.n_voxels, strict=True):
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
            assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(entries))
        words = [e.label for e in grid.getTier("word").entries]
        assert {"", "sp", "br"} <= set(words)
        speech = [w for w in words if w not in conventions.NON_SPEECH_LABELS]
        assert all(re.fullmatch("[a-z]+", w) for w in speech)
        phones = {re.sub("[012]$", "", e.label) for e in grid.getTier("phone").entries}
        assert phones - conventions.NON_SPEECH_LABELS <= set(PHONES)


def test_repeats_average_to_data_and_every_story_is_zscored(tiny, hf5):
    for subject in tiny.subjects:
        for story in tiny.stories(subject):
            data = hf5.read(hf5.path(tiny.root, subject, story))
            np.testing.assert_allclose(data.mean(axis=0), 0, atol=1e-10)
            np.testing.assert_allclose(data.std(axis=0), 1, atol=1e-10)
        path = hf5.path(tiny.root, subject, TEST)
        repeats, mean = hf5.read(path, "individual_repeats"), hf5.read(path)
        np.testing.assert_allclose(mean, repeats.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(repeats.mean(axis=1), 0, atol=1e-10)
        np.testing.assert_allclose(repeats.std(axis=1), 1, atol=1e-10)
        # The mean of z-scored repeats with independent noise has std below 1.
        assert np.all(mean.std(axis=0) < 1) and mean.std(axis=0).mean() < 0.9


def test_reader_round_trip(tiny, hf5):
    dataset = LeBelDataset(tiny.root)
    assert dataset.subjects == ["UTS01", "UTS02"]
    assert dataset.stories("UTS01") == ["adollshouse", "adventuresinsayingyes", "afatherscover"]
    assert dataset.stories("UTS02") == ["adollshouse", "adventuresinsayingyes"]
    for subject, n_voxels in zip(tiny.subjects, tiny.config.n_voxels, strict=True):
        for story in dataset.stories(subject) + [TEST]:
            responses = dataset.responses(subject, story)
            assert responses.dtype == np.float32
            assert responses.shape == (tiny.respdict[story] - 20, n_voxels)
            expected = hf5.read(hf5.path(tiny.root, subject, story)).astype(np.float32)
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


def test_write_is_deterministic_resumable_and_guarded(tmp_path, hf5, small):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    config = small()
    write_synthetic(first, config, progress=False)
    write_synthetic(second, config, progress=False)
    write_synthetic(other, small(seed=1), progress=False)
    data = {r: hf5.read(hf5.path(r, "UTS01", "adollshouse")) for r in (first, second, other)}
    assert data[first].tobytes() == data[second].tobytes()
    assert not np.allclose(data[first], data[other])
    wav = lambda root: (root / "stimuli" / f"{TEST}.wav").read_bytes()  # noqa: E731
    assert wav(first) == wav(second) != wav(other)

    files = sorted(p for p in first.rglob("*") if p.is_file())
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    write_synthetic(first, config, progress=False)
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps

    # An interrupted run: a missing response file and no completion marker.
    victim = hf5.path(first, "UTS01", TEST)
    original = victim.read_bytes()
    victim.unlink()
    (first / "synthetic_truth" / "complete.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_truth(first)
    truth = write_synthetic(first, config, progress=False)
    assert victim.read_bytes() == original
    assert truth.cc_max["UTS01"].shape == (40,)

    with pytest.raises(ConfigError, match="another config"):
        write_synthetic(first, small(seed=2), progress=False)
    foreign = tmp_path / "real"
    (foreign / "derivative").mkdir(parents=True)
    with pytest.raises(ConfigError, match="refusing"):
        write_synthetic(foreign, config, progress=False)
    with pytest.raises(DataError, match="no synthetic truth"):
        load_truth(foreign)


def test_command_line(tiny, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--preset" in help_text and "tiny" in help_text and "--seed" in help_text
    # The tiny tree is complete with the same config: the command returns without writing.
    assert main([str(tiny.root), "--preset", "tiny", "--quiet"]) == 0
    assert "UTS02: 280 voxels" in capsys.readouterr().out


def test_the_readers_import_nothing_of_the_twin():
    # jaxenc.data reads datasets on disk, a twin as the real one; the twin depends on it, not back.
    folder = Path(jaxenc.data.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("jaxenc.synthetic") for n in names), (path, names)
