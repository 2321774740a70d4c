"""The sections of an experiment config that are the experiment's own.

The settings of the library's steps are the library's own dataclasses, held by the config as
they are (:class:`jaxenc.pipeline.AlignOptions`, :class:`jaxenc.models.RidgeOptions`,
:class:`jaxenc.models.NetworkOptions`, :class:`jaxenc.train.TrainConfig`,
:class:`jaxenc.metrics.ScoreConfig`); the sections here say what the experiment runs: the data,
the feature extractors, the grid of the table, the analyses, the planted checks, the
nonlinearity step and the report. Every field has a default and a comment; ``validate``
raises :class:`~jaxenc.errors.ConfigError` with a message that starts with the field's name
(the loader puts the section's path and the file in front).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from jaxenc import precision as matmul
from jaxenc.decomp.pca import METHODS as PCA_METHODS
from jaxenc.errors import ConfigError, JaxencError
from jaxenc.experiment.planted import CHECK_NAMES
from jaxenc.features import defaults
from jaxenc.features.semantic import check_context_words
from jaxenc.featuresets import FEATURE_SETS, JOINT
from jaxenc.models.registry import EncoderSpec, NetworkOptions, encoder
from jaxenc.pipeline.runner import TARGETS
from jaxenc.report.flatmaps import ENTRY_KEYS
from jaxenc.synthetic import PRESETS, SyntheticConfig
from jaxenc.train import TrainConfig
from jaxenc.train.config import GRID_KEYS

__all__ = [
    "DataConfig",
    "AudioConfig",
    "SemanticConfig",
    "TableConfig",
    "FitConfig",
    "ModelSpec",
    "AnalysesConfig",
    "PlantedConfig",
    "NonlinearityConfig",
    "ReportConfig",
    "RunConfig",
    "COMPUTE_DTYPES",
]

# Compute dtypes of the extractors ("auto": bfloat16 for 16-bit checkpoints, float32 otherwise).
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
# Whisper's mel frame: window lengths are whole frames. Its encoder takes at most 30 s.
_FRAME_S = 0.01
_LONGEST_INPUT_S = 30.0


def choice(value, choices, key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")


def positive(value, key: str, *, zero: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number above 0 (at least 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 if zero else value > 0):
        raise ConfigError(f"{key} must be {'at least 0' if zero else 'positive'}, got {value!r}")


def synthetic_keys() -> tuple[str, ...]:
    """The fields of :class:`jaxenc.synthetic.SyntheticConfig` a config may change (not the
    seed, which ``data.seed`` sets)."""
    return tuple(f.name for f in dataclasses.fields(SyntheticConfig) if f.name != "seed")


def synthetic_config(preset: str, seed: int, changes: dict) -> SyntheticConfig:
    """The :class:`jaxenc.synthetic.SyntheticConfig` of a preset with ``changes``.

    Raises
    ------
    ConfigError
        A change the twin refuses (the config loader has checked the names).
    """
    try:
        return getattr(SyntheticConfig, preset)(seed=seed, **changes)
    except (JaxencError, TypeError, ValueError) as err:
        raise ConfigError(f"synthetic: {err}") from None


def _encoders(names, key: str) -> tuple[EncoderSpec, ...]:
    """Each encoder name parsed by :func:`jaxenc.models.encoder`, an unknown one named under ``key``."""
    specs = []
    for name in names:
        try:
            specs.append(encoder(name))
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    return tuple(specs)


@dataclass(frozen=True)
class DataConfig:
    """Where the responses and stimuli come from."""

    # ds003020 folder (the OpenNeuro layout); "" writes the synthetic twin into <out>/data.
    root: str = ""
    # Size of the synthetic twin when root is "": "tiny" (tests), "demo" or "full" (real size).
    preset: str = "demo"
    # Seed of the synthetic twin.
    seed: int = 0
    # Subjects to fit; empty: every subject of the dataset.
    subjects: tuple[str, ...] = ()
    # Changes to the synthetic preset, fields of jaxenc.synthetic.SyntheticConfig (for
    # example { n_train_stories = 24, n_semantic = 4 }).
    synthetic: dict = field(default_factory=dict, metadata={"keys": synthetic_keys})

    def validate(self) -> None:
        choice(self.preset, PRESETS, "preset")
        if self.synthetic:
            self.synthetic_config()

    def synthetic_config(self):
        """The :class:`jaxenc.synthetic.SyntheticConfig` of the twin this section writes."""
        return synthetic_config(self.preset, self.seed, self.synthetic)


@dataclass(frozen=True)
class AudioConfig:
    """The audio feature source: Whisper encoder hidden states at the end of causal windows.

    A window holds ``context_s + chunk_s`` seconds of audio (less at the start of a story) and
    ends every ``stride_s`` seconds, from ``chunk_s`` on; it is followed by silence up to
    ``input_s`` seconds of encoder input and its feature is the encoder frame at its end (see
    :mod:`jaxenc.features.audio`). The reference code (Antonello et al. 2023) runs 16 s of
    context, 0.1 s chunks every 0.1 s and 30 s of input; its ``--stride s`` option is
    ``chunk_s = stride_s = s`` with ``context_s = 16.1 - s``. Seconds must be whole 10 ms mel
    frames.
    """

    # "whisper" (extracted) or "planted" (the synthetic twin's true audio properties).
    source: str = "whisper"
    # "default" (jaxenc's embedded random-init model), a local checkpoint folder or a Hub id
    # already in the local Hugging Face cache (e.g. "openai/whisper-large").
    model: str = "default"
    # Encoder layer of the table; -1: the last layer (the paper's choice).
    layer: int = -1
    # Seconds of audio before each new chunk; 0: the paper's 16 s for a checkpoint, the
    # embedded model's short default window for "default". Costs nothing extra with a fixed
    # input_s; sets the shortest input_s. With source = "planted": seconds the twin's audio
    # properties are averaged over (0: the properties of the moment).
    context_s: float = 0.0
    # Seconds of new audio per window (the first window is one chunk long).
    chunk_s: float = 0.1
    # Seconds between window ends (one feature per stride): the cost is proportional to
    # 1 / stride_s, 10 encoder passes per second of audio at 0.1 s.
    stride_s: float = 0.1
    # Seconds of encoder input per window (the window, then silence); 0: 30 s for a checkpoint
    # (Whisper's training length, the reference's padding), the embedded model's default for
    # "default". From context_s + chunk_s + 0.02 (the window itself) to 30; each pass costs
    # about linearly in input_s (attention quadratically): 16.12 s costs about half of 30 s,
    # but changes every feature, since the encoder attends over the silence too.
    input_s: float = 0.0
    # Compute dtype: "auto" (bfloat16 for a checkpoint stored in float16 or bfloat16, float32
    # otherwise), "float32" (the reference's) or "bfloat16" (half the memory and 2-8x the
    # matmul rate on GPUs and TPUs, slower on most CPUs; features differ from float32 by about
    # 1% of their scale).
    dtype: str = "auto"
    # Windows per encoder call (memory only; rounded up to a multiple of the devices).
    batch_size: int = 32
    # Matrix-product precision of the encoder (jaxenc.precision): "auto" (full float32 for a
    # float32 dtype, the 16-bit operands' own otherwise), "highest", "high"/"tf32" (GPU TF32,
    # ~7x the float32 rate; features move by ~1e-3 of their scale), "default", "bf16".
    precision: str = matmul.DEFAULTS["extraction"]

    def validate(self) -> None:
        choice(self.source, ("whisper", "planted"), "source")
        choice(self.dtype, COMPUTE_DTYPES, "dtype")
        matmul.check(self.precision, "precision", auto=True)
        positive(self.batch_size, "batch_size")
        for key in ("context_s", "input_s"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be positive seconds (0: default), got {getattr(self, key)}")
        for key in ("chunk_s", "stride_s"):
            positive(getattr(self, key), key)
        for key in ("context_s", "chunk_s", "stride_s", "input_s"):
            frames = getattr(self, key) / _FRAME_S
            if abs(frames - round(frames)) > 1e-6 * max(1.0, frames):
                raise ConfigError(f"{key} must be a whole number of 10 ms mel frames, got {getattr(self, key)}")
        if self.source == "whisper":
            self.check_window(self.window(), "input_s")

    @staticmethod
    def check_window(window: dict, key: str) -> None:
        """Raise :class:`ConfigError` (starting with ``key``) unless ``window``'s input_s fits the
        encoder: an even number of 10 ms frames from its window's length plus 0.02 s to 30 s."""
        shortest = window["context_s"] + window["chunk_s"] + _FRAME_S * 2
        even = round(window["input_s"] / _FRAME_S) % 2 == 0
        if not (even and shortest - 1e-9 <= window["input_s"] <= _LONGEST_INPUT_S):
            raise ConfigError(
                f"{key} must be an even number of 10 ms frames from {shortest:.2f} s "
                f"(context_s + chunk_s + 0.02, the window itself) to {_LONGEST_INPUT_S:g} s, got "
                f"{window['input_s']:g} (context_s {window['context_s']:g})")

    def window(self, context_s: float | None = None) -> dict:
        """Keyword arguments of :func:`jaxenc.features.whisper_story_features` (seconds).

        Parameters
        ----------
        context_s : float, optional
            Seconds of context of a window of the window sweep (``analyses.window_sweep``)
            instead of the table's; the input then grows, if needed, to the shortest that holds
            the window (whole even frames), and never shrinks, so a checkpoint keeps its 30 s.
        """
        base = defaults.DEFAULT_WHISPER_WINDOW if self.model == "default" else defaults.REFERENCE_WHISPER_WINDOW
        input_s = self.input_s or base["input_s"]
        if context_s is not None:
            frames = round((context_s + self.chunk_s) / _FRAME_S) + 2
            input_s = max(input_s, (frames + frames % 2) * _FRAME_S)
        return {
            "context_s": context_s or self.context_s or base["context_s"],
            "chunk_s": self.chunk_s,
            "stride_s": self.stride_s,
            "input_s": round(input_s, 2),
        }


