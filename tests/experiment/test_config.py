"""Experiment configs: strict parsing, overrides and one-line errors naming file and key."""

from __future__ import annotations

import json
import re

import pytest

from jaxenc.errors import ConfigError
from jaxenc.experiment import ExperimentConfig, apply_overrides, load_config
from jaxenc.experiment.config import PRESET_DEFAULTS
from jaxenc.synthetic import SyntheticConfig


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


PRESET_FILE = """
[ridge]
folds = 3
[data.synthetic]
n_semantic = 4
[presets.tiny]
ridge = { folds = 4 }
data = { synthetic = { n_interaction = 2 } }
"""


def test_a_presets_table_applies_at_its_twin_preset_under_the_overrides(tmp_path):
    path = write(tmp_path, PRESET_FILE)
    assert load_config(path).ridge.folds == 3
    tiny = load_config(path, ["data.preset=tiny"])
    # Over the file's values, table by table: the file's other synthetic changes stay.
    assert tiny.ridge.folds == 4 and tiny.data.synthetic == {"n_semantic": 4, "n_interaction": 2}
    assert load_config(path, ["data.preset=tiny", "ridge.folds=5"]).ridge.folds == 5
    # Real data writes no twin: no preset table applies.
    assert load_config(path, ["data.preset=tiny", "data.root=/data/ds003020"]).ridge.folds == 3
    in_file = write(tmp_path, PRESET_FILE.replace("[ridge]", '[data]\npreset = "tiny"\n[ridge]'), "in_file.toml")
    assert load_config(in_file).ridge.folds == 4
    # An override may change a preset table itself: it applies, and is checked, like the file's.
    assert load_config(path, ["presets.tiny.ridge.folds=6", "data.preset=tiny"]).ridge.folds == 6
    assert load_config(path, ["presets.tiny.ridge.folds=6"]).ridge.folds == 3
    assert load_config(None, ["presets.tiny.train.n_folds=3", "data.preset=tiny"]).train.n_folds == 3
    with pytest.raises(ConfigError, match="did you mean 'presets.tiny.ridge.folds'"):
        load_config(path, ["presets.tiny.ridge.fold=6"])


def test_the_tiny_twin_takes_as_many_folds_as_its_fewest_stories_unless_a_file_says(tmp_path):
    tiny = SyntheticConfig.tiny()
    fewest = min([tiny.n_train_stories, *(n for _, n in tiny.fewer_stories)])
    assert PRESET_DEFAULTS["tiny"] == {"ridge": {"folds": fewest}, "train": {"n_folds": fewest}}
    config = load_config(None, ["data.preset=tiny"])
    assert (config.ridge.folds, config.train.n_folds) == (fewest, fewest)
    assert load_config().ridge.folds == ExperimentConfig().ridge.folds == 5
    # A file's own value lies over the preset's defaults.
    assert load_config(write(tmp_path, "[ridge]\nfolds = 3\n"), ["data.preset=tiny"]).ridge.folds == 3


