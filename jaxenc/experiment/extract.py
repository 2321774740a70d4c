"""The extract stage: every feature source a config uses, into the run's tensorstore cache.

:func:`extract` runs the Whisper encoder over the stories' audio (at the table's window and at
each of the window sweep's, each window its own cache keys) and LLaMA models over their words
(the table's models and those of the model-size sweep), skipping stories already cached,
and writes what it produced to ``features/index.json``; :class:`FeatureReader` reads a
:class:`~jaxenc.featuresets.FeatureSource` back as ``{story: (times, values)}``.

In a job of several processes each process extracts every N-th story (process i: stories i,
i + N, ...) on its own devices into the one feature cache, which must therefore lie on a file
system all hosts share (the run folder's ``features/``); process 0 writes the embedded default
extractors first, and the index once every process is done.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType

from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.ckpt.files import load_tokenizer, read_hf_config, resolve_checkpoint
from jaxenc.distributed import make_mesh
from jaxenc.errors import ConfigError, DataError
from jaxenc.experiment.checks import check_inputs
from jaxenc.features import (
    FeatureCache,
    FeatureKey,
    LogMelFrontend,
    checkpoint_revision,
    defaults,
    llama_story_features,
    whisper_story_features,
)
from jaxenc.featuresets import AUDIO, SEMANTIC, FeatureSource
from jaxenc.nn import LlamaConfig
from jaxenc.pipeline.designs import planted_features
from jaxenc.provenance import InputDigests
from jaxenc.store import RunStore

__all__ = ["extract", "FeatureReader", "extraction_mesh"]


def extract(config, data, store: RunStore, *, progress: bool = True, log: Callable = print) -> dict:
    """Extract (or read from the cache) every feature source the config uses.

    Parameters
    ----------
    config : ExperimentConfig
    data : RunData
    store : RunStore
    progress : bool
    log : callable

    Returns
    -------
    dict
        The feature index, also written to ``features/index.json``: per extraction
        (:attr:`FeatureSource.extraction`), its kind, model, layer of the table and the cache
        keys of its stories.
    """

    cache = FeatureCache(store.folder(RunStore.FEATURES))
    log(f"dataset: {data.dataset!r}; subjects {', '.join(data.subjects)}, {len(data.stories)} stories")
    check_inputs(data, log)
    digests = InputDigests(store)
    extractor = _Extractor(config, data, store, cache, progress, log, digests)
    # The table's window, then the window sweep's (each its own extraction and cache keys).
    windows = (None, *config.analyses.window_sweep)
    if config.audio.source == "whisper":
        index = extractor.whisper(windows)
    else:
        # The planted properties averaged over audio.context_s at the table (0: of the moment).
        table = {None: config.audio.context_s or None}
        index = {FeatureSource(AUDIO, window=w).extraction: extractor.planted(window_s=table.get(w, w))
                 for w in windows}
    if config.semantic.source == "llama":
        index[SEMANTIC] = extractor.llama(SEMANTIC, config.semantic.model, {}, config.semantic.layer,
                                          tuple(config.analyses.layer_sweep))
    else:
        # The table's layer of the planted language model (-1: layer 0, each word's own vector).
        index[SEMANTIC] = extractor.planted(layer=max(config.semantic.layer, 0))
    for spec in config.analyses.size_sweep:
        source = FeatureSource(SEMANTIC, model=spec.label)
        index[source.extraction] = extractor.llama(spec.label, spec.model, spec.sizes, spec.layer, ())
    digests.save()
    store.save_features_index(index)
    return index


@functools.cache
def extraction_mesh():
    """A one-axis ("data") mesh over every local device for extraction, or None on one device."""
    if jax.local_device_count() == 1:
        return None
    return make_mesh(("data",), devices=jax.local_devices(), axis_types=(AxisType.Auto,))


class _Extractor:
    def __init__(self, config, data, store, cache, progress, log, digests):
        self.config, self.data, self.store, self.cache = config, data, store, cache
        self.progress, self.log, self.digests = progress, log, digests

    def inputs(self, kind: str) -> dict:
        """Each story's content digest of the file its features of ``kind`` come from."""
        return self.digests.stories(kind, self.data, self.data.stories)

    def planted(self, window_s: float | None = None, layer: int = 0) -> dict:
        """The index entry of a planted source: the twin's stimulus files it reads, the audio
        window its properties are averaged over (None: the properties of the moment) and the
        planted language model's layer of the table (:func:`jaxenc.pipeline.planted_features`)."""
        # Only what differs from the twin's own properties, so the entries (and the digests of
        # the fits reading them) of runs without sweeps stay what they were.
        entry = {"kind": "planted", **({"layer": layer} if layer else {}),
                 **({"window_s": window_s} if window_s is not None else {})}
        if self.data.truth is None:
            return entry
        return {**entry, "inputs": self.inputs("planted")}

    def verified(self, extract_keys: Callable[[list], dict], stories: list) -> dict:
        """``extract_keys(stories)``, run again if a cached entry it skipped fails its checksum.

        :meth:`FeatureCache.read` discards a damaged entry with a warning naming it, so the
        second pass recomputes exactly those.
        """
        keys = extract_keys(stories)
        damaged = []
        for story, key in keys.items():
            try:
                self.cache.read(key)
            except DataError:
                damaged.append(story)
        if damaged:
            self.log(f"recomputing the damaged cached features of {', '.join(damaged)}")
            keys = extract_keys(stories)
        return keys

    def shared(self, extract_keys: Callable[[list], dict], what: str) -> dict:
        """Every story's cache key, each process of the job extracting its share of the stories.

        ``extract_keys(stories)`` extracts the stories not cached yet and returns their keys.
        Each process extracts (and checks, :meth:`verified`) every N-th story; once all are
        done, every process reads the keys of all, each story now cached.
        """
        processes = self.store.processes
        if processes is None or processes.count == 1:
            return self.verified(extract_keys, self.data.stories)
        mine = self.data.stories[processes.index::processes.count]
        self.log(f"{what} features: process {processes.index} of {processes.count} extracts {len(mine)} of "
                 f"{len(self.data.stories)} stories ({', '.join(mine) or 'none'})")
        self.verified(extract_keys, mine)
        self.store.barrier(f"{what} features")
        return extract_keys(self.data.stories)

    def model_dir(self, kind: str, model: str, sizes: dict, label: str):
        if model != "default":
            return resolve_checkpoint(model)
        folder = self.store.path(f"models/{kind}-{label}")
        if kind == "whisper":
            write = functools.partial(defaults.write_default_whisper, folder, seed=self.config.seed, **sizes)
        else:
            words = [str(w) for story in self.data.stories for w in self.data.dataset.words(story).label]
            write = functools.partial(defaults.write_default_llama, folder, words, seed=self.config.seed, **sizes)
        if self.store.writer:
            directory = write()
        self.store.barrier(f"{kind} model {label}")
        # The other processes find the complete folder the writer wrote, and only read it.
        return directory if self.store.writer else write()

    def whisper(self, windows) -> dict:
        """Whisper features over each window of ``windows`` (seconds of context; None: the
        table's), one index entry each (keys :attr:`FeatureSource.extraction`); the encoder is
        loaded once."""
        cfg = self.config.audio
        directory = self.model_dir("whisper", cfg.model, {}, "default")
        module, model_config = load_whisper_encoder(directory, dtype=cfg.dtype, mesh=extraction_mesh(),
                                                    precision=cfg.precision)
        n_layers = model_config.encoder_layers
        if cfg.layer >= 0:
            layer = cfg.layer
        else:
            layer = defaults.DEFAULT_WHISPER_LAYER if cfg.model == "default" else n_layers
        _check_layers([layer], n_layers, "audio.layer", cfg.model)
        name = "jaxenc-default-whisper" if cfg.model == "default" else cfg.model
        frontend = LogMelFrontend.from_pretrained(directory)
        index = {}
        for context_s in windows:
            window = cfg.window(context_s)
            self.log(f"audio features: Whisper encoder {name}, layer {layer} of {n_layers}, "
                     f"{np.dtype(module.dtype).name}, windows {window}")
            extract = functools.partial(
                whisper_story_features,
                self.cache, module, frontend,
                functools.partial(self.data.dataset.audio, sample_rate=16000),
                model=name, revision=checkpoint_revision(directory), layers=[layer],
                batch_size=cfg.batch_size, progress=self.progress, mesh=extraction_mesh(),
                inputs=self.inputs("whisper"), **window,
            )
            keys = self.shared(lambda stories, extract=extract: extract(stories=stories), "audio")
            index[FeatureSource(AUDIO, window=context_s).extraction] = {
                "kind": "whisper", "model": name, "layer": layer, "window_s": window, "keys": _keys_json(keys)}
        return index

    def llama(self, label: str, model: str, sizes: dict, layer: int, extra: tuple) -> dict:
        cfg = self.config.semantic
        directory = self.model_dir("llama", model, sizes, "default" if label == SEMANTIC else label)
        n_layers = LlamaConfig.from_hf(read_hf_config(directory, "llama")).num_hidden_layers
        if layer < 0:
            default = model == "default" and not sizes
            layer = defaults.DEFAULT_LLAMA_LAYER if default else max(1, round(n_layers * 12 / 32))
        layers = sorted({layer, *extra})
        _check_layers(layers, n_layers, "semantic layers", model)
        module, _ = load_llama(directory, dtype=cfg.dtype, max_layer=max(layers), mesh=extraction_mesh(),
                               precision=cfg.precision)
        tokenizer = load_tokenizer(directory)
        name = f"jaxenc-default-llama-{label}" if model == "default" else model
        window = {"context_words": cfg.context_words, **(defaults.DEFAULT_LLAMA_WINDOW if model == "default" else {})}
        self.log(f"semantic features: {name}, layers {layers} of {n_layers}, {np.dtype(module.dtype).name}, "
                 f"context words {cfg.context_words}")

        def words(story):
            intervals = self.data.dataset.words(story)
            return intervals.midpoints, [str(w) for w in intervals.label]

        extract = functools.partial(
            llama_story_features,
            self.cache, module, tokenizer, words, model=name,
            revision=checkpoint_revision(directory), layers=layers,
            batch_size=cfg.batch_size, progress=self.progress, mesh=extraction_mesh(),
            inputs=self.inputs("llama"), **window,
        )
        keys = self.shared(lambda stories: extract(stories=stories), label)
        params = sum(int(np.prod(p.shape)) for p in _leaves(module))
        return {"kind": "llama", "model": name, "layer": layer, "layers": layers, "n_params": params,
                "window": window, "n_layers": n_layers, "keys": _keys_json(keys)}


