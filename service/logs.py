"""Structured logs: one JSON object per line, the request id on every line logged while a request is handled, and
one audit record per prediction and per refused key. Nothing from a request's content (and so nothing from a DICOM
header) is logged: only ids the service made, the client's key id and address, the request id an ingress or portal
sent (only when it is a UUID or 32 hex digits), sizes, outcomes and durations."""

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


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a record carries beyond its message: the request id of the request being handled, and the caller's
    `extra` fields (every field of an audit record)."""
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        fields["request_id"] = request_id
    fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """RESMTNET_LOG_FORMAT=text: time, level, logger and message, then the same fields as the JSON lines, as
    key=value pairs (an audit record keeps everything it has in JSON)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _fields(record).items())
        return f"{line} {fields}" if fields else line


def configure(level: str, json_format: bool = True) -> None:
    """Route the service's, uvicorn's and the root logger's records through one handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def audit(
    *,
    event: str,
    request_id: str,
    key_id: str | None,
    client: str | None,
    upstream_request_id: str | None,
    route: str,
    status: int,
    duration_ms: float,
    model_version: str | None,
    input_kind: str | None,
    nodules: int | None,
) -> None:
    """One record per request refused for its API key, on any route ("access_denied"), and per other prediction
    request whatever its outcome ("prediction"). `client` is the peer's address (X-Forwarded-For's when the peer is
    a proxy uvicorn trusts: 127.0.0.1, or those in FORWARDED_ALLOW_IPS); `upstream_request_id`, the X-Request-ID
    the request came with when it is an ingress's (a UUID or 32 hex digits), to join their logs to this one."""
    audit_log.info(
        event,
        extra={
            "event": "audit",
            "request_id": request_id,
            "upstream_request_id": upstream_request_id,
            "key_id": key_id,
            "client": client,
            "route": route,
            "status": status,
            "outcome": "ok" if status < 400 else ("client_error" if status < 500 else "server_error"),
            "duration_ms": round(duration_ms, 3),
            "model_version": model_version,
            "input_kind": input_kind,
            "nodules": nodules,
        },
    )
