"""The tiny twin with the embedded default extractors' features, prepared once per session."""

from __future__ import annotations

import pytest

from tests.experiment._runs import TINY


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A run folder with the tiny twin and the default extractors' features of layers 0-2."""
    from jaxenc.experiment import Experiment, load_config

    out = tmp_path_factory.mktemp("prepared")
    Experiment(load_config(None, TINY + ["analyses.layer_sweep=[0, 1, 2]"]), out, progress=False,
               log=lambda line: None).extract()
    return out