@dataclass(frozen=True)
class SemanticConfig:
    """The semantic feature source: a LLaMA-family model's hidden state at each word."""

    # "llama" (extracted) or "planted" (the synthetic twin's true word vectors).
    source: str = "llama"
    # "default" (jaxenc's embedded random-init model), a local checkpoint folder or a cached
    # Hub id (e.g. "huggyllama/llama-7b").
    model: str = "default"
    # Layer of the table; -1: the default model's default layer, or 12/32 of the depth of
    # another model (the paper's layer 12 of LLaMA-7B). With source = "planted": the layer of
    # the twin's planted language model (layer L averages each word's vector over 4**L words;
    # -1: layer 0, each word's own vector).
    layer: int = -1
    # Words fed before each word. [lookback1, lookback2]: the paper's scheme, a look-back that
    # grows by one word per word and drops from lookback2 to lookback1 (256 to 512 preceding
    # words); one causal pass per lookback2 - lookback1 words, about 2 words of compute per
    # word at [256, 512]. An int n: n preceding words for every word, one pass of n + 1 words
    # per word (about n / 2 times the compute of [n / 2, n]).
    context_words: object = (256, 512)
    # Compute dtype: "auto" (bfloat16 for a checkpoint stored in float16 or bfloat16, as
    # LLaMA-7B is; float32 otherwise), "float32" or "bfloat16" (see audio.dtype).
    dtype: str = "auto"
    # Windows (contexts sharing a first word) per forward pass (memory only; rounded up to a
    # multiple of the devices).
    batch_size: int = 16
    # Matrix-product precision of the language model (see audio.precision).
    precision: str = matmul.DEFAULTS["extraction"]

    def __post_init__(self):
        # TOML and config.json give a list; the pair is kept as a tuple.
        if isinstance(self.context_words, list):
            object.__setattr__(self, "context_words", tuple(self.context_words))

    def validate(self) -> None:
        choice(self.source, ("llama", "planted"), "source")
        choice(self.dtype, COMPUTE_DTYPES, "dtype")
        matmul.check(self.precision, "precision", auto=True)
        check_context_words(self.context_words, name="context_words")
        positive(self.batch_size, "batch_size")


