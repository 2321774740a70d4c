"""The ``jaxenc`` command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jaxenc import cli


def test_every_subcommand_explains_its_options(capsys):
    for argv in (["--help"], ["demo", "--help"], ["synth", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
        assert "usage: jaxenc" in capsys.readouterr().out


def test_demo_runs_end_to_end_on_the_tiny_twin(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["demo", "--out", str(out), "--preset", "tiny", "--folds", "2",
                       "--permutations", "50", "--targets", "voxels"])
    assert status == 0
    run = json.loads((out / "metrics.json").read_text())
    assert [r["subject"] for r in run["results"]] == ["UTS01", "UTS02"]
    for result in run["results"]:
        models = result["models"]
        assert models["audio+semantic"]["mean_r"] > models["semantic"]["mean_r"]
        assert 0 <= result["recovered"]["noise_voxels_significant"] <= 0.2
    assert (out / "data" / "derivative" / "respdict.json").exists()
    assert "scores in" in capsys.readouterr().out


def test_a_jaxenc_error_is_one_line_without_traceback(tmp_path):
    # A real-looking dataset where the demo would write its twin: refused, never overwritten.
    occupied = tmp_path / "run" / "data" / "derivative"
    occupied.mkdir(parents=True)
    (occupied / "respdict.json").write_text("{}")
    run = subprocess.run([sys.executable, "-m", "jaxenc.cli", "demo", "--out",
                          str(tmp_path / "run"), "--preset", "tiny"], capture_output=True, text=True)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxenc: error:")
