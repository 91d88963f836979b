"""The uvicorn server around the app: request headers bounded in size and time, and a drain on shutdown.

uvicorn's httptools protocol reads request headers without a size limit and without a deadline (a client may send
one header line a minute, or a 200 MB header, and hold its memory); the protocol here refuses both. On SIGTERM the
server tells the app when draining began, so that an upload still arriving is answered 503 before uvicorn's own
graceful timeout would cancel it into a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import problem_bytes
from service.security_headers import Header, api_headers

log = logging.getLogger("resmtnet")
PARSER_COMPLAINT = "Invalid HTTP request received."  # what uvicorn logs when the parser stops on an exception


class _NotAfterRefusal(logging.Filter):
    """Drops uvicorn's parser complaint on a connection this protocol has already refused (and logged why): the
    parser stopped because the refusal stopped it, not because the request was malformed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != PARSER_COMPLAINT


# uvicorn's logger for a refused connection: a child of uvicorn.error, so every other record reaches its handlers.
REFUSED_CONNECTION_LOG = logging.getLogger("uvicorn.error.refused")
REFUSED_CONNECTION_LOG.addFilter(_NotAfterRefusal())
GRACEFUL_SHUTDOWN_S = 30.0  # uvicorn cancels what is still running this long after SIGTERM


@dataclass
class Drain:
    """When shutdown began (time.monotonic and time.perf_counter, None until then) and how long uploads still
    arriving may take after it."""

    uploads_s: float = 20.0
    since_monotonic: float | None = None
    since_perf: float | None = None

    @property
    def begun(self) -> bool:
        return self.since_monotonic is not None

    def begin(self) -> None:
        if self.since_monotonic is None:
            self.since_monotonic, self.since_perf = time.monotonic(), time.perf_counter()

    def upload_deadline(self) -> float | None:
        """monotonic time by which an upload must have arrived, once draining."""
        return None if self.since_monotonic is None else self.since_monotonic + self.uploads_s

    def answer_deadline(self, deadline: float) -> float:
        """A request's perf_counter deadline, brought forward so it ends before uvicorn cancels it."""
        if self.since_perf is None:
            return deadline
        return min(deadline, self.since_perf + GRACEFUL_SHUTDOWN_S - 2.0)


class HeadersTooLarge(Exception):
    """Raised in the parser's callback to stop it: the request was answered 431 and goes no further."""


LINGER_S = 5.0  # how long a closing connection still reads (and drops) what the client is sending (default)


