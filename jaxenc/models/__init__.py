"""Encoding models from delayed features to voxel responses.

Ridge family (arrays in, sklearn-style estimators): :class:`RidgeCV`, :class:`BandedRidgeCV`,
:class:`BootstrapChunks` (the Huth lab's bootstrap splits) and the voxel-sharded
:class:`ShardedRidgeCV` and :class:`ShardedBandedRidgeCV`. Nonlinear family (Flax NNX modules
trained by :mod:`jaxenc.train`): :class:`MLLinear`, :class:`MLP`, :class:`DIMLP`, :class:`DeepMLP`, :class:`DelayGRU`,
:class:`DelayTransformer`.
:mod:`~jaxenc.models.registry` names them: :data:`ENCODERS`, :func:`encoder` (a name to an
:class:`EncoderSpec`) and their options, :class:`RidgeOptions` and :class:`NetworkOptions`.
"""

from jaxenc.models.nonlinear import DIMLP, MLP, DeepMLP, DelayGRU, DelayTransformer, MLLinear, delayed_columns
from jaxenc.models.registry import ENCODERS, EncoderSpec, NetworkOptions, RidgeOptions, encoder
from jaxenc.models.ridge import RidgeCV
from jaxenc.models.ridge_banded import BandedRidgeCV
from jaxenc.models.ridge_sharded import ShardedBandedRidgeCV, ShardedRidgeCV
from jaxenc.models.ridge_splits import BootstrapChunks

__all__ = [
    "RidgeCV",
    "BandedRidgeCV",
    "BootstrapChunks",
    "ShardedRidgeCV",
    "ShardedBandedRidgeCV",
    "MLLinear",
    "MLP",
    "DIMLP",
    "DeepMLP",
    "DelayGRU",
    "DelayTransformer",
    "delayed_columns",
    "ENCODERS",
    "EncoderSpec",
    "encoder",
    "NetworkOptions",
    "RidgeOptions",
]
