"""A full queue answers 503 with Retry-After at once: before the body of the refused request is even read."""

from __future__ import annotations

import asyncio
import json

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


def test_a_v2_request_that_finds_too_little_room_gets_503_once_and_leaves_nothing_queued(tiny_store, monkeypatch):
    from service import batching
    from tests.service.api.test_kserve import INFER, patches, tensor

    async def stalled(*_):  # the model never takes anything: what is queued stays queued
        await asyncio.Event().wait()

    monkeypatch.setattr(batching, "collect_batch", stalled)

    def body(rows: int) -> bytes:
        x = patches(rows)
        return json.dumps({"inputs": [tensor(x, data=x.ravel().tolist())]}).encode()

    async def post(app, rows: int) -> list[dict]:
        sent, delivered = [], False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body(rows), "more_body": False}
            await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        await app(_scope(INFER, app), receive, send)
        return sent

    async def scenario(app) -> tuple[list[dict], bool]:
        waiting = asyncio.ensure_future(post(app, 3))  # three of the four places
        await asyncio.sleep(0.3)
        refused = await post(app, 2)  # room for one of its two rows
        after = asyncio.ensure_future(post(app, 1))  # takes the place of the refused request's withdrawn row
        await asyncio.sleep(0.3)
        queued = not after.done()  # waiting for the stalled model, not refused
        waiting.cancel()
        after.cancel()
        return refused, queued

    with make_client(tiny_store, max_queue=4, max_batch_size=4, retry_after_s=3) as client:
        refused, queued = client.portal.call(scenario, client.app)
        fams = scrape(client)
    assert refused[0]["status"] == 503 and (b"retry-after", b"3") in refused[0]["headers"]
    assert b"queue is full" in refused[1]["body"]
    assert queued  # the refused request left nothing in the way
    assert sample(fams, "resmtnet_rejections_total", reason="queue_full") == 1  # one request, once
