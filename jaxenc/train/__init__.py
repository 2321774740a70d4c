"""Fold x subject parallel training of the nonlinear encoders.

:func:`fit_encoders` trains one model per (subject, story-grouped fold, hyperparameter point)
in one compiled, vmapped program with per-model early stopping and orbax checkpoints;
:func:`fit_encoders_arrays` does the same from row-aligned matrices and a story label per row.
Inputs are arrays (delayed features and responses per story), never paths. A fit's
fold-averaged test-story predictions (:meth:`EncoderFit.predict`) are scored by the one scoring
function, :func:`jaxenc.metrics.score`.

The pieces, each usable alone: :mod:`jaxenc.train.stack` (folds, fold PCAs and the stacked
host arrays), :mod:`jaxenc.train.program` (the compiled chunk program) and
:mod:`jaxenc.train.loop` (the chunk loop: checkpoints, callbacks, re-packing).
"""

from jaxenc.train.config import ModelKey, NonFiniteError, TrainConfig
from jaxenc.train.fit import EncoderFit, fit_encoders, fit_encoders_arrays
from jaxenc.train.folds import story_folds
from jaxenc.train.stack import SubjectData

__all__ = [
    "TrainConfig",
    "SubjectData",
    "ModelKey",
    "EncoderFit",
    "NonFiniteError",
    "fit_encoders",
    "fit_encoders_arrays",
    "story_folds",
]
