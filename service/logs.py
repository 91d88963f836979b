"""Structured logs: one JSON object per line, the request id on every line logged while a request is handled, and
one audit record per prediction. Nothing from a request's content (and so nothing from a DICOM header) is logged:
only ids the service made, the client's key id, sizes, outcomes and durations."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
audit_log = logging.getLogger("resmtnet.audit")
audit_log.setLevel(logging.INFO)  # the audit trail does not depend on the log level

# LogRecord attributes that are not caller-supplied `extra` fields.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, json_format: bool = True) -> None:
    """Route the service's, uvicorn's and the root logger's records through one handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def audit(
    *,
    request_id: str,
    key_id: str | None,
    route: str,
    status: int,
    duration_ms: float,
    model_version: str | None,
    input_kind: str | None,
    nodules: int | None,
) -> None:
    """One record per prediction request, whatever its outcome."""
    audit_log.info(
        "prediction",
        extra={
            "event": "audit",
            "request_id": request_id,
            "key_id": key_id,
            "route": route,
            "status": status,
            "outcome": "ok" if status < 400 else ("client_error" if status < 500 else "server_error"),
            "duration_ms": round(duration_ms, 3),
            "model_version": model_version,
            "input_kind": input_kind,
            "nodules": nodules,
        },
    )
