"""A client that uploads a CT series and hangs up while it is prepared: the preparation stops at its next check,
and keeps the CT gate until its thread has ended. A preparation that outlives the request's deadline stops too, 504."""

from __future__ import annotations

import asyncio
import json

from tests.service.api.conftest import make_client
from tests.service.api.test_disconnect import _call


def test_a_departed_clients_series_keeps_the_ct_gate_until_its_preparation_ends(
    tiny_store, phantom, series_paths, monkeypatch
):
    """A thread cannot be interrupted: until it ends, it holds the gate (one series at a time here), so clients that
    upload and hang up cannot start more preparations than RESMTNET_DICOM_CONCURRENCY. Each one, given up while it
    slept, stops at its first check instead of decoding the series."""
    import threading
    import time

    import httpx

    from service.api.routes import series
    from tests.service.dicom.builders import form_files, world_centers

    running, peak, lock = 0, 0, threading.Lock()
    ended: list[str] = []
    real_prepare = series.prepare

    def slow_prepare(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.8)
        try:
            result = real_prepare(*args, **kwargs)
            ended.append("prepared")
            return result
        except Exception as exc:
            ended.append(type(exc).__name__)
            raise
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
    assert ended and set(ended) == {"GivenUp"}  # the ones that got the gate; the others left while waiting for it


def test_a_series_still_being_prepared_at_its_deadline_is_answered_504_and_stops(
    tiny_store, phantom, series_paths, monkeypatch
):
    import time

    from service.api.routes import series
    from tests.service.api.test_health import sample, scrape
    from tests.service.dicom.builders import form_files, world_centers

    ended: list[str] = []
    real_prepare = series.prepare

    def slow_prepare(*args, **kwargs):
        time.sleep(0.6)  # past the 0.3 s deadline before the first step's check
        try:
            return real_prepare(*args, **kwargs)
        except Exception as exc:
            ended.append(type(exc).__name__)
            raise

    monkeypatch.setattr(series, "prepare", slow_prepare)
    with make_client(tiny_store, request_timeout_s=0.3) as client:
        before = sample(scrape(client), "resmtnet_rejections_total", reason="deadline") or 0
        r = client.post(
            "/predict", files=form_files(series_paths), data={"centers": json.dumps(world_centers(phantom))}
        )
        after = sample(scrape(client), "resmtnet_rejections_total", reason="deadline") or 0
    assert r.status_code == 504, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "the request's deadline passed while its CT series was being prepared"
    assert ended == ["DeadlineExceeded"]
    assert after - before == 1


def test_a_departed_clients_structured_report_is_built_to_the_end_before_its_body_is_let_go(
    tiny_store, phantom, series_paths, monkeypatch
):
    """The SR is built from the uploaded files: the request (and with it its body and its share of the in-flight
    bytes) ends only once the building thread has ended, even when the client leaves while it runs."""
    import threading
    import time

    import httpx

    from service.dicom import structured_report
    from tests.service.dicom.builders import form_files, world_centers

    building, ended = threading.Event(), []
    real_build = structured_report.build_report

    def slow_build(*args, **kwargs):
        building.set()
        time.sleep(0.8)
        try:
            return real_build(*args, **kwargs)
        finally:
            ended.append(time.perf_counter())

    monkeypatch.setattr(structured_report, "build_report", slow_build)
    upload = httpx.Request(
        "POST", "http://x/predict", files=form_files(series_paths), data={"centers": json.dumps(world_centers(phantom))}
    )
    body, content_type = upload.read(), upload.headers["content-type"].encode()

    async def leave_during_the_build(app) -> tuple[list[dict], float]:
        async def once_building() -> None:
            await asyncio.get_running_loop().run_in_executor(None, building.wait)

        sent = await _call(app, body, once_building, content_type, query=b"format=sr")
        return sent, time.perf_counter()

    with make_client(tiny_store, request_timeout_s=10) as client:
        sent, returned = client.portal.call(leave_during_the_build, client.app)
    assert sent[0]["status"] == 499
    assert ended and ended[0] <= returned
