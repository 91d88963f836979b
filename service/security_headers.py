"""The security headers every answer carries: clinical results are never cached, framed, sniffed or referred."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Header = tuple[bytes, bytes]

SECURITY_HEADERS: list[Header] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
API_CSP: Header = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def api_headers(hsts_seconds: int = 0) -> list[Header]:
    """The headers of an API answer (not the docs pages, which load scripts): HSTS when hsts_seconds > 0."""
    return [*SECURITY_HEADERS, API_CSP, *_hsts(hsts_seconds)]


def _hsts(hsts_seconds: int) -> list[Header]:
    return [(b"strict-transport-security", f"max-age={hsts_seconds}".encode())] if hsts_seconds > 0 else []


class SecurityHeadersMiddleware:
    """Outermost of the app's middleware, so that every answer gets the headers, the refusals of the middleware
    inside it included (an unexpected 500, answered outside it, adds them itself)."""

    def __init__(self, app: ASGIApp, hsts_seconds: int = 0) -> None:
        self.app = app
        self.api = api_headers(hsts_seconds)
        self.docs = [*SECURITY_HEADERS, *_hsts(hsts_seconds)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs if scope["path"] in DOCS_PATHS else self.api

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)
