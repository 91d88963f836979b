"""Errors under /v2 in the Open Inference Protocol's form, `{"error": "..."}`; the rest of the API keeps
problem+json. The handlers wrap the ones already installed and only answer for /v2 paths."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ProblemError

V2_PREFIX = "/v2"
log = logging.getLogger("resmtnet")


class ModelNotFound(ProblemError):
    status, code = 404, "model-not-found"


def is_v2_path(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _as_v2(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ProblemError):
        return v2_error(exc.status, exc.detail, exc.headers)
    if isinstance(exc, StarletteHTTPException):
        return v2_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return v2_error(400, f"invalid request: {first.get('msg', 'invalid')}")
    request_id = getattr(request.state, "request_id", "unknown")
    log.error("unexpected %s in request %s", type(exc).__name__, request_id, exc_info=exc)
    return v2_error(500, f"internal error in request {request_id}", {"X-Request-ID": request_id})


def _scoped(previous: Callable[..., Any] | None) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        if is_v2_path(request.url.path):
            return _as_v2(request, exc)
        if previous is None:
            raise exc
        result = previous(request, exc)
        return await result if inspect.isawaitable(result) else result

    return handler


def install_v2_error_handlers(app: FastAPI) -> None:
    """Call after the app's own handlers are installed: each one keeps answering outside /v2."""
    for exc_class in (ProblemError, StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(exc_class, _scoped(app.exception_handlers.get(exc_class)))
