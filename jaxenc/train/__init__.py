"""Fold x subject parallel training of the nonlinear encoders, and their evaluation.

:func:`fit_encoders` trains one model per (subject, story-grouped fold, hyperparameter point)
in one compiled, vmapped program with per-model early stopping and orbax checkpoints;
:func:`evaluate` scores the fold-averaged test-story predictions per voxel. Inputs are arrays
(delayed features and responses per story), never paths.
"""

from jaxenc.train.evaluate import evaluate, summarize
from jaxenc.train.fit import (
    EncoderFit,
    ModelKey,
    NonFiniteError,
    SubjectData,
    TrainConfig,
    fit_encoders,
)
from jaxenc.train.folds import story_folds

__all__ = [
    "TrainConfig",
    "SubjectData",
    "ModelKey",
    "EncoderFit",
    "NonFiniteError",
    "fit_encoders",
    "story_folds",
    "evaluate",
    "summarize",
]
