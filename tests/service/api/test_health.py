"""Health, readiness, metrics and the model list."""

from __future__ import annotations

import json
import warnings

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_VERSION
from tests.service.api.conftest import make_client
from tests.service.api.test_predict import assert_problem, post_npy


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def sample(families, metric: str, **labels) -> float | None:
    for family in families.values():
        for s in family:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_healthz_and_readyz_when_loaded(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["provider"] == "CPUExecutionProvider"
    assert ready["model"]["version"] == TEST_VERSION
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):  # load balancers probe with HEAD
        assert client.head(path).status_code == 200


def test_metrics_cover_requests_stages_batches_and_model_info(client, hu_patch):
    assert post_npy(client, hu_patch).status_code == 200
    assert post_npy(client, hu_patch, "1,0,1").status_code == 422
    fams = scrape(client)
    assert sample(fams, "resmtnet_http_requests_total", route="/predict", status="200") == 1
    assert sample(fams, "resmtnet_http_requests_total", route="/predict", status="422") == 1
    assert sample(fams, "resmtnet_http_request_duration_seconds_count", route="/predict", status="200") == 1
    # the latency's input label: a CT series (its upload included) can be told from a patch
    labels = {"route": "/predict", "status": "200", "input": "patch"}
    assert sample(fams, "resmtnet_http_request_duration_seconds_count", **labels) == 1
    assert client.post("/predict", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    refused = {"route": "/predict", "status": "415", "input": "none"}  # refused before its input was read
    assert sample(scrape(client), "resmtnet_http_request_duration_seconds_count", **refused) == 1
    for name in (
        "resmtnet_queue_wait_seconds",
        "resmtnet_preprocess_seconds",
        "resmtnet_inference_seconds",
        "resmtnet_batch_size",
    ):
        assert sample(fams, f"{name}_count") == 1, name
    assert sample(fams, "resmtnet_queue_depth") == 0
    assert (
        sample(
            fams,
            "resmtnet_model_info",
            name="res_mtnet",
            version=TEST_VERSION,
            provider="CPUExecutionProvider",
        )
        == 1
    )
    assert sample(fams, "resmtnet_ready") == 1


def test_unknown_paths_share_one_metric_label(client):
    for path in ("/a", "/b", "/c"):
        client.get(path)
    assert sample(scrape(client), "resmtnet_http_requests_total", route="other", status="404") == 3


def test_cuda_required_without_cuda_is_not_ready_and_says_why(tiny_store, hu_patch):
    with make_client(tiny_store, provider="cuda") as c:
        r = c.get("/readyz")
        assert_problem(r, 503, "RESMTNET_PROVIDER=cuda")
        assert "CPUExecutionProvider" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
        assert_problem(post_npy(c, hu_patch), 503, "not ready")


def test_tampered_model_is_refused(store_copy, hu_patch):
    onnx = store_copy / "res_mtnet" / TEST_VERSION / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with make_client(store_copy) as c:
        assert_problem(c.get("/readyz"), 503, "sha256")
        assert_problem(post_npy(c, hu_patch), 503, "sha256")


def test_lone_request_waits_no_longer_than_the_max_delay(tiny_store, hu_patch):
    with make_client(tiny_store, max_delay_ms=40) as c:
        queue_ms = [post_npy(c, hu_patch).json()["timings_ms"]["queue"] for _ in range(3)]
    assert max(queue_ms) < 40 + 25


def test_request_past_its_deadline_is_504_and_never_reaches_the_model(tiny_store, hu_patch):
    with make_client(tiny_store, request_timeout_s=0.000001) as c:
        assert_problem(post_npy(c, hu_patch), 504, "deadline")
        fams = scrape(c)
    assert sample(fams, "resmtnet_batch_size_count") == 0
    assert sample(fams, "resmtnet_rejections_total", reason="deadline") == 1


def test_v1_models_lists_manifests_and_marks_the_served_one(store_copy):
    older = store_copy / "res_mtnet" / "0.0.0"
    older.mkdir()
    (older / "model.onnx").write_bytes(b"x")
    doc = json.loads((store_copy / "res_mtnet" / TEST_VERSION / "manifest.json").read_text())
    (older / "manifest.json").write_text(json.dumps({**doc, "version": "0.0.0"}))
    with make_client(store_copy) as c:
        models = c.get("/v1/models").json()["models"]
    assert [(m["version"], m["served"]) for m in models] == [("0.0.0", False), (TEST_VERSION, True)]
    assert models[1]["outputs"][0]["labels"] == ["benign", "malignant"]


def test_openapi_documents_both_request_bodies(client):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a duplicate operation id would print to stderr, outside the JSON log
        spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)


def test_once_shutdown_begins_readiness_turns_503_and_liveness_stays(tiny_store):
    """A load balancer stops sending new requests to a draining server; the orchestrator must not kill it."""
    with make_client(tiny_store) as client:
        assert client.get("/readyz").status_code == 200
        client.app.state.service.drain.begin()  # what SIGTERM does
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        assert "shutting down" in ready.json()["detail"]
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/healthz").status_code == 200
