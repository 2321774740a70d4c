"""The precision policy reaches every stage's compiled programs (jaxenc.precision).

XLA:CPU computes float32 products whatever precision is asked for, so these tests read the
programs themselves: every stage runs through its public entry point with JAX dumping each
StableHLO module it lowers (``jax_dump_ir_to``), and every ``dot_general`` and convolution of
those modules must carry the setting (:func:`carries`). The "bf16" setting is refused on a CPU,
so its programs are lowered with the platform check answering "gpu".
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxenc.precision as matmul
from jaxenc.decomp import PCA, pca_fit_sharded, pca_inverse_sharded, pca_transform_sharded
from jaxenc.distributed import make_mesh
from jaxenc.errors import ConfigError
from jaxenc.models import MLP, RidgeCV, RidgeOptions
from jaxenc.nn import LlamaConfig, LlamaModel, WhisperEncoder, WhisperEncoderConfig
from jaxenc.train import TrainConfig, fit_encoders_arrays

SETTINGS = ("highest", "high", "default", "bf16")
_OPS = re.compile(r"stablehlo\.(dot_general|convolution)[^\n]*")
_ENUMS = re.compile(r"\b(HIGHEST|HIGH|DEFAULT)\b")
_BF16_ALGORITHM = "lhs_precision_type = bf16, rhs_precision_type = bf16, accumulation_type = f32"


def carries(line: str, setting: str) -> bool:
    """Whether a lowered dot_general or convolution is computed at ``setting``.

    A precision enum appears once per operand (``precision = [HIGH, HIGH]`` on a dot_general,
    ``precision_config = [#stablehlo<precision HIGH>, ...]`` on a convolution). "bf16" is an
    algorithm attribute of dot_general; convolutions have none and take DEFAULT, one bfloat16
    pass on a TPU and TF32 on a GPU.
    """
    if setting == "bf16":
        if "stablehlo.convolution" in line:
            return _ENUMS.findall(line) == ["DEFAULT", "DEFAULT"]
        return _BF16_ALGORITHM in line
    return _ENUMS.findall(line) == [setting.upper()] * 2


@pytest.fixture
def lowered(tmp_path, monkeypatch):
    """Run a stage and return the dot_general / convolution lines of every module it lowered."""

    def run(stage, setting):
        if setting == "bf16":
            monkeypatch.setattr(matmul, "platform", lambda: "gpu")  # only the refusal is CPU's
        folder = tmp_path / setting
        folder.mkdir()
        jax.config.update("jax_dump_ir_to", str(folder))
        try:
            stage(setting)
        finally:
            jax.config.update("jax_dump_ir_to", "")
        lines = [m.group(0) for f in sorted(folder.glob("*.mlir")) for m in _OPS.finditer(f.read_text())]
        assert lines, f"no product lowered by {stage.__name__} at {setting}"
        return lines

    return run


def _rng():
    return np.random.default_rng(0)


# Each stage's shapes are this file's own (``rows`` differs between tests), so no program of
# another test is found in JAX's caches instead of being lowered (and dumped) again.


def ridge_stage(setting, rows=60):
    rng = _rng()
    X = rng.standard_normal((rows, 6)).astype(np.float32)
    Y = rng.standard_normal((rows, 5)).astype(np.float32)
    RidgeCV(cv=3, precision=setting).fit(X, Y).predict(X)


def pca_stage(setting, rows=30):
    Y = _rng().standard_normal((rows, 12)).astype(np.float32)
    for method in ("gram", "covariance", "randomized"):
        pca = PCA(3, method=method, n_iter=1, precision=setting).fit(Y)
        pca.inverse_transform(pca.transform(Y))
    mesh = make_mesh(("data",))
    for shard in ("voxels", "rows"):
        state = pca_fit_sharded(Y, 3, mesh, shard=shard, precision=setting)
        pca_inverse_sharded(state, pca_transform_sharded(state, Y, precision=setting), precision=setting)


def training_stage(setting, rows=60):
    rng = _rng()
    X = rng.standard_normal((rows, 6)).astype(np.float32)
    Y = rng.standard_normal((rows, 3)).astype(np.float32)
    cfg = TrainConfig(n_folds=2, n_components=2, max_epochs=1, batch_size=16, epochs_per_call=1,
                      checkpoint_every=1, precision=setting, pca_precision=setting)
    fit = fit_encoders_arrays(functools.partial(MLP, hidden=4), {"S": (X, Y, np.arange(rows) * 3 // rows)}, cfg,
                              progress=False)
    fit.predict({"S": X[:10]})


def extraction_stage(setting, rows=60):
    llama = LlamaModel(LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=4),
                       rngs=nnx.Rngs(0), precision=setting)
    nnx.jit(lambda m, ids: m(ids))(llama, jnp.ones((1, rows // 12), jnp.int32))
    whisper = WhisperEncoder(WhisperEncoderConfig(num_mel_bins=8, d_model=16, encoder_layers=1,
                                                  encoder_attention_heads=2, encoder_ffn_dim=32,
                                                  max_source_positions=8),
                             rngs=nnx.Rngs(0), precision=setting)
    nnx.jit(lambda m, x: m(x))(whisper, jnp.ones((1, 8, 2 * (rows // 12))))


STAGES = {"ridge": ridge_stage, "pca": pca_stage, "training": training_stage, "extraction": extraction_stage}
# The default suite lowers each stage at one reduced setting, every kind of attribute among
# them (the defaults are the test below); -m slow lowers every stage at every setting.
QUICK = {("ridge", "high"), ("pca", "default"), ("training", "bf16"), ("extraction", "bf16")}


@pytest.mark.parametrize("stage, setting", [
    pytest.param(stage, setting, marks=() if (stage, setting) in QUICK else pytest.mark.slow)
    for stage in STAGES for setting in SETTINGS])
def test_every_product_of_a_stage_carries_its_setting(lowered, stage, setting):
    if (stage, setting) == ("ridge", "bf16"):
        with pytest.raises(ConfigError, match="ridge.precision = 'bf16'"):
            ridge_stage(setting)
        return
    lines = lowered(STAGES[stage], setting)
    wrong = [line for line in lines if not carries(line, setting)]
    assert not wrong, wrong[:3]


def test_defaults_are_full_precision_where_the_parity_tests_run(lowered):
    # The parity tests (ports vs transformers, ridge vs himalaya, PCA vs scikit-learn) call the
    # code with its defaults: they must get "highest" on every backend.
    assert matmul.DEFAULTS == {"extraction": "auto", "training": "highest", "ridge": "highest", "pca": "highest"}

    def defaults(_):
        X = _rng().standard_normal((72, 6)).astype(np.float32)
        RidgeCV(cv=3).fit(X, X[:, :2]).predict(X)
        PCA(2).fit(X).inverse_transform(PCA(2).fit(X).transform(X))
        extraction_stage("auto", rows=72)
        training_stage(TrainConfig.precision, rows=72)

    lines = lowered(defaults, "highest")
    assert all(carries(line, "highest") for line in lines), lines[:3]


def test_auto_follows_the_compute_dtype():
    assert matmul.resolve("auto", jnp.float32) == "highest"
    assert matmul.resolve("auto", jnp.bfloat16) == "default"
    assert matmul.resolve("tf32") == "high"


@pytest.mark.parametrize("bad, where, match", [
    (lambda: TrainConfig(precision="fp8").validate(), None, "precision must be one of"),
    (lambda: RidgeOptions(precision="tf33").validate(), None, "precision must be one of"),
    (lambda: PCA(2, precision="half"), None, "PCA precision must be one of"),
    (lambda: RidgeCV(precision="bf16").fit(np.eye(6), np.eye(6)), "cpu", "ridge.precision = 'bf16' is not supported"),
    (lambda: PCA(2, precision="bf16").fit(np.eye(6, dtype=np.float32)), "cpu",
     "PCA precision = 'bf16' is not available on cpu"),
    (lambda: fit_encoders_arrays(MLP, {"S": (np.eye(6), np.eye(6), np.arange(6))},
                                 TrainConfig(precision="bf16", n_components=None)), "cpu",
     "train.precision = 'bf16' is not available on cpu"),
])
def test_bad_settings_stop_in_one_line_naming_the_setting(bad, where, match):
    if where is not None and matmul.platform() != where:
        pytest.skip(f"the refusal is {where}'s")
    with pytest.raises(ConfigError, match=match) as err:
        bad()
    assert "\n" not in str(err.value)


def test_importing_jaxenc_changes_no_global_precision():
    import jaxenc.experiment  # noqa: F401  (imports every stage)

    assert jax.config.jax_default_matmul_precision is None
