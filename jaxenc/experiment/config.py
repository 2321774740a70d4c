"""Experiment configs: TOML files checked strictly against dataclasses, with overrides.

A config names the data, the feature sources, the grid of encoders (the paper's Table 1:
feature sets x models x targets), the settings of every library step, the analyses and the
margins the synthetic twin's planted structure must be recovered with. The library's steps are
configured by the library's own dataclasses, held as they are, so every setting of theirs is a
config key with the library's default:

    [align]     jaxenc.pipeline.AlignOptions      delays, boundary, training-story trim
    [ridge]     jaxenc.models.RidgeOptions        penalties, folds, banded ridge
    [networks]  jaxenc.models.NetworkOptions      hidden units, dropout, activation, BatchNorm
    [train]     jaxenc.train.TrainConfig          folds, optimiser, early stopping, batches
    [evaluate]  jaxenc.metrics.ScoreConfig        permutations, FDR, noise-ceiling floor, test trim

The ``[run]`` section says where the stages run: ``devices``, the mesh of
:func:`jaxenc.distributed.run_mesh` (0: every device of every process).

The other sections are the experiment's own (:mod:`jaxenc.experiment.sections`). A few fields
of :class:`~jaxenc.train.TrainConfig` are set from elsewhere so each setting has one key: its
``seed`` is the run's ``seed``, its PCA settings the table's (``table.n_components``,
``table.pca_method``, ``table.pca_n_iter``, ``table.pca_precision``, which ridge reads too)
(:data:`BOUND`). Every other field has the default of its dataclass; the experiment's defaults
are the demo (the synthetic twin with the embedded default extractors), so a config file only
states what it changes::

    name = "layer-sweep"
    [table]
    models = ["ridge"]
    [analyses]
    layer_sweep = [1, 2, 3, 4]

Overrides use dotted paths and TOML values: ``train.max_epochs=20``,
``table.models=["ridge","mlp"]``, ``data.root="/data/ds003020"`` (a bare word is a string).

A twin preset can need settings of its own: the tiny twin's UTS02 heard 2 training stories, so
it takes two folds (:data:`PRESET_DEFAULTS`, which :func:`load_config` lays between the
defaults and the file; an :class:`ExperimentConfig` built directly keeps the defaults). A
file may hold a ``[presets.NAME]`` table for each preset it needs settled differently: its
settings apply when the run writes the twin at that preset (``data.root`` empty, ``data.preset
= NAME`` from the file or an override), over the file's own and under the other overrides; an
override ``presets.NAME.section.key=value`` changes the table itself. A config
written for the demo twin's 12 stories thus still runs with ``--set data.preset=tiny``::

    [ridge]
    folds = 3
    [presets.tiny]
    ridge = { folds = 2 }

An unknown section or key, a value of the wrong type or outside its choices raises
:class:`jaxenc.errors.ConfigError` in one line naming the file and the key, with the closest
valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jaxenc.errors import ConfigError
from jaxenc.experiment.sections import (
    AnalysesConfig,
    AudioConfig,
    DataConfig,
    FitConfig,
    NonlinearityConfig,
    PlantedConfig,
    ReportConfig,
    RunConfig,
    SemanticConfig,
    TableConfig,
)
from jaxenc.metrics.protocol import ScoreConfig
from jaxenc.models.registry import NetworkOptions, RidgeOptions
from jaxenc.pipeline.designs import AlignOptions
from jaxenc.provenance import combined
from jaxenc.synthetic import PRESETS
from jaxenc.train import TrainConfig

__all__ = ["ExperimentConfig", "BOUND", "PRESETS_TABLE", "PRESET_DEFAULTS", "load_config", "apply_overrides"]

# Fields of the trainer's config that other keys set (field -> the key that sets it).
BOUND = {"seed": "seed", "n_components": "table.n_components", "pca_method": "table.pca_method",
         "pca_n_iter": "table.pca_n_iter", "pca_precision": "table.pca_precision"}

# The top-level table of a config file whose sub-tables hold the settings of one twin preset each.
PRESETS_TABLE = "presets"

# What a twin preset needs over the experiment's defaults, under a config file's settings: the
# tiny twin's UTS02 heard 2 training stories (SyntheticConfig.tiny), two folds' worth.
PRESET_DEFAULTS = {"tiny": {"ridge": {"folds": 2}, "train": {"n_folds": 2}}}


# The range of an integer setting: the compiled programs count in int32.
_INT32 = (-(2**31), 2**31 - 1)


def _check_train(train: TrainConfig) -> None:
    """What the experiment asks of the trainer's settings beyond :meth:`TrainConfig.validate`."""
    if train.n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2, got {train.n_folds}")
    if not train.learning_rate > 0:
        raise ConfigError(f"learning_rate must be positive, got {train.learning_rate}")
    for name in ("weight_decay", "min_delta"):
        if not getattr(train, name) >= 0:
            raise ConfigError(f"{name} must be at least 0, got {getattr(train, name)}")
    train.validate()


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: every section with its defaults (the demo)."""

    # Name of the run (report title; default output folder runs/<name>).
    name: str = "demo"
    # Seed of the folds, initialisations, minibatches, permutations and default extractors.
    seed: int = 0
    data: DataConfig = DataConfig()
    audio: AudioConfig = AudioConfig()
    semantic: SemanticConfig = SemanticConfig()
    align: AlignOptions = AlignOptions()
    table: TableConfig = TableConfig()
    ridge: RidgeOptions = RidgeOptions()
    networks: NetworkOptions = NetworkOptions()
    train: TrainConfig = TrainConfig()
    fit: FitConfig = FitConfig()
    evaluate: ScoreConfig = ScoreConfig()
    analyses: AnalysesConfig = AnalysesConfig()
    planted: PlantedConfig = PlantedConfig()
    nonlinearity: NonlinearityConfig = NonlinearityConfig()
    report: ReportConfig = ReportConfig()
    run: RunConfig = RunConfig()

    def __post_init__(self):
        # The trainer's bound fields follow the keys that set them (see BOUND).
        object.__setattr__(self, "train", dataclasses.replace(
            self.train, seed=self.seed, n_components=self.table.n_components,
            pca_method=self.table.pca_method, pca_n_iter=self.table.pca_n_iter,
            pca_precision=self.table.pca_precision))

    def validate(self, where=None) -> ExperimentConfig:
        """Check every section's values; return self.

        Raises
        ------
        ConfigError
            One line naming ``where`` (the file) and the key.
        """
        _validate(self, "", where)
        if self.audio.source == "whisper":
            for window in self.analyses.window_sweep:
                try:
                    self.audio.check_window(self.audio.window(window), f"analyses.window_sweep {window:g}: input_s")
                except ConfigError as err:
                    raise ConfigError(str(err), path=where) from None
        return self

    def to_dict(self) -> dict:
        """JSON-able nested dict of every key (what runs save as config.json)."""
        return _plain(self)

    def digest(self, *sections: str) -> str:
        """First 16 hex digits of the SHA-256 of the named sections (all when none)."""
        data = self.to_dict()
        if sections:
            data = {name: data[name] for name in sections}
        return combined(data)

    @classmethod
    def from_dict(cls, data: Mapping, where=None) -> ExperimentConfig:
        """Build from a nested mapping (a parsed TOML file), strictly; see the module docstring."""
        return _build(cls, data, "", where).validate(where)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a TOML config (or the defaults when ``path`` is None) and apply overrides.

    Parameters
    ----------
    path : str or Path, optional
        A ``.toml`` experiment file, or a run folder holding the ``config.json`` a run saved.
    overrides : sequence of str
        ``"section.key=value"`` with a TOML value (a bare word is taken as a string).

    Returns
    -------
    ExperimentConfig

    Raises
    ------
    ConfigError
        Missing or unreadable file, TOML syntax error, unknown key, wrong type or value.
    """
    where = None
    data: dict = {}
    if path is not None:
        path = Path(path)
        where = str(path)
        if path.is_dir():
            saved = path / "config.json"
            if not saved.is_file():
                raise ConfigError("a run folder must hold config.json (written by every jaxenc stage)", path=path)
            data = json.loads(saved.read_text())
            where = str(saved)
        elif not path.is_file():
            raise ConfigError("no such config file", path=path)
        else:
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as err:
                raise ConfigError(f"not valid TOML: {err}", path=path) from None
    # An override under presets. changes a preset table, checked and applied like the file's.
    to_presets = [o for o in overrides if o.partition("=")[0].strip().split(".")[0] == PRESETS_TABLE]
    overrides = [o for o in overrides if o not in to_presets]
    tables = apply_overrides({PRESETS_TABLE: data.pop(PRESETS_TABLE, {})}, to_presets)[PRESETS_TABLE]
    presets = _preset_tables(tables, where)
    selected = apply_overrides(data, overrides)
    twin = selected.get("data", {})
    if isinstance(twin, Mapping) and not twin.get("root"):
        preset = twin.get("preset", DataConfig.preset)
        layered = _merged(_merged(PRESET_DEFAULTS.get(preset, {}), data), presets.get(preset, {}))
        selected = apply_overrides(layered, overrides)
    return ExperimentConfig.from_dict(selected, where)


