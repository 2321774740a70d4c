"""Praat TextGrids of the LeBel stories: word and phone intervals, read robustly.

The word and phone alignments of ds003020 are Praat TextGrids (tier 0 "phone", tier 1 "word").
Some real files carry format quirks that strict parsers reject or, worse, misread: the short
("ooTextFile short") format, CRLF line endings, UTF-16 encodings, tiers without a name, tiers
whose intervals do not tile exactly. :func:`read_textgrid` tries praatio first and falls back
to a tolerant reader of both text formats; :func:`select_tier` picks the word or phone tier and
refuses intervals that would misalign a story; :func:`drop_non_speech` removes silences and
noise labels.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
from praatio.utilities import errors as praatio_errors
from praatio.utilities import textgrid_io

from jaxenc import conventions
from jaxenc.errors import DataError

__all__ = ["Intervals", "read_textgrid", "select_tier", "drop_non_speech", "TOUCH_TOLERANCE"]

# Boundaries of adjacent intervals that overlap by less than this many seconds are touching:
# Praat writes times rounded to ~1e-12 s and aligners round further, so exact tiling is rare.
TOUCH_TOLERANCE = 1e-4

_WORD_TIER_NAMES = ("word", "words")
_PHONE_TIER_NAMES = ("phone", "phones")
# Position of each tier in a two-tier TextGrid without recognisable names (ds003020's order).
_DEFAULT_TIER_INDEX = {"word": 1, "phone": 0}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_QUOTED = r'"(?:[^"]|"")*"'
# Long format: every value follows "=", so bare numbers such as "item [1]:" are not values.
_LONG_TOKEN = re.compile(rf'({_QUOTED})|=\s*({_NUMBER})(?![\w.])', re.IGNORECASE)
# Short format: values stand alone between whitespace.
_SHORT_TOKEN = re.compile(rf'({_QUOTED})|(?<!\S)({_NUMBER})(?!\S)', re.IGNORECASE)
_LONG_MARKER = re.compile(r"^\s*xmin\s*=", re.MULTILINE)
_TIER_CLASSES = ("IntervalTier", "TextTier")


@dataclasses.dataclass(frozen=True, eq=False)
class Intervals:
    """Labelled time intervals of one TextGrid tier.

    Parameters
    ----------
    start : array_like of shape (n,)
        Interval onsets in seconds from sound onset; stored as float64.
    end : array_like of shape (n,)
        Interval offsets in seconds from sound onset; stored as float64.
    label : array_like of shape (n,)
        Interval labels; stored as a numpy str array.

    Notes
    -----
    The arrays are made read-only so that an ``Intervals`` shared through a cache cannot be
    changed by one of its users.
    """

    start: np.ndarray
    end: np.ndarray
    label: np.ndarray

    def __post_init__(self):
        start = np.array(self.start, dtype=np.float64).reshape(-1)
        end = np.array(self.end, dtype=np.float64).reshape(-1)
        label = np.array(self.label, dtype=str).reshape(-1)
        if not start.shape == end.shape == label.shape:
            raise DataError(
                f"Intervals needs start, end and label of equal length, got {start.shape[0]}, "
                f"{end.shape[0]} and {label.shape[0]}"
            )
        for name, value in (("start", start), ("end", end), ("label", label)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return self.start.shape[0]

    @property
    def midpoints(self) -> np.ndarray:
        """Interval centres ``(start + end) / 2``, float64 array of shape (n,), in seconds."""
        return (self.start + self.end) / 2

    def __repr__(self) -> str:
        if len(self) == 0:
            return "Intervals(n=0)"
        return f"Intervals(n={len(self)}, {self.start[0]:.3f}s to {self.end[-1]:.3f}s)"


def read_textgrid(path, *, story: str | None = None) -> dict[str, Intervals]:
    """Read the interval tiers of a Praat TextGrid, keeping every label.

    Two readers parse the file: praatio, and a tolerant reader of the long and short text
    formats that checks every declared count. When both succeed they must agree; when one
    fails the other's result is used. praatio's result is discarded when the file holds
    negative times (its long-format reader drops the sign) or a tier name spanning lines (its
    short-format reader takes the following values as the name when the name is missing).
    Times are not validated here: see :func:`select_tier`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.TextGrid`` file, in UTF-8, UTF-16 (with or without byte-order mark) or Latin-1.
    story : str, optional
        Story named in error messages; defaults to the file's stem.

    Returns
    -------
    dict of str to Intervals
        Interval tiers in file order, keyed by tier name. Point tiers are skipped. A tier
        without a name is keyed ``"tier<k>"`` (k counted from 1 over the interval tiers); a
        repeated name gets a suffix ``"_2"``, ``"_3"``, ...

    Raises
    ------
    DataError
        If the file is missing or unreadable, neither reader can parse it, or the two readers
        disagree.
    """
    path = Path(path)
    story = path.stem if story is None else story
    text = _decode(path, story)
    from_praatio = None
    if not re.search(r"=\s*-\s*[\d.]", text):
        from_praatio = _parse_with_praatio(text)
    try:
        tiers = _parse_tolerant(text, path, story)
    except DataError:
        if from_praatio is None:
            raise
        tiers = from_praatio
    else:
        if from_praatio is not None:
            _check_agreement(from_praatio, tiers, path, story)
    if not tiers:
        raise DataError("no interval tier found in the TextGrid", path=path, story=story)
    return _name_tiers(tiers)


def select_tier(tiers: dict[str, Intervals], kind: str, *, path=None, story=None) -> Intervals:
    """Pick the word or the phone tier of a TextGrid and check its times.

    A tier named ``"word"``/``"words"`` (``"phone"``/``"phones"``), compared case-insensitively,
    is taken; otherwise, in a TextGrid of exactly two tiers, tier 1 for words and tier 0 for
    phones, as in ds003020.

    Parameters
    ----------
    tiers : dict of str to Intervals
        Output of :func:`read_textgrid`.
    kind : {"word", "phone"}
        Which tier to select.
    path : str or os.PathLike, optional
        The TextGrid file, named in error messages.
    story : str, optional
        The story, named in error messages.

    Returns
    -------
    Intervals
        The selected tier, unchanged.

    Raises
    ------
    DataError
        If no tier of that kind exists, or an interval has non-finite times, starts after it
        ends, starts before the previous interval starts (unsorted), or starts more than
        :data:`TOUCH_TOLERANCE` seconds before the previous interval ends (overlap).
    """
    if kind not in _DEFAULT_TIER_INDEX:
        raise ValueError(f"kind must be 'word' or 'phone', got {kind!r}")
    names = _WORD_TIER_NAMES if kind == "word" else _PHONE_TIER_NAMES
    matches = [name for name in tiers if name.strip().lower() in names]
    if matches:
        name = matches[0]
    elif len(tiers) == 2:
        name = list(tiers)[_DEFAULT_TIER_INDEX[kind]]
    else:
        raise DataError(
            f"no {kind} tier: expected a tier named {' or '.join(map(repr, names))} or exactly two "
            f"tiers, found {list(tiers)}",
            path=path,
            story=story,
        )
    _check_times(tiers[name], name, path, story)
    return tiers[name]


def drop_non_speech(intervals: Intervals, *, lowercase: bool = False) -> Intervals:
    """Remove silences and non-speech events from a tier.

    A label is non-speech when, stripped of whitespace and of surrounding braces (``"{ns}"``,
    ``"{SP}"``) and lower-cased, it is in :data:`jaxenc.conventions.NON_SPEECH_LABELS`
    (which includes the empty label).

    Parameters
    ----------
    intervals : Intervals
        A tier of n intervals.
    lowercase : bool, default False
        Lower-case the kept labels (word tiers); labels are always stripped of whitespace.

    Returns
    -------
    Intervals
        The m <= n speech intervals, in their original order.
    """
    labels = np.strings.strip(intervals.label)
    keys = np.strings.lower(np.strings.strip(np.strings.strip(labels, "{}")))
    keep = ~np.isin(keys, np.array(sorted(conventions.NON_SPEECH_LABELS), dtype=str))
    labels = labels[keep]
    if lowercase:
        labels = np.strings.lower(labels)
    return Intervals(intervals.start[keep], intervals.end[keep], labels)


def _decode(path: Path, story: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("TextGrid file not found", path=path, story=story) from None
    except OSError as exc:
        raise DataError(f"cannot read TextGrid: {exc}", path=path, story=story) from exc
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif raw.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif len(raw) >= 2 and raw[0] == 0 and raw[1] != 0:
        encoding = "utf-16-be"
    elif len(raw) >= 2 and raw[1] == 0 and raw[0] != 0:
        encoding = "utf-16-le"
    else:
        encoding = "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        if encoding != "utf-8":
            raise DataError(f"not valid {encoding} text", path=path, story=story) from None
        # Older aligners wrote Latin-1; every byte string is valid Latin-1.
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_with_praatio(text: str) -> list[tuple[str | None, Intervals]] | None:
    try:
        parsed = textgrid_io.parseTextgridStr(text, includeEmptyIntervals=True)
        tiers = []
        for tier in parsed["tiers"]:
            if tier["class"] != "IntervalTier":
                continue
            if "\n" in tier["name"]:
                return None
            entries = list(tier["entries"])
            start = [float(entry[0]) for entry in entries]
            end = [float(entry[1]) for entry in entries]
            label = [str(entry[2]).strip() for entry in entries]
            tiers.append((tier["name"] or None, Intervals(start, end, label)))
    except (praatio_errors.PraatioException, ValueError, IndexError, KeyError, TypeError):
        return None
    return tiers


def _check_agreement(first, second, path, story) -> None:
    problem = None
    if [name for name, _ in first] != [name for name, _ in second]:
        problem = f"tiers {[n for n, _ in first]} against {[n for n, _ in second]}"
    else:
        for (name, a), (_, b) in zip(first, second, strict=True):
            if len(a) != len(b):
                problem = f"tier {name!r} has {len(a)} against {len(b)} intervals"
            elif not (
                np.array_equal(a.start, b.start, equal_nan=True)
                and np.array_equal(a.end, b.end, equal_nan=True)
                and np.array_equal(a.label, b.label)
            ):
                problem = f"tier {name!r} differs in its times or labels"
            if problem:
                break
    if problem:
        raise DataError(
            f"praatio and the tolerant TextGrid reader disagree ({problem}): the file is "
            "ambiguous, check its format",
            path=path,
            story=story,
        )


def _parse_tolerant(text: str, path: Path, story: str) -> list[tuple[str | None, Intervals]]:
    """Walk the stream of values shared by the long and short formats.

    Both formats hold the same sequence: a class ("IntervalTier" or "TextTier"), an optional
    name, xmin, xmax, a count, then (xmin, xmax, text) per interval or (time, mark) per point.
    """
    pattern = _LONG_TOKEN if _LONG_MARKER.search(text) else _SHORT_TOKEN
    tokens = []
    for match in pattern.finditer(text):
        quoted, number = match.groups()
        if quoted is not None:
            tokens.append(("str", quoted[1:-1].replace('""', '"')))
        else:
            tokens.append(("num", float(number)))

    def expect(position, kind, what, tier):
        if position >= len(tokens) or tokens[position][0] != kind:
            found = "end of file" if position >= len(tokens) else repr(tokens[position][1])
            raise DataError(
                f"cannot parse TextGrid tier {tier}: expected {what}, found {found}",
                path=path,
                story=story,
            )
        return tokens[position][1]

    tiers = []
    position = 0
    tier_number = 0
    while True:
        while position < len(tokens) and not (
            tokens[position][0] == "str" and tokens[position][1] in _TIER_CLASSES
        ):
            position += 1
        if position >= len(tokens):
            return tiers
        tier_number += 1
        tier_class = tokens[position][1]
        position += 1
        name = None
        if position < len(tokens) and tokens[position][0] == "str":
            name = tokens[position][1]
            position += 1
        tier = f"{tier_number} ({name!r})" if name else str(tier_number)
        expect(position, "num", "the tier's xmin", tier)
        expect(position + 1, "num", "the tier's xmax", tier)
        count = expect(position + 2, "num", "the number of intervals", tier)
        if not (np.isfinite(count) and count >= 0 and count == int(count)):
            raise DataError(
                f"cannot parse TextGrid tier {tier}: interval count {count} is not a count",
                path=path,
                story=story,
            )
        position += 3
        width = 3 if tier_class == "IntervalTier" else 2
        start, end, label = [], [], []
        for index in range(int(count)):
            what = f"interval {index} of {int(count)}"
            if tier_class == "IntervalTier":
                start.append(expect(position, "num", f"xmin of {what}", tier))
                end.append(expect(position + 1, "num", f"xmax of {what}", tier))
                label.append(expect(position + 2, "str", f"text of {what}", tier).strip())
            else:
                expect(position, "num", f"time of point {index}", tier)
                expect(position + 1, "str", f"mark of point {index}", tier)
            position += width
        if tier_class == "IntervalTier":
            tiers.append((name or None, Intervals(start, end, label)))


def _name_tiers(tiers: list[tuple[str | None, Intervals]]) -> dict[str, Intervals]:
    named = {}
    for number, (name, intervals) in enumerate(tiers, start=1):
        base = name if name else f"tier{number}"
        key, suffix = base, 2
        while key in named:
            key, suffix = f"{base}_{suffix}", suffix + 1
        named[key] = intervals
    return named


def _check_times(intervals: Intervals, tier: str, path, story) -> None:
    start, end = intervals.start, intervals.end

    def fail(index, problem):
        # Plain floats and str so the message reads "1.0 s", not "np.float64(1.0) s".
        raise DataError(
            f"tier {tier!r}, interval {index} ({float(start[index])!r} s to "
            f"{float(end[index])!r} s, label {str(intervals.label[index])!r}): {problem}",
            path=None if path is None else os.fspath(path),
            story=story,
        )

    bad = np.flatnonzero(~(np.isfinite(start) & np.isfinite(end)))
    if bad.size:
        fail(bad[0], "times must be finite")
    bad = np.flatnonzero(start > end)
    if bad.size:
        fail(bad[0], "starts after it ends")
    bad = np.flatnonzero(start[1:] < start[:-1]) + 1
    if bad.size:
        previous = float(start[bad[0] - 1])
        fail(bad[0], f"intervals are not sorted: previous interval starts at {previous!r} s")
    bad = np.flatnonzero(start[1:] < end[:-1] - TOUCH_TOLERANCE) + 1
    if bad.size:
        previous = float(end[bad[0] - 1])
        fail(
            bad[0],
            f"overlaps the previous interval, which ends at {previous!r} s (tolerance "
            f"{TOUCH_TOLERANCE} s)",
        )
