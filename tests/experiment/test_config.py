"""Experiment configs: strict parsing, overrides and one-line errors naming file and key."""

from __future__ import annotations

import json

import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import ExperimentConfig, apply_overrides, load_config


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_demo_and_validate():
    config = load_config()
    assert config == ExperimentConfig()
    assert config.name == "demo" and config.data.root == "" and config.data.preset == "demo"
    assert config.audio.source == "whisper" and config.semantic.model == "default"
    assert config.table.models == ("ridge", "mllinear", "mlp", "dimlp")


def test_a_file_states_only_its_changes_and_lists_become_tuples(tmp_path):
    path = write(tmp_path, 'name = "x"\n[train]\nmax_epochs = 7\nlearning_rate = 1\n'
                           '[table]\nmodels = ["ridge", "deepmlp-3"]\n'
                           '[[analyses.size_sweep]]\nlabel = "a"\nsizes = { hidden_size = 64 }\n')
    config = load_config(path)
    assert config.name == "x" and config.train.max_epochs == 7
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.table.models == ("ridge", "deepmlp-3")
    assert config.analyses.size_sweep[0].label == "a"
    assert config.analyses.size_sweep[0].sizes == {"hidden_size": 64}
    assert config.train.patience == ExperimentConfig().train.patience


def test_overrides_take_toml_values_and_bare_words():
    data = apply_overrides({"train": {"max_epochs": 3}}, [
        "train.max_epochs=20", 'table.models=["ridge","mlp"]', "data.root=/data/ds003020",
        "analyses.partition=false",
    ])
    assert data == {
        "train": {"max_epochs": 20}, "table": {"models": ["ridge", "mlp"]},
        "data": {"root": "/data/ds003020"}, "analyses": {"partition": False},
    }
    config = ExperimentConfig.from_dict(data)
    assert config.table.models == ("ridge", "mlp") and config.analyses.partition is False


def test_a_run_folder_reloads_the_config_it_saved(tmp_path):
    config = load_config(None, ["train.max_epochs=9", "name=again"])
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert load_config(tmp_path) == config
    assert load_config(tmp_path).digest() == config.digest()


def test_an_optional_margin_is_off_until_given_a_number(tmp_path):
    assert load_config().planted.interaction_nonlinearity is None
    config = load_config(None, ["planted.interaction_nonlinearity=0"])
    assert config.planted.interaction_nonlinearity == 0.0
    for saved in (config, load_config()):
        (tmp_path / "config.json").write_text(json.dumps(saved.to_dict()))
        assert load_config(tmp_path) == saved
    with pytest.raises(ConfigError, match="planted.interaction_nonlinearity must be a number"):
        load_config(None, ["planted.interaction_nonlinearity=yes"])


@pytest.mark.parametrize("text, message", [
    ("[train]\nmax_epoch = 3\n", "unknown key 'train.max_epoch'; did you mean 'train.max_epochs'?"),
    ("[trian]\n", "unknown key 'trian'; did you mean 'train'?"),
    ("[train]\nmax_epochs = 2.5\n", "train.max_epochs must be an integer"),
    ("[train]\nmax_epochs = 0\n", "train.max_epochs must be positive"),
    ("[table]\nmodels = [\"ridge\", \"transformer\"]\n", "unknown model 'transformer'"),
    ("[table]\nfeature_sets = [\"audio\"]\n", "needs the 'audio+semantic' feature set"),
    ("[table]\ntargets = \"pca\"\n", "table.targets must be a list"),
    ("[data]\npreset = \"huge\"\n", "data.preset must be one of"),
    ("[ridge]\nlog10_alphas = [1, 2]\n", "ridge.log10_alphas must have 3 entries"),
    ("[train]\ngrid = [{ momentum = 0.9 }]\n", "train.grid entries"),
    ("[analyses]\npartition = 1\n", "analyses.partition must be true or false"),
    ("[train]\nkeep_checkpoints = \"no\"\n", "train.keep_checkpoints must be true or false"),
    ("[data]\nsynthetic = { n_semantc = 4 }\n", "did you mean 'data.synthetic.n_semantic'?"),
    ("[data]\nsynthetic = { n_semantic = 0 }\n", "data.synthetic: SyntheticConfig: n_semantic must be"),
    ("[[analyses.size_sweep]]\nmodel = \"default\"\n", "distinct non-empty labels"),
    ("[train\n", "not valid TOML"),
])
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_files_and_malformed_overrides_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="must hold config.json"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.max_epochs"])
    with pytest.raises(ConfigError, match="name must be a string"):
        load_config(None, ["name.x=1"])
