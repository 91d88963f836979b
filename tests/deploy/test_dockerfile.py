"""Dockerfile: pins that agree with onnxruntime's published CUDA/cuDNN requirements, and what a production image
needs (multi-stage, non-root, HEALTHCHECK on /healthz, Python 3.11, the model baked in and replaceable); hadolint."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import DEFAULT_VERSION
from tests.deploy.conftest import REPO, run_tool, venv_tool
from tests.deploy.dockerfile import Dockerfile, parse_dockerfile

# onnxruntime-gpu wheels on PyPI and the CUDA / cuDNN major versions they need: (first, last, CUDA, cuDNN).
# Source: the "Requirements" tables of https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html
# (CUDA 11.x table: 1.15 to 1.18 use CUDA 11.8 and cuDNN 8; CUDA 12.x table: PyPI's default build moved to CUDA 12
# with 1.19, from then on with cuDNN 9; a cuDNN 8 build does not run on cuDNN 9 or the reverse). Releases newer than
# the table's last row were read from the wheels' own metadata on PyPI: extras "cuda"/"cudnn" need
# nvidia-cuda-runtime-cu12~=12.0 and nvidia-cudnn-cu12~=9.0 up to 1.26.0, nvidia-cuda-runtime~=13.0 and
# nvidia-cudnn-cu13~=9.0 from 1.27.0 to 1.31.1.
ORT_GPU_REQUIREMENTS = [
    ((1, 15, 0), (1, 18, 1), 11, 8),
    ((1, 19, 0), (1, 26, 0), 12, 9),
    ((1, 27, 0), (1, 31, 1), 13, 9),
]
# The CUDA toolkit a pinned wheel was built with (onnxruntime.capi.build_and_package_info.cuda_version): the image's
# CUDA runtime libraries must be at least that minor version.
ORT_GPU_BUILT_WITH_CUDA = {"1.26.0": (12, 8)}
NVIDIA_CUDA_TAG = re.compile(r"^nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn(\d*)-runtime-ubuntu(\d+\.\d+)$")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(REPO / "Dockerfile")


def runtime_stages(dockerfile: Dockerfile):
    return [s for s in dockerfile.stages if not s.name.endswith("-build")]


def test_pinned_onnxruntime_gpu_matches_the_images_cuda_and_cudnn(dockerfile):
    pin = dockerfile.args["ONNXRUNTIME_GPU_VERSION"]
    rows = [row for row in ORT_GPU_REQUIREMENTS if row[0] <= version(pin) <= row[1]]
    assert rows, f"onnxruntime-gpu {pin} has no row in ORT_GPU_REQUIREMENTS: add it from the requirements page"
    _, _, cuda_major, cudnn_major = rows[0]
    tag = NVIDIA_CUDA_TAG.match(dockerfile.stage("gpu").image)
    assert tag, f"{dockerfile.stage('gpu').image} is not an nvidia/cuda cuDNN runtime image"
    assert int(tag[1]) == cuda_major == 12, "the issue asks for CUDA 12"
    assert int(dockerfile.args["CUDNN_MAJOR"]) == cudnn_major == 9
    assert tag[4] in ("", str(cudnn_major)), "a tag naming a cuDNN major must name the one onnxruntime needs"
    assert pin in ORT_GPU_BUILT_WITH_CUDA, f"record the CUDA version onnxruntime-gpu {pin} was built with"
    assert (int(tag[1]), int(tag[2])) >= ORT_GPU_BUILT_WITH_CUDA[pin]
    assert dockerfile.stage("gpu-build").image == dockerfile.stage("gpu").image


def test_the_image_checks_cudnn_and_the_cuda_provider_libraries_at_build_time(dockerfile):
    run = " ".join(dockerfile.stage("gpu").all("RUN"))
    assert "libcudnn.so.${CUDNN_MAJOR} " in run and "libonnxruntime_providers_cuda.so" in run and "not found" in run
    build = " ".join(dockerfile.stage("gpu-build").all("RUN"))
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in build and "CUDAExecutionProvider" in build
    # one CUDA stack, the base image's that the check above tests: not the gpu extra's nvidia-* wheels as well
    assert ".[gpu]" not in build and "find_spec('nvidia') is None" in build


@pytest.mark.parametrize("name", ["cpu-build", "gpu-build"])
def test_every_build_stage_installs_the_tested_versions(dockerfile, name):
    installs = [run for run in dockerfile.stage(name).all("RUN") if "pip install" in run]
    assert installs and all("-c constraints.txt" in run for run in installs)
    if name == "gpu-build":
        assert all("-c constraints-gpu.txt" in run for run in installs)


def test_project_gpu_extra_admits_the_pin(dockerfile):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [Requirement(s) for s in project["optional-dependencies"]["gpu"] if s.startswith("onnxruntime-gpu")]
    assert spec.specifier.contains(dockerfile.args["ONNXRUNTIME_GPU_VERSION"])
    assert {"cuda", "cudnn"} <= spec.extras  # CUDA 12 and cuDNN 9 as wheels for hosts with only the driver


def test_python_is_3_11_in_every_stage(dockerfile):
    assert dockerfile.args["PYTHON_VERSION"] == "3.11"
    assert dockerfile.stage("cpu").image == dockerfile.stage("cpu-build").image == "python:3.11-slim-bookworm"
    for name in ("gpu-build", "gpu"):
        assert '"python${PYTHON_VERSION}"' in " ".join(dockerfile.stage(name).all("RUN"))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_multi_stage_runtime_copies_only_the_built_venv(dockerfile):
    assert dockerfile.stages[-1].name == "gpu", "the default target (last stage) is the GPU image"
    for stage in runtime_stages(dockerfile):
        copies = stage.all("COPY")
        assert f"--from={stage.name}-build /opt/venv /opt/venv" in copies
        assert not any("pip install" in run for run in stage.all("RUN")), stage.name


@pytest.mark.parametrize("name", ["gpu", "cpu"])
def test_runtime_stage_runs_as_non_root_with_a_healthz_healthcheck(dockerfile, name):
    stage = dockerfile.stage(name)
    (user,) = stage.all("USER")
    assert user.split(":")[0] not in {"0", "root"} and int(user.split(":")[0]) >= 1000
    assert stage.instructions.index(("USER", user)) > max(
        i for i, (word, _) in enumerate(stage.instructions) if word in {"RUN", "COPY"}
    ), "nothing may run or be copied after dropping root, or it would need root again"
    (check,) = stage.all("HEALTHCHECK")
    options, command = check.split(" CMD ", 1)
    assert "--start-period=" in options and json.loads(command) == ["python", "/app/healthcheck.py", "/healthz"]
    assert "COPY deploy/docker/healthcheck.py /app/healthcheck.py" in [f"COPY {c}" for c in stage.all("COPY")]
    assert stage.all("ENTRYPOINT") == ['["python", "-m", "service"]']
    assert stage.all("EXPOSE") == [stage.env()["RESMTNET_PORT"]] == ["8000"]


@pytest.mark.parametrize("name", ["gpu", "cpu"])
def test_model_is_baked_in_and_the_store_can_be_mounted_elsewhere(dockerfile, name):
    stage = dockerfile.stage(name)
    env = stage.env()
    assert "model_store /app/model_store" in stage.all("COPY")
    assert env["RESMTNET_MODEL_STORE"] == "/app/model_store"  # overridable: -e RESMTNET_MODEL_STORE=/models
    assert any((REPO / "model_store").glob("res_mtnet/*/model.onnx")), "the default model the image bakes in"
    assert not any(word == "VOLUME" for word, _ in stage.instructions), "a VOLUME would hide the baked-in model"


def test_gpu_image_requires_cuda_and_cpu_image_uses_cpu(dockerfile):
    assert dockerfile.stage("gpu").env()["RESMTNET_PROVIDER"] == "cuda"
    assert dockerfile.stage("cpu").env()["RESMTNET_PROVIDER"] == "cpu"


def test_hadolint_passes():
    result = run_tool(venv_tool("hadolint"), "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[co\]", "[co]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_tests_data_and_caches_out_and_the_copied_files_in(dockerfile):
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    kept_out = [
        "tests/conftest.py",
        "training/train.py",
        "checkpoints/last.pt",
        ".venv/bin/python",
        ".git/HEAD",
        "bench/serve.py",
        ".cache/x",
        "service/__pycache__/main.cpython-311.pyc",
        "data/lidc.npz",
    ]
    for path in kept_out:
        assert dockerignore_excludes(path, patterns), path
    copies = [c.split() for s in dockerfile.stages for c in s.all("COPY") if not c.startswith("--from")]
    sources = {source for copy in copies for source in copy[:-1]}
    assert sources == {
        "pyproject.toml",
        "README.md",
        "constraints.txt",
        "constraints-gpu.txt",
        "service",
        "model_store",
        "deploy/docker/healthcheck.py",
    }
    for source in sources:
        assert not dockerignore_excludes(source, patterns), source
        assert (REPO / source).exists(), source
    assert not dockerignore_excludes("service/main.py", patterns)
    assert not dockerignore_excludes(f"model_store/res_mtnet/{DEFAULT_VERSION}/model.onnx", patterns)
