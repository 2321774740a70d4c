"""A small ds003020 tree in the real layout, written directly with h5py, text and soundfile.

Written independently of jaxenc (no jaxenc code writes these files), so the reader is tested
against files whose content the tests know exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile

TEST_STORY = "wheretheressmoke"
RESPDICT = {"alpha": 31, "bravo": 33, "charlie": 30, TEST_STORY: 34, "onlyinrespdict": 40}
# subject -> (n_voxels, training stories, n_repeats of the test story or 0 for none)
SUBJECTS = {
    "UTS01": (7, ("alpha", "bravo", "charlie"), 4),
    "UTS02": (5, ("alpha", "bravo"), 2),
    "UTS03": (6, ("charlie",), 0),
}
WAV_RATE = 44100
WAV_SECONDS = 0.25
# Left and right channel tones in Hz and amplitudes (fractions of int16 full scale).
TONES = ((440.0, 0.5), (1000.0, 0.25))

# (start s, end s, label as written, True when the label is speech)
WORDS = [
    (0.0, 0.4, "", False),
    (0.4, 0.9, "Hello", True),
    (0.9, 1.0, "{SP}", False),
    (1.0, 1.3, " World ", True),
    (1.3, 1.5, "sentence_start", False),
    (1.5, 1.9, "again", True),
    (1.9, 2.0, "{ns}", False),
    (2.0, 2.6, "BR", False),
    (2.6, 3.0, "it's", True),
]
PHONES = [
    (0.0, 0.4, "sp", False),
    (0.4, 0.6, "HH", True),
    (0.6, 0.9, "AH0", True),
    (0.9, 1.0, "{SIL}", False),
    (1.0, 1.3, "W", True),
    (1.3, 1.5, "", False),
    (1.5, 1.9, "AH0", True),
    (1.9, 2.6, "lg", False),
    (2.6, 3.0, "IH1", True),
]


def long_textgrid(tiers, *, names=True, newline="\n", indent="    ") -> str:
    """Praat long text format; ``tiers`` is a list of (name, [(start, end, label), ...])."""
    xmax = max(end for _, intervals in tiers for _, end, *_ in intervals)
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {xmax!r} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for number, (name, intervals) in enumerate(tiers, start=1):
        lines.append(f"{indent}item [{number}]:")
        lines.append(f'{indent * 2}class = "IntervalTier" ')
        if names:
            lines.append(f'{indent * 2}name = "{name}" ')
        lines += [f"{indent * 2}xmin = 0 ", f"{indent * 2}xmax = {xmax!r} "]
        lines.append(f"{indent * 2}intervals: size = {len(intervals)} ")
        for index, (start, end, label, *_) in enumerate(intervals, start=1):
            escaped = label.replace('"', '""')
            lines += [
                f"{indent * 2}intervals [{index}]:",
                f"{indent * 3}xmin = {start!r} ",
                f"{indent * 3}xmax = {end!r} ",
                f'{indent * 3}text = "{escaped}" ',
            ]
    return newline.join(lines) + newline


def short_textgrid(tiers, *, names=True) -> str:
    """Praat short ("ooTextFile short") text format of the same tiers."""
    xmax = max(end for _, intervals in tiers for _, end, *_ in intervals)
    lines = ['File type = "ooTextFile short"', '"TextGrid"', "", "0", repr(xmax), "<exists>"]
    lines.append(str(len(tiers)))
    for name, intervals in tiers:
        lines.append('"IntervalTier"')
        if names:
            lines.append(f'"{name}"')
        lines += ["0", repr(xmax), str(len(intervals))]
        for start, end, label, *_ in intervals:
            lines += [repr(start), repr(end), '"' + label.replace('"', '""') + '"']
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=8)
def stereo_tones(seconds=WAV_SECONDS, rate=WAV_RATE) -> np.ndarray:
    """int16 array (n_samples, 2) holding the two TONES (read-only: shared between calls)."""
    t = np.arange(int(round(seconds * rate))) / rate
    channels = [amp * np.sin(2 * np.pi * freq * t) for freq, amp in TONES]
    tones = np.round(np.stack(channels, axis=1) * 32767).astype(np.int16)
    tones.flags.writeable = False
    return tones


def story_seconds(story: str) -> float:
    """Audio length of a story of the tree: its TR grid, 2 * respdict - 20 s from sound onset."""
    return 2.0 * RESPDICT[story] - 20.0


def write_hf5(path: Path, **datasets) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for name, value in datasets.items():
            file.create_dataset(name, data=value)


@dataclasses.dataclass
class Tree:
    """What was written: the arrays in float64 as on disk, keyed like the dataset."""

    root: Path
    respdict: dict
    responses: dict  # (subject, story) -> (n_trs, n_voxels) float64, test story included
    repeats: dict  # subject -> (n_repeats, n_trs, n_voxels) float64
    audio: dict  # story -> int16 (n_samples, 2)

    def hf5(self, subject, story) -> Path:
        return self.root / "derivative" / "preprocessed_data" / subject / f"{story}.hf5"

    def wav(self, story) -> Path:
        return self.root / "stimuli" / f"{story}.wav"


def build_tree(root: Path) -> Tree:
    rng = np.random.default_rng(20230555)
    derivative = root / "derivative"
    derivative.mkdir(parents=True)
    (derivative / "respdict.json").write_text(json.dumps(RESPDICT))
    responses, repeats = {}, {}
    for subject, (n_voxels, stories, n_repeats) in SUBJECTS.items():
        folder = derivative / "preprocessed_data" / subject
        for story in stories:
            data = rng.standard_normal((RESPDICT[story] - 20, n_voxels))
            write_hf5(folder / f"{story}.hf5", data=data)
            responses[subject, story] = data
        if n_repeats:
            reps = rng.standard_normal((n_repeats, RESPDICT[TEST_STORY] - 20, n_voxels))
            write_hf5(folder / f"{TEST_STORY}.hf5", data=reps.mean(axis=0), individual_repeats=reps)
            responses[subject, TEST_STORY] = reps.mean(axis=0)
            repeats[subject] = reps
    grids = derivative / "TextGrids"
    grids.mkdir()
    tiers = [("phone", PHONES), ("word", WORDS)]
    (grids / "alpha.TextGrid").write_text(long_textgrid(tiers))
    (grids / "bravo.TextGrid").write_text(short_textgrid(tiers))
    (grids / "charlie.TextGrid").write_bytes(long_textgrid(tiers, newline="\r\n").encode())
    (grids / f"{TEST_STORY}.TextGrid").write_bytes(long_textgrid(tiers).encode("utf-16"))
    stimuli = root / "stimuli"
    stimuli.mkdir()
    audio = {}
    for story in ("alpha", "bravo", "charlie", TEST_STORY):
        audio[story] = stereo_tones(story_seconds(story))
        soundfile.write(stimuli / f"{story}.wav", audio[story], WAV_RATE, subtype="PCM_16")
    return Tree(root, dict(RESPDICT), responses, repeats, audio)


@pytest.fixture
def tree(tmp_path) -> Tree:
    """A fresh tree per test (about 20 small files), free to be damaged by the test."""
    return build_tree(tmp_path / "ds003020")


@pytest.fixture
def tg():
    """Writers of TextGrid text and the word and phone specs, for tests of the parser."""
    return types.SimpleNamespace(
        long=long_textgrid, short=short_textgrid, words=WORDS, phones=PHONES
    )


@pytest.fixture
def wav():
    """The stereo tone generator and its constants, for tests of the audio reader."""
    return types.SimpleNamespace(stereo_tones=stereo_tones, rate=WAV_RATE, tones=TONES,
                                 story_seconds=story_seconds)