class LingeringTransport:
    """A connection's transport whose close() lets the client finish sending (a "lingering close", as nginx and
    Apache do): an answer given before the request's body was read (a 503, 408 or 413) is followed by FIN, and what
    the client still sends is read and dropped for up to linger_s before the socket closes. Closed at once, the
    unread bytes would make the kernel reset the connection, which destroys the answer before a client that sends
    its whole body first (httpx, requests) can read it."""

    def __init__(
        self, inner: asyncio.Transport, client_may_be_sending: Callable[[], bool], linger_s: float = LINGER_S
    ) -> None:
        self._inner = inner
        self._client_may_be_sending = client_may_be_sending
        self._linger_s = linger_s
        self.lingering = False
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's own transport
        return getattr(self._inner, name)

    def is_closing(self) -> bool:
        return self.lingering or self._inner.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.lingering:  # after FIN nothing more can be sent: an answer still in progress is dropped
            self._inner.write(data)

    def writelines(self, lines: Any) -> None:
        if not self.lingering:
            self._inner.writelines(lines)

    def close(self) -> None:
        if self.is_closing():
            return
        if not (self._client_may_be_sending() and self._inner.can_write_eof()):
            self._inner.close()
            return
        self.lingering = True
        self._inner.write_eof()  # after what is buffered: the answer goes out whole, then FIN
        self._inner.resume_reading()
        self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._inner.close)

    def stop(self) -> None:
        """The connection is gone: no timer left behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools' HTTP/1.1 with the request line and headers bounded: at most max_header_bytes (431), within
    header_timeout_s of connecting or of the request's first byte (408; a connection that sent nothing is closed).

    Each request's size is counted from the parser's callbacks, which see every request whatever the socket reads
    (pipelined requests, leading blank lines); headers that never end are bounded by the raw bytes read while they
    last, since the parser buffers them."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    linger_s = LINGER_S
    answer_headers: list[Header] = api_headers()  # on its own 431, 408 and 400, as on every answer of the app
    count_refusal: Callable[[str], None] = staticmethod(lambda reason: None)  # resmtnet_rejections_total{reason}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = LingeringTransport(transport, self._client_may_be_sending, self.linger_s)
        super().connection_made(self._lingering)  # type: ignore[arg-type]
        self._header_bytes = 0  # raw bytes read while a request's headers are incomplete
        self._request_header_bytes = 0  # the current request's line and headers, as the parser hands them over
        self._in_headers = True
        self._refusal: bytes | None = None  # the 431, 408 or 400 sent, or to send once the answers owed are out
        self._running: RequestResponseCycle | None = None  # the request whose app runs now (others wait, pipelined)
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._lingering.stop()
        super().connection_lost(exc)

    def _client_may_be_sending(self) -> bool:
        """Whether the client may still be sending: a request body not all read, headers begun, or headers
        refused (431, 408) while they were still coming."""
        body_pending = self.cycle is not None and self.cycle.more_body
        return body_pending or (self._in_headers and self._header_bytes > 0) or self._refusal is not None

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:  # answered and closing: what the client still sends is dropped
            return
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes:  # headers that do not end
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._request_header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._request_header_bytes += len(name) + len(value) + 4  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_timer()
        method = self.parser.get_method() or b""
        # the request line (method, spaces, HTTP/1.1, CRLF) and the blank line around what the callbacks counted
        if self._request_header_bytes + len(method) + 12 + 2 > self.max_header_bytes:
            self._too_large()
            raise HeadersTooLarge()  # the parser stops here: the request never reaches the app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers, self._header_bytes = True, 0  # what comes next is the next request's headers

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what the parser refuses, as problem+json with the security headers; nothing more once
        a 431 was sent. Behind pipelined requests it waits for their answers: a malformed successor must not cut
        them off. A request whose own body is malformed is answered at once (its app then sees the disconnect), or,
        still queued behind others, dropped from the queue."""
        if self.transport.is_closing() or self._refusal is not None:
            return
        self.count_refusal("malformed_request")
        self.logger = REFUSED_CONNECTION_LOG  # logged once: the parser fails again on every later read
        detail = "the request is not valid HTTP/1.1"
        self._refusal = problem_bytes(400, "malformed-request", detail, self.answer_headers)
        broken = self.cycle if self.cycle is not None and self.cycle.more_body else None  # its body did not parse
        if broken is not None and self.pipeline and self.pipeline[0][0] is broken:
            self.pipeline.popleft()  # queued, never started: it will not be
            latest = self.pipeline[0][0] if self.pipeline else self._running
            if latest is not None:  # always, as a request was running when this one was queued
                self.cycle = latest
        if (broken is not None and broken is self._running and not broken.response_started) or not self._answering():
            self._send_refusal()

    def _too_large(self) -> None:
        self._refuse(431, "header-too-large", f"the request line and headers exceed {self.max_header_bytes} bytes")

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self._in_headers:
            return
        if self._header_bytes == 0:  # nothing sent at all: close quietly
            if not self.transport.is_closing():
                self.transport.close()
            return
        detail = f"the request line and headers did not arrive within {self.header_timeout_s:g} s"
        self._refuse(408, "request-timeout", detail)

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer status and close; behind a pipelined request still being answered, once that answer is sent."""
        self._in_headers = False
        self._stop_timer()
        if self.transport.is_closing() or self._refusal is not None:
            return
        log.warning("connection refused at the HTTP layer: %s", detail)
        self.count_refusal("header_too_large" if status == 431 else "slow_headers")
        self.logger = REFUSED_CONNECTION_LOG
        self._refusal = problem_bytes(status, code, detail, self.answer_headers)
        if not self._answering():  # never in the middle of another answer
            self._send_refusal()

    def _answering(self) -> bool:
        """Whether answers are still owed on this connection: one in progress, or pipelined requests waiting."""
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if any
        if self._refusal is not None and not self._answering():
            self._send_refusal()

    def _send_refusal(self) -> None:
        if not self.transport.is_closing() and self._refusal is not None:
            self.transport.write(self._refusal)
            self.transport.close()


def guarded_protocol(
    max_header_bytes: int,
    header_timeout_s: float,
    hsts_seconds: int = 0,
    count_refusal: Callable[[str], None] | None = None,
    linger_s: float = LINGER_S,
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (and HSTS on its answers when hsts_seconds > 0), counting each of its
    refusals by reason with count_refusal, lingering linger_s on a close, for uvicorn.Config(http=...)."""
    attributes: dict[str, Any] = {
        "max_header_bytes": max_header_bytes,
        "header_timeout_s": header_timeout_s,
        "linger_s": linger_s,
        "answer_headers": api_headers(hsts_seconds),
    }
    if count_refusal is not None:
        attributes["count_refusal"] = staticmethod(count_refusal)
    return type("ConfiguredHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that marks the drain's start when asked to exit (SIGTERM, SIGINT)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.begin()
        super().handle_exit(sig, frame)


def serve(app: Any, drain: Drain, **options: Any) -> None:
    """Run the app until SIGTERM or SIGINT, with the guarded protocol and the drain."""
    DrainingServer(uvicorn.Config(app, timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S), **options), drain).run()
