"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("## ", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    python3 ")]


def test_readme_starts_with_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("jaxenc demo")
    assert re.search(r"-m pytest$", tests)


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_commands()[1] in ci_lines


PARITY_STEPS = ("audio features", "audio windows", "semantic features", "LLaMA context", "alignment",
                "delays", "training stories", "test story", "PCA", "linear model", "encoders", "loss",
                "optimiser", "early stopping", "folds", "tuning", "metrics", "floors")


def test_parity_table_covers_the_papers_steps_and_names_tests_that_exist():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Parity with the paper", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    steps = [row.split("|")[1].strip() for row in rows]
    for step in PARITY_STEPS:
        assert any(s.startswith(step) for s in steps), step
    for row in rows:
        pinned = row.rstrip().rstrip("|").rsplit("|", 1)[-1]
        for ref in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", pinned):
            path, name = ROOT / ref[0], ref[1]
            assert path.is_file(), ref
            if name:
                assert re.search(rf"^def {name}\(", path.read_text(), re.M), ref


def _python_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section ``## heading``, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _write_checkpoints(folder: Path) -> None:
    """Tiny random-init transformers checkpoints named as the README's snippets name them."""
    from tests.features.conftest import write_tiny_llama, write_tiny_whisper

    write_tiny_whisper(folder / "my-whisper")
    write_tiny_llama(folder / "my-llama")


@pytest.mark.slow
def test_bring_your_own_arrays_snippets_run_and_recover_the_planted_weights(tmp_path, monkeypatch):
    import numpy as np

    ridge, networks, checkpoints = _python_blocks("Bring your own arrays")
    _write_checkpoints(tmp_path)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(ridge, "README ridge snippet", "exec"), ns)
    # The one scoring function against formulas written here: r with the mean of the repeats.
    prediction, target = ns["job"].predictions["S1"], ns["repeats"].mean(axis=0)
    pc, tc = prediction - prediction.mean(0), target - target.mean(0)
    r = (pc * tc).sum(0) / np.sqrt((pc**2).sum(0) * (tc**2).sum(0))
    np.testing.assert_allclose(ns["scores"].r, r, atol=1e-5)
    np.testing.assert_allclose(ns["scores"].r2, r * np.abs(r), atol=1e-5)
    # Planted: signal std sqrt(40) against noise 8 / sqrt(2) in the mean of two repeats, a
    # ceiling of r = 0.74; ridge from 600 rows reaches 0.70.
    assert ns["scores"].summary()["mean_r"] > 0.6
    exec(compile(networks, "README networks snippet", "exec"), ns)
    assert ns["prediction"].shape == (120, 300)
    # The MLP through 16 components of 8-times-noisier responses: 0.47 measured.
    assert ns["score"](ns["prediction"], ns["repeats"], ns["ScoreConfig"](test_trim=0)).summary()["mean_r"] > 0.3
    exec(compile(checkpoints, "README checkpoint snippet", "exec"), ns)
    X = ns["design"].X
    assert X.shape == (28 - 20, 4 * (32 + 32)) and np.isfinite(X).all()
    assert ns["semantic"][2].shape == (len(ns["words"]), 32)
    assert ns["design"].bands == ((0, 128), (128, 256))


@pytest.mark.slow
def test_the_python_api_snippet_runs_on_the_tiny_twin(tmp_path, monkeypatch):
    baseline = _python_blocks("Using jaxenc from Python")[0]
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(baseline, "README Python snippet", "exec"), ns)
    table = ns["result"].table()
    assert [row["features"] for row in table] == ["audio", "semantic", "audio+semantic"]
    # The planted features explain the twin's signal voxels: the joint ridge beats chance.
    assert table[2]["mean_r"] > 0.2
    assert {row["target"] for row in ns["result"].partition} == {"voxels"}


def test_every_config_key_the_readme_names_exists():
    """`section.key` and `--set section.key=...` in the README are settings of the experiment config."""
    import dataclasses

    from jaxenc.experiment import load_config

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            yield from keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]

    known = set(keys(load_config()))
    sections = sorted({key.split(".")[0] for key in known if "." in key})
    text = (ROOT / "README.md").read_text()
    pattern = rf"(?:`|--set )((?:{'|'.join(sections)})(?:\.[a-z_0-9]+)+)(?=[` =])"
    # File names such as `report.md` are not settings.
    named = {key for key in re.findall(pattern, text) if not re.search(r"\.(md|html|json|py|toml)$", key)}
    assert len(named) > 20, sorted(named)
    assert named <= known, sorted(named - known)
