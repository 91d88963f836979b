"""POST /predict end to end through the app (real onnxruntime session on an exported Res-MTNet)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from service.api.schemas import PredictResponse
from service.errors import PROBLEM_JSON
from service.runtime.manifest import Manifest
from tests.conftest import TEST_VERSION
from tests.service.api.conftest import make_client, npy


def post_npy(client, array, spacing="1,1,1", **extra):
    data = {"spacing": spacing} if spacing is not None else {}
    data.update(extra)
    return client.post("/predict", files={"patch": ("p.npy", npy(array), "application/octet-stream")}, data=data)


def assert_problem(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status and fragment in body["detail"], body


def test_npy_patch_gets_every_head_labelled_from_the_manifest(client, hu_patch, tiny_store):
    r = post_npy(client, hu_patch)
    assert r.status_code == 200, r.text
    body = PredictResponse.model_validate(r.json()).model_dump()
    manifest = Manifest.read(tiny_store / "res_mtnet" / TEST_VERSION)
    (nodule,) = body["nodules"]
    heads = [spec for spec in manifest.outputs if spec.per_label]
    assert [spec.name for spec in heads] == ["malignancy", "nodule_type", "measurements", "attributes"]
    for spec in heads:
        assert list(nodule[spec.name]) == spec.labels
    assert "occupancy" not in nodule and "occupancy" not in body["units"]  # the map is the service's, not shown
    assert sum(nodule["malignancy"].values()) == pytest.approx(1, abs=1e-4)
    assert sum(nodule["nodule_type"].values()) == pytest.approx(1, abs=1e-4)
    assert all(1 <= v <= 5 for v in nodule["attributes"].values())
    assert body["units"]["measurements"] == {
        "diameter_mm": "mm",
        "volume_mm3": "mm3",
        "solid_diameter_mm": "mm",
    }
    assert body["model"] == {"name": "res_mtnet", "version": TEST_VERSION, "sha256": manifest.sha256}
    assert nodule["center"] == {"i": 19.5, "j": 19.5, "k": 19.5}
    assert set(body["timings_ms"]) == {"preprocess", "queue", "inference", "total"}
    assert "Research use only" in body["notice"]
    assert r.headers["x-request-id"] == body["request_id"]


def test_v1_alias_and_json_body_give_the_same_answer_as_npy(client, hu_patch):
    small = hu_patch[10:30, 10:30, 10:30]
    a = post_npy(client, small, "1,1,1").json()["nodules"][0]
    b = client.post("/v1/predict", json={"patch": small.tolist(), "spacing": [1, 1, 1]}).json()["nodules"][0]
    for head in ("malignancy", "nodule_type", "measurements", "attributes"):
        for label, value in a[head].items():
            assert b[head][label] == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_labels_come_from_the_manifest_not_from_code(store_copy, hu_patch):
    folder = store_copy / "res_mtnet" / TEST_VERSION
    doc = json.loads((folder / "manifest.json").read_text())
    doc["outputs"][0]["labels"] = ["not_cancer", "cancer"]
    (folder / "manifest.json").write_text(json.dumps(doc))
    with make_client(store_copy) as c:
        nodule = post_npy(c, hu_patch).json()["nodules"][0]
    assert list(nodule["malignancy"]) == ["not_cancer", "cancer"]


def test_spacing_changes_the_resampling(client, hu_patch):
    fine = post_npy(client, hu_patch, "1,1,1").json()["nodules"][0]["measurements"]
    coarse = post_npy(client, hu_patch, "2,2,2").json()["nodules"][0]["measurements"]
    assert fine != coarse


def test_partial_field_of_view_and_thick_slices_are_warned(client, hu_patch):
    nodule = post_npy(client, hu_patch[15:25], "3,1,1").json()["nodules"][0]
    assert any("field of view" in w for w in nodule["warnings"])
    assert any("over 2.5 mm" in w for w in nodule["warnings"])


def test_explicit_center_is_used(client, hu_patch):
    nodule = post_npy(client, hu_patch, center='{"i": 10, "j": 12, "k": 14}').json()["nodules"][0]
    assert nodule["center"] == {"i": 10.0, "j": 12.0, "k": 14.0}


@pytest.mark.parametrize(
    ("array", "spacing", "status", "fragment"),
    [
        (np.zeros((40, 40), np.float32), "1,1,1", 422, "3-D"),
        (np.zeros((2, 40, 40, 40), np.float32), "1,1,1", 422, "3-D"),
        (np.full((8, 8, 8), np.nan, np.float32), "1,1,1", 422, "NaN or infinite"),
        (np.full((8, 8, 8), np.inf, np.float32), "1,1,1", 422, "NaN or infinite"),
        (np.zeros((8, 8, 8), np.complex64), "1,1,1", 422, "dtype complex64"),
        (np.zeros((8, 8, 8), "U3"), "1,1,1", 422, "dtype"),
        (np.random.default_rng(0).random((8, 8, 8)), "1,1,1", 422, "Hounsfield"),
        (np.zeros((8, 8, 8), np.float32), None, 422, "spacing is required"),
        (np.zeros((8, 8, 8), np.float32), "1,0,1", 422, "positive"),
        (np.zeros((8, 8, 8), np.float32), "1,-1,1", 422, "positive"),
        (np.zeros((8, 8, 8), np.float32), "1,1", 422, "three values"),
    ],
)
def test_bad_patches_are_refused_precisely(client, array, spacing, status, fragment):
    assert_problem(post_npy(client, array, spacing), status, fragment)


def test_empty_truncated_and_garbage_files_are_400(client, hu_patch):
    for payload, fragment in [
        (b"", "empty"),
        (npy(hu_patch)[:-100], "truncated"),
        (b"\x00garbage" * 10, "not a .npy"),
    ]:
        r = client.post("/predict", files={"patch": ("p.npy", payload)}, data={"spacing": "1,1,1"})
        assert_problem(r, 400, fragment)


def test_wrong_content_type_is_415(client):
    assert_problem(client.post("/predict", content=b"abc", headers={"content-type": "text/plain"}), 415, "text/plain")
    assert_problem(client.post("/predict", content=b"abc"), 415, "not supported")


def test_a_compressed_body_is_a_415_that_says_so(client, hu_patch):
    body = json.dumps({"patch": hu_patch.tolist(), "spacing": [1, 1, 1]}).encode()
    for content in (gzip.compress(body), body):  # compressed, and plain but labelled compressed
        r = client.post(
            "/predict", content=content, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
        assert_problem(r, 415, "Content-Encoding 'gzip' is not accepted on /predict")
    for coding in ("identity", ""):
        headers = {"content-type": "application/json", "content-encoding": coding}
        assert client.post("/predict", content=body, headers=headers).status_code == 200


def test_a_header_sent_twice_is_a_400_not_a_guess(client, hu_patch):
    body = json.dumps({"patch": hu_patch.tolist(), "spacing": [1, 1, 1]}).encode()
    json_type = ("content-type", "application/json")
    for headers, name in (
        ([json_type, ("content-type", "text/plain")], "content-type"),
        ([json_type, json_type], "content-type"),
        ([json_type, ("content-encoding", "identity"), ("content-encoding", "gzip")], "content-encoding"),
    ):
        assert_problem(client.post("/predict", content=body, headers=headers), 400, f"2 {name} headers; send one")
    assert client.post("/predict", content=body, headers=[json_type]).status_code == 200


def test_empty_and_malformed_json_are_400(client):
    r = client.post("/predict", content=b"", headers={"content-type": "application/json"})
    assert_problem(r, 400, "empty")
    r = client.post("/predict", content=b'{"patch": [[[1', headers={"content-type": "application/json"})
    assert_problem(r, 400, "not valid JSON")


@pytest.mark.parametrize(
    ("members", "twice"),
    [
        ('"spacing": [1, 1, 1], "spacing": [2, 2, 2]', "spacing"),
        ('"spacing": [1, 1, 1], "center": {"i": 1, "j": 2, "k": 3, "i": 4}', "i"),
        ('"spacing": [1, 1, 1], "clinical": {"age": 60, "age": 70}', "age"),
    ],
)
def test_a_json_member_given_twice_is_refused_not_resolved_to_its_last_value(client, hu_patch, members, twice):
    content = f'{{"patch": {json.dumps(hu_patch.tolist())}, {members}}}'
    r = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert_problem(r, 400, f"the member '{twice}' is given twice")


@pytest.mark.parametrize(
    ("field", "value"),
    [("center", '{"i": 1, "j": 2, "k": 3, "i": 4}'), ("clinical", '{"age": 60, "age": 70}')],
)
def test_a_member_given_twice_in_a_form_fields_json_is_a_422(client, hu_patch, field, value):
    r = client.post("/predict", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1", field: value})
    assert_problem(r, 422, "is given twice in one object")


def test_missing_patch_field_is_422(client):
    assert_problem(client.post("/predict", files={"spacing": (None, "1,1,1")}), 422, "'patch'")
    r = client.post("/predict", data={"spacing": "1,1,1"}, files={"x": ("a", b"1")})
    assert_problem(r, 422, "unknown form field 'x'")
    r = client.post("/predict", files={"patch": (None, "text"), "spacing": (None, "1,1,1")})
    assert_problem(r, 422, "file part")
    assert_problem(client.post("/predict", data={"patch": "x"}), 415, "x-www-form-urlencoded")


def test_too_large_bodies_and_patches_are_413(tiny_store, hu_patch):
    with make_client(tiny_store, max_body_bytes=10_000) as c:
        assert_problem(post_npy(c, hu_patch), 413, "limit")
    with make_client(tiny_store, max_patch_voxels=1000) as c:
        assert_problem(post_npy(c, hu_patch), 413, "64000 voxels")
        r = c.post("/predict", json={"patch": hu_patch.tolist(), "spacing": [1, 1, 1]})
        assert_problem(r, 413, "voxels")
    with make_client(tiny_store, max_json_bytes=1000) as c:
        r = c.post("/predict", json={"patch": hu_patch.tolist(), "spacing": [1, 1, 1]})
        assert_problem(r, 413, "JSON bodies")


def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.get("/nope"), 404, "Not Found")
    assert client.get("/predict").status_code == 405