def apply_overrides(data: Mapping, overrides: Sequence[str]) -> dict:
    """Return a copy of a nested mapping with ``"a.b=value"`` overrides applied.

    Parameters
    ----------
    data : mapping
        Parsed config.
    overrides : sequence of str
        Dotted keys and TOML values.

    Returns
    -------
    dict
    """
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _preset_tables(tables, where) -> dict[str, dict]:
    """Check a file's ``[presets]`` table: one table per twin preset, each of valid settings.

    Every preset's settings are checked, not only the selected one's, so that a misspelt key
    fails on any run of the file.
    """
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{PRESETS_TABLE} must be a table of [{PRESETS_TABLE}.NAME] tables, got {tables!r}",
                          path=where)
    for name, changes in tables.items():
        prefix = f"{PRESETS_TABLE}.{name}"
        if name not in PRESETS:
            raise _unknown(name, PRESETS, f"{PRESETS_TABLE}.", where)
        if not isinstance(changes, Mapping):
            raise ConfigError(f"{prefix} must be a table of settings, got {changes!r}", path=where)
        twin = changes.get("data", {})
        for key in ("root", "preset"):
            if isinstance(twin, Mapping) and key in twin:
                raise ConfigError(f"{prefix} sets data.{key}, which chooses whether the table applies: "
                                  f"set it outside [{prefix}]", path=where)
        _build(ExperimentConfig, changes, f"{prefix}.", where)
    return {name: dict(changes) for name, changes in tables.items()}


