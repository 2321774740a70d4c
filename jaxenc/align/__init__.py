"""Temporal alignment of stimulus features to fMRI responses: pure, jittable array functions.

Features arrive time-stamped (word midpoints, audio frames); responses arrive one row per TR.
:func:`lanczos_interp` downsamples features onto TR centres, :func:`trim` and :func:`zscore`
give each story the rows and scale of its response file (:func:`story_features` does all three
with the Huth-lab defaults of :mod:`jaxenc.conventions`), :func:`make_delayed` adds the FIR
delays, and :func:`stack_stories` / :func:`stack_responses` build the design and response
matrices with row-count checks. Nothing here reads files or runs models.
"""

from jaxenc.align.delays import make_delayed
from jaxenc.align.lanczos import lanczos_interp, lanczos_kernel
from jaxenc.align.story import (
    stack_responses,
    stack_stories,
    story_features,
    tr_times,
    trim,
    zscore,
)

__all__ = [
    "lanczos_interp",
    "lanczos_kernel",
    "make_delayed",
    "tr_times",
    "trim",
    "zscore",
    "story_features",
    "stack_stories",
    "stack_responses",
]
