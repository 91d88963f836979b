import json
import logging

from service.logs import JsonFormatter, TextFormatter, configure, request_id_var
from tests.service.api.conftest import make_client, npy


def record(message: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("resmtnet", logging.INFO, __file__, 1, message, None, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_request_id_while_a_request_is_handled():
    formatter = JsonFormatter()
    assert "request_id" not in json.loads(formatter.format(record("idle")))
    token = request_id_var.set("abc123")
    try:
        line = json.loads(formatter.format(record("working", batch=4)))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "abc123" and line["message"] == "working" and line["batch"] == 4
    assert line["level"] == "info" and line["logger"] == "resmtnet" and line["time"].endswith("+00:00")


def test_text_lines_keep_every_field_of_the_json_ones():
    token = request_id_var.set("abc123")
    try:
        line = TextFormatter().format(record("prediction", event="audit", key_id="portal-a", status=200, nodules=None))
    finally:
        request_id_var.reset(token)
    assert " INFO resmtnet prediction " in line
    assert line.endswith('request_id="abc123" event="audit" key_id="portal-a" status=200 nodules=null')
    assert TextFormatter().format(record("idle")).endswith("INFO resmtnet idle")


def test_configure_sends_uvicorn_through_the_json_handler(capsys):
    configure("info")
    try:
        logging.getLogger("uvicorn.error").info("started")
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(err)["logger"] == "uvicorn.error"
    finally:
        logging.getLogger().handlers[:] = []


def test_one_audit_record_per_prediction_with_outcome_and_no_content(tiny_store, hu_patch, caplog):
    with make_client(tiny_store) as client, caplog.at_level(logging.INFO, logger="resmtnet.audit"):
        ok = client.post("/predict", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1"})
        bad = client.post("/predict", files={"patch": ("p.npy", b"garbage")}, data={"spacing": "1,1,1"})
        client.get("/healthz")
    audits = [r for r in caplog.records if r.name == "resmtnet.audit"]
    assert [a.status for a in audits] == [200, 400]
    first = audits[0]
    assert first.request_id == ok.headers["x-request-id"] and audits[1].request_id == bad.headers["x-request-id"]
    assert first.outcome == "ok" and audits[1].outcome == "client_error"
    assert first.model_version == "0.0.1" and first.route == "/predict" and first.duration_ms > 0
    assert first.input_kind == "patch-npy" and first.nodules == 1 and audits[1].nodules is None
    line = json.loads(JsonFormatter().format(first))
    assert set(line) >= {"request_id", "key_id", "status", "model_version", "input_kind", "duration_ms"}


def test_startup_names_what_the_clinical_rules_cannot_read(store_copy, caplog):
    """A model whose occupancy map the service cannot read is still served, with a warning instead of silence."""
    path = store_copy / "res_mtnet" / "0.0.1" / "manifest.json"
    manifest = json.loads(path.read_text())
    for output in manifest["outputs"]:
        if output["name"] == "occupancy":
            output["labels"] = ["solid_part", "nodule"]
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="resmtnet"), make_client(store_copy) as client:
        assert client.get("/readyz").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "res_mtnet 0.0.1: Lung-RADS sizes stay in the axial section: the occupancy output is not" in w for w in warnings
    ), warnings
