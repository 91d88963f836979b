"""`python -m service`: serve the configured model with uvicorn on RESMTNET_HOST:RESMTNET_PORT."""

from __future__ import annotations

import os

# numpy's BLAS threads would fight onnxruntime's for the same cores; preprocessing runs in its own thread pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uvicorn  # noqa: E402

from service import logs  # noqa: E402
from service.config import get_settings  # noqa: E402
from service.main import create_app  # noqa: E402


def main() -> None:
    settings = get_settings()
    logs.configure(settings.log_level, json_format=settings.log_format == "json")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the handlers logs.configure installed
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