@pytest.mark.parametrize(("text", "message"), [
    ("[presets.small]\nridge = { folds = 2 }\n", "unknown key 'presets.small'; expected one of"),
    ("[presets.tiny]\nridge = { fold = 2 }\n", "did you mean 'presets.tiny.ridge.folds'"),
    ("[presets.demo]\nridge = { folds = 2 }\n", None),
    ('[presets.tiny]\ndata = { preset = "demo" }\n', "presets.tiny sets data.preset"),
    ('[presets.tiny]\ndata = { root = "/x" }\n', "presets.tiny sets data.root"),
    ("presets = 3\n", "presets must be a table"),
    ("[presets]\ntiny = 2\n", "presets.tiny must be a table of settings"),
])
def test_every_preset_table_is_checked_on_any_run(tmp_path, text, message):
    # The demo run of a file checks its tiny table too, so a misspelt key shows at once.
    path = write(tmp_path, text)
    if message is None:
        assert load_config(path).ridge.folds == 2
        return
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


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
    ("[train]\nmax_epochs = 0\n", "train.max_epochs must be at least 1"),
    ("[table]\nmodels = [\"ridge\", \"lstm\"]\n", "unknown model 'lstm'"),
    ("[table]\nfeature_sets = [\"audio\"]\n", "needs the 'audio+semantic' feature set"),
    ("[table]\ntargets = \"pca\"\n", "table.targets must be a list"),
    ("[data]\npreset = \"huge\"\n", "data.preset must be one of"),
    ("[ridge]\nlog10_alphas = [1, 2]\n", "ridge.log10_alphas must have 3 entries"),
    ("[fit]\ngrid = [{ momentum = 0.9 }]\n", "fit.grid entries"),
    ("[analyses]\npartition = 1\n", "analyses.partition must be true or false"),
    ("[fit]\nkeep_checkpoints = \"no\"\n", "fit.keep_checkpoints must be true or false"),
    ("[data]\nsynthetic = { n_semantc = 4 }\n", "did you mean 'data.synthetic.n_semantic'?"),
    ("[data]\nsynthetic = { n_semantic = 0 }\n", "data.synthetic: SyntheticConfig: n_semantic must be"),
    ("[[analyses.size_sweep]]\nmodel = \"default\"\n", "distinct non-empty labels"),
    ("[train]\nseed = 3\n", "train.seed is set by 'seed'"),
    ("[train]\nn_components = 64\n", "train.n_components is set by 'table.n_components'"),
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
    ("evaluate.permutations=0", "evaluate.permutations must be positive"),
    ("table.pca_method=svd", "table.pca_method must be one of ['auto', 'gram', 'covariance', 'randomized']"),
    ("table.pca_n_iter=-1", "table.pca_n_iter must be at least 0"),
    ("table.n_components=0", "table.n_components must be positive"),
    ("align.delays=[-1, 2]", "align.delays must be non-negative TR counts"),
    ("align.boundary=wrap", "align.boundary must be one of"),
    ("align.train_trim=[5, 5]", "align.train_trim must be at least [10, 5]"),
    ("align.train_trim=[12]", "align.train_trim must have 2 entries"),
    ("ridge.folds=1", "ridge.folds must be at least 2"),
    ("ridge.log10_alphas=[3, 1, 5]", "ridge.log10_alphas must be [low, high, n]"),
    ("ridge.band_candidates=0", "ridge.band_candidates must be positive"),
    ("train.n_folds=1", "train.n_folds must be at least 2"),
    ("train.loss=l1", "train.loss must be one of"),
    ("networks.activation=sigmoid", "networks.activation must be one of ['tanh', 'relu', 'gelu']"),
    ("networks.batch_norm=1", "networks.batch_norm must be true or false"),
    ("networks.dropout=1", "networks.dropout must be in [0, 1)"),
    ("networks.hidden=0", "networks.hidden must be positive"),
    ("train.learning_rate=0", "train.learning_rate must be positive"),
    ("train.weight_decay=-1e-4", "train.weight_decay must be at least 0"),
    ("train.min_delta=-1", "train.min_delta must be at least 0"),
    ("train.patience=0", "train.patience must be at least 1"),
    ("train.batch_size=0", "train.batch_size must be at least 1"),
    ("train.val_batch_size=0", "train.val_batch_size must be at least 1"),
    ("train.max_epochs=-3", "train.max_epochs must be at least 1"),
    ("train.checkpoint_every=7", "train.checkpoint_every (7) must be a multiple of epochs_per_call (5)"),
    ("fit.grid=[{learning_rate = 0}]", "fit.grid learning_rate must be a positive number"),
    ("fit.grid=[{weight_decay = true}]", "fit.grid weight_decay must be a non-negative number"),
    ("fit.grid=[{init = -1}]", "fit.grid init must be a non-negative integer"),
    ("fit.grid=[{init = 1.0}]", "fit.grid init must be a non-negative integer"),
    ("fit.grid=[{init = 1}, {init = 1}]", "fit.grid entries must be distinct"),
    ("networks.hiden=3", "unknown key 'networks.hiden'; did you mean 'networks.hidden'?"),
    ("train.folds=3", "unknown key 'train.folds'; did you mean 'train.n_folds'?"),
    ("evaluate.test_trm=3", "did you mean 'evaluate.test_trim'?"),
    ("nonlinearity.run=maybe", "nonlinearity.run must be true or false"),
    ("nonlinearity.margin=x", "nonlinearity.margin must be a number"),
    ("nonlinearity.ridge_folds=1", "nonlinearity.ridge_folds must be at least 2"),
    ('nonlinearity.models=["ridge", "mllinear"]', "nonlinearity.models must include 'mlp'"),
    ('nonlinearity.models=["mlp", "lstm"]', "nonlinearity.models: unknown model 'lstm'"),
    ("nonlinearity.train.max_epochs=0", "nonlinearity.train.max_epochs must be at least 1"),
    ("nonlinearity.train.seed=1", "nonlinearity.train.seed is set by 'seed'"),
    ("nonlinearity.networks.activation=step", "nonlinearity.networks.activation must be one of"),
    ("nonlinearity.synthetic={n_semantc = 4}", "did you mean 'nonlinearity.synthetic.n_semantic'?"),
    ("nonlinearity.synthetic={n_semantic = 0}", "nonlinearity.synthetic: SyntheticConfig: n_semantic must be"),
    ("train.precision=fp8", "train.precision must be one of"),
    ("train.compute_dtype=float16", "train.compute_dtype must be one of"),
    ("train.pca_precision=high", "train.pca_precision is set by 'table.pca_precision'"),
    ("table.pca_precision=half", "table.pca_precision must be one of"),
    ("ridge.precision=bf16", "ridge.precision = 'bf16' is not supported"),
    ("audio.precision=float64", "audio.precision must be one of"),
    ("semantic.precision=tf31", "semantic.precision must be one of"),
])
def test_every_setting_gives_a_one_line_error(tmp_path, override, message):
    path = write(tmp_path, 'name = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text


def test_every_library_setting_is_reachable_from_the_config():
    """The config holds the library's own settings dataclasses: every field of each is a key
    with the dataclass's default (the trainer's seed and PCA settings set by their one key), so
    a field added to the library is a config key at once."""
    import dataclasses

    from jaxenc.experiment.config import BOUND
    from jaxenc.metrics import ScoreConfig
    from jaxenc.models import NetworkOptions, RidgeOptions
    from jaxenc.pipeline import AlignOptions
    from jaxenc.train import TrainConfig

    config = load_config()
    sections = {"align": AlignOptions, "ridge": RidgeOptions, "networks": NetworkOptions, "train": TrainConfig,
                "evaluate": ScoreConfig}
    saved = config.to_dict()
    for name, cls in sections.items():
        assert type(getattr(config, name)) is cls, name
        keys = {f.name for f in dataclasses.fields(cls)} - (set(BOUND) if cls is TrainConfig else set())
        assert set(saved[name]) == keys, name
        for key in keys:
            if name != "train" or key not in BOUND:
                assert getattr(getattr(config, name), key) == getattr(cls(), key), (name, key)
    changes = {
        "n_folds": ("train.n_folds=3", 3), "seed": ("seed=7", 7), "batch_size": ("train.batch_size=64", 64),
        "val_batch_size": ("train.val_batch_size=96", 96), "max_epochs": ("train.max_epochs=33", 33),
        "patience": ("train.patience=4", 4), "min_delta": ("train.min_delta=0.01", 0.01),
        "learning_rate": ("train.learning_rate=0.02", 0.02), "weight_decay": ("train.weight_decay=0.3", 0.3),
        "loss": ("train.loss=mse", "mse"), "epochs_per_call": ("train.epochs_per_call=2", 2),
        "checkpoint_every": ("train.checkpoint_every=4", 4), "n_components": ("table.n_components=16", 16),
        "pca_method": ("table.pca_method=randomized", "randomized"), "pca_n_iter": ("table.pca_n_iter=3", 3),
        "pca_precision": ("table.pca_precision=default", "default"), "precision": ("train.precision=high", "high"),
        "compute_dtype": ("train.compute_dtype=bfloat16", "bfloat16"),
    }
    assert set(changes) == {f.name for f in dataclasses.fields(TrainConfig)}
    train = load_config(None, [override for override, _ in changes.values()]).train
    for name, (_, value) in changes.items():
        assert getattr(train, name) == value, name
    assert load_config().train == dataclasses.replace(TrainConfig(), n_components=32)


def test_network_and_pca_settings_reach_the_models():
    import jax
    import numpy as np
    from flax import nnx

    from jaxenc.models import encoder
    from jaxenc.pipeline import SubjectArrays, fit_predict

    config = load_config(None, ["networks.activation=relu", "networks.batch_norm=false", "networks.dropout=0.3",
                                "networks.hidden=5", "table.pca_method=randomized", "table.pca_n_iter=3"])
    mlp = encoder("mlp").make_model(config.networks)(4, 2, rngs=nnx.Rngs(0))
    assert mlp.hidden.activation is jax.nn.relu and mlp.hidden.norm is None
    assert mlp.hidden.dropout.rate == 0.3 and mlp.readout.in_features == 5
    dimlp = encoder("dimlp").make_model(config.networks, bands=((0, 2), (2, 4)))(4, 2, rngs=nnx.Rngs(0))
    assert all(block.norm is None and block.activation is jax.nn.relu for block in dimlp.branches)
    rng = np.random.default_rng(0)
    arrays = SubjectArrays(rng.standard_normal((40, 3)), rng.standard_normal((40, 12)).astype(np.float32),
                           np.repeat(np.arange(4), 10), rng.standard_normal((5, 3)))
    cache = {}
    config = load_config(None, ["table.pca_method=randomized", "table.pca_n_iter=3", "table.n_components=6",
                                "ridge.folds=2"])
    fit_predict("ridge", {"S": arrays}, target="pca", ridge=config.ridge, train=config.train, cache=cache)
    (pca,) = cache["ridge_pca"].values()
    assert (pca.method, pca.n_iter, pca.n_components) == ("randomized", 3, 6)


def test_a_nested_section_keeps_its_parents_defaults():
    config = load_config(None, ["nonlinearity.train.max_epochs=20"])
    step = config.nonlinearity
    assert step.train.max_epochs == 20
    # The step's own defaults, not the library's.
    assert (step.networks.hidden, step.train.n_folds, len(step.fit.grid)) == (64, 3, 3)
    assert config.networks.hidden == 256


def test_a_window_sweep_must_fit_the_encoder_input(tmp_path):
    path = write(tmp_path, 'name = "x"\n')
    # A checkpoint keeps its 30 s of input: 32 s of context does not fit (planted audio has no
    # such limit); the embedded model's input grows to hold each window.
    with pytest.raises(ConfigError, match=r"analyses.window_sweep 32: input_s must be .* to 30 s"):
        load_config(path, ["analyses.window_sweep=[2, 32]", "audio.model=/some/checkpoint"])
    assert load_config(path, ["analyses.window_sweep=[2, 32]", "audio.source=planted"]).analyses.window_sweep == (2, 32)
    audio = load_config(path, ["analyses.window_sweep=[8]"]).audio
    assert audio.window(8) == {"context_s": 8, "chunk_s": 0.1, "stride_s": 0.1, "input_s": 8.12}
    # 8.05 + 0.1 s of window and 0.02 s: 817 frames, rounded up to an even 818.
    assert audio.window(8.05)["input_s"] == 8.18
    with pytest.raises(ConfigError, match="whole 10 ms mel frames"):
        load_config(path, ["analyses.window_sweep=[2.005]"])
    with pytest.raises(ConfigError, match="distinct"):
        load_config(path, ["analyses.window_sweep=[2, 2]"])
    # Layers of the planted language model are swept like a checkpoint's.
    assert load_config(path, ["analyses.layer_sweep=[0, 3]", "semantic.source=planted"]).analyses.layer_sweep == (0, 3)
