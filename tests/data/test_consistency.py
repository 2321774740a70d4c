"""Audio, TextGrid and respdict checked against each other; each subject's stories reported.

On copies of the small synthetic twin (whose wavs last exactly the TR grid, 2 * respdict - 20
seconds) and of the hand-written tree of tests/data/conftest.py (words known to the test).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import soundfile

from jaxenc.data import LeBelDataset
from jaxenc.data.consistency import DURATION_TOLERANCE, check_audio_timing, format_story_report, sound_end, story_report
from jaxenc.errors import DataError

LAYOUT = Path("/work/shared/ds003020/layout.tsv")


@pytest.fixture
def twin(planted_twin, tmp_path):
    """A copy of the session's small twin (tests/conftest.py), free to be damaged, and its
    planted truth. Files are hard links: tests replace or delete them, never write into them."""
    root = tmp_path / "twin"
    shutil.copytree(planted_twin[0], root, copy_function=os.link)
    return root, planted_twin[1]


def expected_of(truth) -> dict:
    return {s: truth.stories(s) for s in truth.subjects}


def cut(path: Path, seconds: float) -> None:
    """Rewrite a wav keeping its first ``seconds``, format unchanged."""
    info = soundfile.info(str(path))
    samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    path.unlink()  # a hard link to the session's twin: write a new file
    soundfile.write(str(path), samples[: int(seconds * rate)], rate, subtype=info.subtype)


def test_the_twin_passes_every_check(twin):
    root, truth = twin
    ds = LeBelDataset(root)
    for story in truth.respdict:
        words = ds.words(story)
        waveform, rate = ds.audio(story)
        assert waveform.shape[0] / rate == pytest.approx(sound_end(truth.respdict[story]), abs=1e-3)
        assert words.end.max() < waveform.shape[0] / rate
    report = story_report(ds, expected=expected_of(truth))
    assert [r.subject for r in report] == list(truth.subjects)
    for entry in report:
        assert entry.complete and entry.has_test and not entry.extra, entry
        assert entry.used == tuple(sorted(truth.stories(entry.subject)))


@pytest.mark.parametrize("keep", ["half", "first 30 s"])
def test_a_truncated_wav_is_refused_naming_story_and_file(twin, keep):
    root, truth = twin
    story = max(truth.stories("UTS01"), key=truth.respdict.get)
    path = root / "stimuli" / f"{story}.wav"
    full = sound_end(truth.respdict[story])
    seconds = full / 2 if keep == "half" else 30.0
    cut(path, seconds)
    ds = LeBelDataset(root)
    with pytest.raises(DataError) as caught:
        ds.audio(story, sample_rate=16000)
    message = str(caught.value)
    assert "\n" not in message
    assert re.escape(f"story '{story}', file {path}") in re.escape(message)
    assert f"lasts {seconds:.1f} s" in message
    assert f"{truth.respdict[story]} TRs in respdict.json span {full:.1f} s" in message
    # The TextGrid runs past the cut audio too, and is named.
    assert f"last word of {root / 'derivative' / 'TextGrids' / f'{story}.TextGrid'}" in message


def test_tolerance_edges(tree, wav):
    ds = LeBelDataset(tree.root)
    full = wav.story_seconds("alpha")
    for seconds, ok in ((full - 3.9, True), (full + 3.9, True), (full - 4.1, False),
                        (full + 4.1, False)):
        soundfile.write(tree.wav("alpha"), wav.stereo_tones(seconds), wav.rate, subtype="PCM_16")
        if ok:
            ds.audio("alpha")
        else:
            with pytest.raises(DataError, match=r"span 42\.0 s of sound \(tolerance 4 s\)"):
                ds.audio("alpha")


def test_words_past_the_audio_or_the_tr_grid(tree, tg, wav):
    """alpha: respdict 31, so the TR grid ends at 42 s."""
    grids = tree.root / "derivative" / "TextGrids"
    late = [("phone", [(0.0, 41.0, "sp"), (41.0, 45.0, "AH0")]),
            ("word", [(0.0, 41.0, ""), (41.0, 45.0, "late")])]
    (grids / "alpha.TextGrid").write_text(tg.long(late))
    # 40 s of audio is within 4 s of the grid, but the last word ends 5 s after it.
    soundfile.write(tree.wav("alpha"), wav.stereo_tones(40.0), wav.rate, subtype="PCM_16")
    ds = LeBelDataset(tree.root)
    assert ds.words("alpha").end[-1] == 45.0  # 3 s past the grid: within the tolerance
    with pytest.raises(DataError, match=r"lasts 40\.0 s but the last word of .*alpha\.TextGrid "
                                        r"ends at 45\.0 s"):
        ds.audio("alpha")
    too_late = [("phone", [(0.0, 41.0, "sp"), (41.0, 46.5, "AH0")]),
                ("word", [(0.0, 41.0, ""), (41.0, 46.5, "later")])]
    (grids / "alpha.TextGrid").write_text(tg.long(too_late))
    with pytest.raises(DataError, match=r"alpha\.TextGrid: the last word ends at 46\.5 s but the "
                                        r"story's 31 TRs in respdict\.json span 42\.0 s"):
        LeBelDataset(tree.root).words("alpha")


# Real ds003020 (layout.tsv file sizes at 44.1 kHz int16): the two stories whose wav is
# furthest from its TR grid, in seconds of wav beyond 2 * respdict - 20.
REAL_EXTREMES = {"undertheinfluence": (324, -0.252), "bluehope": (429, 1.965)}


def test_the_real_extremes_pass():
    for story, (acquired, excess) in REAL_EXTREMES.items():
        check_audio_timing(sound_end(acquired) + excess, acquired, None, story=story, path="x")
    assert max(abs(e) for _, e in REAL_EXTREMES.values()) < DURATION_TOLERANCE - 2.0


@pytest.mark.skipif(not LAYOUT.is_file(), reason="no copy of the real layout facts here")
def test_every_real_wav_passes():
    """Each real wav's duration from its size (stereo or mono at 44.1 kHz, whichever fits)."""
    import json

    respdict = json.loads((LAYOUT.parent / "respdict.json").read_text())
    checked = 0
    for line in LAYOUT.read_text().splitlines():
        path, size = line.split("\t")
        story = Path(path).stem
        if path.startswith("stimuli/") and story in respdict:
            end = sound_end(respdict[story])
            durations = [(int(size) - 44) / (44100 * 2 * channels) for channels in (1, 2)]
            duration = min(durations, key=lambda d: abs(d - end))
            check_audio_timing(duration, respdict[story], None, story=story, path=path)
            checked += 1
    assert checked == 84


