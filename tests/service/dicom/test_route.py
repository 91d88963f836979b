"""POST /predict with a CT series, through the app (real onnxruntime session): results per nodule in order, the
series' geometry, 4xx for every unusable upload, and nothing identifying in responses or logs."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient

from service.api.schemas import PredictResponse
from service.errors import PROBLEM_JSON
from tests.service.api.conftest import make_client
from tests.service.dicom.builders import form_files, shear, small_chest, tilt, world_centers, write, zip_bytes

IDENTIFYING = {
    "patient_name": "DOE^JANE^QX7",
    "patient_id": "PID-7731-QX7",
    "birth_date": "19010203",
    "accession_number": "ACC-99-QX7",
    "institution": "QX7 SECRET CLINIC",
    "study_date": "20230405",
}


@pytest.fixture(scope="module")
def client(tiny_store) -> Iterator[TestClient]:
    with make_client(tiny_store, dicom_max_bytes=32 << 20, dicom_max_nodules=4) as c:
        yield c


def post(client: TestClient, files, centers, **data):
    fields = {"centers": centers if isinstance(centers, str) else json.dumps(centers), **data}
    return client.post("/predict", files=files, data=fields)


def assert_problem(response, status: int, fragment: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert fragment in body["detail"], body
    return body


def test_series_upload_answers_every_nodule_in_the_order_given(client, phantom, series_paths):
    world = world_centers(phantom)[0]
    centers = [{"i": 32, "j": 30.5, "k": 20}, world]
    r = post(client, form_files(series_paths), centers)
    assert r.status_code == 200, r.text
    body = r.json()
    PredictResponse.model_validate(body)
    first, second = body["nodules"]
    assert (first["center"]["i"], first["center"]["j"], first["center"]["k"]) == (32, 30.5, 20)
    assert second["center"]["x"] == pytest.approx(world["x"], abs=1e-3)
    assert set(first["measurements"]) == {"diameter_mm", "volume_mm3", "solid_diameter_mm"}
    series = body["series"]
    assert series["slices"] == 40 and series["rows"] == series["columns"] == 64
    assert series["spacing_mm"] == [1.25, 0.8, 0.8] and series["orientation"]["label"] == "axial"
    assert set(body["timings_ms"]) == {"preprocess", "queue", "inference", "total"}


def test_v1_route_takes_a_zip(client, phantom, series_paths):
    files = [("series", ("scan.zip", zip_bytes(series_paths), "application/zip"))]
    r = client.post("/v1/predict", files=files, data={"centers": json.dumps(world_centers(phantom))})
    assert r.status_code == 200, r.text
    assert len(r.json()["nodules"]) == 1


def test_a_gantry_tilted_upload_answers_as_its_untilted_twin(client, tmp_path):
    chest = small_chest(4, shape=(20, 100, 64), spacing=(2.5, 0.8, 0.8), n_nodules=0)
    x0, y0, z0 = chest.origin_xyz_mm
    centers = [{"x": x0 + 31.5 * 0.8, "y": y0 + 49.5 * 0.8, "z": z0 + 9.5 * 2.5}]
    straight = post(client, form_files(write(chest, tmp_path / "straight")), centers)
    sheared = shear(write(chest, tmp_path / "sheared"), rows=80, rows_per_slice=1)
    tilted = post(client, form_files(sheared), centers)
    assert straight.status_code == 200 and tilted.status_code == 200, tilted.text
    a, b = straight.json()["nodules"][0], tilted.json()["nodules"][0]
    assert tilted.json()["series"]["gantry_tilt_deg"] == 17.74 and tilted.json()["series"]["rows"] == 80
    assert any("gantry tilt of 17.7 degrees" in w for w in b["warnings"])
    assert b["center"]["j"] != a["center"]["j"]  # the tilted series' own rows
    for head in ("malignancy_raw", "nodule_type", "measurements", "attributes"):
        assert b[head] == pytest.approx(a[head], rel=1e-4, abs=1e-4), head


@pytest.fixture(scope="module")
def tilted(phantom, tmp_path_factory):
    """Steeper than a gantry tilts: 1 mm sideways per 1.25 mm slice, 38.7 degrees."""
    return tilt(write(phantom, tmp_path_factory.mktemp("tilted")), 1.0)


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.dcm", b"\0" * (40 << 20))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "fragment"),
    [
        ("garbage file", 400, "is not a DICOM file"),
        ("damaged zip", 400, ".zip is damaged"),
        ("zip bomb", 413, "times its compressed size"),
        ("too many centers", 413, "at most 4"),
        ("tilted", 422, "gantry tilt of 38.7 degrees"),
        ("outside", 422, "centers[1]"),
        ("no centers", 422, "'centers' is required"),
        ("patch and series", 422, "not both"),
        ("series as text", 422, "must be file parts"),
        ("unknown field", 422, "unknown form field"),
        ("bad series_index", 422, "series_index must be a whole number"),
        ("both selectors", 422, "not both"),
        ("two series", 422, "holds 2 CT series"),
    ],
)
def test_every_unusable_upload_gets_its_4xx(client, phantom, series_paths, tilted, tmp_path, case, status, fragment):
    files, centers, data = form_files(series_paths), world_centers(phantom), {}
    if case == "garbage file":
        files = files + [("series", ("x.dcm", b"hello", "application/dicom"))]
    elif case == "damaged zip":
        files = [("series", ("s.zip", zip_bytes(series_paths)[:5000], "application/zip"))]
    elif case == "zip bomb":
        files = [("series", ("s.zip", _bomb(), "application/zip"))]
    elif case == "too many centers":
        centers = centers * 5
    elif case == "tilted":
        files = form_files(tilted)
    elif case == "outside":
        centers = centers + [{"i": 10, "j": 10, "k": 400}]
    elif case == "no centers":
        centers = ""
    elif case == "patch and series":
        files = files + [("patch", ("p.npy", b"x", "application/octet-stream"))]
    elif case == "series as text":
        files, data = files[:1], {"series": "hello"}
    elif case == "unknown field":
        data = {"spacing": "1,1,1"}
    elif case == "bad series_index":
        data = {"series_index": "first"}
    elif case == "both selectors":
        data = {"series_index": "0", "series_uid": "1.2.3"}
    elif case == "two series":
        files = files + form_files(write(small_chest(4), tmp_path, series_number=3))
    r = post(client, files, centers, **data)
    body = assert_problem(r, status, fragment)
    if case == "two series":
        assert [s["index"] for s in body["series"]] == [0, 1]


def test_nothing_identifying_leaves_the_service(client, tiny_store, tmp_path, caplog, recwarn):
    """Names, IDs, dates, institution and UIDs filled in: absent from every response and every log record."""
    phantom = small_chest(6)
    paths = write(phantom, tmp_path / "a", **IDENTIFYING)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    secrets = list(IDENTIFYING.values()) + [
        header.StudyInstanceUID,
        header.SeriesInstanceUID,
        header.SOPInstanceUID,
        header.FrameOfReferenceUID,
        "DOE",
        "QX7",
    ]
    other = write(small_chest(7), tmp_path / "b", series_number=9, **IDENTIFYING)
    caplog.set_level(logging.DEBUG)
    responses = [
        post(client, form_files(paths), world_centers(phantom)),
        post(client, form_files(paths + other), world_centers(phantom)),
        post(client, form_files(paths), world_centers(phantom), series_uid=header.SeriesInstanceUID),
        post(client, form_files(paths), world_centers(phantom), series_uid="1.2.3.4"),
        post(client, form_files(tilt(paths, 0.4)), world_centers(phantom)),  # tilted: read with a warning
        post(client, form_files(tilt(paths, 1.0)), world_centers(phantom)),  # now 1.4 mm per slice: too steep
    ]
    assert [r.status_code for r in responses] == [200, 422, 200, 422, 200, 422]
    seen = "\n".join(
        [r.text for r in responses]
        + [str(dict(r.headers)) for r in responses]
        + [caplog.text]
        + [f"{rec.getMessage()} {rec.args}" for rec in caplog.records]
        + [str(w.message) for w in recwarn]
    )
    for secret in secrets:
        assert secret not in seen, secret
    metrics = client.get("/metrics").text
    assert not any(secret in metrics for secret in secrets)


def test_no_temporary_file_is_left_behind(client, phantom, series_paths, tilted):
    """Everything is read in memory: neither a good upload nor a refused one leaves a file in the temp folder."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.gettempdir())
    before = set(folder.iterdir())
    centers = world_centers(phantom)
    assert post(client, [("series", ("s.zip", zip_bytes(series_paths), "application/zip"))], centers).status_code == 200
    assert post(client, form_files(tilted), centers).status_code == 422
    assert post(client, [("series", ("s.zip", _bomb(), "application/zip"))], centers).status_code == 413
    assert set(folder.iterdir()) == before


