"""A ConfigError carries the setting it is about, so a caller names the config key from it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import load_config
from jaxenc.experiment.scoring import score_run
from jaxenc.metrics import ScoreConfig
from jaxenc.store import RunStore


def test_in_section_names_the_key_where_the_setting_is_named():
    err = ConfigError("block_size=30 leaves fewer than 2 blocks in 20 TRs", setting="block_size", subject="UTS01")
    keyed = err.in_section("evaluate")
    assert keyed.setting == "evaluate.block_size" and keyed.subject == "UTS01"
    assert str(keyed) == "subject UTS01: evaluate.block_size=30 leaves fewer than 2 blocks in 20 TRs"
    # A message that does not name its setting gets the key in front; no setting, no change.
    assert str(ConfigError("must be positive", setting="alpha").in_section("evaluate")) == (
        "evaluate.alpha: must be positive")
    plain = ConfigError("no such file")
    assert plain.in_section("evaluate") is plain and plain.setting is None


def test_score_config_errors_carry_their_setting():
    for name, value in (("permutations", 0), ("block_size", 0), ("alpha", 1.5), ("floor", 0.0), ("test_trim", -1)):
        with pytest.raises(ConfigError) as info:
            ScoreConfig(**{name: value}).validate()
        assert info.value.setting == name


def test_the_evaluate_stage_names_a_setting_only_the_test_story_rules_out(tmp_path):
    # A block size the config accepts, but longer than the 20 rows of this test story.
    config = load_config(None, ['table.models=["ridge"]', 'table.feature_sets=["audio"]',
                                'table.targets=["voxels"]', "analyses.partition=false",
                                "analyses.clustering=false", "evaluate.permutations=10",
                                "evaluate.block_size=30", "evaluate.test_trim=0"])
    rng = np.random.default_rng(0)
    repeats = rng.standard_normal((2, 20, 3)).astype(np.float32)
    store = RunStore(tmp_path)
    store.save_prediction("audio__ridge__voxels", {"S": repeats[0]},
                          {"features": "audio", "model": "ridge", "target": "voxels"})
    data = SimpleNamespace(subjects=["S"], truth=None, dataset=SimpleNamespace(test_repeats=lambda subject: repeats))
    with pytest.raises(ConfigError, match="^evaluate.block_size=30 leaves fewer than 2 blocks in 20 TRs") as info:
        score_run(config, data, store)
    assert info.value.setting == "evaluate.block_size"
