"""Fixtures of the twin's tests: the tiny preset written once, small configs, hf5 access."""

from __future__ import annotations

import types

import h5py
import pytest

from jaxenc.synthetic import SyntheticConfig, write_synthetic


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny preset, written once per session (read-only for the tests)."""
    root = tmp_path_factory.mktemp("synthetic_tiny")
    return write_synthetic(root, SyntheticConfig.tiny(), progress=False)


def _small_config(**changes):
    """One subject, one 40 s training story and a 40 s test story."""
    fields = dict(
        subjects=("UTS01",),
        n_voxels=(40,),
        n_repeats=(3,),
        n_train_stories=1,
        fewer_stories=(),
        length_scale=0.01,
        min_respdict=30,
        n_vocab=50,
    )
    return SyntheticConfig.tiny(**{**fields, **changes})


@pytest.fixture
def small():
    """Maker of a one-subject config (one 40 s training story, a 40 s test story)."""
    return _small_config


def _hf5_path(root, subject, story):
    return root / "derivative" / "preprocessed_data" / subject / f"{story}.hf5"


def _read(path, key="data"):
    with h5py.File(path, "r") as file:
        return file[key][()]


@pytest.fixture
def hf5():
    """``hf5.path(root, subject, story)`` of a response file, ``hf5.read(path, key="data")``."""
    return types.SimpleNamespace(path=_hf5_path, read=_read)
