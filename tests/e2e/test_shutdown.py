"""Graceful shutdown of the real server: SIGTERM while requests are in flight loses none of them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from tests.conftest import REPO
from tests.e2e.test_server import free_port, npy

pytestmark = pytest.mark.slow


def test_sigterm_answers_every_accepted_request_then_exits(tiny_store):
    port = free_port()
    env = {
        **os.environ,
        "RESMTNET_HOST": "127.0.0.1",
        "RESMTNET_PORT": str(port),
        "RESMTNET_MODEL_STORE": str(tiny_store),
        "RESMTNET_PROVIDER": "cpu",
        "RESMTNET_MAX_DELAY_MS": "600",  # every batch waits: requests are surely in flight at SIGTERM
        "RESMTNET_MAX_BATCH_SIZE": "16",
    }
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        patch = npy(np.random.default_rng(0).normal(-600, 300, (32, 32, 32)).astype(np.float32))

        async def scenario() -> tuple[list[int], type[Exception] | None]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                files = {"patch": ("p.npy", patch, "application/octet-stream")}
                in_flight = [
                    asyncio.create_task(client.post("/predict", files=files, data={"spacing": "1,1,1"}))
                    for _ in range(6)
                ]
                await asyncio.sleep(0.3)  # sent and queued, waiting for the batch delay
                proc.send_signal(signal.SIGTERM)
                answers = await asyncio.gather(*in_flight)
            await asyncio.sleep(0.3)
            try:
                async with httpx.AsyncClient(base_url=url, timeout=2) as late:
                    await late.get("/healthz")
                refused = None
            except httpx.HTTPError as exc:
                refused = type(exc)
            return [a.status_code for a in answers], refused

        statuses, refused = asyncio.run(scenario())
        assert statuses == [200] * 6
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
        assert refused is not None  # no new connection once shutting down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