def _merged(base: Mapping, changes: Mapping) -> dict:
    """``base`` with ``changes`` laid over it, table by table (a value that is not a table replaces)."""
    out = dict(base)
    for key, value in changes.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merged(out[key], value) if both else value
    return out


def _settable(cls) -> list[str]:
    """The keys of a section: its fields, less those other keys set."""
    names = [f.name for f in dataclasses.fields(cls)]
    return [n for n in names if n not in BOUND] if cls is TrainConfig else names


def _unknown(key: str, names: Sequence[str], prefix: str, where) -> ConfigError:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; expected one of {list(names)}"
    return ConfigError(f"unknown key '{prefix}{key}'{hint}", path=where)


def _build(cls, data, prefix: str, where, base=None):
    """``cls`` from a mapping; keys not given keep ``base``'s values (the class defaults when
    ``base`` is None), so a nested section keeps the defaults its parent gives it."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a table, got {data!r}", path=where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = _settable(cls)
    kwargs = {}
    for key, value in data.items():
        if cls is TrainConfig and key in BOUND:
            raise ConfigError(f"{prefix}{key} is set by '{BOUND[key]}', not here", path=where)
        if key not in names:
            raise _unknown(key, names, prefix, where)
        default = fields[key].default if base is None else getattr(base, key)
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}", where,
                               None if default is dataclasses.MISSING else default)
        allowed = fields[key].metadata.get("keys")
        for inner in kwargs[key] if allowed else ():
            if inner not in allowed():
                raise _unknown(inner, allowed(), f"{prefix}{key}.", where)
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def _convert(hint, value, key: str, where, default=None):
    """Check ``value`` against a field's type hint and convert lists to tuples."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", where, base=default)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}", path=where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} entries, got {list(value)}", path=where)
        return tuple(_convert(a, v, f"{key}[{i}]", where) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}", path=where)
        return dict(value)
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if hint in checks:
        ok, what = checks[hint]
        if not ok(value):
            raise ConfigError(f"{key} must be {what}, got {value!r}", path=where)
        if hint is int and not _INT32[0] <= value <= _INT32[1]:
            # Counts become int32 in the compiled programs (epochs, steps, permutations, seeds).
            raise ConfigError(f"{key} = {value} does not fit a 32-bit integer; expected at most {_INT32[1]}",
                              path=where)
        return float(value) if hint is float else value
    if isinstance(hint, types.UnionType):
        # Only "X | None": None (a config.json null) keeps a setting off.
        others = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(others) != 1 or len(typing.get_args(hint)) != 2:
            raise ConfigError(f"{key}: union types other than 'X | None' are not supported in configs")
        return None if value is None else _convert(others[0], value, key, where)
    return value


def _validate(section, prefix: str, where) -> None:
    """Validate ``section`` and the sections it holds, naming the key and the file on error."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, f"{prefix}{f.name}.", where)
    check = _check_train if isinstance(section, TrainConfig) else getattr(section, "validate", None)
    if check is None or not prefix:
        return
    try:
        check(section) if check is _check_train else check()
    except ConfigError as err:
        message = str(err)
        first = re.match(r"[A-Za-z_]\w*", message)
        names = [f.name for f in dataclasses.fields(section)]
        head = prefix if first and first.group() in names else f"{prefix.rstrip('.')}: "
        raise ConfigError(f"{head}{message}", path=where) from None


def _plain(value):
    """JSON-able form of a config value; the trainer's bound fields are left out (see BOUND)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (isinstance(value, TrainConfig) and f.name in BOUND)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
