"""Every experiment config of experiments/ runs end to end at a tiny size.

The sizes shrink (the tiny twin, one subject, two folds, two epochs, a few components and
permutations); the structure of each config (feature sets, models, targets, sweeps, analyses)
is kept. The nonlinearity step (on in the demo, table1 and ablations) runs once, at its own
size, in the last test. The twin, the embedded default extractors and their features are prepared once and
copied into each run folder, where extraction then finds every story cached.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.fitting import job_name, table_jobs
from jaxenc.report import RunResults
from tests.experiment._runs import EXPERIMENTS_DIR, TINY, run_folder

EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.toml"))
def test_there_are_experiment_configs():
    assert len(EXPERIMENTS) >= 6, EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_has_its_header(path):
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for field in ("Command:", "Runtime:", "Expected on the synthetic twin", "Paper"):
        assert field in header, f"{path.name} header lacks {field!r}"
    assert f"jaxenc run experiments/{path.name}" in header


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_takes_the_tiny_twin_as_it_is(path):
    # `--set data.preset=tiny` alone (the smoke run): the folds fit the stories every
    # fitted subject of the tiny twin heard, by the preset's defaults or the file's [presets.tiny].
    config = load_config(path, ["data.preset=tiny"])
    twin = config.data.synthetic_config()
    subjects = config.data.subjects or twin.subjects
    fewest = min(len(twin.subject_stories(s)) for s in subjects)
    jobs = table_jobs(config)
    folds = [config.ridge.folds] * any(j.spec.is_ridge for j in jobs)
    folds += [config.train.n_folds] * any(not j.spec.is_ridge for j in jobs)
    assert max(folds) <= fewest, (path.name, folds, fewest)


# Slow (7-25 s each on 2 cores, flatmaps.toml about 40 s: its twin keeps S1's 37,226 cortical
# voxels at any preset): CI runs them with -m slow; the default suite checks every header.
@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_runs_end_to_end_at_tiny_size(path, prepared, tmp_path):
    out = tmp_path / path.stem
    config = load_config(path, TINY)
    cortex = config.data.synthetic.get("cortex")
    if cortex:
        pytest.importorskip("cortex", reason=f"{path.name} needs pycortex (the maps extra)")
    # A config that reshapes the twin writes its own (and then uses planted features).
    run_folder(out, None if config.data.synthetic else prepared)
    paths = Experiment(config, out, progress=False, log=lambda line: None).run()

    assert paths["html"].is_file() and paths["md"].is_file()
    results = RunResults.load(out)
    for job in table_jobs(config):
        found = results.find(subject="UTS01", features=job.features, model=job.model, target=job.target)
        assert len(found) == 1, job_name(job)
        assert np.isfinite(found[0].scores.r).mean() > 0.9, job_name(job)
    sweeps = {s["name"]: s["rows"] for s in results.sweeps}
    if config.analyses.layer_sweep:
        assert [row["x"] for row in sweeps["semantic layer"]] == [float(x) for x in config.analyses.layer_sweep]
    if config.analyses.window_sweep:
        assert [row["x"] for row in sweeps["audio window"]] == [float(x) for x in config.analyses.window_sweep]
    if config.analyses.size_sweep:
        params = [row["x"] for row in sweeps["semantic model"]]
        assert params == sorted(params) and params[0] > 0
    if config.analyses.partition and len(config.table.feature_sets) == 3:
        assert {row["model"] for row in results.partition} >= {"ridge"}
    assert results.planted["UTS01"], "the synthetic twin's planted checks are missing"
    if cortex:
        # One flatmap per model of the table, each with the planted ROI outlined.
        report = paths["md"].read_text()
        assert report.count("; outlined: AC)*") == len(table_jobs(config)), report.split("## Flatmaps")[-1][:500]
    # Resume checkpoints go once a fit's predictions are stored (train.keep_checkpoints=false).
    if any(job.model != "ridge" for job in table_jobs(config)):
        assert (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir())


@pytest.mark.slow
def test_checkpoints_are_kept_on_request(prepared, tmp_path):
    out = run_folder(tmp_path / "keep", prepared)
    config = load_config(None, TINY + ['table.models=["mlp"]', 'table.feature_sets=["audio"]',
                                       'table.targets=["voxels"]', "fit.keep_checkpoints=true"])
    Experiment(config, out, progress=False, log=lambda line: None).fit()
    kept = list((out / "checkpoints").iterdir())
    assert len(kept) == 1 and any(kept[0].iterdir())


def test_more_training_trim_drops_the_same_rows_of_features_and_responses(prepared, tmp_path):
    """align.train_trim beyond the protocol's [10:-5] drops rows of both sides of every
    training story; the test story keeps its rows."""
    from jaxenc.experiment.extract import FeatureReader
    from jaxenc.experiment.fitting import Job, run_designs
    from jaxenc.featuresets import AUDIO, FeatureSource
    from jaxenc.models import encoder

    planted = TINY + ["audio.source=planted", "semantic.source=planted"]
    job = Job((FeatureSource(AUDIO),), encoder("ridge"), "voxels")
    arrays = {}
    for trim in ((10, 5), (13, 6)):
        out = run_folder(tmp_path / f"trim{trim[0]}", prepared)
        exp = Experiment(load_config(None, planted + [f"align.train_trim=[{trim[0]}, {trim[1]}]"]), out,
                         progress=False, log=lambda line: None)
        exp.extract()
        arrays[trim] = run_designs(exp.config, exp.data, FeatureReader(exp.store, exp.data)).arrays(job.sources,
                                                                                                    "UTS01")
    base, more = arrays[(10, 5)], arrays[(13, 6)]
    rows0, rows1 = base.stories(), more.stories()
    for story in exp.data.train_stories("UTS01"):
        assert rows1[story].stop - rows1[story].start == rows0[story].stop - rows0[story].start - 4, story
        np.testing.assert_array_equal(more.Y[rows1[story]], base.Y[rows0[story]][3:-1])
    assert more.X.shape[0] == base.X.shape[0] - 4 * len(rows0)
    np.testing.assert_array_equal(base.X_test, more.X_test)


@pytest.mark.slow
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
    assert {m.model for m in step.models} == {"ridge", "mllinear", "dimlp", "mlp"}
    assert (out / "nonlinearity" / "report.html").is_file()
    assert "The nonlinearity where the twin plants it" in paths["md"].read_text()
    assert (out / "figures" / "nonlinearity.png").is_file()
