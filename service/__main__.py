"""`python -m service`: serve the configured model with uvicorn on RESMTNET_HOST:RESMTNET_PORT."""

from __future__ import annotations

import os

# numpy's BLAS threads would fight onnxruntime's for the same cores; preprocessing runs in its own thread pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging  # noqa: E402

from service import logs  # noqa: E402
from service.auth import KeyConfigError  # noqa: E402
from service.config import get_settings  # noqa: E402
from service.main import create_app  # noqa: E402
from service.server import guarded_protocol, serve  # noqa: E402


def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_level, json_format=settings.log_format == "json")
    try:
        app = create_app(settings)
    except KeyConfigError as exc:  # one log line that says what to fix, not a traceback; exit 2: configuration
        logging.getLogger("resmtnet").error("cannot start: %s", exc)
        raise SystemExit(2) from None
    rejections = app.state.service.metrics.rejections
    serve(
        app,
        app.state.service.drain,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(
            settings.max_header_bytes,
            settings.header_timeout_s,
            settings.hsts_seconds,
            count_refusal=lambda reason: rejections.labels(reason=reason).inc(),
            linger_s=settings.linger_s,
        ),
        timeout_keep_alive=settings.keep_alive_s,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the handlers logs.configure installed
    )


if __name__ == "__main__":
    main()
