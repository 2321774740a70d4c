"""One path from data to scores: the Python API, the command line and the sweeps agree.

On the tiny twin with the embedded default extractors' features, ``jaxenc run`` fits ridge on
audio, semantic and audio+semantic (voxels and PCA) and a layer sweep that includes the
table's semantic layer; :func:`jaxenc.pipeline.fit_linear_baseline` fits the same from the
run's features with the run's settings. Every per-voxel score, noise ceiling and partition row
must be equal, and the sweep's fit at the table's layer must be the table's semantic fit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxenc import cli, pipeline
from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.extract import FeatureReader
from jaxenc.features.defaults import DEFAULT_LLAMA_LAYER
from jaxenc.featuresets import AUDIO, FEATURE_SETS, SEMANTIC, FeatureSource
from jaxenc.report import RunResults
from tests.experiment._runs import TINY, run_folder


@pytest.mark.slow
def test_the_python_api_the_command_line_and_the_sweeps_give_the_same_scores(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    config = tmp_path / "one-path.toml"
    config.write_text('name = "one-path"\n')
    overrides = TINY + ['table.models=["ridge"]', 'table.targets=["voxels", "pca"]', "analyses.clustering=false",
                        f"analyses.layer_sweep=[{DEFAULT_LLAMA_LAYER}]"]
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    for override in overrides:
        argv += ["--set", override]
    assert cli.main(argv) == 0
    command_line = RunResults.load(out)

    exp = Experiment(load_config(out), out, progress=False, log=lambda line: None)
    reader = FeatureReader(exp.store, exp.data)
    features = {m: reader.read(FeatureSource(m)) for m in (AUDIO, SEMANTIC)}
    cfg = exp.config
    for target in ("voxels", "pca"):
        api = pipeline.fit_linear_baseline(exp.data.dataset, exp.data.subjects, features, target=target,
                                           align=cfg.align, ridge=cfg.ridge, train=cfg.train, scoring=cfg.evaluate)
        for name in FEATURE_SETS:
            (a,) = api.find(features=name)
            (c,) = command_line.find(features=name, model="ridge", target=target)
            assert a.scores == c.scores, (name, target)
            assert a.info["median_alpha"] == c.info["median_alpha"]
        # As JSON, where NaN (no significant voxel to partition) equals NaN.
        assert json.dumps(api.partition) == json.dumps([r for r in command_line.partition if r["target"] == target])
        for subject in exp.data.subjects:
            np.testing.assert_array_equal(api.cc_max[subject], command_line.cc_max[subject])

    (sweep,) = command_line.sweeps
    (row,) = sweep["rows"]
    (layer,) = command_line.find(features=f"semantic/L{DEFAULT_LLAMA_LAYER}")
    (table,) = command_line.find(features=SEMANTIC, model="ridge", target="voxels")
    assert layer.scores == table.scores
    assert row["x"] == DEFAULT_LLAMA_LAYER and row["mean_r"] == table.scores.summary()["mean_r"]
