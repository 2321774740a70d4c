"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

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