@dataclass(frozen=True)
class TableConfig:
    """The grid of encoders scored on the test story (the paper's Table 1)."""

    # Feature sets among "audio", "semantic", "audio+semantic".
    feature_sets: tuple[str, ...] = FEATURE_SETS
    # Encoders of jaxenc.models.ENCODERS: "ridge", "mllinear", "mlp", "dimlp" (audio+semantic
    # only), "gru" and "deepmlp-N" (see the ridge section for the audio+semantic ridge).
    models: tuple[str, ...] = ("ridge", "mllinear", "mlp", "dimlp")
    # "voxels" (every voxel predicted directly) and/or "pca" (principal components of the
    # training responses, inverse-projected to voxels for scoring). The planted checks use the
    # first one.
    targets: tuple[str, ...] = TARGETS
    # Principal components of the responses (capped at what a fold's training rows allow); it
    # sets train.n_components, which ridge and the networks read. The paper's 512 (the
    # trainer's default) suits real data (about 9,000 training TRs of about 90,000 voxels):
    # pass --set table.n_components=512 there. The demo twin's responses are driven by 25
    # latent time courses; with 512 components from its 800 training rows per fold the noise
    # components swamp the networks' MAE loss and early stopping fires after 1-3 epochs
    # (audio+semantic MLP 0.228 mean r against ridge's 0.407); with 32 the MLP reaches 0.381
    # and ridge keeps 0.408.
    n_components: int = 32
    # Solver of every PCA of the responses (ridge's and the networks' per-fold PCAs; sets
    # train.pca_method): "auto" (exact: Gram or covariance matrix, whichever is smaller),
    # "gram", "covariance" or "randomized" (Halko et al.; for full-size data).
    pca_method: str = TrainConfig.pca_method
    # Power iterations of the randomized solver (sets train.pca_n_iter).
    pca_n_iter: int = TrainConfig.pca_n_iter
    # Matrix-product precision of every PCA (jaxenc.precision; sets train.pca_precision):
    # "highest" (full float32, scikit-learn's components on every backend); "high"/"tf32"
    # and below lose the small eigenvalues the trailing components depend on.
    pca_precision: str = TrainConfig.pca_precision

    @functools.cached_property
    def encoders(self) -> tuple[EncoderSpec, ...]:
        """The encoders of ``models``, each name parsed once, here (what the jobs carry).

        Raises
        ------
        ConfigError
            ``models`` naming an unknown encoder.
        """
        return _encoders(self.models, "models")

    def validate(self) -> None:
        for name in self.feature_sets:
            choice(name, FEATURE_SETS, "feature_sets")
        encoders = self.encoders
        for name in self.targets:
            choice(name, TARGETS, "targets")
        needs_joint = [spec.name for spec in encoders if spec.min_modalities > 1]
        if needs_joint and JOINT not in self.feature_sets:
            raise ConfigError(f"models has {needs_joint}, each of which needs the '{JOINT}' feature set")
        positive(self.n_components, "n_components")
        choice(self.pca_method, PCA_METHODS, "pca_method")
        positive(self.pca_n_iter, "pca_n_iter", zero=True)
        matmul.check(self.pca_precision, "pca_precision")


