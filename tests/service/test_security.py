"""Authentication, security headers, CORS and the docs switch, through the real app."""

import hashlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api.conftest import make_client, npy

KEY, OLD = "rmt_portal-a-key", "rmt_old-key"
ENTRIES = ",".join(
    [
        f"portal-a:sha256:{hashlib.sha256(KEY.encode()).hexdigest()}",
        f"old:sha256:{hashlib.sha256(OLD.encode()).hexdigest()}:revoked",
    ]
)


@pytest.fixture
def client(tiny_store):
    with make_client(tiny_store) as client:
        yield client


@pytest.fixture
def secured(tiny_store):
    with make_client(tiny_store, api_keys=ENTRIES) as client:
        yield client


def predict(client, hu_patch, key: str | None = None, path: str = "/predict"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    files = {"patch": ("p.npy", npy(hu_patch), "application/octet-stream")}
    return client.post(path, files=files, data={"spacing": "1,1,1"}, headers=headers)


def test_valid_key_predicts(secured, hu_patch):
    assert predict(secured, hu_patch, KEY).status_code == 200


def test_missing_and_wrong_keys_get_401_with_a_challenge(secured, hu_patch):
    for key in (None, "rmt_not-a-key"):
        r = predict(secured, hu_patch, key)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in r.json()["detail"] and (key is None or key not in r.text)


def test_revoked_key_gets_403_naming_the_key_id_not_the_key(secured, hu_patch):
    r = predict(secured, hu_patch, OLD)
    assert r.status_code == 403 and "'old'" in r.json()["detail"] and OLD not in r.text


def test_open_inference_protocol_refusals_use_its_error_body(secured):
    r = secured.get("/v2/models/res_mtnet")
    assert r.status_code == 401 and set(r.json()) == {"error"}


def test_health_is_open_metrics_open_by_default(secured):
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs"):
        assert secured.get(path).status_code == 200, path
    assert secured.get("/v1/models").status_code == 401


def test_metrics_can_require_a_key_and_count_refusals(tiny_store, hu_patch):
    with make_client(tiny_store, api_keys=ENTRIES, metrics_require_key=True) as client:
        assert client.get("/metrics").status_code == 401
        predict(client, hu_patch, OLD)
        text = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    samples = {
        s.labels.get("reason"): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "resmtnet_rejections"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert samples["unauthorized"] >= 1 and samples["forbidden"] == 1


def test_no_keys_configured_lets_everyone_in(client, hu_patch):
    assert predict(client, hu_patch).status_code == 200


def test_security_headers_on_answers_and_refusals(secured, hu_patch):
    for r in (predict(secured, hu_patch, KEY), predict(secured, hu_patch), secured.get("/healthz")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "strict-transport-security" not in r.headers


def test_hsts_when_configured(tiny_store):
    with make_client(tiny_store, hsts_seconds=31536000) as client:
        assert client.get("/healthz").headers["strict-transport-security"] == "max-age=31536000"


def test_refusals_before_the_body_is_read_carry_the_security_headers_too(tiny_store, hu_patch):
    """The 413 for a declared length over the limit is answered by the outer middleware, before any route."""
    with make_client(tiny_store, max_body_bytes=1000, hsts_seconds=600) as client:
        r = predict(client, hu_patch)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["strict-transport-security"] == "max-age=600"


def test_cors_is_closed_by_default_and_opens_to_configured_origins(client, tiny_store):
    preflight = {"Origin": "https://portal.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    with make_client(tiny_store, cors_origins="https://portal.example", api_keys=ENTRIES) as open_client:
        r = open_client.options(
            "/predict", headers={**preflight, "Access-Control-Request-Headers": "authorization"}
        )  # a preflight carries no key: it must not be refused
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://portal.example"
        other = open_client.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_can_be_switched_off(tiny_store):
    with make_client(tiny_store, docs_enabled=False) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path


def test_a_malformed_key_entry_stops_the_start(tiny_store):
    with pytest.raises(ValueError, match="must read"):
        make_client(tiny_store, api_keys="portal-a:plaintext-key")
