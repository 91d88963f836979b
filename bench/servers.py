"""The benchmark's contenders as real server processes: start one on a free port, wait until ready, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "bench" / "results" / "raw"


@dataclass(frozen=True)
class Contender:
    key: str
    title: str
    module: str  # run as `python -m module`
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    has_metrics: bool = False


@dataclass(frozen=True)
class Server:
    port: int
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(contender: Contender, env_extra: dict[str, str], timeout_s: float = 180) -> Iterator[Server]:
    """Start the contender in its own process group; yield it once its health path answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "RESMTNET_HOST": "127.0.0.1",
        "RESMTNET_PORT": str(port),
        "RESMTNET_PROVIDER": "cpu",  # the benchmark's --provider cuda overrides it through env_extra
        "RESMTNET_LOG_LEVEL": "warning",
        **env_extra,
        **contender.env,
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    log_file = (LOGS / f"{contender.key}.log").open("wb")  # the servers' own logs (an audit line per request)
    proc = subprocess.Popen(
        [sys.executable, "-m", contender.module],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(proc, port, contender.health_path, timeout_s)
        yield Server(port, proc.pid)
    finally:
        _stop(proc)
        log_file.close()


def _wait_ready(proc: subprocess.Popen, port: int, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready; see {LOGS}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the whole group (LitServe runs worker processes), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB, from /proc."""
    total_kb = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024
