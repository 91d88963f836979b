"""constraints.txt pins every package to the version tested: each of the project's requirements is pinned within its
pyproject.toml range, and this environment (which make test built with it) holds exactly those versions."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tools.pin_gpu import gpu_pins
from tools.pin_gpu import key as _key

REPO = Path(__file__).resolve().parents[1]
TESTED_EXTRAS = ("cpu", "train", "dev", "bench")  # gpu: pinned in constraints-gpu.txt (tested below)


def pins(name: str = "constraints.txt") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / name).read_text().splitlines():
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


def test_the_gpu_pins_add_onnxruntime_gpu_at_the_images_version_and_nothing_pinned_twice():
    gpu = pins("constraints-gpu.txt")
    assert not set(gpu) & set(pins()), "a package pinned in both files"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [Requirement(s) for s in project["optional-dependencies"]["gpu"]]
    assert spec.specifier.contains(Version(gpu["onnxruntime-gpu"]))
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG ONNXRUNTIME_GPU_VERSION={gpu['onnxruntime-gpu']}" in dockerfile
    assert any(name.startswith("nvidia-cudnn") for name in gpu), "the cuDNN wheel of the cudnn extra is pinned"


def test_pin_gpu_keeps_what_the_gpu_install_adds():
    report = {
        "install": [
            {"metadata": {"name": "numpy", "version": "2.0.0"}},
            {"metadata": {"name": "onnxruntime_gpu", "version": "1.26.0"}},
            {"metadata": {"name": "nvidia-cudnn-cu12", "version": "9.1"}},
            {"metadata": {"name": "resmtnet-serve", "version": "0.1.0"}},
        ]
    }
    assert gpu_pins(report, {"numpy"}) == ["nvidia-cudnn-cu12==9.1", "onnxruntime-gpu==1.26.0"]
