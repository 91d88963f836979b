"""Prometheus collectors on an injected registry. Few labels, units in names, never a patient or study id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

LATENCY_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# A stage (queue wait, preprocessing, one run on a GPU) takes well under a millisecond when all is well: its
# histograms start at 0.1 ms, or every observation would fall in the first bucket and p95 would read 1.9 ms.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, *LATENCY_BUCKETS)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512)


class Metrics:
    """Every collector the service exports. One instance per app, on the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_* (resident memory, start time, open files, CPU) and python_info: what shows a container
        # nearing its memory limit, or restarting between two scrapes, where no cAdvisor runs (docker compose).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.requests = Counter(
            "resmtnet_http_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "resmtnet_http_request_duration_seconds",
            "HTTP request latency, the body's upload included, by route, status and input (patch, series, tensor; "
            "none when not a prediction or refused before its input was read)",
            ["route", "status", "input"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "resmtnet_queue_wait_seconds",
            "time a patch waited for its batch to start",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.preprocess_seconds = Histogram(
            "resmtnet_preprocess_seconds",
            "parsing, resampling and windowing per request",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "resmtnet_inference_seconds",
            "one onnxruntime run per batch",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "resmtnet_batch_size",
            "patches per onnxruntime run (before padding)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge("resmtnet_queue_depth", "patches waiting for the model", registry=registry)
        self.rejections = Counter(
            "resmtnet_rejections_total",
            "requests refused before inference, by reason",
            ["reason"],
            registry=registry,
        )
        self.model_info = Gauge(
            "resmtnet_model_info",
            "the served model (value 1)",
            ["name", "version", "provider"],
            registry=registry,
        )
        self.ready = Gauge("resmtnet_ready", "1 when the model is loaded and warmed", registry=registry)
