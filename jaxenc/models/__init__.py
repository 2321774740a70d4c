"""Encoding models from delayed features to voxel responses: ridge family (and MLP family)."""

from jaxenc.models.ridge import BandedRidgeCV, RidgeCV
from jaxenc.models.ridge_splits import BootstrapChunks

__all__ = ["RidgeCV", "BandedRidgeCV", "BootstrapChunks"]
