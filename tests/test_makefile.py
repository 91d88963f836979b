"""The Makefile's own checks, run with make in a copy of the files it needs."""

from __future__ import annotations

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
