"""The extraction settings of the experiment config: defaults as the paper, one-line errors,
and every setting carried into the feature cache keys by the extract stage."""

from __future__ import annotations

import json

import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import Experiment, ExperimentConfig, load_config
from jaxenc.features import defaults


def test_defaults_are_the_paper_s_extraction():
    config = ExperimentConfig()
    assert config.semantic.context_words == (256, 512)
    assert config.audio.dtype == config.semantic.dtype == "auto"
    checkpoint = load_config(None, ["audio.model=openai/whisper-large"]).audio.window()
    assert checkpoint == {"context_s": 16.0, "chunk_s": 0.1, "stride_s": 0.1, "input_s": 30.0}
    assert config.audio.window() == defaults.DEFAULT_WHISPER_WINDOW


def test_settings_round_trip_through_a_run_folder(tmp_path):
    config = load_config(None, ["semantic.context_words=[4, 8]", "audio.stride_s=0.2", 'audio.dtype="bfloat16"'])
    assert config.semantic.context_words == (4, 8)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert load_config(tmp_path) == config
    assert load_config(None, ["semantic.context_words=15"]).semantic.context_words == 15


@pytest.mark.parametrize("override, message", [
    ("audio.stride_s=0", "audio.stride_s must be positive"),
    ("audio.stride_s=0.015", "audio.stride_s must be a whole number of 10 ms mel frames"),
    ("audio.chunk_s=-0.1", "audio.chunk_s must be positive"),
    ("audio.context_s=-1", "audio.context_s must be positive seconds"),
    ("audio.context_s=16.005", "audio.context_s must be a whole number of 10 ms"),
    ("audio.input_s=1.05", "audio.input_s must be an even number of 10 ms frames from 1.12 s"),
    ("audio.input_s=1.13", "audio.input_s must be an even number"),
    ("audio.input_s=31", "audio.input_s must be an even number of 10 ms frames from 1.12 s (context_s"),
    ('audio.dtype="float16"', "audio.dtype must be one of ['auto', 'float32', 'bfloat16']"),
    ("audio.batch_size=0", "audio.batch_size must be positive"),
    ("audio.strides=0.1", "unknown key 'audio.strides'; did you mean 'audio.stride_s'?"),
    ("semantic.context_words=[512, 256]", "semantic.context_words=(512, 256), expected a look-back n >= 0 or "
                                          "a pair [lookback1, lookback2]"),
    ("semantic.context_words=[256]", "semantic.context_words=(256,), expected"),
    ("semantic.context_words=-1", "semantic.context_words=-1, expected"),
    ('semantic.context_words="long"', "semantic.context_words='long', expected"),
    ("semantic.context_words=2.5", "semantic.context_words=2.5, expected"),
    ('semantic.dtype="half"', "semantic.dtype must be one of"),
    ("semantic.batch_size=0", "semantic.batch_size must be positive"),
    ("semantic.context_word=8", "did you mean 'semantic.context_words'?"),
])
def test_a_wrong_extraction_setting_is_one_line_naming_the_key(tmp_path, override, message):
    path = tmp_path / "exp.toml"
    path.write_text('name = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


# Two stories of the tiny twin, one subject: the extraction stage in a few seconds.
SMALL = ["data.preset=tiny", 'data.subjects=["UTS01"]', "data.synthetic={n_train_stories = 1, fewer_stories = []}"]


def keys_of(out, source):
    index = json.loads((out / "features" / "index.json").read_text())
    return {story: described for story, described in index[source]["keys"].items()}


@pytest.mark.slow
def test_the_extract_stage_keys_features_by_every_setting(tmp_path):
    """Non-default settings reach the cache keys; changing one later computes new entries next
    to the old ones, and an unchanged setting reads the cache."""
    settings = ["audio.context_s=0.5", "audio.chunk_s=0.2", "audio.stride_s=0.4", "audio.input_s=0.74",
                "semantic.context_words=[4, 8]", 'semantic.dtype="bfloat16"']
    quiet = dict(progress=False, log=lambda line: None)
    Experiment(load_config(None, SMALL + settings), tmp_path, **quiet).extract()
    audio, semantic = keys_of(tmp_path, "audio"), keys_of(tmp_path, "semantic")
    for described in audio.values():
        assert {k: described["params"][k] for k in ("context_s", "chunk_s", "stride_s", "input_s")} == {
            "context_s": 0.5, "chunk_s": 0.2, "stride_s": 0.4, "input_s": 0.74}
        assert described["params"]["compute_dtype"] == "float32"
    for described in semantic.values():
        assert described["params"]["context_words"] == [4, 8]
        assert described["params"]["compute_dtype"] == "bfloat16"
    entries = set((tmp_path / "features").rglob("*.json"))

    Experiment(load_config(None, SMALL + settings), tmp_path, **quiet).extract()
    assert set((tmp_path / "features").rglob("*.json")) == entries

    changed = settings[:2] + ["audio.stride_s=0.2"] + settings[3:4] + ["semantic.context_words=[2, 8]"] + settings[5:]
    Experiment(load_config(None, SMALL + changed), tmp_path, **quiet).extract()
    assert keys_of(tmp_path, "audio") != audio and keys_of(tmp_path, "semantic") != semantic
    assert len(set((tmp_path / "features").rglob("*.json")) - entries) >= 4
