"""Bodies are bounded while they stream in: per request, all requests together, and in time."""

import socket
import time

from tests.e2e.test_server import server
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
    with server(tiny_store, body_timeout_s="1") as url:
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
        assert b"did not arrive within 1 s" in answer
