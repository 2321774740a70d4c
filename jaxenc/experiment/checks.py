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

from collections.abc import Callable

from jaxenc.errors import ConfigError, DataError

__all__ = ["check_inputs", "check_folds"]


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

    from jaxenc.data.consistency import check_audio_timing, format_story_report, story_report

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
    from jaxenc.models.registry import encoder

    models = {job.model for job in jobs}
    settings = []
    if any(encoder(m).is_ridge for m in models):
        settings.append(("ridge.folds", config.ridge.folds))
    if any(not encoder(m).is_ridge for m in models):
        settings.append(("train.n_folds", config.train.n_folds))
    counts = {subject: len(data.train_stories(subject)) for subject in data.subjects}
    subject = min(counts, key=counts.get)
    n_stories = counts[subject]
    bad = [(key, folds) for key, folds in settings if folds > n_stories]
    if bad:
        raise ConfigError(
            f"{' and '.join(f'{key} = {folds}' for key, folds in bad)} folds over training stories, but "
            f"subject {subject} has {n_stories} training stories: set {' and '.join(k for k, _ in bad)} to at "
            f"most {n_stories} (e.g. {' '.join(f'--set {k}={n_stories}' for k, _ in bad)})", path=data.root)
