"""The Makefile's own checks, run with make in a copy of the files it needs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def test_an_older_python_is_refused_before_any_environment_is_made(tmp_path):
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "constraints-gpu.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    old_python = tmp_path / "python3.10"
    old_python.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.10.12"; exit 0; }\n'
        "exec python3 -c 'import sys; sys.exit(sys.version_info >= (3, 10))'\n"
    )
    old_python.chmod(0o755)
    done = subprocess.run(
        ["make", "run", f"PYTHON={old_python}"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "Python 3.11 or newer is needed" in done.stdout and "Python 3.10.12" in done.stdout
    assert "make run PYTHON=python3.11" in done.stdout
    assert not (tmp_path / ".venv").exists()
