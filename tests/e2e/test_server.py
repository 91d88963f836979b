"""The real server: uvicorn in its own process, driven over HTTP by concurrent httpx clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEFAULT_STORE
from tests.e2e.servers import npy, server

pytestmark = pytest.mark.slow


def served_store(tiny_store: Path) -> Path:
    """The committed default model when present, else the test export."""
    return DEFAULT_STORE if any(DEFAULT_STORE.glob("res_mtnet/*/model.onnx")) else tiny_store


async def blast(url: str, payloads: list[bytes], concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(data: bytes) -> httpx.Response:
            async with sem:
                return await client.post("/predict", files={"patch": ("p.npy", data)}, data={"spacing": "1,1,1"})

        return await asyncio.gather(*(one(p) for p in payloads))


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        s.name + str(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def test_concurrent_clients_all_answered_and_batched(tiny_store, hu_patch):
    rng = np.random.default_rng(0)
    payloads = [npy(hu_patch + rng.normal(0, 5, hu_patch.shape).astype(np.float32)) for _ in range(48)]
    with server(served_store(tiny_store), max_batch_size="8", max_delay_ms="5") as url:
        responses = asyncio.run(blast(url, payloads, concurrency=16))
        metrics = scrape(url)
    assert [r.status_code for r in responses] == [200] * 48
    ids = {r.json()["request_id"] for r in responses}
    assert len(ids) == 48
    batches = metrics["resmtnet_batch_size_count[]"]
    patches = metrics["resmtnet_batch_size_sum[]"]
    assert patches == 48 and batches < 48  # some batches held more than one patch
    assert metrics["resmtnet_http_requests_total[('route', '/predict'), ('status', '200')]"] == 48


def test_a_full_queue_answers_503_with_retry_after(tiny_store, hu_patch):
    payloads = [npy(hu_patch)] * 64
    settings = {"max_batch_size": "1", "max_queue": "1", "intra_op_threads": "1", "retry_after_s": "2"}
    with server(served_store(tiny_store), **settings) as url:
        responses = asyncio.run(blast(url, payloads, concurrency=64))
        metrics = scrape(url)
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1
    refused = [r for r in responses if r.status_code == 503]
    assert refused, "64 simultaneous requests never filled a queue of one"
    assert all(r.headers["retry-after"] == "2" for r in refused)
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    assert metrics["resmtnet_rejections_total[('reason', 'queue_full')]"] == len(refused)
