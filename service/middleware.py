"""One pure-ASGI middleware: request id, body-size limit while the body streams in, request metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import refusals
from service.errors import BodyTimeout, NotReady, Overloaded, PayloadTooLarge, is_v2, send_problem
from service.logs import audit, request_id_var
from service.metrics import Metrics
from service.server import Drain

V2_ROUTES = frozenset({"/v2", "/v2/health/live", "/v2/health/ready"})
# An ingress's or tracer's request id: a UUID (Envoy, most tracers) or 32 hex digits (nginx's $request_id). Nothing
# freer: a portal could put a record number or a name there, and this value is written to the audit log.
UPSTREAM_REQUEST_ID = re.compile(rb"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
PREDICTION_ROUTES = frozenset({"/predict", "/v1/predict", "/v2/models/{name}/infer"})
# The latency histogram's input label: a CT series' time includes its upload (seconds over a slow link), so
# alerts on patch latency must be able to leave it out.
INPUT_LABELS = {"patch-npy": "patch", "patch-json": "patch", "ct-series": "series", "v2-tensor": "tensor"}
# A body refused before it was read: the server reads and discards a rest this small to keep the connection; a
# larger or unknown one (chunked) closes the connection instead.
DISCARD_UNREAD_BYTES = 64 * 1024
DRAIN_POLL_S = 1.0  # a body's wait is cut in slices this long, each looking whether the server began to drain
KNOWN_ROUTES = frozenset({"/predict", "/v1/predict", "/healthz", "/readyz", "/metrics", "/v1/models"}) | V2_ROUTES
# Open Inference Protocol model routes: one label per kind, whatever the model name or version in the path.
_V2_MODEL_ROUTE = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?(/ready|/infer|/config)?")


def _route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    v2 = _V2_MODEL_ROUTE.fullmatch(path)
    return "/v2/models/{name}" + (v2.group(1) or "") if v2 else "other"


class ServiceMiddleware:
    """Bodies are bounded three ways while they stream in: each by max_body_bytes, all requests together by
    max_inflight_bytes (bodies are held in memory until answered, and reserved as their bytes arrive), and in time:
    a body may take body_timeout_s plus what its bytes need at body_min_bytes_per_s, so a 300 MB series on a slow
    link has its minutes while a trickle of a few bytes a second is cut off."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        max_inflight_bytes: int | None = None,
        body_timeout_s: float = 30.0,
        retry_after_s: int = 1,
        body_min_bytes_per_s: int = 64 * 1024,
        drain: Drain | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_inflight_bytes = max_inflight_bytes or 2 * max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.body_min_bytes_per_s = body_min_bytes_per_s
        self.retry_after_s = retry_after_s
        self.drain = drain or Drain()
        self.inflight_bytes = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        context = request_id_var.set(request_id)  # every log line while this request is handled carries it
        refusals.begin_request()
        route = _route_label(scope["path"])
        status = 500
        limit = self.max_body_bytes
        declared = _content_length(scope)
        chunked = _chunked(scope)
        expects_continue = any(n == b"expect" and v.lower() == b"100-continue" for n, v in scope["headers"])
        body_done = not (declared or chunked)  # a request without a body has nothing left to read
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                unread = None if chunked else (declared or 0) - received  # None: unknown, maybe endless
                # a client waiting for 100 Continue sends nothing more: what follows would be read as its body
                waiting = expects_continue and received == 0
                if not body_done and (unread is None or unread > DISCARD_UNREAD_BYTES or waiting):
                    # answered before its body was read (an early refusal): close rather than read the rest
                    if not any(name.lower() == b"connection" for name, _ in headers):
                        headers.append((b"connection", b"close"))
            await send(message)

        held = 0  # this request's share of max_inflight_bytes
        try:
            if declared is not None and declared > limit:
                await send_problem(
                    send_wrapper,
                    413,
                    "payload-too-large",
                    f"the request body is {declared} bytes; the limit is {limit} bytes",
                    v2=is_v2(scope["path"]),
                    headers=[(b"connection", b"close")],
                )
                return
            body_start = asyncio.get_running_loop().time()

            def reserve(n_bytes: int) -> None:
                nonlocal held
                if self.inflight_bytes + n_bytes > self.max_inflight_bytes:
                    refusals.count(self.metrics.rejections, "memory")
                    raise Overloaded(
                        f"uploads in progress hold {self.inflight_bytes} bytes of the "
                        f"{self.max_inflight_bytes} allowed; retry later",
                        headers={"Retry-After": str(self.retry_after_s)},
                    )
                self.inflight_bytes += n_bytes
                held += n_bytes

            async def limited_receive() -> Message:
                nonlocal received, body_done
                if body_done:  # later calls wait for a disconnect: no deadline on those
                    return await receive()
                allowed = self.body_timeout_s + received / self.body_min_bytes_per_s
                until, loop = body_start + allowed, asyncio.get_running_loop()
                while True:  # in slices, so that a drain begun during a long wait is seen within a slice
                    draining = self.drain.upload_deadline()
                    end = until if draining is None else min(until, draining)
                    try:
                        async with asyncio.timeout_at(min(end, loop.time() + DRAIN_POLL_S)):
                            message = await receive()
                        break
                    except TimeoutError:
                        if loop.time() < end:
                            continue
                    if draining is not None and draining < until:
                        refusals.count(self.metrics.rejections, "shutting_down")
                        raise NotReady(
                            "the service is shutting down and this upload did not finish in time; send it again",
                            headers={"Retry-After": str(self.retry_after_s)},
                        ) from None
                    refusals.count(self.metrics.rejections, "slow_body")
                    raise BodyTimeout(
                        f"the request body did not arrive in time: {received} bytes in {allowed:.3g} s, slower than "
                        f"{self.body_min_bytes_per_s} bytes/s after the first {self.body_timeout_s:g} s"
                    ) from None
                if message["type"] == "http.request":
                    body_done = not message.get("more_body", False)
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
                    if received > held:  # reserved as it arrives: a silent connection holds nothing
                        reserve(received - held)
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self.inflight_bytes -= held
            elapsed = time.perf_counter() - started
            labels = {"route": route, "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            kind = INPUT_LABELS.get(scope.get("state", {}).get("input_kind"), "none")
            self.metrics.request_seconds.labels(**labels, input=kind).observe(elapsed)
            if status in (401, 403):  # a refused key, on any route
                _audit(scope, "access_denied", request_id, route, status, elapsed)
            elif route in PREDICTION_ROUTES:
                _audit(scope, "prediction", request_id, route, status, elapsed)
            request_id_var.reset(context)


def _audit(scope: Scope, event: str, request_id: str, route: str, status: int, elapsed: float) -> None:
    """The audit record of one request, from what the service itself knows about it."""
    state = scope.get("state", {})
    service = getattr(getattr(scope.get("app"), "state", None), "service", None)
    model = getattr(service, "model", None)
    audit(
        event=event,
        request_id=request_id,
        key_id=state.get("key_id"),
        client=_client_address(scope),
        upstream_request_id=_upstream_request_id(scope),
        route=route,
        status=status,
        duration_ms=elapsed * 1000,
        model_version=model.manifest.version if model is not None else None,
        input_kind=state.get("input_kind"),
        nodules=state.get("nodules"),
    )


def _client_address(scope: Scope) -> str | None:
    """The peer's IP address; None when it is not one. Behind a trusted proxy uvicorn copies X-Forwarded-For's text
    there unchecked, and only an address may reach the log."""
    client = scope.get("client")
    try:
        return str(ipaddress.ip_address(client[0])) if client else None
    except ValueError:
        return None


def _upstream_request_id(scope: Scope) -> str | None:
    """The request's own X-Request-ID when it is an ingress's (UPSTREAM_REQUEST_ID), else None: anything else a
    client sends there is not written to the log."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode("ascii") if UPSTREAM_REQUEST_ID.fullmatch(value) else None
    return None


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
