"""constraints.txt pins every package to the version tested: each of the project's requirements is pinned within its
pyproject.toml range, and this environment (which make test built with it) holds exactly those versions."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
TESTED_EXTRAS = ("cpu", "train", "dev", "bench")  # gpu: onnxruntime-gpu is pinned by the Dockerfile's ARG


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip() and ";" not in line, f"not an exact pin: {line!r}"
        assert _key(name) not in out, f"pinned twice: {name}"
        out[_key(name)] = version.strip()
    return out


def test_every_requirement_is_pinned_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    specs += [s for extra in TESTED_EXTRAS for s in project["optional-dependencies"][extra]]
    pinned = pins()
    for spec in map(Requirement, specs):
        assert _key(spec.name) in pinned, f"{spec.name} is not in constraints.txt"
        assert spec.specifier.contains(Version(pinned[_key(spec.name)]), prereleases=True), (
            f"constraints.txt pins {spec.name}=={pinned[_key(spec.name)]}, outside pyproject.toml's {spec}"
        )


def test_torch_is_left_to_the_makefiles_cpu_pin():
    assert "torch" not in pins()


def test_this_environment_holds_the_pinned_versions():
    for name, version in pins().items():
        assert Version(metadata.version(name)) == Version(version), f"{name} {metadata.version(name)} != {version}"
