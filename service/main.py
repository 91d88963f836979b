"""The application factory and its lifespan: load and warm the model, start the batcher, stop cleanly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.middleware.cors import CORSMiddleware

from service.api.routes import health, kserve, models, predict
from service.api.v2_errors import install_v2_error_handlers
from service.auth import KeyStore
from service.config import Settings, get_settings
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.security import ApiKeyMiddleware
from service.security_headers import SecurityHeadersMiddleware
from service.server import Drain
from service.state import ServiceState

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    """A ready-to-serve app. Nothing is loaded until the lifespan starts (never at import)."""
    settings = settings or get_settings()
    metrics = Metrics(registry or CollectorRegistry())
    state = ServiceState(settings, metrics, drain=Drain(settings.drain_uploads_s))
    keys = KeyStore.from_settings(settings.api_keys, settings.api_keys_file)  # a bad entry stops the start here

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("resmtnet").setLevel(settings.log_level.upper())
        if not keys.enabled:
            logging.getLogger("resmtnet").warning("no API keys configured: every client is let in")
        await state.start()
        yield
        await state.stop()

    app = FastAPI(
        title="Res-MTNet Serve",
        version=API_VERSION,
        summary="Lung-nodule malignancy, type, measurements and scores from CT patches. Research use only.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.service = state
    install_error_handlers(app)
    install_v2_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(kserve.router)
    # Added innermost first: the security headers go on every answer, ServiceMiddleware (request id, limits,
    # metrics, audit) sees every answer, CORS answers preflights before authentication, and authentication guards
    # everything but health (and docs, metrics).
    app.add_middleware(
        ApiKeyMiddleware,
        keys=keys,
        metrics=metrics,
        metrics_require_key=settings.metrics_require_key,
        docs_enabled=settings.docs_enabled,
    )
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_inflight_bytes=settings.max_inflight_bytes,
        body_timeout_s=settings.body_timeout_s,
        body_min_bytes_per_s=settings.body_min_bytes_per_s,
        retry_after_s=settings.retry_after_s,
        drain=state.drain,
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds)
    return app
