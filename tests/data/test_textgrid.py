"""TextGrid parsing, tier selection and cleaning against files the tests wrote as text."""

from __future__ import annotations

import re

import numpy as np
import pytest
from praatio import textgrid as praatio_textgrid

from jaxenc.data import Intervals, drop_non_speech, read_textgrid, select_tier
from jaxenc.errors import DataError


def write(tmp_path, text, *, name="story.TextGrid", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def assert_tier(intervals, spec):
    np.testing.assert_array_equal(intervals.start, [s[0] for s in spec])
    np.testing.assert_array_equal(intervals.end, [s[1] for s in spec])
    assert list(intervals.label) == [s[2].strip() for s in spec]


@pytest.mark.parametrize(
    ("variant", "encoding"),
    [
        ("long", "utf-8"),
        ("long_crlf", "utf-8"),
        ("long_tabs", "utf-8"),
        ("short", "utf-8"),
        ("long", "utf-16"),
        ("long", "utf-16-le"),
        ("short", "utf-16-be"),
        ("long", "utf-8-sig"),
    ],
)
def test_formats_and_encodings(tmp_path, tg, variant, encoding):
    tiers = [("phone", tg.phones), ("word", tg.words)]
    text = {
        "long": lambda: tg.long(tiers),
        "long_crlf": lambda: tg.long(tiers, newline="\r\n"),
        "long_tabs": lambda: tg.long(tiers, indent="\t"),
        "short": lambda: tg.short(tiers),
    }[variant]()
    parsed = read_textgrid(write(tmp_path, text, encoding=encoding))
    assert list(parsed) == ["phone", "word"]
    assert_tier(parsed["phone"], tg.phones)
    assert_tier(parsed["word"], tg.words)


def test_agrees_with_praatio_on_a_well_formed_file(tmp_path, tg):
    path = write(tmp_path, tg.long([("phone", tg.phones), ("word", tg.words)]))
    reference = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    parsed = read_textgrid(path)
    for name in reference.tierNames:
        entries = reference.getTier(name).entries
        np.testing.assert_array_equal(parsed[name].start, [e.start for e in entries])
        np.testing.assert_array_equal(parsed[name].end, [e.end for e in entries])
        assert list(parsed[name].label) == [e.label for e in entries]


@pytest.mark.parametrize("fmt", ["long", "short"])
def test_missing_tier_names_fall_back_to_positions(tmp_path, tg, fmt):
    writer = tg.long if fmt == "long" else tg.short
    path = write(tmp_path, writer([("phone", tg.phones), ("word", tg.words)], names=False))
    parsed = read_textgrid(path)
    assert list(parsed) == ["tier1", "tier2"]
    assert_tier(select_tier(parsed, "word", path=path), tg.words)
    assert_tier(select_tier(parsed, "phone", path=path), tg.phones)


def test_tolerant_reader_keeps_what_praatio_misreads(tmp_path, tg):
    spec = [(-0.25, 1e-05, 'say "hi"'), (1e-05, 1.5, "b")]
    path = write(tmp_path, tg.long([("Words", spec), ("other", spec), ("third", spec)]))
    parsed = read_textgrid(path)
    np.testing.assert_array_equal(parsed["Words"].start, [-0.25, 1e-05])
    assert parsed["Words"].label[0] == 'say "hi"'
    assert select_tier(parsed, "word") is parsed["Words"]


def test_duplicate_tier_names_are_suffixed(tmp_path, tg):
    path = write(tmp_path, tg.long([("word", tg.words), ("word", tg.phones)]))
    parsed = read_textgrid(path)
    assert list(parsed) == ["word", "word_2"]
    assert_tier(parsed["word_2"], tg.phones)


def test_declared_count_that_disagrees_with_the_intervals(tmp_path, tg):
    text = tg.long([("phone", tg.phones), ("word", tg.words)])
    declared = f"intervals: size = {len(tg.phones)}"
    text = text.replace(declared, f"intervals: size = {len(tg.phones) - 1}")
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(f"file {path}") + ".*disagree.*'phone'"):
        read_textgrid(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no interval tier"),
        ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\n', "no interval tier"),
        (
            '"IntervalTier"\n"word"\n0\n2\n2\n0\n1\n"a"\n1\n',
            "expected xmax of interval 1 of 2, found end of file",
        ),
    ],
)
def test_unparseable_files(tmp_path, text, expected):
    path = write(tmp_path, text, name="broken.TextGrid")
    prefix = r"story 'broken', file " + re.escape(str(path))
    with pytest.raises(DataError, match=prefix + ".*" + expected):
        read_textgrid(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.TextGrid"
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*not found"):
        read_textgrid(path, story="nowhere")


def test_no_word_tier(tmp_path, tg):
    spec = tg.words
    path = write(tmp_path, tg.long([("a", spec), ("b", spec), ("c", spec)]))
    with pytest.raises(DataError, match=r"story 'x'.*no word tier.*\['a', 'b', 'c'\]"):
        select_tier(read_textgrid(path), "word", path=path, story="x")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            [(0.0, 1.0, "a"), (1.0, 0.5, "b")],
            r"interval 1 \(1.0 s to 0.5 s, label 'b'\): starts after it ends",
        ),
        ([(0.0, 1.0, "a"), (2.0, 3.0, "b"), (1.0, 2.0, "c")], "interval 2 .*not sorted"),
        ([(0.0, 1.0, "a"), (0.9, 2.0, "b")], r"interval 1 \(0.9 s.*overlaps.*ends at 1.0 s"),
        ([(0.0, float("nan"), "a")], "interval 0 .*must be finite"),
        ([(0.0, 1.0, "a"), (1.0, float("inf"), "b")], "interval 1 .*must be finite"),
    ],
)
def test_bad_times_name_file_story_tier_and_interval(tmp_path, tg, spec, expected):
    path = write(tmp_path, tg.short([("phone", tg.phones), ("word", spec)]), name="tale.TextGrid")
    tiers = read_textgrid(path)
    context = r"story 'tale', file " + re.escape(str(path)) + ": tier 'word', "
    with pytest.raises(DataError, match=context + expected):
        select_tier(tiers, "word", path=path, story="tale")


