"""Readers of the story-listening fMRI data on disk (numpy only).

:class:`LeBelDataset` reads OpenNeuro ds003020 (LeBel et al. 2023) in its published layout:
responses per subject and story, word and phone intervals from the TextGrids, and the stimulus
audio, with the audio's duration checked against the TR grid and the TextGrid. The lower-level
readers are exposed for files outside that layout; :func:`story_report` lists each subject's
stories (used, missing, extra) before a run.
"""

from jaxenc.data.audio import read_wav
from jaxenc.data.consistency import SubjectStories, format_story_report, story_report
from jaxenc.data.lebel import LeBelDataset
from jaxenc.data.textgrid import Intervals, drop_non_speech, read_textgrid, select_tier

__all__ = [
    "LeBelDataset",
    "Intervals",
    "read_textgrid",
    "select_tier",
    "drop_non_speech",
    "read_wav",
    "story_report",
    "format_story_report",
    "SubjectStories",
]
