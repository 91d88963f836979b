"""resmtnet_rejections_total counts a refused request once, under the first reason, whichever layers refuse it."""

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service import refusals
from service.batching import Batcher, submit_all
from service.errors import DeadlineExceeded
from service.metrics import Metrics


def _counts(metrics: Metrics) -> dict[str, float]:
    samples = metrics.registry.collect()
    return {
        s.labels["reason"]: s.value
        for family in samples
        for s in family.samples
        if s.name == "resmtnet_rejections_total"
    }


async def test_one_request_is_counted_under_its_first_reason_only():
    metrics = Metrics(CollectorRegistry())

    async def request(*reasons: str) -> None:
        refusals.begin_request()
        for reason in reasons:
            refusals.count(metrics.rejections, reason)

    await asyncio.create_task(request("deadline", "client_gone"))
    await asyncio.create_task(request("queue_full"))
    await asyncio.create_task(request("deadline"))
    assert _counts(metrics) == {"deadline": 2, "queue_full": 1}


def test_outside_a_request_every_refusal_counts():
    metrics = Metrics(CollectorRegistry())
    refusals.count(metrics.rejections, "memory")
    refusals.count(metrics.rejections, "memory")
    assert _counts(metrics) == {"memory": 2}


async def test_a_request_past_its_deadline_whose_client_then_leaves_counts_once_as_deadline():
    """One nodule of a two-nodule request times out in the batcher (counted there); the client then leaves while its
    sibling is withdrawn, and the disconnect handler counts client_gone: the same request, once."""

    def model(batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(0.2)
        return [batch[:, 0, 0, 0, :1]]

    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8, metrics=metrics)
    batcher.start()
    cube = np.zeros((2, 2, 2), dtype=np.float32)

    async def request() -> None:
        refusals.begin_request()
        with pytest.raises(DeadlineExceeded):
            await submit_all(batcher, [cube, cube], time.perf_counter() + 0.05)
        refusals.count(metrics.rejections, "client_gone")  # as service.errors' ClientDisconnect handler does

    try:
        busy = asyncio.create_task(batcher.submit(cube, time.perf_counter() + 30))  # holds the model
        await asyncio.sleep(0.01)
        await asyncio.create_task(request())
        await asyncio.create_task(request())
        await busy
    finally:
        await batcher.stop()
    assert _counts(metrics) == {"deadline": 2}
