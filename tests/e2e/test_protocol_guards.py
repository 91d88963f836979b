"""The real server's HTTP layer: request headers bounded in size and in time (uvicorn's httptools parser has
neither), and an upload still arriving after SIGTERM answered 503 before uvicorn would cancel it into a 500."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.server import PARSER_COMPLAINT
from tests.conftest import REPO
from tests.e2e.servers import running_server, server

pytestmark = pytest.mark.slow


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(conn: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or within_s passes)."""
    conn.settimeout(within_s)
    out = b""
    try:
        while chunk := conn.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def _rejections(url: str) -> dict[str, float]:
    """resmtnet_rejections_total by reason, as /metrics shows them."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    samples = [s for f in families if f.name == "resmtnet_rejections" for s in f.samples]
    return {s.labels["reason"]: s.value for s in samples if s.name == "resmtnet_rejections_total"}


def _requests(url: str) -> dict[str, float]:
    """resmtnet_http_requests_total for /predict by status, as /metrics shows them."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    samples = [s for f in families if f.name == "resmtnet_http_requests" for s in f.samples]
    return {
        s.labels["status"]: s.value
        for s in samples
        if s.name == "resmtnet_http_requests_total" and s.labels["route"] == "/predict"
    }


def _problem(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and b"connection: close" in head.lower(), head
    assert b"x-content-type-options: nosniff" in head and b"content-security-policy: default-src 'none'" in head
    return json.loads(body)


def test_headers_over_the_limit_get_431_and_the_connection_is_closed(tiny_store):
    with server(tiny_store, max_header_bytes="16384") as url:
        with _connect(url) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):  # 4 MiB of one header that never ends, unless the server closes first
                    conn.sendall(b"a" * 65536)
            except OSError:
                pass
            answer = _read_all(conn, 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert "exceed 16384 bytes" in _problem(answer)["detail"]
        assert httpx.get(f"{url}/healthz").status_code == 200  # others are served as before


def test_a_whole_request_over_the_limit_gets_431_however_it_is_cut_and_a_large_body_does_not(tiny_store):
    """The limit holds when the headers end in the same read (the parser would have finished them first), when they
    come in pieces each under it, after leading blank lines, and behind another request in the same read; a body,
    however large, is not counted as headers. What the parser refuses gets a problem+json 400."""
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with running_server(tiny_store, max_header_bytes="16384") as running:
        url = running.url
        for pieces, statuses in (
            ([big], [431]),
            ([big[:10000], big[10000:]], [431]),
            ([b"\r\n\r\n" + big], [431]),
            ([b"\r\n", b"\r\n" + big], [431]),
            ([small + big], [200, 431]),
            ([small + big[:12000], big[12000:]], [200, 431]),
        ):
            with _connect(url) as conn:
                for piece in pieces:
                    conn.sendall(piece)
                    time.sleep(0.1)
                answer = _read_all(conn, 5)
            got = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]  # answers back to back
            assert got == statuses, answer[:300]
            assert "exceed 16384 bytes" in _problem(answer[answer.rindex(b"HTTP/1.1 431") :])["detail"]
        with _connect(url) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\nHost: x\n\n")  # bare line feeds: httptools refuses them
            answer = _read_all(conn, 5)
        assert answer.startswith(b"HTTP/1.1 400") and _problem(answer)["status"] == 400
        hu = [[[-900.0 if (x + y + z) % 2 else 40.0 for x in range(40)] for y in range(40)] for z in range(40)]
        body = json.dumps({"patch": hu, "spacing": [1, 1, 1]}).encode()  # 390 kB in one send with its headers
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        with _connect(url) as conn:
            conn.sendall(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
            answer = _read_all(conn, 20)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        log = running.log.read_text(errors="replace")
        counted = _rejections(url)
    # each 431 is logged once, as what it is; uvicorn's "invalid request" only for the one the parser refused
    assert log.count("exceed 16384 bytes") == 6 and log.count(PARSER_COMPLAINT) == 1, log
    assert counted == {"header_too_large": 6, "malformed_request": 1}  # and counted, though no route saw them


def test_headers_that_trickle_in_get_408_and_a_silent_connection_is_closed(tiny_store):
    with server(tiny_store, header_timeout_s="1") as url:
        with _connect(url) as slow, _connect(url) as silent:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            for _ in range(3):
                time.sleep(0.5)
                try:
                    slow.sendall(b"X-More: y\r\n")
                except OSError:
                    break
            answer = _read_all(slow, 5)
            assert time.monotonic() - started < 4
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert "within 1 s" in _problem(answer)["detail"]
            assert _read_all(silent, 5) == b""  # closed without a word
        assert _rejections(url) == {"slow_headers": 1}
        with httpx.Client(base_url=url) as client:  # keep-alive requests are not cut by the header timer
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
                time.sleep(0.6)


def test_uploads_still_arriving_after_sigterm_get_503_in_time_and_nothing_is_logged_as_an_error(tiny_store):
    """One upload keeps sending at a legitimate pace, one has stalled: both get the drain's 503, not uvicorn's 500."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with running_server(tiny_store, drain_uploads_s="1", body_min_bytes_per_s="1000") as running:
        with _connect(running.url) as sending, _connect(running.url) as stalled:
            for conn in (sending, stalled):
                conn.sendall(head + b"{" + b" " * 2000)
            time.sleep(0.3)
            running.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            answers = {sending: b"", stalled: b""}
            while not all(b"\r\n\r\n" in a for a in answers.values()) and time.monotonic() - started < 10:
                try:
                    sending.sendall(b" " * 2000)  # a slow but legitimate pace
                except OSError:
                    pass
                for conn in answers:
                    conn.settimeout(0.1)
                    try:
                        answers[conn] += conn.recv(65536)
                    except (TimeoutError, OSError):
                        pass
            waited = time.monotonic() - started
        for answer in answers.values():
            assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
            assert b"retry-after" in answer.lower()
        assert waited < 5
        running.proc.wait(timeout=30)
        log = running.log.read_text(errors="replace")
    errors = [line for line in log.splitlines() if '"level":"error"' in line.replace(" ", "")]
    assert not errors, errors
    assert "Exception in ASGI application" not in log


def _get_on(conn: socket.socket) -> bytes:
    """One keep-alive GET /healthz on an open connection, and its whole answer."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def test_an_idle_connection_outlives_clients_keep_alive_and_closes_at_the_setting(tiny_store):
    """The default (75 s) outlasts httpx's 5 s and uvicorn's own 5 s: a request sent after 6 s idle is answered;
    RESMTNET_KEEP_ALIVE_S closes an idle connection at its value."""
    with server(tiny_store) as url, _connect(url) as conn:
        assert _get_on(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        assert _get_on(conn).startswith(b"HTTP/1.1 200")
    with server(tiny_store, keep_alive_s="1") as url, _connect(url) as conn:
        assert _get_on(conn).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert _read_all(conn, 5) == b""  # closed by the server, not by the 5 s wait
        assert time.monotonic() - started < 3


def test_an_answer_given_before_the_body_is_read_reaches_a_client_that_sends_its_body_first(tiny_store):
    """A client that writes its body before it reads (httpx, requests) gets the 413 decided from Content-Length:
    the server reads and drops the rest before closing, where closing on unread bytes would reset the connection
    and destroy the answer."""
    with server(tiny_store, max_body_bytes="1000000") as url, _connect(url) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Content-Length: 4000000\r\n\r\n")
        time.sleep(0.3)  # answered by now
        for _ in range(8):  # the body keeps coming
            conn.sendall(b" " * 65536)
            time.sleep(0.05)
        answer = _read_all(conn, 10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "limit is 1000000 bytes" in _problem(answer)["detail"]


@pytest.mark.parametrize(("linger_s", "open_after_1_5_s"), [("0.5", False), ("5", True)])
def test_a_closing_connection_reads_what_the_client_still_sends_for_linger_s(tiny_store, linger_s, open_after_1_5_s):
    """After the early 413 and its FIN, the server reads and drops the rest of the body for RESMTNET_LINGER_S,
    then closes: more bytes sent after that are answered by a reset."""
    with server(tiny_store, max_body_bytes="1000000", linger_s=linger_s) as url, _connect(url) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Content-Length: 4000000\r\n\r\n")
        assert _read_all(conn, 5).startswith(b"HTTP/1.1 413")  # the answer, then FIN
        time.sleep(1.5)
        try:
            for _ in range(4):  # the first send after a close is accepted; the reset then fails the next ones
                conn.sendall(b" " * 65536)
                time.sleep(0.1)
            still_open = True
        except (ConnectionResetError, BrokenPipeError):
            still_open = False
    assert still_open == open_after_1_5_s


def test_a_malformed_request_behind_ones_being_answered_waits_for_their_answers():
    """Pipelined requests before a malformed one get their answers, then the 400 closes the connection; a request
    whose own body is malformed gets the 400 at once, or, queued behind another, never reaches the app."""
    patch = np.random.default_rng(0).normal(-700, 200, (40, 64, 64)).round(1)
    body = json.dumps({"patch": patch.tolist(), "spacing": [1.25, 0.7, 0.7]}).encode()
    predict = (
        "POST /predict?uncertainty=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    bad_chunk = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    bad_chunk += b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n"  # not a chunk size: the parser stops in its body
    with running_server(REPO / "model_store") as running:  # the committed model: its 8 views take a while
        for sends, statuses in (
            ([predict, b"NOT HTTP\r\n\r\n"], [200, 400]),  # the 400 comes while the first is on the model
            ([predict + predict + b"NOT HTTP\r\n\r\n"], [200, 200, 400]),
            ([bad_chunk], [400]),
            ([predict + bad_chunk], [200, 400]),
        ):
            with _connect(running.url) as conn:
                for data in sends:
                    conn.sendall(data)
                    time.sleep(0.005)
                answer = _read_all(conn, 10)
            got = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
            assert got == statuses, answer[:300]
            assert _problem(answer[answer.rindex(b"HTTP/1.1 400") :])["status"] == 400
        requests = _requests(running.url)
        log = running.log.read_text(errors="replace")
    assert requests == {"200": 4, "499": 1}, requests  # the running request with the broken body left: 499
    assert "Cannot call write" not in log and '"level": "error"' not in log, log
