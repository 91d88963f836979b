"""The real server for end-to-end tests: `python -m service` (uvicorn) in its own process on a free port."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@dataclass(frozen=True)
class RunningServer:
    url: str
    proc: subprocess.Popen
    log: Path  # everything the process wrote (a file: a pipe nobody reads would fill and stall the server)


@contextmanager
def running_server(store: Path, log: Path | None = None, **settings: str) -> Iterator[RunningServer]:
    """Started with RESMTNET_* settings (keyword arguments, lower case), yielded once /readyz answers 200,
    terminated on exit (if still running)."""
    port = free_port()
    env = {
        **os.environ,
        "RESMTNET_HOST": "127.0.0.1",
        "RESMTNET_PORT": str(port),
        "RESMTNET_MODEL_STORE": str(store),
        "RESMTNET_PROVIDER": "cpu",
        **{f"RESMTNET_{k.upper()}": v for k, v in settings.items()},
    }
    with tempfile.TemporaryDirectory() as folder:
        log = log or Path(folder) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=out, stderr=out)
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(proc, url, log)
                yield RunningServer(url, proc, log)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)


@contextmanager
def server(store: Path, **settings: str) -> Iterator[str]:
    """running_server, when only the URL matters."""
    with running_server(store, **settings) as running:
        yield running.url


@contextmanager
def server_with_log(store: Path, log: Path, **settings: str) -> Iterator[str]:
    """running_server writing the process's output to `log`, for tests that read it afterwards."""
    with running_server(store, log, **settings) as running:
        yield running.url


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not become ready within {timeout_s:.0f} s")
