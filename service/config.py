"""All service settings: one pydantic-settings class, read from RESMTNET_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESMTNET_", frozen=True)

    host: str = Field("0.0.0.0", description="address uvicorn binds")
    port: int = Field(8000, ge=1, le=65535, description="port uvicorn binds")
    api_keys: str = Field(
        "", description="API key entries '<key id>:sha256:<hex>[:revoked]', comma-separated; none: no authentication"
    )
    api_keys_file: Path | None = Field(None, description="a file of API key entries, one per line")
    metrics_require_key: bool = Field(False, description="/metrics needs an API key too")
    docs_enabled: bool = Field(True, description="serve /docs, /redoc and /openapi.json")
    cors_origins: str = Field("", description="origins allowed by CORS, comma-separated; empty: no cross-origin use")
    hsts_seconds: int = Field(0, ge=0, description="Strict-Transport-Security max-age; set it when served over TLS")
    log_format: Literal["json", "text"] = Field("json", description="one JSON object per log line, or plain text")
    model_store: Path = Field(Path("model_store"), description="folder holding <name>/<version>/ model folders")
    model_name: str = Field("res_mtnet", description="model served from the store")
    model_version: str | None = Field(
        None,
        description="pin one version folder (e.g. 1.2.0); default: the newest version, a release after its "
        "pre-releases (1.3.0-rc1 < 1.3.0); folders whose names are not versions are skipped with a warning",
    )
    provider: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="auto: CUDA when onnxruntime has it, else CPU; cuda: CUDA or not ready; cpu: CPU only",
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="onnxruntime sessions running batches side by side; 0 = one per 4 cores on CPU but at least two "
        "(the cores this process may use: affinity, capped by a container's CPU limit), one on CUDA",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="onnxruntime intra-op threads per session; 0 = cores / sessions on CPU, onnxruntime's own on CUDA",
    )
    solo_session: bool = Field(
        True,
        description="on CPU with several sessions, one more session with every core runs a lone request when all "
        "the others are idle: the latency of all cores at light load, the throughput of sessions side by side "
        "under load",
    )
    pin_sessions: bool = Field(
        True,
        description="on CPU, each single-threaded session runs on a core of its own, where the process's cores are "
        "its own (no container CPU limit narrower than its affinity mask)",
    )
    intra_op_spinning: bool = Field(
        False,
        description="let onnxruntime's threads keep spinning between runs (they always spin inside one); off, they "
        "stop as each run ends, leaving the CPU to the server",
    )
    preprocess_threads: int = Field(1, ge=1, description="worker threads for parsing and resampling")
    inline_prepare_bytes: int = Field(
        MiB, ge=0, description=".npy patches up to this size are prepared on the event loop, larger ones in the pool"
    )
    max_batch_size: int = Field(16, ge=1, le=512, description="largest batch the batcher forms")
    max_delay_ms: float = Field(
        0.0, ge=0, description="how long a batch waits for company after its first request (0: never; 2 on a GPU)"
    )
    max_queue: int = Field(256, ge=1, description="requests waiting for the model; more are refused with 503")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline once the body has arrived; past it, 504")
    pad_batches: Literal["auto", "yes", "no"] = Field(
        "auto", description="pad batches to powers of two (auto: on CUDA only, where each new shape costs)"
    )
    max_body_bytes: int = Field(GiB, ge=1, description="largest request body")
    max_inflight_bytes: int = Field(
        2 * GiB, ge=1, description="request bodies held in memory at once, all requests together; beyond, 503"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="time a body has beyond what its size needs at body_min_bytes_per_s; past it, 408"
    )
    body_min_bytes_per_s: int = Field(
        64 * 1024, ge=1, description="slowest upload rate allowed once body_timeout_s is spent"
    )
    max_header_bytes: int = Field(
        64 * KiB, ge=1024, description="request line and headers of one request; beyond, 431 and the connection closed"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="from connecting (or a request's first byte) to the end of its headers; past it, 408"
    )
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="how long an idle keep-alive connection stays open: longer than clients and load balancers keep "
        "theirs (60 s for nginx and AWS load balancers, 5 s for httpx), so that the server never closes one just as "
        "a request is sent on it",
    )
    linger_s: float = Field(
        5.0,
        gt=0,
        description="after an answer given before its request's body was read (503, 413, 408, 431), how long the "
        "closing connection still reads and drops what the client sends, so that the answer reaches a client that "
        "sends its whole body first; lower it where clients abuse the wait",
    )
    drain_uploads_s: float = Field(
        20.0,
        ge=0,
        description="after SIGTERM, how long uploads still arriving have before a 503 (the server stops 30 s after)",
    )
    max_json_bytes: int = Field(64 * MiB, ge=1, description="largest application/json body")
    max_patch_voxels: int = Field(64 * MiB, ge=1, description="largest patch (voxels) accepted")
    dicom_max_files: int = Field(
        2048, ge=1, description="DICOM files (or frames of multi-frame files) in one series upload"
    )
    dicom_max_bytes: int = Field(
        768 * MiB, ge=1, description="DICOM bytes in one upload, a .zip's uncompressed content included"
    )
    dicom_max_zip_entries: int = Field(4096, ge=1, description="entries in an uploaded .zip, counted while reading")
    dicom_max_nodules: int = Field(32, ge=1, le=1024, description="nodule centres per series request")
    dicom_concurrency: int = Field(
        2, ge=1, description="series uploads prepared at once (each holds its files and decoded slices in memory)"
    )
    uncertainty: Literal["request", "always", "off"] = Field(
        "request",
        description="spread of P(malignant) over flipped views of each nodule: request (when ?uncertainty=true), "
        "always, or off; each view is one more patch through the model",
    )
    uncertainty_views: int = Field(8, ge=2, le=8, description="views per nodule when uncertainty is computed")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 503 when the queue is full")
    log_level: str = Field("info", description="log level of the service's own logger")

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return value or None

    @field_validator("model_version")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests pass their own Settings to create_app instead."""
    return Settings()
