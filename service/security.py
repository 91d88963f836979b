"""One pure-ASGI middleware: API-key authentication and the security headers every response carries."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import KeyStore
from service.errors import is_v2, send_problem
from service.metrics import Metrics

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Answers carry clinical results: never cached, never framed, never sniffed, no referrer.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        metrics: Metrics,
        metrics_require_key: bool = False,
        docs_enabled: bool = True,
        hsts_seconds: int = 0,
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.open_paths = HEALTH_PATHS | (DOCS_PATHS if docs_enabled else frozenset())
        if not metrics_require_key:
            self.open_paths |= {"/metrics"}
        self.headers = list(SECURITY_HEADERS)
        if hsts_seconds > 0:
            self.headers.append((b"strict-transport-security", f"max-age={hsts_seconds}".encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = self.headers if path in DOCS_PATHS else [*self.headers, API_CSP]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(extra)
            await send(message)

        if self.keys.enabled and path not in self.open_paths:
            verdict = self.keys.check(_header(scope, b"authorization"))
            scope.setdefault("state", {})["key_id"] = verdict.key_id
            if not verdict.allowed:
                status = 401 if verdict.key_id is None else 403
                self.metrics.rejections.labels(reason="unauthorized" if status == 401 else "forbidden").inc()
                challenge = [(b"www-authenticate", b'Bearer realm="resmtnet"')] if status == 401 else []
                code = "unauthorized" if status == 401 else "forbidden"
                await send_problem(send_with_headers, status, code, verdict.reason, v2=is_v2(path), headers=challenge)
                return
        await self.app(scope, receive, send_with_headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
