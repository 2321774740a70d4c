"""Checks a run makes before its stages compute anything: the dataset's stories and timing,
and the settings that depend on how many stories there are.

:func:`check_inputs` logs each subject's stories (used, missing, extra;
:func:`jaxenc.data.consistency.story_report`) and checks every story the run uses: its wav's
duration (read from the header) against its TR grid and its TextGrid's last word, and the words
against the TR grid (:mod:`jaxenc.data.consistency`), whatever the feature sources read.
:func:`check_folds` refuses cross-validation settings that ask for more folds than a subject
has training stories, naming the setting to change.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from jaxenc.data.consistency import check_audio_timing, format_story_report, story_report
from jaxenc.errors import ConfigError, DataError
from jaxenc.experiment import scaling
from jaxenc.pipeline.runner import network_programs

__all__ = ["check_inputs", "check_folds", "check_memory", "device_memory", "MIN_FOLDS"]

# The fewest cross-validation folds over training stories that ridge.folds and train.n_folds accept.
MIN_FOLDS = 2


def _toml_list(names) -> str:
    return "[" + ", ".join(f'"{name}"' for name in names) + "]"


def check_inputs(data, log: Callable = print) -> None:
    """Log each subject's stories and check the timing of the stories the run uses.

    Parameters
    ----------
    data : RunData
        On the synthetic twin, each subject is expected to have the stories the twin planted,
        so a missing subject folder or hf5 file is named; on real data, the stories any
        subject of the run has.
    log : callable
        Receives one line per subject.

    Raises
    ------
    DataError
        A used story whose wav, TextGrid and respdict disagree (naming the story and files).
    """
    import soundfile

    dataset = data.dataset
    expected = None
    subjects = data.subjects
    if data.truth is not None:
        # The twin's own subjects, so a deleted subject folder is reported, not skipped.
        wanted = list(data.config.subjects) or list(data.truth.subjects)
        expected = {s: data.truth.stories(s) for s in wanted if s in data.truth.subjects}
        subjects = wanted
    for line in format_story_report(story_report(dataset, subjects, expected)).splitlines():
        log(f"stories: {line}")
    for story in data.stories:
        words = dataset.words(story)  # checks the words against the TR grid
        path = dataset.wav_path(story)
        try:
            duration = soundfile.info(str(path)).duration
        except (OSError, RuntimeError) as err:
            raise DataError(f"unreadable wav ({err})", path=path, story=story) from None
        check_audio_timing(duration, dataset.respdict[story], float(words.end.max()) if len(words) else None,
                           story=story, path=path, textgrid=dataset.textgrid_path(story))


def check_folds(config, data, jobs) -> None:
    """Refuse fold counts larger than a subject's number of training stories.

    Parameters
    ----------
    config : ExperimentConfig
    data : RunData
    jobs : sequence of jaxenc.experiment.fitting.Job
        The fits of the run (ridge uses ``ridge.folds``, the networks ``train.n_folds``).

    Raises
    ------
    ConfigError
        Naming the setting, its value, the subject and how many stories it has.
    """
    settings = []
    if any(job.spec.is_ridge for job in jobs):
        settings.append(("ridge.folds", config.ridge.folds))
    if any(not job.spec.is_ridge for job in jobs):
        settings.append(("train.n_folds", config.train.n_folds))
    counts = {subject: len(data.train_stories(subject)) for subject in data.subjects}
    subject = min(counts, key=counts.get)
    n_stories = counts[subject]
    bad = [(key, folds) for key, folds in settings if folds > n_stories]
    if bad and n_stories < MIN_FOLDS:
        # No fold count is accepted below 2: the fix is to leave the subject out.
        kept = [s for s in data.subjects if counts[s] >= MIN_FOLDS]
        fix = (f"leave it out (e.g. --set 'data.subjects={_toml_list(kept)}')" if kept
               else "add training stories")
        raise ConfigError(
            f"subject {subject} has {n_stories} training stories, too few for cross-validation (at least "
            f"{MIN_FOLDS} folds over training stories): {fix}", path=data.root)
    if bad:
        raise ConfigError(
            f"{' and '.join(f'{key} = {folds}' for key, folds in bad)} folds over training stories, but "
            f"subject {subject} has {n_stories} training stories: set {' and '.join(k for k, _ in bad)} to at "
            f"most {n_stories} (e.g. {' '.join(f'--set {k}={n_stories}' for k, _ in bad)})", path=data.root)


# Bytes per trained weight: its float32 value, gradient and the two Adam moments.
_BYTES_PER_WEIGHT = 4 * 4
# Bytes per epoch and model of the training history (training and validation loss, float32).
_BYTES_PER_EPOCH = 2 * 4
# Bytes per permutation of the significance test: its PRNG key data (2 x uint32), held twice
# (the keys and their padding to whole batches).
_BYTES_PER_PERMUTATION = 2 * 2 * 4


def device_memory() -> tuple[int, str]:
    """Bytes of memory of the first local device, and its name.

    An accelerator reports its own limit; on CPU, the host's physical memory.
    """
    import jax

    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"{device.device_kind} {device.id}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the host (CPU)"


def check_memory(config, data, jobs, *, memory: tuple[int, str] | None = None, mesh=None) -> None:
    """Refuse settings whose compiled programs cannot fit the device, before any work.

    Two programs grow with settings alone. A network's training program holds, for every model
    trained side by side, at least its last layer's ``networks.hidden x n_outputs`` float32
    weights with their gradients and Adam moments (``n_outputs``: ``table.n_components`` on PCA
    targets, else the subjects' voxels) and its loss history of ``train.max_epochs`` rows; the
    feature side and the activations only add to it, so this is a lower bound. Side by side are
    the folds x grid points of every subject the program stacks (all of them on PCA targets,
    those with as many voxels on voxel targets: :func:`jaxenc.pipeline.runner.network_programs`),
    each subject counted once per data-scaling subset and draw
    (:func:`jaxenc.experiment.scaling.n_keys`), split evenly over the devices of ``mesh``.
    The significance test draws all ``evaluate.permutations`` PRNG keys at once.

    Parameters
    ----------
    config : ExperimentConfig
    data : RunData
    jobs : sequence of jaxenc.experiment.fitting.Job
    memory : (int, str), optional
        Bytes available on one device and the device's name; default :func:`device_memory`.
    mesh : jax.sharding.Mesh, optional
        The run's mesh (:attr:`jaxenc.experiment.Experiment.mesh`); None: one device.

    Raises
    ------
    ConfigError
        Naming the setting, the estimate and the device's memory.
    """
    available, device = device_memory() if memory is None else memory
    gb = 1e9
    networks = [job for job in jobs if not job.spec.is_ridge]
    if networks:
        keys = {s: scaling.n_keys(config, jobs, len(data.train_stories(s))) for s in data.subjects}
        voxels = {s: data.dataset.n_voxels(s) for s in data.subjects}
        # (stacked subject entries, outputs) of each program.
        programs = [(sum(keys[s] for s in group), config.table.n_components if target == "pca" else voxels[group[0]])
                    for target in {job.target for job in networks} for group in network_programs(target, voxels)]
        per_key = config.train.n_folds * max(len(config.fit.grid), 1)
        entries, outputs = max(programs, key=lambda p: p[0] * p[1])
        devices = 1 if mesh is None else mesh.size
        models = -(-entries * per_key // devices)
        hidden, epochs = config.networks.hidden, config.train.max_epochs
        weights = models * hidden * outputs * _BYTES_PER_WEIGHT
        history = models * epochs * _BYTES_PER_EPOCH
        if weights + history > available:
            setting, value, what = (
                ("networks.hidden", hidden, f"{hidden} hidden units x {outputs} outputs x {_BYTES_PER_WEIGHT} bytes, "
                 "the last layer's weights, gradients and Adam moments") if weights >= history else
                ("train.max_epochs", epochs, f"{epochs} epochs x {_BYTES_PER_EPOCH} bytes of loss history"))
            where = f" per device of {devices}" if devices > 1 else ""
            raise ConfigError(
                f"{setting} = {value}: the fits' compiled program needs at least {(weights + history) / gb:.1f} GB "
                f"({models} models{where} x {what}), more than the {available / gb:.1f} GB of {device}: "
                f"lower {setting}")
    need = config.evaluate.permutations * _BYTES_PER_PERMUTATION
    if need > available:
        raise ConfigError(
            f"evaluate.permutations = {config.evaluate.permutations}: the significance test needs at least "
            f"{need / gb:.1f} GB for its permutations' keys, more than the {available / gb:.1f} GB of {device}: "
            "lower evaluate.permutations")