@dataclass(frozen=True)
class FitConfig:
    """How the fit stage runs the networks beyond their training settings."""

    # Hyperparameter points trained side by side, each a table of learning_rate, weight_decay
    # and/or init (a restart index: the same hyperparameters from another initialisation,
    # dropout and shuffle, e.g. [{init = 0}, {init = 1}, {init = 2}] for three restarts); each
    # subject's best hyperparameters on validation are used, and of their restarts each fold's
    # best (jaxenc.train.EncoderFit.chosen_models). Empty: one point.
    grid: tuple[dict, ...] = ()
    # Keep a network's orbax checkpoints (its full training state, what a killed fit resumes
    # from) after its predictions are stored; by default they are removed then, since on the
    # demo they take 0.1-0.25 GB per fit. Changing it refits nothing.
    keep_checkpoints: bool = False

    def validate(self) -> None:
        for point in self.grid:
            if not isinstance(point, Mapping) or not point or set(point) - set(GRID_KEYS):
                raise ConfigError(f"grid entries must be tables of {', '.join(GRID_KEYS)}, got {point!r}")
            for key, value in point.items():
                if key == "init":
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise ConfigError(f"grid init must be a non-negative integer (a restart index), got {value!r}")
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                        value >= 0 if key == "weight_decay" else value > 0):
                    raise ConfigError(f"grid {key} must be a {'non-negative' if key == 'weight_decay' else 'positive'} "
                                      f"number, got {value!r}")
            if len(self.grid) != len({tuple(sorted(point.items())) for point in self.grid}):
                raise ConfigError("grid entries must be distinct (restarts differ by init)")


