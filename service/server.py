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
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import problem_bytes
from service.security_headers import Header, api_headers

log = logging.getLogger("resmtnet")
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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools' HTTP/1.1 with the request line and headers bounded: at most max_header_bytes (431), within
    header_timeout_s of connecting or of the request's first byte (408; a connection that sent nothing is closed)."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    answer_headers: list[Header] = api_headers()  # on its own 431 and 408, as on every answer of the app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._header_tail = b""  # the last bytes of this request's headers so far: a blank line may straddle reads
        self._in_headers = True
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)
            if self._header_bytes + len(data) > self.max_header_bytes:  # before the parser sees any of it
                seen = self._header_tail + data
                end = headers_end(seen)
                size = self._header_bytes + (len(data) if end < 0 else end - len(self._header_tail))
                if size > self.max_header_bytes:
                    self._too_large()
                    return
            self._header_bytes += len(data)
            self._header_tail = (self._header_tail + data[-3:])[-3:]
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes:  # a blank line the scan took for the end
            self._too_large()

    def _too_large(self) -> None:
        self._refuse(431, "header-too-large", f"the request line and headers exceed {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._header_tail = True, 0, b""  # next: the next request's headers

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
        self._in_headers = False
        self._stop_timer()
        if self.transport.is_closing():
            return
        log.warning("connection refused at the HTTP layer: %s", detail)
        if self.cycle is None or self.cycle.response_complete:  # never in the middle of another answer
            self.transport.write(problem_bytes(status, code, detail, self.answer_headers))
        self.transport.close()


def headers_end(data: bytes) -> int:
    """The index just past the blank line that ends a request's headers in data (CRLF or bare LF line ends), or -1."""
    ends = [at + len(blank) for blank in (b"\r\n\r\n", b"\n\n") if (at := data.find(blank)) >= 0]
    return min(ends, default=-1)


def guarded_protocol(
    max_header_bytes: int, header_timeout_s: float, hsts_seconds: int = 0
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (and HSTS on its answers when hsts_seconds > 0), for
    uvicorn.Config(http=...)."""
    attributes = {
        "max_header_bytes": max_header_bytes,
        "header_timeout_s": header_timeout_s,
        "answer_headers": api_headers(hsts_seconds),
    }
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
