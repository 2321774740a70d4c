"""Features of the embedded random models recover the synthetic twin's planted voxel classes.

The whole demo chain at a small size: synthetic twin -> default Whisper and LLaMA checkpoints
written offline -> features extracted into the cache -> audio, semantic and banded ridge
(:func:`jaxenc.pipeline.fit_linear_baseline`) ->
variance partition on the test story, compared with the planted class of every voxel.
"""

import functools

import numpy as np
import pytest
import transformers

from jaxenc import pipeline
from jaxenc.analysis import by_feature_set, partition_sets
from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.data import LeBelDataset
from jaxenc.features import (
    FeatureCache,
    LogMelFrontend,
    checkpoint_revision,
    defaults,
    llama_story_features,
    whisper_story_features,
)
from jaxenc.featuresets import FEATURE_SETS, JOINT
from jaxenc.metrics import UNIQUE_A, UNIQUE_B, ScoreConfig
from jaxenc.models import RidgeOptions
from jaxenc.synthetic import SyntheticConfig, VoxelClass, load_truth, write_synthetic

SUBJECT = "UTS01"
# Six training stories give ridge about 350 rows; one subject keeps the fits short.
CONFIG = SyntheticConfig.tiny(
    subjects=(SUBJECT,), n_voxels=(300,), n_repeats=(10,), n_train_stories=6, fewer_stories=()
)
WHISPER_SIZES = dict(d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=256)
# Wider than the 200 pseudo-words of the tiny vocabulary, so word identity is linearly readable.
LLAMA_SIZES = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                   num_key_value_heads=4)
WINDOW = dict(context_s=0.5, chunk_s=0.1, stride_s=0.2, input_s=0.62)


def recovery_shares(result, classes) -> dict[str, float]:
    """Per planted class, the share of its significant voxels assigned to the planted source."""
    sets = partition_sets(by_feature_set(result.models, SUBJECT, "ridge", "voxels"))
    best_part = np.asarray(sets.parts.best_part)
    significant = best_part >= 0
    joint = FEATURE_SETS.index(JOINT)

    def share(voxel_class, values, code):
        voxels = (classes == int(voxel_class)) & significant
        assert voxels.sum() >= 10, f"only {voxels.sum()} significant {voxel_class.name} voxels"
        return float(np.mean(values[voxels] == code))

    return {
        "audio": share(VoxelClass.AUDIO, best_part, UNIQUE_A),
        "semantic": share(VoxelClass.SEMANTIC, best_part, UNIQUE_B),
        "joint": share(VoxelClass.AUDIO_SEMANTIC, sets.best, joint),
    }


@pytest.fixture(scope="module")
def default_features(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    write_synthetic(root, CONFIG, progress=False)
    dataset = LeBelDataset(root)
    stories = list(dataset.stories(SUBJECT)) + [dataset.test_story]
    words = [word for story in stories for word in dataset.words(story).label]
    models = tmp_path_factory.mktemp("models")
    whisper_dir = defaults.write_default_whisper(models / "whisper", **WHISPER_SIZES)
    llama_dir = defaults.write_default_llama(models / "llama", words, **LLAMA_SIZES)
    whisper, _ = load_whisper_encoder(whisper_dir)
    llama, _ = load_llama(llama_dir)
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    audio_keys = whisper_story_features(
        cache, whisper, LogMelFrontend.from_pretrained(whisper_dir),
        functools.partial(dataset.audio, sample_rate=16000), stories,
        model="default-whisper", revision=checkpoint_revision(whisper_dir), layers=(1,), progress=False,
        **WINDOW,
    )
    word_keys = llama_story_features(
        cache, llama, transformers.AutoTokenizer.from_pretrained(llama_dir),
        lambda story: (dataset.words(story).midpoints, dataset.words(story).label), stories,
        model="default-llama", revision=checkpoint_revision(llama_dir), layers=(0,), context_words=7,
        pad_multiple=8, progress=False,
    )

    def feature_set(keys, layer):
        return {story: (cache.read(keys[story])[0], cache.read(keys[story])[1][layer]) for story in stories}

    features = {"audio": feature_set(audio_keys, 1), "semantic": feature_set(word_keys, 0)}
    return dataset, load_truth(root), features


@pytest.mark.slow
def test_default_features_recover_planted_classes(default_features):
    """Each planted class is mostly assigned to its own source.

    Chance, for a voxel assigned at random, is 1/3 for the partition parts (unique audio, unique
    semantic, shared) and 1/3 for the best of the three models. This twin (seed 0) gave shares
    (audio, semantic, joint) of (0.75, 0.96, 0.67); seed 1 gave (0.62, 0.82, 0.58); seed 2 left
    only 8 semantic voxels significant at this size. The test asks for 0.5, 0.6 and 0.45: well
    above chance, and below the lowest share seen by at least 0.1.
    """
    dataset, truth, features = default_features
    # Fewer folds, penalties and band-weight draws than the demo: the test checks the features,
    # not the penalty search. Banded ridge on audio+semantic, as the shares above were measured.
    result = pipeline.fit_linear_baseline(
        dataset, SUBJECT, features, target="voxels",
        ridge=RidgeOptions(log10_alphas=(-1.0, 5.0, 7), folds=3, banded=True, band_candidates=5),
        scoring=ScoreConfig(permutations=100),
    )
    shares = recovery_shares(result, truth.voxel_class[SUBJECT])
    assert shares["audio"] > 0.5, shares
    assert shares["semantic"] > 0.6, shares
    assert shares["joint"] > 0.45, shares
