"""API-key authentication as a pure-ASGI middleware (the security headers: service.security_headers)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service import refusals
from service.auth import KeyStore
from service.errors import is_v2, send_problem
from service.metrics import Metrics
from service.security_headers import DOCS_PATHS

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


class ApiKeyMiddleware:
    """Every path but health (and docs and metrics, unless configured otherwise) needs a valid API key when keys
    are configured: 401 without one, 403 for a revoked one."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        metrics: Metrics,
        metrics_require_key: bool = False,
        docs_enabled: bool = True,
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.open_paths = HEALTH_PATHS | (DOCS_PATHS if docs_enabled else frozenset())
        if not metrics_require_key:
            self.open_paths |= {"/metrics"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.keys.enabled and path not in self.open_paths:
            verdict = self.keys.check(_header(scope, b"authorization"))
            scope.setdefault("state", {})["key_id"] = verdict.key_id
            if not verdict.allowed:
                status = 401 if verdict.key_id is None else 403
                refusals.count(self.metrics.rejections, "unauthorized" if status == 401 else "forbidden")
                challenge = [(b"www-authenticate", b'Bearer realm="resmtnet"')] if status == 401 else []
                code = "unauthorized" if status == 401 else "forbidden"
                await send_problem(send, status, code, verdict.reason, v2=is_v2(path), headers=challenge)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
