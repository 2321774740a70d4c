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


@pytest.mark.parametrize("override, message", [
    ("evaluate.test_trim=-1", "evaluate.test_trim must be at least 0"),
    ("evaluate.test_trim=4.5", "evaluate.test_trim must be an integer"),
    ("evaluate.floor=0", "evaluate.floor must be in (0, 1]"),
    ("evaluate.alpha=1.5", "evaluate.alpha must be in (0, 1)"),
    ("evaluate.block_size=0", "evaluate.block_size must be positive"),
    ("table.pca_method=svd", "table.pca_method must be one of ['auto', 'gram', 'covariance', 'randomized']"),
    ("table.pca_n_iter=-1", "table.pca_n_iter must be at least 0"),
    ("table.n_components=0", "table.n_components must be positive"),
    ("align.delays=[-1, 2]", "align.delays must be non-negative TR counts"),
    ("align.boundary=wrap", "align.boundary must be one of"),
    ("align.train_trim=[5, 5]", "align.train_trim must be at least [10, 5]"),
    ("align.train_trim=[12]", "align.train_trim must have 2 entries"),
    ("ridge.folds=1", "ridge.folds must be at least 2"),
    ("ridge.log10_alphas=[3, 1, 5]", "ridge.log10_alphas must be [low, high, n]"),
    ("train.folds=1", "train.folds must be at least 2"),
    ("train.loss=l1", "train.loss must be one of ['mae', 'mse']"),
    ("train.activation=sigmoid", "train.activation must be one of ['tanh', 'relu', 'gelu']"),
    ("train.batch_norm=1", "train.batch_norm must be true or false"),
    ("train.dropout=1", "train.dropout must be in [0, 1)"),
    ("train.learning_rate=0", "train.learning_rate must be positive"),
    ("train.weight_decay=-1e-4", "train.weight_decay must be at least 0"),
    ("train.min_delta=-1", "train.min_delta must be at least 0"),
    ("train.patience=0", "train.patience must be positive"),
    ("train.batch_size=0", "train.batch_size must be positive"),
    ("train.val_batch_size=0", "train.val_batch_size must be positive"),
    ("train.max_epochs=-3", "train.max_epochs must be positive"),
    ("train.checkpoint_every=7", "train.checkpoint_every (7) must be a multiple of train.epochs_per_call (5)"),
    ("train.grid=[{learning_rate = 0}]", "train.grid learning_rate must be a positive number"),
    ("train.grid=[{weight_decay = true}]", "train.grid weight_decay must be a non-negative number"),
    ("train.hiden=3", "unknown key 'train.hiden'; did you mean 'train.hidden'?"),
    ("evaluate.test_trm=3", "did you mean 'evaluate.test_trim'?"),
    ("nonlinearity.run=maybe", "nonlinearity.run must be true or false"),
    ("nonlinearity.margin=x", "nonlinearity.margin must be a number"),
    ("nonlinearity.ridge_folds=1", "nonlinearity.ridge_folds must be at least 2"),
    ('nonlinearity.models=["ridge", "mllinear"]', "nonlinearity.models must include 'mlp'"),
    ('nonlinearity.models=["mlp", "lstm"]', "unknown model 'lstm'"),
    ("nonlinearity.train.max_epochs=0", "nonlinearity.train.max_epochs must be positive"),
    ("nonlinearity.train.activation=step", "nonlinearity.train.activation must be one of"),
    ("nonlinearity.synthetic={n_semantc = 4}", "did you mean 'nonlinearity.synthetic.n_semantic'?"),
    ("nonlinearity.synthetic={n_semantic = 0}", "nonlinearity.synthetic: SyntheticConfig: n_semantic must be"),
])
def test_every_setting_gives_a_one_line_error(tmp_path, override, message):
    path = write(tmp_path, 'name = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text


def test_every_trainer_setting_is_reachable_from_the_config():
    """Each field of jaxenc.train.TrainConfig is set from the experiment config (the paper's
    folds, loss, optimiser, early stopping, batch sizes and PCA solver); a field added to the
    trainer without a config setting fails here."""
    import dataclasses

    from jaxenc.experiment.fitting import train_config
    from jaxenc.train import TrainConfig

    changes = {
        "n_folds": ("train.folds=3", 3), "seed": ("seed=7", 7), "batch_size": ("train.batch_size=64", 64),
        "val_batch_size": ("train.val_batch_size=96", 96), "max_epochs": ("train.max_epochs=33", 33),
        "patience": ("train.patience=4", 4), "min_delta": ("train.min_delta=0.01", 0.01),
        "learning_rate": ("train.learning_rate=0.02", 0.02), "weight_decay": ("train.weight_decay=0.3", 0.3),
        "loss": ("train.loss=mse", "mse"), "epochs_per_call": ("train.epochs_per_call=2", 2),
        "checkpoint_every": ("train.checkpoint_every=4", 4), "pca_method": ("table.pca_method=randomized", "randomized"),
        "pca_n_iter": ("table.pca_n_iter=3", 3),
    }
    assert set(changes) == {f.name for f in dataclasses.fields(TrainConfig)} - {"n_components"}
    config = train_config(load_config(None, [override for override, _ in changes.values()]), 16)
    for name, (_, value) in changes.items():
        assert getattr(config, name) == value, name
    assert config.n_components == 16
    assert train_config(load_config(), None) == dataclasses.replace(TrainConfig(), n_components=None)


def test_network_and_pca_settings_reach_the_models():
    import jax
    import numpy as np
    from flax import nnx

    from jaxenc.experiment.fitting import _Designs, make_encoder

    config = load_config(None, ["train.activation=relu", "train.batch_norm=false", "train.dropout=0.3",
                                "train.hidden=5", "table.pca_method=randomized", "table.pca_n_iter=3"])
    mlp = make_encoder("mlp", config.train)(4, 2, rngs=nnx.Rngs(0))
    assert mlp.hidden.activation is jax.nn.relu and mlp.hidden.norm is None
    assert mlp.hidden.dropout.rate == 0.3 and mlp.readout.in_features == 5
    dimlp = make_encoder("dimlp", config.train, n_audio=2)(4, 2, rngs=nnx.Rngs(0))
    assert all(block.norm is None and block.activation is jax.nn.relu for block in dimlp.branches)
    designs = _Designs(type("Exp", (), {"config": config})())
    designs._responses["S"] = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
    pca = designs.pca("S", 6)
    assert (pca.method, pca.n_iter, pca.n_components) == ("randomized", 3, 6)


def test_a_nested_section_keeps_its_parents_defaults():
    config = load_config(None, ["nonlinearity.train.max_epochs=20"])
    step = config.nonlinearity.train
    assert step.max_epochs == 20
    assert (step.hidden, step.folds, len(step.grid)) == (64, 3, 3)  # the step's, not TrainSection's
    assert config.train.hidden == 256
