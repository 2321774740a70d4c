"""Fixtures shared across the test tree."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def planted_twin(tmp_path_factory):
    """A small synthetic twin for planted-truth tests, written once per session.

    Six training stories heard by both subjects and a test story of 90 rows (nine 10-TR blocks
    for the permutation test), 320 / 280 voxels.

    Returns
    -------
    tuple of (Path, jaxenc.synthetic.SyntheticTruth)
    """
    from jaxenc.synthetic import SyntheticConfig, write_synthetic

    root = tmp_path_factory.mktemp("planted_twin")
    config = SyntheticConfig.tiny(n_train_stories=6, fewer_stories=(), min_respdict=110)
    return root, write_synthetic(root, config, progress=False)
