"""Dimensionality reduction of voxel responses: PCA fitted on training responses only.

The nonlinear encoders predict the leading principal components of the responses; their
predictions are mapped back to voxels with :func:`pca_inverse` before evaluation. Everything
here takes arrays (numpy or JAX), never paths or models.
"""

from jaxenc.decomp.pca import (
    PCA,
    PCAState,
    column_mean,
    gram_matrix,
    pca_fit,
    pca_inverse,
    pca_transform,
    scatter_matrix,
)
from jaxenc.decomp.sharded import (
    ShardedPCA,
    ShardedPCAState,
    pca_fit_sharded,
    pca_inverse_sharded,
    pca_transform_sharded,
)

__all__ = [
    "PCA",
    "PCAState",
    "pca_fit",
    "pca_transform",
    "pca_inverse",
    "column_mean",
    "gram_matrix",
    "scatter_matrix",
    "ShardedPCA",
    "ShardedPCAState",
    "pca_fit_sharded",
    "pca_transform_sharded",
    "pca_inverse_sharded",
]
