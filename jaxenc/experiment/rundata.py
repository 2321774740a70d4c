"""The dataset side of a run: the dataset, its subjects and stories, the twin's truth."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from jaxenc.data import LeBelDataset
from jaxenc.errors import ConfigError, DataError
from jaxenc.experiment.sections import DataConfig
from jaxenc.report.results import check_subject_name
from jaxenc.store import RunStore
from jaxenc.synthetic import load_truth, write_synthetic

__all__ = ["RunData"]


class RunData:
    """What a run reads of its dataset, opened once and shared by the stages.

    Parameters
    ----------
    config : DataConfig
        The config's ``[data]``.
    store : RunStore
        The run folder (the synthetic twin is written into ``data/`` when ``config.root`` is
        empty).
    progress : bool
        Show progress bars.
    log : callable
        Receives one line per step.
    """

    def __init__(self, config: DataConfig, store: RunStore, *, progress: bool = True, log: Callable = print):
        self.config = config
        self.store = store
        self.progress = progress
        self.log = log

    @functools.cached_property
    def root(self) -> Path:
        """The dataset folder, writing the synthetic twin first when ``data.root`` is empty."""
        cfg = self.config
        if cfg.root:
            root = Path(cfg.root).expanduser()
            if not root.is_dir():
                raise DataError("no such dataset folder (data.root)", path=root)
            return root
        root = self.store.path("data")
        changed = f", changed: {', '.join(sorted(cfg.synthetic))}" if cfg.synthetic else ""
        self.log(f"synthetic twin of ds003020 ({cfg.preset} preset{changed}, seed {cfg.seed}) in {root}")
        # Written by the writer alone; the other processes of a job read it once it is there.
        if self.store.writer:
            write_synthetic(root, cfg.synthetic_config(), progress=self.progress)
        self.store.barrier("synthetic twin")
        return root

    @functools.cached_property
    def dataset(self):
        """The :class:`jaxenc.data.LeBelDataset` of the run."""
        return LeBelDataset(self.root)

    @functools.cached_property
    def truth(self):
        """The synthetic twin's planted truth, or None on real data."""
        return None if self.config.root else load_truth(self.root)

    @functools.cached_property
    def subjects(self) -> list[str]:
        """Subjects of the run (``data.subjects`` or all of the dataset's)."""
        available = self.dataset.subjects
        ignored = self.dataset.ignored_folders
        if ignored:
            self.log(f"subjects: {', '.join(available)}; ignored (no .hf5 response files): "
                     + ", ".join(f"{name}/" for name in ignored))
        wanted = list(self.config.subjects) or available
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise ConfigError(f"data.subjects {unknown} not in the dataset (it has {available}; a subject is a "
                              "folder holding .hf5 response files)",
                              path=self.root / "derivative" / "preprocessed_data")
        if not wanted:
            raise ConfigError("no subject: no folder holds .hf5 response files",
                              path=self.root / "derivative" / "preprocessed_data")
        for subject in wanted:
            # Subjects name folders of the run's scores: refused here, before any work.
            check_subject_name(subject, path=self.root / "derivative" / "preprocessed_data" / subject)
        return wanted

    @property
    def test_story(self) -> str:
        """The held-out story every subject heard several times."""
        return self.dataset.test_story

    @property
    def respdict(self) -> dict:
        """TRs acquired per story."""
        return self.dataset.respdict

    def train_stories(self, subject: str) -> list[str]:
        """Training stories of a subject (the test story excluded), sorted."""
        return list(self.dataset.stories(subject))

    @functools.cached_property
    def stories(self) -> list[str]:
        """Every story any subject of the run heard, the test story last."""
        train = sorted({s for subject in self.subjects for s in self.train_stories(subject)})
        return train + [self.test_story]
