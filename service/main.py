"""The application factory and its lifespan: load and warm the model, start the batcher, stop cleanly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service.api.routes import health, kserve, models, predict
from service.api.v2_errors import install_v2_error_handlers
from service.config import Settings, get_settings
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.state import ServiceState

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    """A ready-to-serve app. Nothing is loaded until the lifespan starts (never at import)."""
    settings = settings or get_settings()
    metrics = Metrics(registry or CollectorRegistry())
    state = ServiceState(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("resmtnet").setLevel(settings.log_level.upper())
        await state.start()
        yield
        await state.stop()

    app = FastAPI(
        title="Res-MTNet Serve",
        version=API_VERSION,
        summary="Lung-nodule malignancy, type, measurements and scores from CT patches. Research use only.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    install_v2_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(kserve.router)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
