"""The Makefile's own checks, run with make in a copy of the files it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def python_reporting(folder: Path, version: tuple[int, int, int]) -> Path:
    """A python that runs this interpreter but reports `version`, and whose `-m venv` fails half way (it leaves a
    folder behind): what matters is whether make got past its version check, and what it leaves."""
    fake = folder / "python-fake"
    fake.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "Python {".".join(map(str, version))}"; exit 0; }}\n'
        '[ "$1" = -c ] || { mkdir -p "$3/bin"; echo "no venv here" >&2; exit 1; }\n'
        f'exec {sys.executable} -c "import sys; sys.version_info = {version!r}; exec(sys.argv[1])" "$2"\n'
    )
    fake.chmod(0o755)
    return fake


def make_run(folder: Path, python: str) -> subprocess.CompletedProcess:
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "constraints-gpu.txt"):
        shutil.copy(REPO / name, folder / name)
    return subprocess.run(["make", "run", f"PYTHON={python}"], cwd=folder, capture_output=True, text=True, timeout=60)


def test_an_older_python_is_refused_before_any_environment_is_made(tmp_path):
    done = make_run(tmp_path, str(python_reporting(tmp_path, (3, 10, 12))))
    assert done.returncode != 0
    assert "Python 3.11 or newer is needed" in done.stdout and "Python 3.10.12" in done.stdout
    assert "make run PYTHON=python3.11" in done.stdout
    assert not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 13, 1)])
def test_python_3_11_and_newer_pass_the_check_and_a_failed_environment_is_removed(tmp_path, version):
    done = make_run(tmp_path, str(python_reporting(tmp_path, version)))
    assert "is needed" not in done.stdout and "no venv here" in done.stderr  # past the check, then -m venv failed
    assert done.returncode != 0 and not (tmp_path / ".venv").exists()  # and nothing half-made is left to reuse


def test_a_missing_python_is_named_as_missing(tmp_path):
    done = make_run(tmp_path, "python3-that-is-not-installed")
    assert done.returncode != 0 and "python3-that-is-not-installed is not installed" in done.stdout


def make_train(folder: Path, *variables: str) -> subprocess.CompletedProcess:
    """make train in a copy of the Makefile, with this interpreter's environment taken as made (-o)."""
    shutil.copy(REPO / "Makefile", folder / "Makefile")
    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["make", "-o", f"{venv}/.dev", "train", f"VENV={venv}", "DATA=/nonexistent", *variables],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_make_train_refuses_an_existing_version_before_training(tmp_path):
    (tmp_path / "model_store" / "res_mtnet" / "1.2.0").mkdir(parents=True)
    done = make_train(tmp_path, "MODEL_VERSION=1.2.0")
    assert done.returncode != 0
    assert "model_store/res_mtnet/1.2.0 exists" in done.stderr and "MODEL_VERSION=x.y.z" in done.stderr
    assert "training.train" not in done.stdout  # refused before any training started
    done = make_train(tmp_path, "MODEL_VERSION=candidate")
    assert done.returncode != 0 and "'candidate' is not a version" in done.stderr


def test_make_train_defaults_to_a_new_pre_release_version(tmp_path):
    done = make_train(tmp_path, "-n")
    exported = [line for line in done.stdout.splitlines() if "training.export" in line]
    assert len(exported) == 2 and all("--version 0.0.0-dev." in line for line in exported)
    assert exported[0].split("--version ")[1].split()[0] == exported[1].split("--version ")[1].split()[0]
    assert "--overwrite" not in done.stdout
    assert "--overwrite" in make_train(tmp_path, "-n", "OVERWRITE=1").stdout
    assert "--overwrite" not in make_train(tmp_path, "-n", "OVERWRITE=0").stdout
