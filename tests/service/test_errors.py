"""An unexpected error is a problem+json 500 that names the request and still carries the security headers."""

from service.api.routes import predict
from tests.service.api.conftest import make_client


def test_an_unexpected_error_is_a_500_with_the_request_id_and_the_security_headers(tiny_store, monkeypatch):
    async def broken(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(predict, "_read_patch", broken)
    with make_client(tiny_store) as client:
        r = client.post("/predict", json={"patch": [[[0]]], "spacing": [1, 1, 1]})
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    request_id = r.headers["x-request-id"]
    assert r.json()["detail"] == f"internal error in request {request_id}" and "a bug" not in r.text
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
