"""Graceful shutdown of the real server: SIGTERM while requests are in flight loses none of them."""

from __future__ import annotations

import asyncio
import signal

import httpx
import numpy as np
import pytest

from tests.e2e.servers import npy, running_server

pytestmark = pytest.mark.slow


def test_sigterm_answers_every_accepted_request_then_exits(tiny_store):
    # every batch waits 600 ms for company: requests are surely in flight when SIGTERM comes
    with running_server(tiny_store, max_delay_ms="600", max_batch_size="16") as running:
        proc, url = running.proc, running.url
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
