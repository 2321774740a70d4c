"""The stages of an experiment run: extract -> fit -> evaluate -> report, in one output folder.

Everything a run writes lives under its output folder::

    OUT/config.json            the resolved config (every stage rewrites it)
    OUT/data/                  the synthetic twin, when data.root is ""
    OUT/models/                the embedded default extractors, when model = "default"
    OUT/features/              tensorstore feature cache + index.json (what extract produced)
    OUT/predictions/           test-story voxel predictions per fitted encoder (.npz + .json)
    OUT/checkpoints/           orbax checkpoints of the nonlinear encoders (resume)
    OUT/metrics.json, scores/  per-voxel scores and analyses (jaxenc.report.RunResults)
    OUT/report.html, report.md, figures/
    OUT/nonlinearity/          the nonlinearity step, a run of its own (jaxenc.experiment.nonlinearity)

Each stage resumes: extraction skips stories already cached, a fit whose prediction file was
written for the same settings is skipped, a killed nonlinear fit resumes from its checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from jaxenc.errors import ConfigError, DataError
from jaxenc.experiment.config import ExperimentConfig

__all__ = ["Experiment"]

def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_savez(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class Experiment:
    """One experiment run: a config and the folder its stages read and write.

    Parameters
    ----------
    config : ExperimentConfig
    out : str or Path
        Output folder (created).
    progress : bool
        Show progress bars.
    log : callable
        Receives one line per step (``print`` on the command line).
    """

    def __init__(self, config: ExperimentConfig, out, *, progress: bool = True, log: Callable = print):
        self.config = config
        self.out = Path(out)
        self.progress = progress
        self.log = log
        self.timings: dict[str, float] = {}

    # -- layout -----------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_config(self) -> None:
        """Write the resolved config to OUT/config.json."""
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.out / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")

    # -- data -------------------------------------------------------------------------------
    @functools.cached_property
    def data_root(self) -> Path:
        """The dataset folder, writing the synthetic twin first when ``data.root`` is empty."""
        cfg = self.config.data
        if cfg.root:
            root = Path(cfg.root).expanduser()
            if not root.is_dir():
                raise DataError("no such dataset folder (data.root)", path=root)
            return root
        from jaxenc.synthetic import write_synthetic

        root = self.out / "data"
        changed = f", changed: {', '.join(sorted(cfg.synthetic))}" if cfg.synthetic else ""
        self.log(f"synthetic twin of ds003020 ({cfg.preset} preset{changed}, seed {cfg.seed}) in {root}")
        write_synthetic(root, cfg.synthetic_config(), progress=self.progress)
        return root

    @functools.cached_property
    def dataset(self):
        """The :class:`jaxenc.data.LeBelDataset` of the run."""
        from jaxenc.data import LeBelDataset

        return LeBelDataset(self.data_root)

    @functools.cached_property
    def truth(self):
        """The synthetic twin's planted truth, or None on real data."""
        if self.config.data.root:
            return None
        from jaxenc.synthetic import load_truth

        return load_truth(self.data_root)

    @functools.cached_property
    def subjects(self) -> list[str]:
        """Subjects of the run (``data.subjects`` or all of the dataset's)."""
        available = self.dataset.subjects
        wanted = list(self.config.data.subjects) or available
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise ConfigError(f"data.subjects {unknown} not in the dataset (it has {available})", path=self.data_root)
        return wanted

    def train_stories(self, subject: str) -> list[str]:
        """Training stories of a subject (the test story excluded), sorted."""
        return [s for s in self.dataset.stories(subject) if s != self.dataset.test_story]

    @functools.cached_property
    def stories(self) -> list[str]:
        """Every story any subject of the run heard, the test story last."""
        train = sorted({s for subject in self.subjects for s in self.train_stories(subject)})
        return train + [self.dataset.test_story]

    # -- extract ----------------------------------------------------------------------------
    def extract(self) -> dict:
        """Extract (or read from the cache) every feature source the config uses.

        Returns
        -------
        dict
            The feature index, also written to OUT/features/index.json: per source label,
            its kind, model, layer of the table and the cache keys of its stories.
        """
        from jaxenc.features import FeatureCache

        started = time.perf_counter()
        self.save_config()
        cfg = self.config
        cache = FeatureCache(self._dir("features"))
        self.log(f"dataset: {self.dataset!r}; subjects {', '.join(self.subjects)}, {len(self.stories)} stories")
        index = {}
        if cfg.audio.source == "whisper":
            index["audio"] = self._extract_whisper(cache)
        else:
            index["audio"] = {"kind": "planted"}
        semantic_layers = tuple(cfg.analyses.layer_sweep)
        if cfg.semantic.source == "llama":
            index["semantic"] = self._extract_llama(
                cache, "semantic", cfg.semantic.model, {}, cfg.semantic.layer, semantic_layers)
        else:
            if semantic_layers:
                raise ConfigError("analyses.layer_sweep needs semantic.source = 'llama'")
            index["semantic"] = {"kind": "planted"}
        for spec in cfg.analyses.size_sweep:
            index[f"semantic/{spec.label}"] = self._extract_llama(
                cache, spec.label, spec.model, spec.sizes, spec.layer, ())
        _atomic_write_text(self.out / "features" / "index.json", json.dumps(index, indent=2) + "\n")
        self.timings["extract"] = time.perf_counter() - started
        return index

    def _model_dir(self, kind: str, model: str, sizes: dict, label: str) -> Path:
        from jaxenc.ckpt.files import resolve_checkpoint

        if model != "default":
            return resolve_checkpoint(model)
        from jaxenc.features import defaults

        folder = self.out / "models" / f"{kind}-{label}"
        if kind == "whisper":
            return defaults.write_default_whisper(folder, seed=self.config.seed, **sizes)
        words = [str(w) for story in self.stories for w in self.dataset.words(story).label]
        return defaults.write_default_llama(folder, words, seed=self.config.seed, **sizes)

    def _extract_whisper(self, cache) -> dict:
        from jaxenc.ckpt import load_whisper_encoder
        from jaxenc.features import LogMelFrontend, checkpoint_revision, defaults, whisper_story_features

        cfg = self.config.audio
        directory = self._model_dir("whisper", cfg.model, {}, "default")
        module, model_config = load_whisper_encoder(directory, dtype=cfg.dtype, mesh=self.mesh)
        n_layers = model_config.encoder_layers
        if cfg.layer >= 0:
            layer = cfg.layer
        else:
            layer = defaults.DEFAULT_WHISPER_LAYER if cfg.model == "default" else n_layers
        _check_layers([layer], n_layers, "audio.layer", cfg.model)
        name = "jaxenc-default-whisper" if cfg.model == "default" else cfg.model
        window = cfg.window()
        self.log(f"audio features: Whisper encoder {name}, layer {layer} of {n_layers}, "
                 f"{np.dtype(module.dtype).name}, windows {window}")
        keys = whisper_story_features(
            cache, module, LogMelFrontend.from_pretrained(directory),
            functools.partial(self.dataset.audio, sample_rate=16000), self.stories,
            model=name, revision=checkpoint_revision(directory), layers=[layer],
            batch_size=cfg.batch_size, progress=self.progress, mesh=self.mesh, **window,
        )
        return {"kind": "whisper", "model": name, "layer": layer, "window_s": window, "keys": _keys_json(keys)}

    def _extract_llama(self, cache, label: str, model: str, sizes: dict, layer: int, extra: tuple) -> dict:
        from transformers import AutoTokenizer

        from jaxenc.ckpt import load_llama
        from jaxenc.ckpt.files import read_hf_config
        from jaxenc.features import checkpoint_revision, defaults, llama_story_features
        from jaxenc.nn import LlamaConfig

        cfg = self.config.semantic
        directory = self._model_dir("llama", model, sizes, "default" if label == "semantic" else label)
        n_layers = LlamaConfig.from_hf(read_hf_config(directory, "llama")).num_hidden_layers
        if layer < 0:
            layer = defaults.DEFAULT_LLAMA_LAYER if model == "default" and not sizes else max(1, round(n_layers * 12 / 32))
        layers = sorted({layer, *extra})
        _check_layers(layers, n_layers, "semantic layers", model)
        module, _ = load_llama(directory, dtype=cfg.dtype, max_layer=max(layers), mesh=self.mesh)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        name = f"jaxenc-default-llama-{label}" if model == "default" else model
        window = {"context_words": cfg.context_words, **(defaults.DEFAULT_LLAMA_WINDOW if model == "default" else {})}
        self.log(f"semantic features: {name}, layers {layers} of {n_layers}, {np.dtype(module.dtype).name}, "
                 f"context words {cfg.context_words}")

        def words(story):
            intervals = self.dataset.words(story)
            return intervals.midpoints, [str(w) for w in intervals.label]

        keys = llama_story_features(
            cache, module, tokenizer, words, self.stories, model=name,
            revision=checkpoint_revision(directory), layers=layers,
            batch_size=cfg.batch_size, progress=self.progress, mesh=self.mesh, **window,
        )
        params = sum(int(np.prod(p.shape)) for p in _leaves(module))
        return {"kind": "llama", "model": name, "layer": layer, "layers": layers, "n_params": params,
                "window": window,
                "n_layers": n_layers, "keys": _keys_json(keys)}

    @functools.cached_property
    def mesh(self):
        """A one-axis ("data") mesh over every local device for extraction, or None on one device."""
        import jax

        if jax.local_device_count() == 1:
            return None
        from jax.sharding import AxisType

        from jaxenc.distributed import make_mesh

        return make_mesh(("data",), devices=jax.local_devices(), axis_types=(AxisType.Auto,))

    # -- features as {story: (times, values)} ----------------------------------------------------
    @functools.cached_property
    def feature_index(self) -> dict:
        """OUT/features/index.json, written by :meth:`extract`."""
        path = self.out / "features" / "index.json"
        if not path.is_file():
            raise ConfigError(f"no extracted features in {self.out}: run `jaxenc extract` first", path=path)
        return json.loads(path.read_text())

    def feature_set(self, source: str, layer: int | None = None) -> dict:
        """One source's features at one layer: ``{story: (times (n,), values (n, width))}``."""
        entry = self.feature_index.get(source)
        if entry is None:
            raise ConfigError(f"no feature source {source!r} was extracted; rerun `jaxenc extract`")
        if entry["kind"] == "planted":
            if self.truth is None:
                raise ConfigError(f"{source}.source = 'planted' needs the synthetic twin (data.root = '')")
            from jaxenc import pipeline

            return pipeline.planted_features(self.truth, self.stories)[source]
        from jaxenc.features import FeatureCache, FeatureKey

        cache = FeatureCache(self.out / "features")
        layer = entry["layer"] if layer is None else layer
        out = {}
        for story in self.stories:
            if story not in entry["keys"]:
                raise DataError(f"story missing from the {source} features; rerun `jaxenc extract`", story=story)
            key = FeatureKey(story=story, layers=(layer,), **_key_from_json(entry["keys"][story]))
            times, values = cache.read(key)
            out[story] = (times, values[layer])
        return out

    # -- fit ----------------------------------------------------------------------------------
    def fit(self) -> list[str]:
        """Fit every encoder of the table and the sweeps; write their test-story predictions.

        Returns
        -------
        list of str
            The prediction files' names (without suffix) of this run.
        """
        from jaxenc.experiment import fitting, nonlinearity

        started = time.perf_counter()
        self.save_config()
        names = fitting.fit_all(self)
        self.timings["fit"] = time.perf_counter() - started
        step = nonlinearity.step_experiment(self)
        if step is not None:
            started = time.perf_counter()
            self.log(f"nonlinearity step (planted features on a reshaped twin) in {step.out}")
            step.extract()
            step.fit()
            self.timings["nonlinearity"] = time.perf_counter() - started
        return names

    # -- evaluate -----------------------------------------------------------------------------
    def evaluate(self):
        """Score every prediction on the test story, run the analyses, save the results.

        Returns
        -------
        jaxenc.report.RunResults
        """
        from jaxenc.experiment import nonlinearity, scoring

        started = time.perf_counter()
        self.save_config()
        results = scoring.evaluate_all(self)
        step = nonlinearity.step_experiment(self)
        if step is not None:
            step_results = step.evaluate()
            step.report()
            results.nonlinearity = nonlinearity.step_summary(step, step_results)
            for subject, checks in step_results.planted.items():
                results.planted[nonlinearity.planted_key(subject)] = checks
        self.timings["evaluate"] = time.perf_counter() - started
        results.timings.update(self._merged_timings())
        results.save(self.out)
        return results

    def _merged_timings(self) -> dict:
        path = self.out / "timings.json"
        merged = json.loads(path.read_text()) if path.is_file() else {}
        merged.update({k: round(v, 1) for k, v in self.timings.items()})
        _atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
        return merged

    # -- report -------------------------------------------------------------------------------
    def report(self) -> dict:
        """Write OUT/report.html and OUT/report.md from the saved results.

        Returns
        -------
        dict of str to Path
        """
        from jaxenc.report import RunResults, write_report

        results = RunResults.load(self.out)
        return write_report(results, self.out, formats=tuple(self.config.report.formats))

    def run(self) -> dict:
        """All four stages in order; returns the report paths."""
        self.extract()
        self._merged_timings()
        self.fit()
        self._merged_timings()
        self.evaluate()
        return self.report()

    # -- prediction store ----------------------------------------------------------------------
    def prediction_path(self, name: str) -> Path:
        return self._dir("predictions") / f"{name}.npz"

    def load_prediction(self, name: str) -> tuple[dict, dict] | None:
        """``(predictions per subject, meta)`` of a stored fit, or None if absent."""
        meta_path = self.prediction_path(name).with_suffix(".json")
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        with np.load(self.prediction_path(name)) as arrays:
            return {k: arrays[k] for k in arrays.files}, meta

    def save_prediction(self, name: str, predictions: dict, meta: dict) -> None:
        """Store a fit's predictions; the JSON sidecar, written last, marks it complete."""
        path = self.prediction_path(name)
        _atomic_savez(path, {k: np.asarray(v, np.float32) for k, v in predictions.items()})
        _atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")

    def stored_predictions(self) -> list[str]:
        """Names of the complete prediction files, sorted."""
        folder = self.out / "predictions"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if p.with_suffix(".npz").is_file())

    def bar(self, iterable, **kwargs):
        return tqdm(iterable, disable=not self.progress, **kwargs)


def _leaves(module):
    import jax
    from flax import nnx

    return jax.tree.leaves(nnx.state(module, nnx.Param))


def _check_layers(layers, n_layers: int, what: str, model: str) -> None:
    bad = [layer for layer in layers if not 0 <= layer <= n_layers]
    if bad:
        raise ConfigError(f"{what} {bad} outside 0..{n_layers}, the hidden states of model {model!r}")


def _keys_json(keys: dict) -> dict:
    return {story: key.describe() for story, key in keys.items()}


def _key_from_json(described: dict) -> dict:
    return {
        "model": described["model"],
        "revision": described["revision"],
        "extractor": described["extractor"],
        "params": tuple(described["params"].items()),
    }
