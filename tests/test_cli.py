"""The ``jaxenc`` command line as a user meets it: help, one-line errors, a run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jaxenc import cli

SUBCOMMANDS = ("demo", "run", "extract", "fit", "evaluate", "report", "synth")
# Planted (oracle) features and ridge only: the command-line plumbing, not the models.
QUICK = ["--quiet", "--set", "data.preset=tiny", "--set", "audio.source=planted",
         "--set", "semantic.source=planted", "--set", 'table.models=["ridge"]',
         "--set", "ridge.folds=2", "--set", "ridge.band_candidates=2",
         "--set", "evaluate.permutations=100", "--set", "analyses.cluster_k=3",
         "--set", "nonlinearity.run=false"]


def test_every_subcommand_explains_its_options(capsys):
    for argv in [["--help"]] + [[name, "--help"] for name in SUBCOMMANDS]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "usage: jaxenc" in text
        if argv[0] in ("run", "extract", "fit", "evaluate", "report"):
            assert "--set KEY=VALUE" in text and "config" in text


@pytest.mark.slow
def test_stages_one_by_one_then_resumed(tmp_path, capsys):
    config = tmp_path / "quick.toml"
    config.write_text('name = "quick"\n[table]\ntargets = ["voxels"]\n')
    out = tmp_path / "run"
    for stage in ("extract", "fit", "evaluate", "report"):
        argv = [stage, str(config) if stage == "extract" else str(out), "--out", str(out)] + QUICK
        assert cli.main(argv) == 0, stage
    printed = capsys.readouterr().out
    assert "audio+semantic        ridge       voxels" in printed
    assert "r2 %  r2_cod %" in printed and "r2: the paper's mean of r·|r| over voxels" in printed
    assert "planted checks:" in printed
    metrics = json.loads((out / "metrics.json").read_text().replace("NaN", "null"))
    assert metrics["config"]["name"] == "quick"
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    # A second fit finds every prediction stored with the same settings.
    assert cli.main(["fit", str(out)] + QUICK) == 0
    assert printed.count("stored, skipped") == 0
    assert capsys.readouterr().out.count("stored, skipped") == 3


def _one_line_error(*argv):
    run = subprocess.run([sys.executable, "-m", "jaxenc.cli", *argv], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxenc: error:"), run.stderr
    return lines[0]


@pytest.mark.slow
def test_wrong_path_unknown_model_and_typo_are_one_line_errors(tmp_path):
    assert "no such config file" in _one_line_error("run", str(tmp_path / "absent.toml"))
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nmax_epoch = 3\n")
    assert "did you mean 'train.max_epochs'" in _one_line_error("fit", str(typo), "--out", str(tmp_path / "o"))
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert "did you mean 'table.models'" in _one_line_error(
        "run", str(empty), "--set", "table.model=[]", "--out", str(tmp_path / "o"))
    message = _one_line_error("extract", str(empty), "--out", str(tmp_path / "o2"), "--quiet",
                              "--set", "data.preset=tiny", "--set", "semantic.model=nobody/no-such-model")
    assert "nobody/no-such-model" in message
    assert "no such dataset folder" in _one_line_error(
        "extract", str(empty), "--out", str(tmp_path / "o3"), "--set", f"data.root={tmp_path / 'nowhere'}")
    assert "run `jaxenc extract` first" in _one_line_error("fit", str(empty), "--out", str(tmp_path / "o4"))
