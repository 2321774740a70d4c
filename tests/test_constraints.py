"""constraints.txt pins every dependency within pyproject's ranges, and the README installs with it."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, Version]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        assert match, f"constraints.txt: not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = Version(match.group(2))
    return found


def test_every_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The accelerator extras cannot be installed on the CPU machines the suite runs on.
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    pinned = pins()
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert name in pinned, f"{req.name} (pyproject: {text!r}) is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[name]} outside pyproject's {text!r}")


def test_pins_carry_no_local_version_label():
    # A local label (`torch==2.13.0+cpu`) names a build that only one machine's wheel folder
    # holds: the public index has no such file and the install stops with ResolutionImpossible.
    labelled = {name: str(version) for name, version in pins().items() if version.local}
    assert not labelled, f"constraints.txt pins local builds the public index does not serve: {labelled}"


def test_torch_is_2_13_0_and_jaxenc_never_needs_cuda_torch():
    assert pins()["torch"] == Version("2.13.0")
    # torch is a test reference and the reader of .bin checkpoints (jaxenc/ckpt, on the CPU):
    # whichever 2.13.0 build the index gives (CPU or CUDA), jaxenc asks nothing of CUDA torch.
    users = [path for path in (ROOT / "jaxenc").rglob("*.py") if "import torch" in path.read_text()]
    assert users, "no module of jaxenc imports torch: update this test"
    for path in users:
        text = path.read_text()
        assert "cuda" not in text.lower(), f"{path} asks torch for CUDA"
        loads = [line for line in text.splitlines() if "torch.load(" in line]
        assert all('map_location="cpu"' in line for line in loads), loads


def test_readme_and_ci_install_with_the_constraints():
    head = (ROOT / "README.md").read_text().split("## ", 1)[0]
    commands = [line.strip() for line in head.splitlines() if line.startswith("    python3 ")]
    assert len(commands) == 2 and all(" -c constraints.txt " in c for c in commands), commands
    assert " -c constraints.txt " in (ROOT / ".ci" / "run").read_text()
