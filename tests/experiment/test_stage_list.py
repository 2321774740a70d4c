"""One list of stages (jaxenc.experiment.stagelist.STAGES) drives Experiment.run, `jaxenc run`
and the stage subcommands; attached runs (the nonlinearity step) run each stage right after
their parent's, their results merged in one place.

The stages' own work is replaced by recorders here: this checks the wiring (order, what runs
and what is merged), which the end-to-end runs (tests/test_cli.py, the slow
test_the_nonlinearity_step_recovers_the_planted_product) check with the real stages.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jaxenc import cli
from jaxenc.experiment import Experiment, load_config, stages
from jaxenc.experiment.stagelist import STAGES, AttachedRun


def test_the_stage_commands_are_the_stage_list(capsys):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    names = [stage.name for stage in STAGES]
    assert names == ["extract", "fit", "evaluate", "report"]
    assert [n for n in commands if n in names] == names
    for stage in STAGES:
        assert commands[stage.name].description == stage.help[0].upper() + stage.help[1:] + "."
    assert " -> ".join(names) in commands["run"].description


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """An experiment with one attached run, its stages' work replaced by a record of calls."""
    calls = []

    def work(stage, result):
        def record(config, *args, **kwargs):
            calls.append((config.name, stage))
            return result(config) if callable(result) else result
        return record

    def results(config):
        return SimpleNamespace(name=config.name, timings={}, subjects=[], save=lambda out: None)

    monkeypatch.setattr(stages, "_check_precisions", lambda config, stage: None)
    monkeypatch.setattr(stages, "check_folds", work("check", None))
    monkeypatch.setattr(stages, "check_memory", lambda *args, **kwargs: None)
    monkeypatch.setattr(stages, "extract", work("extract", {}))
    monkeypatch.setattr(stages, "FeatureReader", lambda store, data: None)
    monkeypatch.setattr(stages.fitting, "fit", work("fit", []))
    monkeypatch.setattr(stages, "score_run", work("evaluate", results))
    monkeypatch.setattr(stages.RunResults, "load", lambda out: results(SimpleNamespace(name=out.name)))
    monkeypatch.setattr(stages.report, "write_report",
                        lambda results, out, **kwargs: calls.append((results.name, "report")) or {"md": out})

    def merge(parent, exp, attached):
        calls.append(("merge", parent.name, exp.out.name, attached.name))

    child = load_config(None, ["name='child'", "nonlinearity.run=false"])
    sub = AttachedRun(folder="sub", title="a sub-run", config=lambda cfg: child if cfg.name == "parent" else None,
                      merge=merge)
    monkeypatch.setattr(stages, "ATTACHED", (sub,))
    config = load_config(None, ["name='parent'", "nonlinearity.run=false"])
    return Experiment(config, tmp_path / "parent", progress=False, log=lambda line: None), calls


def test_run_follows_the_stage_list_and_attached_runs_follow_each_stage(recorded):
    exp, calls = recorded
    started = []
    exp.run(before=lambda stage: started.append(stage.name))
    assert started == [stage.name for stage in STAGES]
    # The checks of the parent only (as before the step was attached generically), then every
    # stage of the parent followed by the same stage of the attached run; its evaluated results
    # merged into the parent's before they are saved.
    assert calls == [("parent", "check"),
                     ("parent", "extract"), ("child", "extract"),
                     ("parent", "fit"), ("child", "fit"),
                     ("parent", "evaluate"), ("child", "evaluate"), ("merge", "parent", "sub", "child"),
                     ("parent", "report"), ("sub", "report")]
    assert {"sub/extract", "sub/fit", "sub/evaluate"} <= set(exp.timings)


def test_jaxenc_run_prints_each_stage_of_the_list(recorded, monkeypatch, capsys):
    exp, calls = recorded
    monkeypatch.setattr(cli, "_experiment", lambda args, path: exp)
    monkeypatch.setattr(cli, "_print_summary", lambda exp: None)
    assert cli.main(["run", "unused.toml"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert lines == [f"[{i}/{len(STAGES)}] {stage.title}" for i, stage in enumerate(STAGES, 1)]
    assert [stage for name, stage, *_ in calls if name == "parent"] == ["check"] + [s.name for s in STAGES]
