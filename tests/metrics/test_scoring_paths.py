"""Every scoring path of jaxenc gives the same per-voxel scores on the same prediction.

The paths: jaxenc.pipeline.score_test_story, jaxenc.analysis.sweep.score_prediction,
jaxenc.train.evaluate, jaxenc.stream.chunked_voxel_scores and the experiment's evaluate stage
(jaxenc.experiment.scoring.evaluate_all); all with their default trim (the protocol's share of
the test story) and floor (0.25), against jaxenc.metrics.score_repeats.
"""

from types import SimpleNamespace

import numpy as np

from jaxenc import pipeline
from jaxenc.analysis import score_prediction
from jaxenc.experiment import load_config
from jaxenc.experiment.scoring import evaluate_all
from jaxenc.metrics import VOXEL_SCORES, score_repeats
from jaxenc.stream import chunked_voxel_scores
from jaxenc.train import evaluate

N_REPEATS, N_TRS, N_VOXELS = 4, 73, 21  # the demo twin's test story length


def _data(seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((N_TRS, N_VOXELS)) * np.linspace(0.05, 2, N_VOXELS)
    repeats = (signal + rng.standard_normal((N_REPEATS, N_TRS, N_VOXELS))).astype(np.float32)
    prediction = (0.7 * signal + 0.2 + 0.4 * rng.standard_normal((N_TRS, N_VOXELS))).astype(np.float32)
    return prediction, repeats


class _StoredFit:
    """A stand-in for an EncoderFit whose fold-averaged prediction is given."""

    def __init__(self, prediction):
        self.prediction = prediction

    def predict(self, features, grid=None):
        return {subject: self.prediction for subject in features}


def _experiment_scores(prediction, repeats):
    """The evaluate stage on one stored prediction, with the run's other parts stubbed."""
    config = load_config(None, ['table.models=["ridge"]', 'table.feature_sets=["audio"]',
                                'table.targets=["voxels"]', "analyses.partition=false",
                                "analyses.clustering=false", "evaluate.permutations=50"])
    exp = SimpleNamespace(
        config=config, subjects=["S"], truth=None,
        dataset=SimpleNamespace(test_repeats=lambda subject: repeats),
        load_prediction=lambda name: ({"S": prediction}, {"features": "audio", "model": "ridge",
                                                          "target": "voxels"}),
        bar=lambda items, **kwargs: items,
    )
    return evaluate_all(exp).scores[0]


def test_every_scoring_path_gives_the_same_scores():
    prediction, repeats = _data()
    ref = score_repeats(prediction, repeats, n_permutations=50)
    target = repeats.mean(axis=0)
    paths = {
        "pipeline": vars(pipeline.score_test_story(prediction, repeats, n_permutations=50)),
        "analysis": score_prediction(prediction, repeats, n_permutations=50),
        "train": evaluate(_StoredFit(prediction), {"S": np.zeros((N_TRS, 3))}, {"S": target},
                          repeats={"S": repeats})["S"],
        "stream": chunked_voxel_scores(lambda c0, c1: prediction[:, c0:c1], target, repeats, chunk=8),
        "experiment": vars(_experiment_scores(prediction, repeats)),
    }
    for path, scores in paths.items():
        for name in VOXEL_SCORES:
            np.testing.assert_allclose(scores[name], ref[name], rtol=1e-6, atol=1e-7, err_msg=f"{path}: {name}")
        if "p" in scores:
            np.testing.assert_array_equal(scores["p"], ref["p"], err_msg=path)
            np.testing.assert_array_equal(scores["significant"], ref["significant"], err_msg=path)
    # The default is the protocol's trim: 10 of the 73 rows dropped, not none.
    untrimmed = score_repeats(prediction, repeats, trim=0, n_permutations=50)
    assert not np.allclose(untrimmed["r"], ref["r"])
