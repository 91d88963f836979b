"""Typed errors rendered as RFC 9457 application/problem+json, and the handlers that guarantee no bare 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Send

from service import refusals
from service.security_headers import Header, api_headers

PROBLEM_JSON = "application/problem+json"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request its client abandoned; never sent to anyone
log = logging.getLogger("resmtnet")

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ProblemError(Exception):
    """An error a client can act on: status, a short machine-readable code and a precise detail."""

    status = 400
    code = "bad-request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class MalformedInput(ProblemError):
    status, code = 400, "malformed-input"


class NotAcceptable(ProblemError):
    status, code = 406, "not-acceptable"


class PayloadTooLarge(ProblemError):
    status, code = 413, "payload-too-large"


class UnsupportedMediaType(ProblemError):
    status, code = 415, "unsupported-media-type"


class UnusableInput(ProblemError):
    status, code = 422, "unusable-input"


class Overloaded(ProblemError):
    status, code = 503, "overloaded"


class NotReady(ProblemError):
    status, code = 503, "not-ready"


class BodyTimeout(ProblemError):
    status, code = 408, "request-timeout"


class DeadlineExceeded(ProblemError):
    status, code = 504, "deadline-exceeded"


def problem_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    body = {
        "type": f"urn:resmtnet:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def is_v2(path: str) -> bool:
    """Under /v2 errors take the Open Inference Protocol's form, {"error": detail}."""
    return path == "/v2" or path.startswith("/v2/")


async def send_problem(
    send: Send, status: int, code: str, detail: str, *, v2: bool = False, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """An error answered straight over ASGI, by middleware that refuses a request before the app sees it."""
    problem = {"type": f"urn:resmtnet:problem:{code}", "title": _TITLES.get(status, "Error"), "status": status}
    body = json.dumps({"error": detail} if v2 else {**problem, "detail": detail}).encode()
    start = [
        (b"content-type", b"application/json" if v2 else PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def problem_bytes(status: int, code: str, detail: str, headers: Sequence[Header] = ()) -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes the connection, for the protocol layer (before any app),
    with these headers (the security headers) besides its own."""
    title = _TITLES.get(status, "Error")
    problem = {"type": f"urn:resmtnet:problem:{code}", "title": title, "status": status, "detail": detail}
    body = json.dumps(problem).encode()
    lines = [f"HTTP/1.1 {status} {title}", f"content-type: {PROBLEM_JSON}", f"content-length: {len(body)}"]
    lines += [f"{name.decode()}: {value.decode()}" for name, value in headers]
    return ("\r\n".join([*lines, "connection: close", "", ""])).encode() + body


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(422, "invalid-request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        """The client left while its body was arriving: nothing to answer, and no server error either."""
        service = getattr(request.app.state, "service", None)
        if service is not None:
            refusals.count(service.metrics.rejections, "client_gone")
        log.info("client disconnected during request %s", getattr(request.state, "request_id", "unknown"))
        return problem_response(CLIENT_CLOSED_REQUEST, "client-closed-request", "the client closed the connection")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "unknown")
        log.error("unexpected %s in request %s", type(exc).__name__, request_id, exc_info=exc)
        # answered outside the middlewares (by Starlette's outermost one): their headers are added here
        service = getattr(request.app.state, "service", None)
        hsts_seconds = service.settings.hsts_seconds if service is not None else 0
        headers = {name.decode(): value.decode() for name, value in api_headers(hsts_seconds)}
        return problem_response(
            500, "internal-error", f"internal error in request {request_id}", {**headers, "X-Request-ID": request_id}
        )
