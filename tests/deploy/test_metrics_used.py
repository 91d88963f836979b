"""Every metric the alert rules, the Grafana dashboard and the HPA use exists in a live scrape of the service."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.queries import Query, alert_queries, dashboard_queries, exposed_series, hpa_queries, problems
from tests.service.api.conftest import make_client


def post_patch(client, patch: np.ndarray, spacing: str):
    buf = io.BytesIO()
    np.save(buf, patch)
    return client.post("/predict", files={"patch": ("p.npy", buf.getvalue())}, data={"spacing": spacing})


@pytest.fixture(scope="module")
def scrape(tiny_store: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The service's /metrics after a served prediction and a refused one, so histograms and labels exist."""
    z, y, x = np.mgrid[:40, :40, :40] - 19.5
    patch = np.where(z**2 + y**2 + x**2 <= 25, 40.0, -850.0).astype(np.float32)  # a 10 mm nodule in lung
    with make_client(tiny_store) as client:
        assert post_patch(client, patch, "1,1,1").status_code == 200
        assert post_patch(client, patch, "1,0,1").status_code == 422
        text = client.get("/metrics").text
    return exposed_series(text)


QUERIES = alert_queries() + dashboard_queries() + hpa_queries()


@pytest.mark.parametrize("query", QUERIES, ids=[q.source for q in QUERIES])
def test_query_uses_only_series_and_labels_the_service_exposes(query: Query, scrape):
    assert problems(query, *scrape) == []


def test_histogram_series_resolve_to_their_family(scrape):
    types, labels = scrape
    assert types["resmtnet_http_request_duration_seconds_bucket"] == "histogram"
    assert types["resmtnet_batch_size_sum"] == types["resmtnet_batch_size_count"] == "histogram"
    assert types["resmtnet_http_requests_total"] == "counter"
    assert "resmtnet_batch_size" not in types, "a histogram's bare name is no series Prometheus stores"
    assert {"route", "status", "le"} <= labels["resmtnet_http_request_duration_seconds_bucket"]


def test_the_check_catches_unknown_series_labels_and_misused_functions(scrape):
    bad = {
        "rate(resmtnet_requests_total[5m])": "not exposed",
        'resmtnet_http_requests_total{method="GET"}': "no label method",
        "rate(resmtnet_queue_depth[5m])": "a gauge",
        "histogram_quantile(0.9, sum(rate(resmtnet_batch_size_bucket[5m])))": "drops le",
        "sum(rate(resmtnet_batch_size_count[5m]) by": "does not parse",
    }
    for expr, reason in bad.items():
        found = problems(Query("test", expr), *scrape)
        assert len(found) == 1 and reason in found[0], (expr, found)


def test_dashboard_shows_what_operators_need():
    used = " ".join(q.expr for q in dashboard_queries())
    for series in (
        "resmtnet_http_requests_total",  # request rate, errors
        "resmtnet_http_request_duration_seconds_bucket",  # p50 / p95 / p99
        "resmtnet_batch_size_sum",
        "resmtnet_queue_depth",
        "resmtnet_rejections_total",
        "resmtnet_model_info",  # provider
        "resmtnet_ready",
    ):
        assert series in used, series
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(resmtnet_http_request_duration" in used
