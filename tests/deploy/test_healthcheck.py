"""The image's HEALTHCHECK script against a real server: 0 while /healthz answers, 1 when nothing listens."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy.conftest import DEPLOY
from tests.e2e.servers import free_port, server

SCRIPT = DEPLOY / "docker" / "healthcheck.py"
pytestmark = pytest.mark.slow


def check(port: int | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESMTNET_PORT": str(port)}
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_against_the_live_server_on_its_port(tiny_store):
    with server(tiny_store) as url:
        port = url.rsplit(":", 1)[1]
        assert check(port).returncode == 0
        assert check(port, "/healthz").returncode == 0
        assert check(port, "/readyz").returncode == 0
        assert check(port, "/no-such-path").returncode == 1


def test_healthcheck_fails_when_nothing_listens():
    result = check(free_port())
    assert result.returncode == 1 and "refused" in result.stderr.lower()
