"""What an operator relies on, against the real server process: its log is JSON a collector can parse and an audit
trail a SIEM can join, it writes nothing outside its model store and calls nothing out, and a key file that would
leave it open stops the start."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.servers import npy, running_server

pytestmark = pytest.mark.slow

KEY = "rmt_operations-test-key"
ENTRY = f"portal-a:sha256:{hashlib.sha256(KEY.encode()).hexdigest()}"
UPSTREAM_ID = "0b5f3c1e-8d2a-4f6b-9c47-2e81d5a0f3b9"  # an ingress's request id (Envoy's are UUIDs)


def test_the_log_is_json_lines_with_an_audit_trail_and_nothing_is_written_under_home(
    tiny_store, hu_patch, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # onnxruntime's telemetry would write its device id here
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))  # or here, where set
    monkeypatch.delenv(
        "ORT_DISABLE_TELEMETRY", raising=False
    )  # set in this process (it imported service): the server must set it
    log = tmp_path / "server.log"
    with running_server(tiny_store, log, api_keys=ENTRY) as running:
        auth = {"Authorization": f"Bearer {KEY}"}
        ok = httpx.post(
            f"{running.url}/predict",
            files={"patch": ("p.npy", npy(hu_patch))},
            data={"spacing": "1,1,1"},
            headers={**auth, "X-Request-ID": UPSTREAM_ID},
            timeout=60,
        )
        denied = httpx.get(f"{running.url}/v1/models", headers={"Authorization": "Bearer wrong"})
        odd_id = httpx.get(f"{running.url}/predict", headers={"X-Request-ID": "MRN-0012345678"})
        assert (ok.status_code, denied.status_code, odd_id.status_code) == (200, 401, 401)
        running.proc.terminate()
        running.proc.wait(timeout=30)
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line: one JSON object, none of onnxruntime's own
    audits = {r["request_id"]: r for r in records if r.get("event") == "audit"}
    prediction = audits[ok.headers["x-request-id"]]
    assert prediction["message"] == "prediction" and prediction["key_id"] == "portal-a"
    assert prediction["client"] == "127.0.0.1" and prediction["upstream_request_id"] == UPSTREAM_ID
    refused = audits[denied.headers["x-request-id"]]
    assert refused["message"] == "access_denied" and refused["route"] == "/v1/models" and refused["status"] == 401
    refused_predict = audits[odd_id.headers["x-request-id"]]
    assert refused_predict["message"] == "access_denied" and refused_predict["route"] == "/predict"
    assert refused_predict["upstream_request_id"] is None  # not an ingress's id: not logged
    assert "0012345678" not in log.read_text()
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("content", ["", "# keys for the portals go here\n"])
def test_a_key_file_without_an_entry_stops_the_start_with_one_log_line(tiny_store, tmp_path, content):
    keys_file = tmp_path / "api_keys"
    keys_file.write_text(content)
    env = {
        **os.environ,
        "RESMTNET_MODEL_STORE": str(tiny_store),
        "RESMTNET_PROVIDER": "cpu",
        "RESMTNET_API_KEYS_FILE": str(keys_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and "holds no key entry" in record["message"]
    assert str(keys_file) in record["message"]
