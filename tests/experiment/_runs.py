"""Run folders of the experiment tests: the tiny sizes and a copy of the prepared features."""

from __future__ import annotations

import shutil
from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
# Every config at a tiny size: the tiny twin, one subject, two folds, two epochs, a few
# components and permutations; the structure (feature sets, models, targets, sweeps, analyses)
# is kept.
TINY = [
    "data.preset=tiny", 'data.subjects=["UTS01"]', "table.n_components=8", "ridge.folds=2",
    "ridge.band_candidates=2", "train.n_folds=2", "train.max_epochs=2", "train.epochs_per_call=1",
    "train.checkpoint_every=1", "networks.hidden=8", "evaluate.permutations=100", "analyses.cluster_k=3",
    "nonlinearity.run=false",
]
# What the prepared run folder holds: the twin, the default extractors and their features.
SHARED = ("data", "models", "features")


def run_folder(out: Path, prepared: Path | None) -> Path:
    """Make a run folder, holding a copy of the prepared twin, extractors and features if given."""
    out.mkdir()
    for name in SHARED if prepared is not None else ():
        shutil.copytree(prepared / name, out / name)
    return out
