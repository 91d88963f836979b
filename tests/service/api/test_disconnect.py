"""A client that leaves while its request waits for the model: the request is withdrawn before the model runs,
answered 499 and counted once as client_gone; a client that stays gets its answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from tests.service.api.conftest import make_client
from tests.service.api.test_health import sample, scrape

HOLD_S = 1.0  # the batcher's delay: a lone request waits this long for company before it runs


def _body(hu_patch: np.ndarray) -> bytes:
    return json.dumps({"patch": hu_patch[::4, ::4, ::4].tolist(), "spacing": [4, 4, 4]}).encode()


def _scope(path: str, app) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80), "app": app,
    }  # fmt: skip


async def _call(
    app,
    body: bytes,
    leave_after_s: float | Callable[[], Awaitable[None]] | None,
    content_type: bytes = b"application/json",
    query: bytes = b"",
) -> list[dict]:
    """One request through the app; its client disconnects leave_after_s after sending the body (None: stays; a
    coroutine function: once it returns)."""
    sent: list[dict] = []
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if leave_after_s is None:
            await asyncio.Event().wait()  # cancelled once the answer is sent
        elif callable(leave_after_s):
            await leave_after_s()
        else:
            await asyncio.sleep(leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = _scope("/predict", app) | {"headers": [(b"content-type", content_type)], "query_string": query}
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("leave_after_s", [0.2, None])
def test_a_request_whose_client_leaves_while_queued_never_reaches_the_model(tiny_store, hu_patch, leave_after_s):
    with make_client(tiny_store, max_delay_ms=HOLD_S * 1000, max_batch_size=8) as client:
        before = sample(scrape(client), "resmtnet_batch_size_count") or 0
        sent = client.portal.call(_call, client.app, _body(hu_patch), leave_after_s)
        client.portal.call(asyncio.sleep, HOLD_S + 0.3)  # past the delay: the batch would have run by now
        fams = scrape(client)
    ran = (sample(fams, "resmtnet_batch_size_count") or 0) - before
    gone = sample(fams, "resmtnet_rejections_total", reason="client_gone") or 0
    if leave_after_s is None:
        assert sent[0]["status"] == 200 and ran == 1 and gone == 0
    else:
        assert sent[0]["status"] == 499 and ran == 0 and gone == 1
        assert sample(fams, "resmtnet_http_requests_total", route="/predict", status="499") == 1


async def test_work_given_up_by_its_client_leaves_no_exception_for_asyncio_to_log():
    """A CT preparation stopped by GivenUp once its client left: nothing logged as 'never retrieved'."""
    import gc
    import time

    from service.api.disconnect import in_thread_to_the_end
    from service.cancel import Stop

    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    stop = Stop(time.perf_counter() + 30, "its CT series was being prepared")

    def prepare() -> None:
        while True:
            time.sleep(0.01)
            stop.check()

    task = asyncio.ensure_future(in_thread_to_the_end(None, prepare, stop=stop))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    gc.collect()
    await asyncio.sleep(0.01)
    assert reported == []
