"""A client that uploads a CT series and hangs up while it is prepared: the preparation, which cannot be stopped,
keeps the CT gate until it ends."""

from __future__ import annotations

import asyncio
import json

from tests.service.api.conftest import make_client
from tests.service.api.test_disconnect import _call


def test_a_departed_clients_series_keeps_the_ct_gate_until_its_preparation_ends(
    tiny_store, phantom, series_paths, monkeypatch
):
    """The preparing thread cannot be stopped: until it ends, it holds the gate (one series at a time here), so
    clients that upload and hang up cannot start more preparations than RESMTNET_DICOM_CONCURRENCY."""
    import threading
    import time

    import httpx

    from service.api.routes import series
    from tests.service.dicom.builders import form_files, world_centers

    running, peak, lock = 0, 0, threading.Lock()
    real_prepare = series.prepare

    def slow_prepare(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.8)
        try:
            return real_prepare(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(series, "prepare", slow_prepare)
    upload = httpx.Request(
        "POST", "http://x/predict", files=form_files(series_paths), data={"centers": json.dumps(world_centers(phantom))}
    )
    body, content_type = upload.read(), upload.headers["content-type"].encode()

    async def three_clients_that_leave(app) -> list[int]:
        async def one(delay: float) -> int:
            await asyncio.sleep(delay)
            return (await _call(app, body, 0.2, content_type))[0]["status"]

        return list(await asyncio.gather(one(0.0), one(0.3), one(0.6)))

    with make_client(tiny_store, dicom_concurrency=1, request_timeout_s=10) as client:
        statuses = client.portal.call(three_clients_that_leave, client.app)
    assert statuses == [499, 499, 499]
    assert peak == 1