def test_touching_boundaries_within_tolerance(tmp_path, tg):
    spec = [(0.0, 1.00004, "a"), (1.0, 2.0, "b"), (2.0, 2.0, "")]
    path = write(tmp_path, tg.long([("word", spec)]))
    assert_tier(select_tier(read_textgrid(path), "word"), spec)


def test_drop_non_speech(tg):
    raw = Intervals([w[0] for w in tg.words], [w[1] for w in tg.words], [w[2] for w in tg.words])
    kept = [w for w in tg.words if w[3]]
    words = drop_non_speech(raw, lowercase=True)
    assert list(words.label) == ["hello", "world", "again", "it's"]
    np.testing.assert_array_equal(words.start, [w[0] for w in kept])
    phones = drop_non_speech(
        Intervals([0, 1, 2, 3, 4], [1, 2, 3, 4, 5], ["{LG}", " AH0 ", "{ sp }", "SIL", "ns "])
    )
    assert list(phones.label) == ["AH0"]
    np.testing.assert_array_equal(phones.end, [2.0])


def test_intervals_container():
    intervals = Intervals([0.0, 1.0], [1.0, 3.0], ["a", "b"])
    assert len(intervals) == 2
    np.testing.assert_array_equal(intervals.midpoints, [0.5, 2.0])
    assert intervals.start.dtype == np.float64 and intervals.label.dtype.kind == "U"
    with pytest.raises(ValueError):
        intervals.start[0] = 5.0
    with pytest.raises(DataError, match="equal length"):
        Intervals([0.0], [1.0, 2.0], ["a"])
    assert len(Intervals([], [], [])) == 0
