"""Inputs of ds003020 checked against each other: audio, TextGrid and respdict timing, and
which stories each subject has.

Timing
------
Sample 0 of a story's wav is the sound onset, and the TextGrid's times count from it
(:mod:`jaxenc.conventions`). The ``respdict[story] = R`` TRs acquired give ``R - 5`` simulated
triggers at ``2 i - 10`` s, so the TR grid ends at ``2 (R - 5) - 10 = 2 R - 20`` seconds after
the sound onset: the sound is expected to end there too. Three disagreements are refused with
a :class:`~jaxenc.errors.DataError` naming the story and the files:

- the audio lasts more than :data:`DURATION_TOLERANCE` seconds less or more than the TR grid
  (a truncated wav, or the wav of another story);
- the TextGrid's last word ends more than :data:`DURATION_TOLERANCE` seconds after the audio
  does (words aligned to sound that is not there: their audio features would be silence);
- the TextGrid's last word ends more than :data:`DURATION_TOLERANCE` seconds after the TR grid
  (the TextGrid of a longer story).

Why 4 s: in the real ds003020 the wav durations (from the file sizes of
``/work/shared/ds003020/layout.tsv``, 44.1 kHz int16) exceed ``2 R - 20`` by -0.25 s to
+1.97 s over all 84 stories (median +0.78 s), and the synthetic twin writes exactly ``2 R - 20``
seconds, so 4 s (two TRs) passes all of them with a margin of 2 s. It is also small enough to
be harmless: the last kept response row (rows ``[10:-5]``) is centred at ``2 R - 31`` s and the
Lanczos filter (3 lobes of one TR) reaches 6 s past it, to ``2 R - 25`` s, so audio that ends up
to 4 s early, or words that run up to 4 s past the audio, change no kept row; a wav cut to
half its length or to its first 30 s misses minutes.

Stories
-------
:func:`story_report` lists for each subject of a run the stories it will use, those it lacks
(no hf5, no subject folder, or a stimulus file missing) and its hf5 files that the run will not
use (a story not in respdict, or not expected), so that a run started on incomplete data says
so instead of going on silently with fewer subjects or stories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from jaxenc import conventions
from jaxenc.errors import DataError

__all__ = ["DURATION_TOLERANCE", "sound_end", "check_audio_timing", "check_word_timing",
           "SubjectStories", "story_report", "format_story_report"]

# Largest disagreement, in seconds, between the audio's duration, the end of the TR grid and
# the TextGrid's last word (see the module docstring for the measurement behind it).
DURATION_TOLERANCE = 4.0
# Stories named per subject and kind in format_story_report before "and N more".
_SHOWN = 8


def sound_end(acquired: int) -> float:
    """Seconds from the sound onset to the end of the TR grid of a story.

    Parameters
    ----------
    acquired : int
        ``respdict[story]``, the TRs acquired.

    Returns
    -------
    float
        ``TR * (acquired - PAD) - SOUND_START``, i.e. ``2 * acquired - 20`` s.
    """
    return conventions.TR * (acquired - conventions.PAD) - conventions.SOUND_START


def check_audio_timing(duration: float, acquired: int, last_word_end: float | None, *,
                       story: str, path, textgrid=None) -> None:
    """Refuse audio that is much shorter or longer than its TR grid or its TextGrid's words.

    Parameters
    ----------
    duration : float
        Length of the wav in seconds.
    acquired : int
        ``respdict[story]``.
    last_word_end : float or None
        End of the TextGrid's last spoken word in seconds from the sound onset (None: no
        TextGrid or no word).
    story : str
    path : str or os.PathLike
        The wav file, named in the error.
    textgrid : str or os.PathLike, optional
        The TextGrid file, named in the error.

    Raises
    ------
    DataError
        One line naming the story, the wav and what disagrees by more than
        :data:`DURATION_TOLERANCE` seconds.
    """
    expected = sound_end(acquired)
    problems = []
    if abs(duration - expected) > DURATION_TOLERANCE:
        problems.append(f"its {acquired} TRs in respdict.json span {expected:.1f} s of sound")
    if last_word_end is not None and last_word_end > duration + DURATION_TOLERANCE:
        problems.append(f"the last word of {textgrid} ends at {last_word_end:.1f} s")
    if problems:
        raise DataError(
            f"the audio lasts {duration:.1f} s but {' and '.join(problems)} (tolerance "
            f"{DURATION_TOLERANCE:g} s): a truncated wav or another story's file?",
            path=path, story=story)


def check_word_timing(last_word_end: float, acquired: int, *, story: str, path) -> None:
    """Refuse a TextGrid whose words run past the story's TR grid.

    Parameters
    ----------
    last_word_end : float
        End of the last spoken word, seconds from the sound onset.
    acquired : int
        ``respdict[story]``.
    story : str
    path : str or os.PathLike
        The TextGrid, named in the error.

    Raises
    ------
    DataError
        The last word ends more than :data:`DURATION_TOLERANCE` seconds after the TR grid.
    """
    end = sound_end(acquired)
    if last_word_end > end + DURATION_TOLERANCE:
        raise DataError(
            f"the last word ends at {last_word_end:.1f} s but the story's {acquired} TRs in "
            f"respdict.json span {end:.1f} s of sound (tolerance {DURATION_TOLERANCE:g} s): "
            "the TextGrid of another story?", path=path, story=story)


@dataclasses.dataclass(frozen=True)
class SubjectStories:
    """Which stories one subject of a run has.

    Attributes
    ----------
    subject : str
    used : tuple of str
        Expected training stories whose hf5, TextGrid and wav are all present and that
        respdict knows, sorted.
    missing : dict of str to str
        Expected stories that cannot be used, with the reason (``"no hf5"``, ``"no subject
        folder"``, ``"no TextGrid"``, ``"no wav"``); the test story included.
    extra : dict of str to str
        hf5 files of the subject that the run will not use, with the reason (``"not in
        respdict"``, ``"not expected"``).
    has_test : bool
        The test story's hf5 is present and usable.
    """

    subject: str
    used: tuple[str, ...]
    missing: dict[str, str]
    extra: dict[str, str]
    has_test: bool

    @property
    def complete(self) -> bool:
        """Nothing expected is missing."""
        return not self.missing


def _usable(dataset, story: str) -> str | None:
    """Why a stimulus of ``story`` is missing, or None when its TextGrid and wav exist."""
    if not dataset.textgrid_path(story).is_file():
        return "no TextGrid"
    if not dataset.wav_path(story).is_file():
        return "no wav"
    return None


def story_report(dataset, subjects: Sequence[str] | None = None,
                 expected: Mapping[str, Sequence[str]] | None = None) -> list[SubjectStories]:
    """Each subject's stories: used, missing and extra, from the files alone (no data read).

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subjects : sequence of str, optional
        Subjects of the run; default the keys of ``expected``, else every subject folder.
        A subject without a folder is reported with every expected story missing.
    expected : mapping of str to sequence of str, optional
        Training stories each subject should have (e.g. the synthetic twin's
        ``truth.stories(subject)``); the test story is always expected. Default: every
        training story that respdict knows and any of ``subjects`` has an hf5 for, so a story
        one subject lacks and another has shows as missing.

    Returns
    -------
    list of SubjectStories
        In the order of ``subjects``.
    """
    present = set(dataset.subjects)
    if subjects is None:
        subjects = list(expected) if expected is not None else sorted(present)
    test = dataset.test_story
    hf5 = {s: set(dataset.hf5_stories(s)) if s in present else set() for s in subjects}
    if expected is None:
        union = sorted({st for s in subjects for st in hf5[s] if st in dataset.respdict} - {test})
        expected = {s: union for s in subjects}
    report = []
    for subject in subjects:
        wanted = [st for st in expected.get(subject, ()) if st != test] + [test]
        used, missing = [], {}
        for story in wanted:
            if subject not in present:
                missing[story] = "no subject folder"
            elif story not in hf5[subject]:
                missing[story] = "no hf5"
            elif story not in dataset.respdict:
                missing[story] = "not in respdict"
            elif (why := _usable(dataset, story)) is not None:
                missing[story] = why
            elif story != test:
                used.append(story)
        extra = {st: ("not in respdict" if st not in dataset.respdict else "not expected")
                 for st in sorted(hf5[subject] - set(wanted))}
        report.append(SubjectStories(subject, tuple(sorted(used)), missing, extra,
                                     subject in present and test not in missing))
    return report


def format_story_report(report: Sequence[SubjectStories]) -> str:
    """One line per subject, e.g. for the log at the start of a run.

    Parameters
    ----------
    report : sequence of SubjectStories

    Returns
    -------
    str
        ``"UTS02: 11 training stories, test story; missing 1: alpha (no hf5); extra 1: foo
        (not in respdict)"``, one such line per subject (at most 8 stories named per kind).
    """
    lines = []
    for entry in report:
        parts = [f"{entry.subject}: {len(entry.used)} training stories, "
                 + ("test story" if entry.has_test else "no test story")]
        for name, stories in (("missing", entry.missing), ("extra", entry.extra)):
            if stories:
                shown = [f"{s} ({why})" for s, why in stories.items()]
                more = len(shown) - _SHOWN
                parts.append(f"{name} {len(shown)}: " + ", ".join(shown[:_SHOWN])
                             + (f" and {more} more" if more > 0 else ""))
        lines.append("; ".join(parts))
    return "\n".join(lines)
