"""SyntheticTruth: the truth a twin plants, and its files (save, load, errors)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from jaxenc.errors import DataError
from jaxenc.synthetic import (
    AUDIO_NAMES,
    CLASS_NAMES,
    TRUTH_DIR,
    SyntheticConfig,
    SyntheticTruth,
    VoxelClass,
    load_truth,
)
from jaxenc.synthetic.words import Vocabulary


def test_truth_round_trip_and_voxel_classes(tiny):
    loaded = load_truth(tiny.root)
    assert loaded.config == SyntheticConfig.tiny()
    assert len(loaded.latent_names) == len(AUDIO_NAMES) + 12 + 4
    n_audio = len(AUDIO_NAMES)
    blocks = {
        VoxelClass.AUDIO: [slice(0, n_audio)],
        VoxelClass.SEMANTIC: [slice(n_audio, n_audio + 12)],
        VoxelClass.AUDIO_SEMANTIC: [slice(0, n_audio), slice(n_audio, n_audio + 12)],
        VoxelClass.INTERACTION: [slice(n_audio + 12, None)],
        VoxelClass.NOISE: [],
    }
    for subject, n_voxels in zip(tiny.subjects, tiny.config.n_voxels, strict=True):
        for key in ("voxel_class", "weights", "snr", "noise_std", "cc_max", "part_variance"):
            saved, returned = getattr(loaded, key)[subject], getattr(tiny, key)[subject]
            np.testing.assert_array_equal(saved, returned)
        classes = tiny.voxel_class[subject]
        counts = np.bincount(classes, minlength=len(CLASS_NAMES))
        fractions = np.asarray(tiny.config.class_fractions)
        assert counts.sum() == n_voxels and np.all(np.abs(counts - fractions * n_voxels) < 1)
        for code, used in blocks.items():
            voxels = tiny.voxels_of(subject, code)
            mask = np.ones(len(loaded.latent_names), dtype=bool)
            for block in used:
                mask[block] = False
            assert np.all(tiny.weights[subject][np.ix_(mask, voxels)] == 0), CLASS_NAMES[code]
            assert np.all((tiny.cc_max[subject][voxels] == 0) == (code == VoxelClass.NOISE))
        snr = tiny.snr[subject][classes != VoxelClass.NOISE]
        assert snr.min() >= 0.5 and snr.max() <= 3.0


def _copy_truth(truth, root):
    """A copy of the truth files of ``truth`` under ``root`` (the dataset files are not needed)."""
    shutil.copytree(truth.root / TRUTH_DIR, root / TRUTH_DIR)
    return root / TRUTH_DIR


def _same(a, b):
    """Every field of two truths holds the same values (the roots aside)."""
    assert a.config == b.config and a.latent_names == b.latent_names and a.respdict == b.respdict
    for field in dataclasses.fields(Vocabulary):
        x, y = getattr(a.vocabulary, field.name), getattr(b.vocabulary, field.name)
        assert np.array_equal(x, y) and np.asarray(x).dtype == np.asarray(y).dtype, field.name
    for name in ("audio_projection", "semantic_projection", "covariance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("voxel_class", "weights", "snr", "noise_std", "cc_max", "part_variance"):
        assert getattr(a, name).keys() == getattr(b, name).keys()
        for subject, values in getattr(a, name).items():
            np.testing.assert_array_equal(values, getattr(b, name)[subject])
            assert values.dtype == getattr(b, name)[subject].dtype


def test_truth_saves_and_loads_itself_to_the_same_bytes(tiny, tmp_path):
    loaded = SyntheticTruth.load(tiny.root)
    _same(loaded, tiny)
    # Saving the loaded truth elsewhere rewrites the writer's files byte for byte, and loads back.
    copy = dataclasses.replace(loaded, root=tmp_path)
    assert not SyntheticTruth.claim(tmp_path, copy.config)
    for story in copy.respdict:
        copy.save_stimulus(loaded.stimulus(story))
    copy.save()
    copy.mark_complete()
    original, saved = tiny.root / TRUTH_DIR, tmp_path / TRUTH_DIR
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(saved) for p in saved.rglob("*") if p.is_file())
    for rel in files:
        assert (original / rel).read_bytes() == (saved / rel).read_bytes(), rel
    _same(SyntheticTruth.load(tmp_path), tiny)
    # The claimed folder is complete now: a second claim says so and writes nothing.
    assert SyntheticTruth.claim(tmp_path, copy.config)


def _load_error(root) -> str:
    with pytest.raises(DataError) as info:
        SyntheticTruth.load(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_corrupt_or_old_truth_files_name_the_file(tiny, tmp_path):
    # A missing subject file.
    folder = _copy_truth(tiny, tmp_path / "missing")
    (folder / "UTS02.npz").unlink()
    message = _load_error(folder.parent)
    assert str(folder / "UTS02.npz") in message and "missing" in message
    # A truncated array file.
    folder = _copy_truth(tiny, tmp_path / "truncated")
    path = folder / "vocabulary.npz"
    path.write_bytes(path.read_bytes()[:100])
    message = _load_error(folder.parent)
    assert str(path) in message and "unreadable" in message
    # An array file without one of its keys.
    folder = _copy_truth(tiny, tmp_path / "key")
    path = folder / "latents.npz"
    with np.load(path) as saved:
        kept = {k: saved[k] for k in saved.files if k != "covariance"}
    np.savez(path, **kept)
    message = _load_error(folder.parent)
    assert str(path) in message and "covariance" in message
    # A config file that is not JSON.
    folder = _copy_truth(tiny, tmp_path / "json")
    (folder / "config.json").write_text("{ not json")
    message = _load_error(folder.parent)
    assert str(folder / "config.json") in message and "JSON" in message
    # A truth of another format version (written by an older jaxenc).
    folder = _copy_truth(tiny, tmp_path / "old")
    for name in ("config.json", "complete.json"):
        record = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**record, "format_version": 0}))
    message = _load_error(folder.parent)
    assert str(folder / "config.json") in message and "format version 0" in message
    # A stimulus file gone after loading: the error names it and the story.
    folder = _copy_truth(tiny, tmp_path / "stimulus")
    truth = SyntheticTruth.load(folder.parent)
    path = folder / "stimulus" / "adollshouse.npz"
    path.unlink()
    with pytest.raises(DataError, match="missing") as info:
        truth.stimulus("adollshouse")
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="no such story"):
        truth.stimulus("nosuchstory")
