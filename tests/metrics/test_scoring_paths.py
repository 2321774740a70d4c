"""Every scoring path of jaxenc gives the same per-voxel scores on the same prediction.

The paths: jaxenc.metrics.score on the whole prediction and chunk of voxels by chunk (the
full-size path), jaxenc.metrics.voxel_scores (its per-voxel building block) and the
experiment's evaluate stage (jaxenc.experiment.scoring.score_run) on a stored prediction; all
with their default trim (the protocol's share of the test story) and floor (0.25). The scores
themselves are pinned against formulas in tests/metrics/test_scores.py; here two float32
computations are compared, within ``score_tolerances`` (tests/_tolerance.py) for two
computations: chunking or batching changes how XLA vectorises the sums. A path that scores
other rows (another trim) or another floor differs by 1e-2 or more.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import load_config
from jaxenc.experiment.scoring import score_run
from jaxenc.metrics import VOXEL_SCORES, ScoreConfig, protocol_trim, score, voxel_scores
from jaxenc.store import RunStore
from jaxenc.synthetic import SyntheticConfig
from tests._tolerance import assert_within, score_tolerances

N_REPEATS, N_TRS, N_VOXELS = 4, 73, 21  # the demo twin's test story length
CONFIG = ScoreConfig(permutations=50)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((N_TRS, N_VOXELS)) * np.linspace(0.05, 2, N_VOXELS)
    repeats = (signal + rng.standard_normal((N_REPEATS, N_TRS, N_VOXELS))).astype(np.float32)
    prediction = (0.7 * signal + 0.2 + 0.4 * rng.standard_normal((N_TRS, N_VOXELS))).astype(np.float32)
    return prediction, repeats


def _experiment_scores(prediction, repeats, folder, *overrides):
    """The evaluate stage on one stored prediction of a run store, the dataset stubbed."""
    config = load_config(None, ['table.models=["ridge"]', 'table.feature_sets=["audio"]',
                                'table.targets=["voxels"]', "analyses.partition=false",
                                "analyses.clustering=false", f"evaluate.permutations={CONFIG.permutations}",
                                *overrides])
    store = RunStore(folder)
    store.save_prediction("audio__ridge__voxels", {"S": prediction},
                          {"features": "audio", "model": "ridge", "target": "voxels"})
    data = SimpleNamespace(subjects=["S"], truth=None,
                           dataset=SimpleNamespace(test_repeats=lambda subject: repeats))
    return score_run(config, data, store).models[0].scores


@pytest.mark.slow
def test_every_scoring_path_gives_the_same_scores(tmp_path):
    prediction, repeats = _data()
    ref = score(prediction, repeats, CONFIG)
    target = repeats.mean(axis=0)
    paths = {
        "chunked": score(lambda c0, c1: prediction[:, c0:c1], repeats, CONFIG, chunk=8).arrays(),
        "voxel_scores": voxel_scores(target, prediction, repeats),
        "experiment": _experiment_scores(prediction, repeats, tmp_path).arrays(),
    }
    bounds = score_tolerances(prediction, repeats, protocol_trim(N_TRS), CONFIG.floor, computations=2)
    for path, scores in paths.items():
        for name in VOXEL_SCORES:
            rtol, atol = bounds[name]
            assert_within(scores[name], getattr(ref, name), rtol=rtol, atol=atol, err_msg=f"{path}: {name}")
        if "p" in scores:
            np.testing.assert_array_equal(scores["p"], ref.p, err_msg=path)
            np.testing.assert_array_equal(scores["significant"], ref.significant, err_msg=path)
    # The default is the protocol's trim: 10 of the 73 rows dropped, not none.
    untrimmed = score(prediction, repeats, ScoreConfig(permutations=50, test_trim=0))
    assert not np.allclose(untrimmed.r, ref.r)


def test_evaluate_stage_scores_chunk_by_chunk_as_whole(tmp_path):
    """``evaluate.chunk_voxels``: the evaluate stage scoring 8 voxels at a time (3 chunks of the
    21) gives the scores of one chunk of all voxels, within ``score_tolerances`` for two float32
    computations (the chunk width changes how XLA vectorises the sums over TRs); the p-values
    and the significance are identical (the permutations are drawn from the seed and shared by
    all voxels)."""
    prediction, repeats = _data(1)
    whole = _experiment_scores(prediction, repeats, tmp_path / "whole", f"evaluate.chunk_voxels={N_VOXELS}")
    chunked = _experiment_scores(prediction, repeats, tmp_path / "chunked", "evaluate.chunk_voxels=8")
    bounds = score_tolerances(prediction, repeats, protocol_trim(N_TRS), CONFIG.floor, computations=2)
    for name in VOXEL_SCORES:
        rtol, atol = bounds[name]
        assert_within(getattr(chunked, name), getattr(whole, name), rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_array_equal(chunked.p, whole.p)
    np.testing.assert_array_equal(chunked.significant, whole.significant)


def test_default_chunk_scores_the_demo_whole_and_a_full_size_subject_in_chunks():
    chunk = ScoreConfig().chunk_voxels
    assert max(SyntheticConfig.demo().n_voxels) <= chunk
    assert min(SyntheticConfig.full().n_voxels) > chunk
    with pytest.raises(ConfigError, match="chunk_voxels"):
        ScoreConfig(chunk_voxels=0).validate()
