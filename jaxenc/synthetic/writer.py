"""Writing a synthetic twin to disk: :func:`write_synthetic` and the command line.

Every file is written under a temporary name and renamed when complete, and every random draw
comes from a stream keyed by the seed and the story or subject, so a run is deterministic and an
interrupted run resumes where it stopped. The planted truth is saved through
:class:`~jaxenc.synthetic.truth.SyntheticTruth`; the layout is described in
:mod:`jaxenc.synthetic`.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from jaxenc import conventions
from jaxenc.errors import ConfigError
from jaxenc.synthetic.audio import synthesize_audio
from jaxenc.synthetic.config import PRESETS, SyntheticConfig
from jaxenc.synthetic.cortex import MASK, cortical_voxels
from jaxenc.synthetic.files import atomic_path, write_json
from jaxenc.synthetic.properties import (
    AUDIO_NAMES,
    FRAME_PERIOD,
    audio_properties,
    causal_mean,
    semantic_frames,
)
from jaxenc.synthetic.responses import (
    FINE_PERIOD,
    draw_voxels,
    pooled_covariance,
    row_fine_indices,
    simulate_responses,
    story_latents,
    true_cc_max,
)
from jaxenc.synthetic.stimulus import make_story, write_textgrid
from jaxenc.synthetic.truth import TRUTH_DIR, PlantedStimulus, SyntheticTruth
from jaxenc.synthetic.words import CONTROL_RATE, make_vocabulary

__all__ = ["write_synthetic", "main"]

# Voxels simulated at once: bounds memory at real size (10 repeats x 291 rows x 4096 x 8 B).
_VOXEL_CHUNK = 4096
# Independent random streams, keyed with the seed (and story or subject names).
_VOCABULARY, _STORY, _AUDIO, _VOXELS, _NOISE, _PROJECTIONS = range(6)


def write_synthetic(
    root, config: SyntheticConfig = SyntheticConfig.demo(), *, progress: bool = True
) -> SyntheticTruth:
    """Write a synthetic ds003020 with planted ground truth (see :mod:`jaxenc.synthetic`).

    Deterministic given ``config``. A re-run on a complete tree with the same config returns at
    once; an interrupted run is resumed (finished dataset files are kept, the rest written).

    Parameters
    ----------
    root : str or os.PathLike
        Folder to write into (created if needed); it must be empty, or hold a synthetic
        dataset (complete or interrupted) written with the same config.
    config : SyntheticConfig, default SyntheticConfig.demo()
    progress : bool, default True
        Show a progress bar over stories.

    Returns
    -------
    SyntheticTruth

    Raises
    ------
    ConfigError
        ``root`` holds a synthetic dataset of another config, or a dataset that is not synthetic;
        with ``config.cortex``: pycortex is missing, the subject, transform or ROI is unknown, or
        n_voxels is not the mask's size.
    """
    root = Path(root)
    # The cortical voxels are checked before the folder is claimed, so that a config they refuse
    # (pycortex missing, n_voxels not the mask's size) leaves no trace; a complete tree needs none.
    audio_voxels = None
    if config.cortex and not SyntheticTruth.is_complete(root, config):
        audio_voxels = _cortical_audio_voxels(config)
    if SyntheticTruth.claim(root, config):
        return SyntheticTruth.load(root)
    respdict = config.respdict()
    write_json(root / "derivative" / "respdict.json", respdict)

    vocabulary = make_vocabulary(_rng(config.seed, _VOCABULARY), config.n_vocab, config.n_semantic)
    projections = _rng(config.seed, _PROJECTIONS)
    audio_projection = projections.standard_normal((config.n_interaction, len(AUDIO_NAMES)))
    audio_projection /= np.sqrt(len(AUDIO_NAMES))
    semantic_projection = projections.standard_normal((config.n_interaction, config.n_semantic))
    semantic_projection /= np.sqrt(config.n_semantic)
    stimuli = [
        _planted(config, vocabulary, name, respdict[name], audio_projection, semantic_projection)
        for name in config.stories
    ]
    latents = {stimulus.story: stimulus.latent_rows for stimulus in stimuli}
    covariance = pooled_covariance(list(latents.values()))

    voxels = {key: {} for key in ("voxel_class", "weights", "snr", "noise_std", "part_variance")}
    cc_max = {}
    for subject, n_voxels, n_repeats in zip(config.subjects, config.n_voxels, config.n_repeats, strict=True):
        drawn = draw_voxels(
            _rng(config.seed, _VOXELS, subject),
            n_voxels,
            config.class_fractions,
            config.snr_range,
            len(AUDIO_NAMES),
            config.n_semantic,
            covariance,
            audio_voxels,
        )
        for key, values in voxels.items():
            values[subject] = drawn[key]
        cc_max[subject] = true_cc_max(
            latents[conventions.TEST_STORY], drawn["weights"], drawn["noise_std"], n_repeats
        )
    truth = SyntheticTruth(
        root=root,
        config=config,
        vocabulary=vocabulary,
        audio_projection=audio_projection,
        semantic_projection=semantic_projection,
        covariance=covariance,
        cc_max=cc_max,
        **voxels,
    )
    for stimulus in stimuli:
        truth.save_stimulus(stimulus)
    truth.save()

    for name in tqdm(config.stories, desc="synthetic ds003020", unit="story", disable=not progress):
        wav = root / "stimuli" / f"{name}.wav"
        grid = root / "derivative" / "TextGrids" / f"{name}.TextGrid"
        if not (wav.exists() and grid.exists()):
            story = _story(config, vocabulary, name, respdict[name])
            if not wav.exists():
                noise = _rng(config.seed, _AUDIO, name)
                with atomic_path(wav) as partial:
                    synthesize_audio(partial, story, noise, config.audio_rate)
            if not grid.exists():
                with atomic_path(grid) as partial:
                    write_textgrid(partial, story, vocabulary)
        for subject, n_repeats in zip(config.subjects, config.n_repeats, strict=True):
            is_test = name == conventions.TEST_STORY
            if not (is_test or name in config.subject_stories(subject)):
                continue
            path = root / "derivative" / "preprocessed_data" / subject / f"{name}.hf5"
            if not path.exists():
                repeats = n_repeats if is_test else None
                _write_responses(path, truth, subject, name, latents[name], repeats)
    truth.mark_complete()
    return truth


def _cortical_audio_voxels(config: SyntheticConfig) -> np.ndarray:
    """The mask voxels in ``config.cortex_roi``, after checking every subject has the mask's size.

    Raises
    ------
    ConfigError
        From :func:`~jaxenc.synthetic.cortex.cortical_voxels`, or a subject whose n_voxels is
        not the mask's voxel count.
    """
    voxels = cortical_voxels(config.cortex, config.cortex_roi)
    for subject, n_voxels in zip(config.subjects, config.n_voxels, strict=True):
        if n_voxels != voxels.n_voxels:
            raise ConfigError(
                f"SyntheticConfig: n_voxels of {subject} is {n_voxels}, but cortex={config.cortex!r} has "
                f"{voxels.n_voxels} voxels in its {MASK} mask: set n_voxels to {voxels.n_voxels} for every subject")
    return voxels.in_roi


def _rng(seed: int, stream: int, *names: str) -> np.random.Generator:
    keys = [seed, stream] + [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(keys))


def _story(config: SyntheticConfig, vocabulary, story: str, respdict: int):
    # The audio ends where the simulated TR grid does.
    duration = (respdict - conventions.PAD) * conventions.TR - conventions.SOUND_START
    return make_story(
        _rng(config.seed, _STORY, story),
        vocabulary,
        story,
        duration,
        topic_words=config.topic_words,
        topic_strength=config.topic_strength,
        base_f0=config.base_f0,
    )


def _planted(
    config, vocabulary, name, respdict, audio_projection, semantic_projection
) -> PlantedStimulus:
    """Draw one story and compute its planted properties and latent rows."""
    story = _story(config, vocabulary, name, respdict)
    audio = audio_properties(story, config.base_f0)
    semantic = semantic_frames(story, vocabulary)
    # What the voxels respond to: the planted time scales average the properties first (the
    # truth keeps the properties of the moment, which the sweeps' planted sources average).
    driving_audio = causal_mean(audio, round(config.audio_time_scale / FRAME_PERIOD) or 1)
    driving_semantic = semantic if config.semantic_context == 1 else semantic_frames(
        story, vocabulary, config.semantic_context)
    return PlantedStimulus(
        story=name,
        respdict=respdict,
        duration=story.duration,
        audio_times=np.arange(audio.shape[0]) * FRAME_PERIOD,
        audio=audio,
        semantic=semantic,
        words=np.array([vocabulary.words[i] for i in story.word_ids], dtype=str),
        word_ids=story.word_ids,
        word_start=story.word_start / CONTROL_RATE,
        word_end=story.word_end / CONTROL_RATE,
        word_vectors=vocabulary.semantic[story.word_ids],
        topic=story.topic,
        phones=np.array(story.phone_labels, dtype=str),
        phone_start=story.phone_start / CONTROL_RATE,
        phone_end=story.phone_end / CONTROL_RATE,
        row_times=row_fine_indices(respdict) * FINE_PERIOD - conventions.SOUND_START,
        latent_rows=story_latents(
            driving_audio,
            driving_semantic,
            respdict,
            audio_projection,
            semantic_projection,
            config.interaction_smoothing,
            config.interaction_depth,
        ),
    )


def _write_responses(path: Path, truth: SyntheticTruth, subject, story, latent_rows, n_repeats):
    """Simulate and write one hf5 file: ``data`` and, with ``n_repeats``, the repeats."""
    config = truth.config
    weights, noise_std = truth.weights[subject], truth.noise_std[subject]
    n_rows, n_voxels = latent_rows.shape[0], weights.shape[1]
    with atomic_path(path) as partial, h5py.File(partial, "w") as file:
        data = file.create_dataset("data", shape=(n_rows, n_voxels), dtype="<f8")
        if n_repeats:
            repeats = file.create_dataset(
                "individual_repeats", shape=(n_repeats, n_rows, n_voxels), dtype="<f8"
            )
        for chunk, begin in enumerate(range(0, n_voxels, _VOXEL_CHUNK)):
            voxel_slice = slice(begin, begin + _VOXEL_CHUNK)
            responses = simulate_responses(
                latent_rows,
                weights[:, voxel_slice],
                noise_std[voxel_slice],
                _rng(config.seed, _NOISE, subject, story, str(chunk)),
                config.noise_ar,
                n_repeats,
            )
            if n_repeats:
                repeats[:, :, voxel_slice] = responses
                data[:, voxel_slice] = responses.mean(axis=0)
            else:
                data[:, voxel_slice] = responses


def main(argv=None) -> int:
    """Command line: ``python -m jaxenc.synthetic ROOT [--preset P] [--seed N] [--quiet]``."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxenc.synthetic",
        description=(
            "Write a synthetic twin of OpenNeuro ds003020 (LeBel et al. 2023): responses, "
            "TextGrids, wav stimuli and respdict in the real layout, with the planted ground "
            f"truth in ROOT/{TRUTH_DIR}/. Re-running on a complete folder does nothing; an "
            "interrupted run resumes."
        ),
    )
    parser.add_argument("root", metavar="ROOT", help="folder to write the dataset into")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="demo",
        help=(
            "tiny: 2 subjects, 3 short training stories, a few hundred voxels (seconds); "
            "demo: 3 subjects, 12 training stories at 0.3 of real length, 2000 voxels (default); "
            "full: real size, 84 stories and 81k-96k voxels for UTS01-03 (about 78 GB)"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    preset = getattr(SyntheticConfig, args.preset)
    truth = write_synthetic(args.root, preset(seed=args.seed), progress=not args.quiet)
    counts = ", ".join(f"{s}: {truth.weights[s].shape[1]} voxels" for s in truth.subjects)
    print(f"synthetic ds003020 in {truth.root}: {len(truth.respdict)} stories; {counts}")
    return 0