def test_report_missing_subject_folder(twin):
    root, truth = twin
    shutil.rmtree(root / "derivative" / "preprocessed_data" / "UTS02")
    report = story_report(LeBelDataset(root), expected=expected_of(truth))
    first, second = report
    assert first.complete and second.subject == "UTS02" and not second.has_test
    assert second.used == ()
    assert second.missing == {s: "no subject folder"
                              for s in (*truth.stories("UTS02"), "wheretheressmoke")}
    line = format_story_report(report).splitlines()[1]
    n_missing = len(truth.stories("UTS02")) + 1
    assert line.startswith(f"UTS02: 0 training stories, no test story; missing {n_missing}: ")
    assert "(no subject folder)" in line


def test_report_missing_hf5_and_stimuli(twin):
    root, truth = twin
    a, b, c, *rest = sorted(truth.stories("UTS01"))
    (root / "derivative" / "preprocessed_data" / "UTS01" / f"{a}.hf5").unlink()
    (root / "derivative" / "TextGrids" / f"{b}.TextGrid").unlink()
    (root / "stimuli" / f"{c}.wav").unlink()
    entry = story_report(LeBelDataset(root), expected=expected_of(truth))[0]
    assert entry.used == tuple(rest)
    assert entry.missing == {a: "no hf5", b: "no TextGrid", c: "no wav"}
    assert format_story_report([entry]) == (
        f"UTS01: {len(rest)} training stories, test story; missing 3: {a} (no hf5), "
        f"{b} (no TextGrid), {c} (no wav)")


def test_report_extra_stories(twin):
    root, truth = twin
    subjects = root / "derivative" / "preprocessed_data"
    expected = expected_of(truth)
    unexpected = expected["UTS02"][0]
    expected["UTS02"] = expected["UTS02"][1:]
    shutil.copy(subjects / "UTS01" / f"{unexpected}.hf5", subjects / "UTS01" / "bonus.hf5")
    report = story_report(LeBelDataset(root), expected=expected)
    assert report[0].extra == {"bonus": "not in respdict"} and report[0].complete
    assert report[1].extra == {unexpected: "not expected"} and report[1].complete
    assert unexpected not in report[1].used
    assert f"extra 1: {unexpected} (not expected)" in format_story_report(report)


def test_report_default_expects_what_any_subject_has(twin):
    """Without ``expected``, a story one subject lacks and another has shows as missing."""
    root, truth = twin
    story = sorted(truth.stories("UTS02"))[0]
    (root / "derivative" / "preprocessed_data" / "UTS02" / f"{story}.hf5").unlink()
    report = story_report(LeBelDataset(root))
    assert report[0].complete
    assert report[1].missing == {story: "no hf5"}
    assert story_report(LeBelDataset(root), subjects=["UTS01", "UTS09"])[1].missing == {
        s: "no subject folder" for s in (*sorted(truth.stories("UTS01")), "wheretheressmoke")}


def test_report_names_at_most_eight_stories_per_kind(tree):
    expected = {"UTS03": [f"story{i:02d}" for i in range(11)]}
    line = format_story_report(story_report(LeBelDataset(tree.root), expected=expected))
    assert line.count("(no hf5)") == 8 and line.endswith("and 4 more; extra 1: charlie (not expected)")
    assert all(f"story{i:02d}" in line for i in range(8))
