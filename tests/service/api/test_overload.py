"""A full queue answers 503 with Retry-After at once: before the body of the refused request is even read."""

from __future__ import annotations

import asyncio

from tests.service.api.conftest import make_client
from tests.service.api.test_disconnect import _body, _call, _scope
from tests.service.api.test_health import sample, scrape


def test_a_full_queue_refuses_before_reading_the_body(tiny_store, hu_patch, monkeypatch):
    from service import batching

    async def stalled(*_):  # the model never takes anything: what is queued stays queued
        await asyncio.Event().wait()

    monkeypatch.setattr(batching, "collect_batch", stalled)

    async def scenario(app) -> tuple[list[dict], list[dict]]:
        waiting = asyncio.ensure_future(_call(app, _body(hu_patch), None))  # fills the queue of one
        await asyncio.sleep(0.3)
        sent: list[dict] = []

        async def receive():
            raise AssertionError("the refused request's body was read")

        async def send(message):
            sent.append(message)

        await app(_scope("/predict", app) | {"headers": [(b"content-type", b"application/json")]}, receive, send)
        return sent, await waiting

    with make_client(tiny_store, max_queue=1, request_timeout_s=1, retry_after_s=2) as client:
        refused, served = client.portal.call(scenario, client.app)
        fams = scrape(client)
    assert refused[0]["status"] == 503 and (b"retry-after", b"2") in refused[0]["headers"]
    assert served[0]["status"] == 504  # the queued one, never run, meets its deadline
    assert sample(fams, "resmtnet_rejections_total", reason="queue_full") == 1
