"""Every experiment config of experiments/ runs end to end at a tiny size.

The sizes shrink (the tiny twin, one subject, two folds, two epochs, a few components and
permutations); the structure of each config (feature sets, models, targets, sweeps, analyses)
is kept. The nonlinearity step (on in the demo, table1 and ablations) runs once, at its own
size, in the last test. The twin, the embedded default extractors and their features are prepared once and
copied into each run folder, where extraction then finds every story cached.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.fitting import job_name, table_jobs
from jaxenc.report import RunResults

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.toml"))
TINY = [
    "data.preset=tiny", 'data.subjects=["UTS01"]', "table.n_components=8", "ridge.folds=2",
    "ridge.band_candidates=2", "train.folds=2", "train.max_epochs=2", "train.epochs_per_call=1",
    "train.checkpoint_every=1", "train.hidden=8", "evaluate.permutations=100", "analyses.cluster_k=3",
    "nonlinearity.run=false",
]
SHARED = ("data", "models", "features")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A run folder with the tiny twin and the default extractors' features of layers 0-2."""
    out = tmp_path_factory.mktemp("prepared")
    Experiment(load_config(None, TINY + ["analyses.layer_sweep=[0, 1, 2]"]), out, progress=False,
               log=lambda line: None).extract()
    return out


def run_folder(out: Path, prepared: Path | None) -> Path:
    """Make a run folder, holding a copy of the prepared twin, extractors and features if given."""
    out.mkdir()
    for name in SHARED if prepared is not None else ():
        shutil.copytree(prepared / name, out / name)
    return out


def test_there_are_experiment_configs():
    assert len(EXPERIMENTS) >= 6, EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_has_its_header(path):
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for field in ("Command:", "Runtime:", "Expected on the synthetic twin", "Paper"):
        assert field in header, f"{path.name} header lacks {field!r}"
    assert f"jaxenc run experiments/{path.name}" in header


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_runs_end_to_end_at_tiny_size(path, prepared, tmp_path):
    out = tmp_path / path.stem
    config = load_config(path, TINY)
    # A config that reshapes the twin writes its own (and then uses planted features).
    run_folder(out, None if config.data.synthetic else prepared)
    paths = Experiment(config, out, progress=False, log=lambda line: None).run()

    assert paths["html"].is_file() and paths["md"].is_file()
    results = RunResults.load(out)
    for job in table_jobs(config):
        found = results.find(subject="UTS01", features=job.features, model=job.model, target=job.target)
        assert len(found) == 1, job_name(job)
        assert np.isfinite(found[0].r).mean() > 0.9, job_name(job)
    sweeps = {s["name"]: s["rows"] for s in results.sweeps}
    if config.analyses.layer_sweep:
        assert [row["x"] for row in sweeps["semantic layer"]] == [0.0, 1.0, 2.0]
    if config.analyses.size_sweep:
        params = [row["x"] for row in sweeps["semantic model"]]
        assert params == sorted(params) and params[0] > 0
    if config.analyses.partition and len(config.table.feature_sets) == 3:
        assert {row["model"] for row in results.partition} >= {"ridge"}
    assert results.planted["UTS01"], "the synthetic twin's planted checks are missing"
    # Resume checkpoints go once a fit's predictions are stored (train.keep_checkpoints=false).
    if any(job.model != "ridge" for job in table_jobs(config)):
        assert (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir())


def test_checkpoints_are_kept_on_request(prepared, tmp_path):
    out = run_folder(tmp_path / "keep", prepared)
    config = load_config(None, TINY + ['table.models=["mlp"]', 'table.feature_sets=["audio"]',
                                       'table.targets=["voxels"]', "train.keep_checkpoints=true"])
    Experiment(config, out, progress=False, log=lambda line: None).fit()
    kept = list((out / "checkpoints").iterdir())
    assert len(kept) == 1 and any(kept[0].iterdir())


def test_more_training_trim_drops_the_same_rows_of_features_and_responses(prepared, tmp_path):
    """align.train_trim beyond the protocol's [10:-5] drops rows of both sides of every
    training story; the test story keeps its rows."""
    from jaxenc.experiment.fitting import _Designs

    planted = TINY + ["audio.source=planted", "semantic.source=planted"]
    designs = {}
    for trim in ((10, 5), (13, 6)):
        out = run_folder(tmp_path / f"trim{trim[0]}", prepared)
        exp = Experiment(load_config(None, planted + [f"align.train_trim=[{trim[0]}, {trim[1]}]"]), out,
                         progress=False, log=lambda line: None)
        exp.extract()
        designs[trim] = (_Designs(exp), exp)
    (base, exp), (more, _) = designs[(10, 5)], designs[(13, 6)]
    X0, _, slices0 = base.train("audio", "UTS01")
    X1, _, slices1 = more.train("audio", "UTS01")
    Y0, Y1 = base.responses("UTS01"), more.responses("UTS01")
    for story in exp.train_stories("UTS01"):
        rows0, rows1 = slices0[story], slices1[story]
        assert rows1.stop - rows1.start == rows0.stop - rows0.start - 4, story
        np.testing.assert_array_equal(Y1[rows1], Y0[rows0][3:-1])
    assert X1.shape[0] == X0.shape[0] - 4 * len(slices0)
    np.testing.assert_array_equal(base.test("audio"), more.test("audio"))


def test_the_nonlinearity_step_recovers_the_planted_product(prepared, tmp_path):
    """The demo's nonlinearity step at its own size, after a one-model main run: the MLP beats
    MLLinear on the interaction voxels by the stated margin, and the checks, the per-class
    table and the figure reach the main run's results and report."""
    out = run_folder(tmp_path / "step", prepared)
    config = load_config(None, TINY + ['table.models=["ridge"]', 'table.feature_sets=["audio"]',
                                       'table.targets=["voxels"]', "nonlinearity.run=true"])
    paths = Experiment(config, out, progress=False, log=lambda line: None).run()
    results = RunResults.load(out)
    checks = results.planted["nonlinearity/UTS01"]
    assert set(checks) == {"interaction_gain", "interaction_nonlinearity"}
    assert all(check["passed"] for check in checks.values()), checks
    assert checks["interaction_nonlinearity"]["margin"] == 0.3
    rows = {(r["model"], r["voxels"]): r["mean_r"] for r in results.nonlinearity["rows"]}
    assert rows["mlp", "interaction"] - rows["mllinear", "interaction"] >= 0.3
    # The step is a run of its own, with its own report.
    step = RunResults.load(out / "nonlinearity")
    assert {s.model for s in step.scores} == {"ridge", "mllinear", "dimlp", "mlp"}
    assert (out / "nonlinearity" / "report.html").is_file()
    assert "The nonlinearity where the twin plants it" in paths["md"].read_text()
    assert (out / "figures" / "nonlinearity.png").is_file()
