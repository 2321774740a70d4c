"""SyntheticConfig: validation, presets and the dict round trip."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from jaxenc import conventions
from jaxenc.errors import ConfigError
from jaxenc.synthetic import SyntheticConfig, real_respdict, write_synthetic

TEST = conventions.TEST_STORY


def test_config_validation_and_presets():
    for bad in (
        dict(n_voxels=(10,)),
        dict(class_fractions=(0.5, 0.5, 0.5, 0.0, 0.0)),
        dict(audio_rate=22050),
        dict(fewer_stories=(("UTS09", 1),)),
        dict(min_respdict=20),
        dict(n_repeats=(1, 10)),
        dict(snr_range=(2.0, 1.0)),
        dict(noise_ar=1.0),
    ):
        with pytest.raises(ConfigError):
            SyntheticConfig.tiny(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        SyntheticConfig.from_dict({"voxels": 3})
    tiny = SyntheticConfig.tiny(subjects=["UTS01", "UTS02"], n_voxels=np.array([320, 280]))
    assert tiny == SyntheticConfig.tiny() and hash(tiny) == hash(SyntheticConfig.tiny())
    assert SyntheticConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert all(50 <= n - 20 <= 80 for n in tiny.respdict().values())

    demo = SyntheticConfig.demo()
    assert demo == SyntheticConfig() and demo.subjects == ("UTS01", "UTS02", "UTS03")
    assert len(demo.train_stories) == 12 and demo.stories[-1] == TEST
    full = SyntheticConfig.full()
    assert full.respdict() == real_respdict()
    assert full.n_voxels == (81126, 94251, 95556) and len(full.stories) == 84


def test_cortex_option(tmp_path, monkeypatch):
    for bad in ("S1", "S1/", "/fullhead", "S1/full/head"):
        with pytest.raises(ConfigError, match="SUBJECT/TRANSFORM"):
            SyntheticConfig.tiny(cortex=bad)
    with pytest.raises(ConfigError, match="cortex_roi"):
        SyntheticConfig.tiny(cortex="S1/fullhead", cortex_roi="")
    config = SyntheticConfig.tiny(cortex="S1/fullhead", cortex_roi="AC")
    assert SyntheticConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # Unset, the fields stay out of the dict, so twins written before they existed still match.
    assert not {"cortex", "cortex_roi"} & set(SyntheticConfig.tiny().to_dict())
    # Without pycortex the writer stops before claiming the folder, naming the extra.
    monkeypatch.setitem(sys.modules, "cortex", None)
    with pytest.raises(ConfigError, match=r"needs pycortex: pip install -e '\.\[maps\]'"):
        write_synthetic(tmp_path / "twin", config, progress=False)
    assert not (tmp_path / "twin").exists()