def test_a_full_gate_answers_503_instead_of_waiting_past_the_deadline(tiny_store, phantom, series_paths):
    """Series being prepared hold the gate; a request that cannot get in before its deadline is refused."""
    import asyncio

    with make_client(tiny_store, dicom_concurrency=1, request_timeout_s=0.5) as c:
        gate = asyncio.Semaphore(0)  # held by someone else for good
        c.app.state.dicom_gate = gate
        r = post(c, form_files(series_paths), world_centers(phantom))
        metrics = c.get("/metrics").text
    assert_problem(r, 503, "other CT uploads are being prepared")
    assert r.headers["retry-after"]
    assert 'resmtnet_rejections_total{reason="ct_busy"} 1.0' in metrics


def _prepared_count(client: TestClient) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "resmtnet_preprocess_seconds_count":
                return s.value
    return 0.0


def test_what_needs_no_series_is_refused_before_the_series_is_prepared(tiny_store, series_paths, phantom):
    with make_client(tiny_store, max_queue=8) as c:
        before = _prepared_count(c)
        bad = post(c, form_files(series_paths), world_centers(phantom), clinical='{"age": "old"}')
        assert bad.status_code == 422 and bad.json()["detail"].startswith("clinical:")
        many = post(c, form_files(series_paths), world_centers(phantom) * 5)  # 5 runs > half of a queue of 8
        assert many.status_code == 413 and "at most 4" in many.json()["detail"]
        assert _prepared_count(c) == before


def test_more_series_files_than_the_limit_get_413_however_many_more(tiny_store, phantom, series_paths):
    """Just over the limit, the series reader counts the files; far over it, the form reader stops first: 413 both."""
    centers = {"centers": json.dumps(world_centers(phantom))}
    with make_client(tiny_store, dicom_max_files=10) as client:
        for count in (11, 40):
            r = client.post("/predict", files=form_files(series_paths[:count]), data=centers)
            assert r.status_code == 413, r.text
            assert r.headers["content-type"] == PROBLEM_JSON
            assert "at most 10" in r.json()["detail"]
