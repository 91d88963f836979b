"""Bodies are bounded while they stream in: per request, all requests together, and in time."""

import socket
import time

import pytest

from service.middleware import _client_address, _upstream_request_id
from tests.e2e.servers import server
from tests.service.api.conftest import make_client, npy


def test_a_body_over_the_in_flight_budget_gets_503_at_once(tiny_store, hu_patch):
    body = npy(hu_patch)  # about 256 KB
    with make_client(tiny_store, max_inflight_bytes=100_000, retry_after_s=3) as client:
        r = client.post("/predict", files={"patch": ("p.npy", body)}, data={"spacing": "1,1,1"})
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert "100000 allowed" in r.json()["detail"]
        small = client.post("/predict", json={"patch": hu_patch[::8, ::8, ::8].tolist(), "spacing": [8, 8, 8]})
        assert small.status_code == 200  # the budget was given back: later requests pass


def test_a_chunked_body_is_counted_as_it_arrives(tiny_store, hu_patch):
    body = npy(hu_patch)

    def chunks():
        for start in range(0, len(body), 50_000):
            yield body[start : start + 50_000]

    with make_client(tiny_store, max_inflight_bytes=100_000) as client:
        r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 503 and "retry later" in r.json()["detail"]


def test_a_trickling_upload_gets_408_and_frees_the_connection(tiny_store):
    with server(tiny_store, body_timeout_s="1", body_min_bytes_per_s="100") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            started = time.monotonic()
            answer = b""
            while b"\r\n\r\n" not in answer:
                try:
                    conn.sendall(b" ")
                except OSError:
                    pass
                time.sleep(0.2)
                conn.setblocking(False)
                try:
                    answer += conn.recv(65536)
                except BlockingIOError:
                    pass
                finally:
                    conn.setblocking(True)
                assert time.monotonic() - started < 8, "no answer to a trickling upload"
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive in time" in answer


async def test_a_client_that_leaves_mid_upload_is_not_a_server_error(tiny_store, caplog):
    """An ASGI call whose body stops half-way with http.disconnect: counted as client_gone, status 499, no ERROR."""
    import logging

    from prometheus_client.parser import text_string_to_metric_families

    with make_client(tiny_store) as client:
        app = client.app
        boundary = "b"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="patch"; filename="p.npy"\r\n\r\n'.encode()
        messages = [
            {"type": "http.request", "body": head + b"\x93NUMPY" + b"\0" * 1000, "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict] = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
            "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                        (b"content-length", b"5000")],
            "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80), "app": app,
        }  # fmt: skip
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
        text = client.get("/metrics").text
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    gone = [
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "resmtnet_rejections"
        for s in f.samples
        if s.labels.get("reason") == "client_gone" and s.name.endswith("_total")
    ]
    assert gone == [1.0]


def test_a_silent_connection_declaring_a_huge_body_holds_no_budget(tiny_store, hu_patch):
    import httpx

    with server(tiny_store, max_inflight_bytes="400000") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as idle:
            idle.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            idle.sendall(b"Content-Length: 390000\r\n\r\n")  # and then nothing
            time.sleep(0.3)
            files = {"patch": ("p.npy", npy(hu_patch), "application/octet-stream")}
            r = httpx.post(f"{url}/predict", files=files, data={"spacing": "1,1,1"}, timeout=10)
            assert r.status_code == 200, r.text


def test_an_early_refusal_of_a_chunked_body_closes_the_connection_instead_of_reading_on(tiny_store):
    """413 while a chunked body still streams in: the server says Connection: close and stops reading, rather than
    discarding whatever the client keeps sending."""
    with server(tiny_store, max_body_bytes="100000") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
            answer, closed, started = b"", False, time.monotonic()
            while not closed and time.monotonic() - started < 8:
                try:
                    conn.sendall(chunk)
                except OSError:  # the server closed the connection
                    closed = True
                conn.setblocking(False)
                try:
                    data = conn.recv(65536)
                    answer += data
                    closed = closed or data == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                finally:
                    conn.setblocking(True)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"connection: close" in answer.lower()
        assert closed, "the server kept reading a body it had refused"


def test_a_small_unread_body_keeps_the_connection_and_a_large_one_closes_it(tiny_store):
    with make_client(tiny_store) as client:
        small = client.post("/predict", content=b"x" * 100, headers={"content-type": "text/plain"})
        large = client.post("/predict", content=b"x" * 200_000, headers={"content-type": "text/plain"})
        read = client.post("/predict", json={"patch": [[[0]]]})  # read whole, then refused: keeps it
    assert small.status_code == large.status_code == 415 and read.status_code == 422
    assert "connection" not in small.headers and "connection" not in read.headers
    assert large.headers["connection"] == "close"


def test_a_client_waiting_for_100_continue_is_not_left_waiting_on_an_open_connection(tiny_store):
    """Refused before its body: the client was never told to send it, so what it sends next would be read as that
    body. The connection is closed instead."""
    with make_client(tiny_store) as client:
        r = client.post(
            "/predict", content=b"x" * 200, headers={"content-type": "text/plain", "expect": "100-continue"}
        )
    assert r.status_code == 415 and r.headers["connection"] == "close"


@pytest.mark.parametrize(
    ("client", "logged"),
    [(("10.0.0.7", 51000), "10.0.0.7"), (("::1", 51000), "::1"), (("Doe^John 1970-01-01", 0), None), (None, None)],
)
def test_only_an_address_is_logged_as_the_client(client, logged):
    """Behind a trusted proxy uvicorn copies X-Forwarded-For's text into the client unchecked."""
    assert _client_address({"client": client}) == logged


@pytest.mark.parametrize(
    ("header", "logged"),
    [
        (b"0b5f3c1e8d2a4f6b9c472e81d5a0f3b9", True),  # nginx's $request_id
        (b"0b5f3c1e-8d2a-4f6b-9c47-2e81d5a0f3b9", True),  # Envoy's, most tracers'
        (b"MRN-0012345678", False),
        (b"1234567890123456", False),  # a record number is no request id
        (b"Doe.John.19700101", False),
        (b"0b5f3c1e8d2a4f6b9c472e81d5a0f3b9\n", False),
        ("0b5f3c1e-8d2a-4f6b-9c47-2e81d5a0f3b\u00e9".encode(), False),
    ],
)
def test_only_an_ingress_request_id_is_logged(header, logged):
    found = _upstream_request_id({"headers": [(b"x-request-id", header)]})
    assert found == (header.decode() if logged else None)
