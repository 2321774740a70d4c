"""The tensorstore feature cache: hits, layer sweeps, provenance, corruption, interrupted runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxenc
from jaxenc.errors import DataError, DataWarning
from jaxenc.features import FeatureCache, FeatureKey, extract_stories

STORIES = ["alpha", "bravo", "charlie", "delta"]
PARAMS = {"context_s": 16.0, "stride_s": 0.1, "dtype": np.float32}


def expected(story: str, layer: int):
    """Deterministic stand-in features: what a correct computation of (story, layer) gives."""
    rng = np.random.default_rng([sum(map(ord, story)), layer])
    n = 20 + len(story)
    return np.arange(n) * 0.1 + 0.1, rng.standard_normal((n, 6)).astype(np.float32)


class CountingCompute:
    """compute(story, layers) that records its calls and can fail on one story."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, story, layers):
        self.calls.append((story, tuple(layers)))
        if story == self.fail_on:
            raise RuntimeError(f"interrupted while computing {story}")
        times = expected(story, layers[0])[0]
        return times, {layer: expected(story, layer)[1] for layer in layers}


def make_key(story, layers=(1, 2)):
    return FeatureKey("test/model", "abc123", "stand_in/1", PARAMS, story, layers)


def test_second_request_is_a_hit_that_computes_nothing(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute(layers):
        calls.append(layers)
        times = expected("alpha", 1)[0]
        return times, {layer: expected("alpha", layer)[1] for layer in layers}

    first = cache.get_or_compute(make_key("alpha"), compute)
    second = cache.get_or_compute(make_key("alpha"), compute)
    assert calls == [(1, 2)]
    reopened = FeatureCache(tmp_path).get_or_compute(make_key("alpha"), compute)
    assert calls == [(1, 2)]
    for times, features in (first, second, reopened):
        np.testing.assert_array_equal(times, expected("alpha", 1)[0])
        for layer in (1, 2):
            np.testing.assert_array_equal(features[layer], expected("alpha", layer)[1])


def test_a_layer_sweep_computes_only_new_layers_and_reads_only_its_own(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute(layers):
        calls.append(layers)
        return expected("alpha", 0)[0], {layer: expected("alpha", layer)[1] for layer in layers}

    cache.get_or_compute(make_key("alpha", (1, 2)), compute)
    _, features = cache.get_or_compute(make_key("alpha", (2, 3)), compute)
    assert calls == [(1, 2), (3,)]
    assert sorted(features) == [2, 3]
    np.testing.assert_array_equal(features[3], expected("alpha", 3)[1])
    # Each layer is its own entry; a lazy read of one layer's slice touches only that entry.
    store = cache.open_features(make_key("alpha", (3,)), 3)
    np.testing.assert_array_equal(store[5:8].read().result(), expected("alpha", 3)[1][5:8])


def test_other_parameters_or_revisions_are_misses(tmp_path):
    cache = FeatureCache(tmp_path)
    key = make_key("alpha")
    cache.put(key, *CountingCompute()("alpha", key.layers))
    assert cache.contains(key)
    assert not cache.contains(
        FeatureKey("test/model", "abc123", "stand_in/1", {**PARAMS, "stride_s": 0.2}, "alpha", (1, 2))
    )
    assert not cache.contains(FeatureKey("test/model", "def456", "stand_in/1", PARAMS, "alpha", (1, 2)))
    # Parameter order and spelling of dtypes do not matter.
    same = FeatureKey(
        "test/model",
        "abc123",
        "stand_in/1",
        {"dtype": "float32", "stride_s": 0.1, "context_s": 16.0},
        "alpha",
        (2, 1),
    )
    assert cache.contains(same)


def test_provenance_is_stored_as_attributes(tmp_path):
    cache = FeatureCache(tmp_path)
    key = make_key("alpha")
    cache.put(key, *CountingCompute()("alpha", key.layers))
    attributes = cache.provenance(key, 2)
    assert attributes["model"] == "test/model" and attributes["revision"] == "abc123"
    assert attributes["extractor"] == "stand_in/1" and attributes["story"] == "alpha"
    assert attributes["layer"] == 2
    assert attributes["params"] == {"context_s": 16.0, "stride_s": 0.1, "dtype": "float32"}
    assert attributes["jaxenc_version"] == jaxenc.__version__
    assert attributes["shape"] == list(expected("alpha", 2)[1].shape) and attributes["dtype"] == "float32"
    assert attributes["created"].startswith(("20", "21"))
    assert json.loads((cache.key_dir(key) / "key.json").read_text())["params"]["stride_s"] == 0.1


@pytest.mark.parametrize("damage", ["marker", "chunk"])
def test_a_damaged_entry_is_discarded_and_recomputed(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    key = make_key("alpha", (1,))
    compute = CountingCompute()
    cache.put(key, *compute("alpha", (1,)))
    entry = cache.entry_path(key, 1)
    if damage == "marker":
        (entry / "committed.json").unlink()
    else:
        # A chunk file lost in a copy reads back as fill values; the checksum catches it.
        chunk = next(p for p in (entry / "features").rglob("*") if p.is_file() and p.name != "zarr.json")
        chunk.unlink()
    calls = []
    with pytest.warns(DataWarning, match="story 'alpha'.*discarding"):
        _, features = cache.get_or_compute(
            key, lambda layers: calls.append(layers) or compute("alpha", layers)
        )
    assert calls == [(1,)]
    np.testing.assert_array_equal(features[1], expected("alpha", 1)[1])
    np.testing.assert_array_equal(cache.read(key)[1][1], expected("alpha", 1)[1])


def test_read_of_a_missing_entry_raises_naming_the_story(tmp_path):
    with pytest.raises(DataError, match="story 'alpha'.*no valid cached features"):
        FeatureCache(tmp_path).read(make_key("alpha"))


def _check_complete(cache, stories):
    for story in stories:
        times, features = cache.read(make_key(story))
        np.testing.assert_array_equal(times, expected(story, 1)[0])
        for layer in (1, 2):
            np.testing.assert_array_equal(features[layer], expected(story, layer)[1])


def test_an_exception_on_story_3_of_4_resumes_without_recomputing(tmp_path):
    cache = FeatureCache(tmp_path)
    failing = CountingCompute(fail_on="charlie")
    with pytest.raises(RuntimeError, match="charlie"):
        extract_stories(cache, STORIES, make_key, failing, progress=False)
    assert [s for s, _ in failing.calls] == ["alpha", "bravo", "charlie"]
    assert not cache.contains(make_key("charlie"))
    assert not list(cache.key_dir(make_key("charlie")).glob("charlie/.tmp.*"))

    resumed = CountingCompute()
    keys = extract_stories(cache, STORIES, make_key, resumed, progress=False)
    assert resumed.calls == [("charlie", (1, 2)), ("delta", (1, 2))]
    assert keys == {story: make_key(story) for story in STORIES}
    _check_complete(cache, STORIES)
    again = CountingCompute()
    extract_stories(cache, STORIES, make_key, again, progress=False)
    assert again.calls == []


def test_extract_stories_replaces_an_entry_without_marker(tmp_path):
    cache = FeatureCache(tmp_path)
    extract_stories(cache, ["alpha"], make_key, CountingCompute(), progress=False)
    (cache.entry_path(make_key("alpha"), 2) / "committed.json").unlink()
    resumed = CountingCompute()
    extract_stories(cache, ["alpha"], make_key, resumed, progress=False)
    assert resumed.calls == [("alpha", (2,))]
    _check_complete(cache, ["alpha"])


def test_put_with_a_bad_layer_writes_nothing(tmp_path):
    cache = FeatureCache(tmp_path)
    times, features = CountingCompute()("alpha", (1, 2))
    with pytest.raises(DataError, match="story 'alpha'.*layer 2 has shape"):
        cache.put(make_key("alpha"), times, {1: features[1], 2: features[2][:-1]})
    assert cache.missing_layers(make_key("alpha")) == (1, 2)


_KILLED_RUN = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import tensorstore
    from jaxenc.features import FeatureCache, FeatureKey, extract_stories

    root, ready, freeze_at = sys.argv[1:4]
    PARAMS = {PARAMS!r}

    def make_key(story):
        params = {{**PARAMS, "dtype": np.float32}}
        return FeatureKey("test/model", "abc123", "stand_in/1", params, story, (1, 2))

    def compute(story, layers):
        n = 20 + len(story)
        features = {{
            layer: np.random.default_rng([sum(map(ord, story)), layer]).standard_normal((n, 6))
            for layer in layers
        }}
        return np.arange(n) * 0.1 + 0.1, {{k: v.astype(np.float32) for k, v in features.items()}}

    def freeze():
        open(ready, "w").close()
        time.sleep(600)

    real_open, real_rename = tensorstore.open, os.rename

    def open_array(spec, **kwargs):
        # "write": charlie's second layer has its features written but not yet its times.
        path = spec["kvstore"]["path"]
        if freeze_at == "write" and "charlie/.tmp.layer002" in path and path.endswith("times/"):
            freeze()
        return real_open(spec, **kwargs)

    def rename(src, dst):
        # "commit": charlie's second layer is written with its marker, but not renamed.
        if freeze_at == "commit" and str(dst).endswith("charlie/layer002"):
            freeze()
        real_rename(src, dst)

    tensorstore.open, os.rename = open_array, rename
    extract_stories(FeatureCache(root), {STORIES!r}, make_key, compute, progress=False)
    """
).format(PARAMS={k: v for k, v in PARAMS.items() if k != "dtype"}, STORIES=STORIES)


@pytest.mark.parametrize("freeze_at", ["write", "commit"])
def test_a_run_killed_mid_write_resumes_without_trusting_the_interrupted_entry(tmp_path, freeze_at):
    """SIGKILL while charlie (story 3 of 4) is being written, then a rerun: alpha and bravo are
    not recomputed, charlie's interrupted layer is, and the leftover temporary is removed."""
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    ready = tmp_path / "ready"
    root = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(ready), freeze_at])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the extraction process ended before reaching charlie"
            assert time.monotonic() < deadline, "the extraction process never reached charlie"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    cache = FeatureCache(root)
    story_dir = cache.key_dir(make_key("charlie")) / "charlie"
    leftovers = list(story_dir.glob(".tmp.layer002.*"))
    assert len(leftovers) == 1
    assert (leftovers[0] / "committed.json").is_file() == (freeze_at == "commit")
    assert cache.missing_layers(make_key("charlie")) == (2,)
    assert not cache.contains(make_key("delta"))

    resumed = CountingCompute()
    extract_stories(cache, STORIES, make_key, resumed, progress=False)
    # Layer 1 of charlie was committed before the kill: only layer 2 is recomputed.
    assert resumed.calls == [("charlie", (2,)), ("delta", (1, 2))]
    assert not list(story_dir.glob(".tmp.*"))
    _check_complete(cache, STORIES)
