"""Flatmaps of a synthetic twin on pycortex's subject S1: rendered, with the planted ROI lit up.

The twin's voxels are S1/fullhead's thin cortical mask (37,226 voxels); its planted audio voxels
are the mask's voxels in the auditory-cortex ROI "AC" (1,321) and, to keep the ROI the only
audio-driven region, the rest are half noise and half semantic voxels. Ridge on the twin's
planted audio properties (the oracle audio features) is the audio model. About 30 s on 2 cores
at load ~12 (twin 15-25 s, most of it pycortex's ROI voxels; fit 15 s; one flatmap 2-10 s, the
first one caching pycortex's vertex map). Skipped without pycortex (the maps extra; the test
extra installs it).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

cortex = pytest.importorskip("cortex", reason="pycortex (the maps extra) is not installed")

from jaxenc.data import LeBelDataset  # noqa: E402
from jaxenc.errors import ConfigError  # noqa: E402
from jaxenc.featuresets import AUDIO  # noqa: E402
from jaxenc.metrics import ScoreConfig  # noqa: E402
from jaxenc.models import RidgeOptions  # noqa: E402
from jaxenc.pipeline import fit_linear_baseline, planted_features  # noqa: E402
from jaxenc.report.flatmaps import HEIGHT, _roi_outline, render_flatmaps  # noqa: E402
from jaxenc.synthetic import SyntheticConfig, VoxelClass, write_synthetic  # noqa: E402
from jaxenc.synthetic.cortex import MASK  # noqa: E402

SUBJECT = "UTS01"
ENTRY = {"pycortex_subject": "S1", "xfm": "fullhead", "rois": ["AC"]}


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    n_voxels = int(cortex.db.get_mask("S1", "fullhead", MASK).sum())
    # Noise and semantic voxels only outside the ROI (the audio fraction is the ROI's own);
    # 2 repeats of the test story: the smallest file the twin allows.
    config = SyntheticConfig.tiny(subjects=[SUBJECT], n_voxels=[n_voxels], n_repeats=[2], fewer_stories=[],
                                  class_fractions=[0.5, 0.0, 0.5, 0.0, 0.0], cortex="S1/fullhead")
    return write_synthetic(tmp_path_factory.mktemp("twin"), config, progress=False)


@pytest.fixture(scope="module")
def audio_results(twin):
    """Ridge of the planted audio properties, scored on the test story (r only matters here)."""
    dataset = LeBelDataset(twin.root)
    return fit_linear_baseline(dataset, SUBJECT, planted_features(twin, twin.config.stories),
                               feature_sets=[AUDIO], ridge=RidgeOptions(folds=3),
                               scoring=ScoreConfig(permutations=20))


def test_twin_plants_audio_voxels_in_the_roi_only(twin):
    classes = twin.voxel_class[SUBJECT]
    audio = classes == VoxelClass.AUDIO
    # The ROI is S1's auditory cortex: 1,321 of the 37,226 thin-mask voxels of fullhead
    # (pycortex 1.4.0), every other class outside it, split by the (renormalised) fractions.
    assert (audio.sum(), classes.size) == (1321, 37226)
    others = classes[~audio]
    assert abs(np.mean(others == VoxelClass.SEMANTIC) - 0.5) <= 1 / others.size
    assert set(np.unique(others)) == {VoxelClass.NOISE, VoxelClass.SEMANTIC}


def test_audio_models_high_r_voxels_fall_in_the_planted_roi(twin, audio_results):
    r = audio_results.models[0].scores.r
    in_roi = twin.voxel_class[SUBJECT] == VoxelClass.AUDIO
    # The top 1% of voxels by r (372): audio voxels of SNR 0.5-3 reach r 0.36-0.94 on the
    # test story (5th-95th percentile), semantic voxels -0.40-0.56 (they share the speech
    # envelope) and noise voxels -0.29-0.30 over its 43 scored rows. Measured: all 372 in the
    # ROI; the margin, 0.9, allows 37 from outside.
    top = np.argsort(-r)[: r.size // 100]
    assert np.mean(in_roi[top]) >= 0.9
    # Measured: mean r 0.73 in the ROI, 0.05 outside; margin 0.5.
    assert np.mean(r[in_roi]) - np.mean(r[~in_roi]) >= 0.5


def test_flatmap_renders_the_roi_bright(audio_results):
    from PIL import Image

    images, note = render_flatmaps(audio_results, {SUBJECT: ENTRY})
    assert note is None and len(images) == 1
    name, caption, png = images[0]
    assert name == "uts01-audio-ridge-voxels"
    assert caption.startswith("UTS01: test-story r of audio | ridge | voxels (0 to ")
    assert caption.endswith("; outlined: AC)")
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # A figure of HEIGHT pixels at 100 dpi, both hemispheres side by side (about 1.9 : 1).
    assert picture.shape[0] == HEIGHT and 1.7 <= picture.shape[1] / picture.shape[0] <= 2.1
    # The same map as pycortex draws it (vertex-wise), against the outline jaxenc draws: flat
    # pixels inside the AC outline must be brighter in r than those outside. Measured: mean r
    # 0.72 inside (13,044 pixels), 0.05 outside (368,492); margin 0.4 (pixels along the outline
    # may show a voxel from the other side).
    volume = cortex.Volume(audio_results.models[0].scores.r, "S1", "fullhead")
    flat, _ = cortex.quickflat.make_flatmap_image(volume, height=HEIGHT, pixelwise=False)
    outline, _ = _roi_outline("S1", "AC", HEIGHT)
    covered = np.isfinite(flat)
    inside, outside = covered & (outline > 0.5), covered & (outline < 0.5)
    assert np.mean(flat[inside]) - np.mean(flat[outside]) >= 0.4


def test_flatmap_refuses_a_bad_entry(audio_results):
    with pytest.raises(ConfigError, match="unknown keys"):
        render_flatmaps(audio_results, {SUBJECT: {**ENTRY, "roi": "AC"}})
    with pytest.raises(ConfigError, match="no scores labelled"):
        render_flatmaps(audio_results, {SUBJECT: {**ENTRY, "models": ["semantic | ridge | voxels"]}})
    with pytest.raises(ConfigError, match="has no ROI 'XX'"):
        render_flatmaps(audio_results, {SUBJECT: {**ENTRY, "rois": ["XX"]}})


def test_interaction_shares_get_a_flatmap_of_their_own(audio_results):
    from dataclasses import replace

    from PIL import Image

    # Shares planted in the ROI only: the map must light the ROI (the colour scale is 0 to 1).
    share = np.where(audio_results.models[0].scores.r > 0.5, 0.9, 0.0).astype(np.float32)
    results = replace(audio_results, interactions={SUBJECT: {"mlp/voxels": share}})
    images, note = render_flatmaps(results, {SUBJECT: ENTRY})
    assert note is None and [name for name, _, _ in images] == ["uts01-audio-ridge-voxels",
                                                                "uts01-interactions-mlp-voxels"]
    name, caption, png = images[1]
    assert caption == "UTS01: audio x semantic interaction share of mlp/voxels (0 to 1.00; outlined: AC)"
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert picture.shape[0] == HEIGHT