class FeatureReader:
    """Feature sources of a run, read back as ``{story: (times (n,), values (n, width))}``.

    Parameters
    ----------
    store : RunStore
        The run whose ``features/`` an extraction filled.
    data : RunData
        Its stories, and the twin's truth for planted sources.
    """

    def __init__(self, store: RunStore, data):
        self.store = store
        self.data = data
        # Fails early, before any progress bar, when nothing was extracted.
        self.index = store.features_index()

    def entry(self, source: FeatureSource) -> dict:
        """The index entry of the source's extraction."""
        entry = self.index.get(source.extraction)
        if entry is None:
            raise ConfigError(f"no feature source {source.extraction!r} was extracted; rerun `jaxenc extract`")
        return entry

    def read(self, source: FeatureSource) -> dict:
        """One source's features at its layer, for every story of the run."""
        entry = self.entry(source)
        if entry["kind"] == "planted":
            if self.data.truth is None:
                raise ConfigError(f"{source.modality}.source = 'planted' needs the synthetic twin (data.root = '')")
            layer = entry.get("layer", 0) if source.layer is None else source.layer
            return planted_features(self.data.truth, self.data.stories, window_s=entry.get("window_s"),
                                    layer=layer)[source.modality]
        cache = FeatureCache(self.store.path(RunStore.FEATURES))
        layer = entry["layer"] if source.layer is None else source.layer
        out = {}
        for story in self.data.stories:
            if story not in entry["keys"]:
                raise DataError(f"story missing from the {source.extraction} features; rerun `jaxenc extract`",
                                story=story)
            key = FeatureKey(story=story, layers=(layer,), **_key_from_json(entry["keys"][story]))
            times, values = cache.read(key)
            out[story] = (times, values[layer])
        return out


def _leaves(module):

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