@dataclass(frozen=True)
class RunConfig:
    """The devices the fit and evaluate stages run on (:func:`jaxenc.distributed.run_mesh`)."""

    # Devices of the one-axis mesh the fits are sharded over: 0 takes every device of every
    # process (jax.devices(), all hosts once jax.distributed is initialised), N the first N.
    # One device runs unsharded. Changing it refits nothing: results agree within float32
    # rounding.
    devices: int = 0

    def validate(self) -> None:
        if isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 0:
            raise ConfigError(f"devices must be an integer of at least 0 (0: every device), got {self.devices!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One semantic model of the model-size sweep."""

    # Label in tables and figures, e.g. "llama-7b".
    label: str = ""
    # "default" (embedded random-init model at the sizes below), a local folder or a cached Hub id.
    model: str = "default"
    # Sizes of a default model (e.g. {hidden_size = 128, num_hidden_layers = 2}).
    sizes: dict = field(default_factory=dict)
    # Layer used; -1: the same rule as semantic.layer.
    layer: int = -1


@dataclass(frozen=True)
class AnalysesConfig:
    """Analyses beyond the table."""

    # Variance partition audio / semantic / joint for every model fitted on all three sets.
    partition: bool = True
    # Voxel clusters by best-predicting feature set, with modularity against a label null.
    clustering: bool = True
    # Neighbours per voxel in the clustering graph (test-story response similarity).
    cluster_k: int = 10
    # Block-bootstrap resamples of the scored test rows (blocks of evaluate.block_size) on which
    # the best-model labels are recomputed; their adjusted Rand index against the labels of
    # all the rows says how stable the clusters are (jaxenc.analysis.best_model_stability).
    # 0: not computed.
    cluster_resamples: int = 100
    # Semantic layers swept with ridge on voxels (features of all extracted in one pass). With
    # semantic.source = "planted": layers of the twin's planted language model (layer L averages
    # each word's vector with its predecessors over 4**L words).
    layer_sweep: tuple[int, ...] = ()
    # Audio windows swept with ridge on voxels: seconds of audio context (audio.context_s), one
    # extraction per window (the encoder input grows to hold it, AudioConfig.window); with
    # audio.source = "planted", the twin's audio properties averaged over each window.
    window_sweep: tuple[float, ...] = ()
    # Semantic models of the model-size sweep (ridge on voxels, same layer rule).
    size_sweep: tuple[ModelSpec, ...] = ()
    # Interaction attribution of every network on audio+semantic features: per voxel, the share
    # of its test-story prediction's variance due to audio x semantic interaction
    # (jaxenc.analysis.fit_interaction_shares, averaged over the fold models), shown beside the
    # MLP - DIMLP gain. Costs n_test**2 evaluations of each fold model.
    interactions: bool = False
    # Data-scaling curves: shares of each subject's training stories (in (0, 1], e.g. [0.125,
    # 0.25, 0.5, 1.0]); every job of the table is also fitted on nested subsets of that many
    # stories (whole stories, at least the folds of the fits), all subsets of a network in one
    # compiled program (jaxenc.pipeline.scaling). Empty: off.
    data_fractions: tuple[float, ...] = ()
    # Independent draws of those nested subsets, each its own shuffle of a subject's stories
    # (the first is the one a single draw makes), all fitted in the same programs; the curves
    # and the data-scaling planted checks average over them, and the report shows their spread.
    data_draws: int = 1

    def validate(self) -> None:
        positive(self.cluster_k, "cluster_k")
        for fraction in self.data_fractions:
            if not 0 < fraction <= 1:
                raise ConfigError(f"data_fractions must be shares of the training stories in (0, 1], got "
                                  f"{list(self.data_fractions)}")
        if isinstance(self.data_draws, bool) or not isinstance(self.data_draws, int) or self.data_draws < 1:
            raise ConfigError(f"data_draws must be a positive integer, got {self.data_draws!r}")
        if self.data_draws > 1 and not self.data_fractions:
            raise ConfigError(f"data_draws = {self.data_draws} draws subsets of data_fractions, which is empty")
        if isinstance(self.cluster_resamples, bool) or not isinstance(self.cluster_resamples, int) \
                or self.cluster_resamples < 0:
            raise ConfigError(f"cluster_resamples must be a non-negative integer, got {self.cluster_resamples!r}")
        for window in self.window_sweep:
            positive(window, "window_sweep")
            if abs(window / _FRAME_S - round(window / _FRAME_S)) > 1e-6 * max(1.0, window / _FRAME_S):
                raise ConfigError(f"window_sweep must hold whole 10 ms mel frames, got {window}")
        if len(set(self.window_sweep)) != len(self.window_sweep):
            raise ConfigError(f"window_sweep must hold distinct windows, got {list(self.window_sweep)}")
        labels = [spec.label for spec in self.size_sweep]
        if any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ConfigError("size_sweep entries need distinct non-empty labels")


@dataclass(frozen=True)
class PlantedConfig:
    """Margins the synthetic twin's planted structure must be recovered with (ignored on real data).

    The checks run on the ridge models of the first target in ``table.targets`` (the MLP too
    for the interaction checks); the report lists value, margin and whether each passed. Values
    the demo gives on its three subjects on voxel targets (partition on the paper's r2, r·|r|,
    on the test rows kept after the trim): audio_unique 0.90-0.91, semantic_unique 0.88-0.94,
    joint_best 0.51-0.55, noise_significant 0.015-0.018, selectivity 0.51-0.75,
    interaction_gain 0.03-0.06. The margins sit 0.08-0.2 below the values seen, except
    interaction_gain, which states a goal: the MLP at least level with ridge on the
    interaction voxels.

    ``interaction_nonlinearity`` (MLP minus MLLinear on the interaction voxels) is off by
    default here: the demo's data are too few to learn the planted product. With the twin's own
    (planted) features, on voxel targets, the MLP is 0.00-0.02 above MLLinear on the demo
    (800 training rows per fold); with extracted features the word-level language-model
    features already carry most of the product linearly (a per-word function of random word
    embeddings): the semantic ridge alone reaches the joint ridge's r there. The nonlinearity
    step (:class:`NonlinearityConfig`) checks it where it can be learned, on a reshaped twin.
    """

    # Significant audio voxels whose unique audio part exceeds the unique semantic part.
    audio_unique: float = 0.7
    # Significant semantic voxels whose unique semantic part exceeds the unique audio part.
    semantic_unique: float = 0.8
    # Significant audio+semantic voxels best fitted by the joint model: at least this share.
    joint_best: float = 0.4
    # Noise voxels found significant by the joint ridge: at most this share.
    noise_significant: float = 0.1
    # Interaction voxels: mean r of the audio+semantic MLP minus the ridge's, at least this.
    # Its premise, that the MLP can learn the planted product from the fold's rows, holds on
    # voxel targets of the demo twin (gain 0.03-0.06, though not from the nonlinearity: see
    # interaction_nonlinearity) and on the reshaped twins; on the demo twin's 32 PCA
    # components ridge leads by 0.02-0.11 (it reads the part of the product the extracted word
    # features carry linearly), so configs on those targets whose question is another skip it.
    interaction_gain: float = 0.0
    # Interaction voxels: mean r of the audio+semantic MLP minus MLLinear's, at least this
    # (what the nonlinearity itself adds where the twin plants one); unset: not checked.
    interaction_nonlinearity: float | None = None
    # Mean r of the audio (semantic) ridge on audio (semantic) voxels minus on noise voxels.
    selectivity: float = 0.4
    # With analyses.interactions: AUC of the audio+semantic MLP's interaction shares, planted
    # interaction voxels against the linear ones (audio, semantic, joint), at least this;
    # unset: not checked.
    interaction_share_auc: float | None = None
    # With analyses.interactions: median interaction share of the MLP on the planted linear
    # voxels, at most this; unset: not checked.
    interaction_share_linear: float | None = None
    # Window and layer sweeps on a twin that plants an audio time scale (data.synthetic
    # audio_time_scale) or a semantic context (semantic_context, against the planted language
    # model's layers): grid steps between the sweep curve's best point on the planted audio
    # (semantic) voxels and the planted value, at most this; unset: not checked.
    sweep_steps: int | None = 1
    # With analyses.data_fractions, per subject, on the planted interaction voxels (mean r):
    # the deeper MLP (deepmlp-N) best on all the training stories minus the one-hidden-layer
    # MLP there, at least this; unset: not checked.
    depth_gain_full_data: float | None = None
    # With analyses.data_fractions: the same gap on the smallest subset, at most this (the MLP
    # ahead where data are few); unset: not checked.
    depth_gain_small_data: float | None = None
    # With analyses.data_fractions, per subject, on all voxels (mean r), on the smallest
    # subset: ridge minus the MLP and the MLP minus the best deeper MLP there, each at least
    # this (the paper's ordering at small data); unset: not checked.
    small_data_order: float | None = None
    # Checks computed and reported but neither passed nor failed in this config, by the names
    # the report gives them (jaxenc.experiment.planted.CHECK_NAMES): for a check whose premise
    # the config's twin or targets do not meet, the config's header saying why. The report
    # lists them as "not checked" with their values.
    skip: tuple[str, ...] = ()

    def validate(self) -> None:
        unknown = sorted(set(self.skip) - set(CHECK_NAMES))
        if unknown:
            raise ConfigError(f"skip names no planted check: {unknown}; expected some of {list(CHECK_NAMES)}")


@dataclass(frozen=True)
class NonlinearityConfig:
    """The paper's central claim where the synthetic twin plants it: a step of its own.

    On the demo's own features the networks' gain on the planted interaction voxels does not
    come from their nonlinearity (see :class:`PlantedConfig`). This step shows it where it can
    be learned: a second, reshaped twin (one subject, enough rows per story, few semantic
    dimensions) with voxels driven only by audio x semantic products, fitted on the twin's own
    stimulus properties (planted features: no extractor in the way) with ridge, MLLinear,
    DIMLP and MLP on audio+semantic voxel targets. It runs as a full run of its own in
    ``OUT/nonlinearity`` (config, predictions, scores, report), after the main fits and
    scores; its planted checks (``interaction_nonlinearity``: MLP minus MLLinear on the
    interaction voxels, at least ``margin``; ``interaction_gain``: MLP minus ridge, at least
    0) join the main run's, and its figure the main report. On the synthetic twin only.
    Measured (UTS01, mean r on the 24 interaction voxels, 95 test rows kept of 110): MLP 0.833,
    DIMLP 0.639, MLLinear 0.110, ridge 0.100; on the linear voxels all four 0.96-0.98.
    """

    # Run the step (the demo does; ignored on real data, where nothing is planted).
    run: bool = True
    # Changes to the tiny twin preset (fields of jaxenc.synthetic.SyntheticConfig): one
    # subject of 60 voxels, 24 training stories of 110 rows (the demo's 800 rows per fold are
    # too few to learn a product), 4 semantic dimensions, 2 interaction latents, 30% of the
    # voxels joint-linear and 40% interaction.
    synthetic: dict = field(default_factory=lambda: {
        "subjects": ["UTS01"], "n_voxels": [60], "n_repeats": [10], "n_train_stories": 24,
        "fewer_stories": [], "length_scale": 0.1, "min_respdict": 130, "audio_rate": 1000,
        "n_semantic": 4, "n_interaction": 2, "class_fractions": [0.1, 0.1, 0.1, 0.3, 0.4],
        "snr_range": [2.0, 4.0],
    }, metadata={"keys": synthetic_keys})
    # Encoders fitted on audio+semantic voxel targets ("ridge" and "mllinear" are the linear
    # references; "mlp" is needed by both checks).
    models: tuple[str, ...] = ("ridge", "mllinear", "dimlp", "mlp")
    # Cross-validation folds of the ridge (the networks use train.n_folds below).
    ridge_folds: int = 3
    # The networks: smaller than the paper's for 60 voxels and 2,600 rows.
    networks: NetworkOptions = NetworkOptions(hidden=64, dropout=0.1)
    # Their training (the seed is the run's).
    train: TrainConfig = TrainConfig(n_folds=3, batch_size=64, max_epochs=150, patience=15, learning_rate=3e-3,
                                     epochs_per_call=10, checkpoint_every=10)
    # Learning rate and weight decay picked on the validation folds from a 3-point grid.
    fit: FitConfig = FitConfig(grid=({"learning_rate": 3e-3, "weight_decay": 1e-4},
                                     {"learning_rate": 3e-3, "weight_decay": 0.1},
                                     {"learning_rate": 1e-2, "weight_decay": 1e-4}))
    # interaction_nonlinearity: MLP minus MLLinear on the interaction voxels, at least this.
    margin: float = 0.3

    def validate(self) -> None:
        synthetic_config("tiny", 0, self.synthetic)
        _encoders(self.models, "models")
        if "mlp" not in self.models:
            raise ConfigError("models must include 'mlp' (both checks compare it)")
        if self.ridge_folds < 2:
            raise ConfigError(f"ridge_folds must be at least 2, got {self.ridge_folds}")


@dataclass(frozen=True)
class ReportConfig:
    """The run's report."""

    # Output formats: "html" (one self-contained file) and/or "md" (with figures/*.png).
    formats: tuple[str, ...] = ("html", "md")
    # Cortical flatmaps (needs pycortex, the maps extra): subject -> { pycortex_subject, xfm,
    # and optionally models (labels such as "audio | ridge | voxels"; default: every model) and
    # rois (ROI outlines) }; see jaxenc.report.flatmaps.render_flatmaps. Empty: on a synthetic
    # twin written with data.synthetic.cortex, every subject on that pycortex subject and
    # transform with its cortex_roi outlined; otherwise none.
    flatmaps: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in self.formats:
            choice(name, ("html", "md"), "formats")
        for subject, entry in self.flatmaps.items():
            if not isinstance(entry, Mapping) or not {"pycortex_subject", "xfm"} <= set(entry) <= set(ENTRY_KEYS):
                raise ConfigError(f"flatmaps.{subject} must be a table of pycortex_subject, xfm and optionally "
                                  f"models and rois, got {entry!r}")
