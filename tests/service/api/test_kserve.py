"""The Open Inference Protocol (KServe v2) routes through the app: bodies built by hand, byte for byte, so that every
rule of the protocol and every refusal is pinned down here; Triton's own client drives a real server in
tests/e2e/test_kserve_tritonclient.py."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from service.imaging.preprocess import preprocess, volume_center_vox
from service.runtime.manifest import Manifest
from tests.conftest import TEST_VERSION
from tests.service.api.conftest import make_client, npy
from tests.service.api.test_health import sample, scrape

INFER = "/v2/models/res_mtnet/infer"
HEADS = ("malignancy", "nodule_type", "measurements", "attributes", "occupancy")
DIMS = {"malignancy": [2], "nodule_type": [3], "measurements": [3], "attributes": [6], "occupancy": [2, 16, 16, 16]}


def patches(n: int, seed: int = 0) -> np.ndarray:
    """n preprocessed patches as the model takes them: (n, 1, 32, 32, 32) in [0, 1]."""
    return np.random.default_rng(seed).random((n, 1, 32, 32, 32), dtype=np.float32)


def tensor(x: np.ndarray, **overrides) -> dict:
    return {"name": "patch", "datatype": "FP32", "shape": list(x.shape), **overrides}


def infer_json(client, x: np.ndarray, path: str = INFER, **request):
    return client.post(path, json={"inputs": [tensor(x, data=x.ravel().tolist())], **request})


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def infer_binary(client, x: np.ndarray, **request):
    header = {"inputs": [tensor(x, parameters={"binary_data_size": x.nbytes})], **request}
    body, headers = binary_body(header, x.tobytes())
    return client.post(INFER, content=body, headers=headers)


def outputs_of(response) -> dict[str, np.ndarray]:
    """Decode JSON and binary outputs alike, as a client would."""
    length = response.headers.get("inference-header-content-length")
    raw = response.content
    header = json.loads(raw[: int(length)] if length else raw)
    blob, offset, found = raw[int(length) :] if length else b"", 0, {}
    for out in header["outputs"]:
        assert out["datatype"] == "FP32"
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            values = np.asarray(out["data"], dtype=np.float32)
        else:
            values, offset = np.frombuffer(blob, "<f4", size // 4, offset), offset + size
        found[out["name"]] = values.reshape(out["shape"])
    assert offset == len(blob)
    return found


def assert_v2_error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and fragment in body["error"], body


def test_server_and_model_metadata_health_and_config(client):
    assert client.get("/v2").json() == {
        "name": "resmtnet-serve",
        "version": client.app.version,
        "extensions": ["binary_tensor_data", "model_configuration"],
    }
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/res_mtnet").json()
    assert meta == client.get(f"/v2/models/res_mtnet/versions/{TEST_VERSION}").json()
    assert meta["name"] == "res_mtnet" and meta["versions"] == [TEST_VERSION]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "patch", "datatype": "FP32", "shape": [-1, 1, 32, 32, 32]}]
    assert meta["outputs"] == [{"name": h, "datatype": "FP32", "shape": [-1, *DIMS[h]]} for h in HEADS]
    for path in ("/v2/models/res_mtnet/ready", f"/v2/models/res_mtnet/versions/{TEST_VERSION}/ready"):
        assert client.get(path).status_code == 200
    config = client.get("/v2/models/res_mtnet/config").json()
    assert config["max_batch_size"] == 4  # make_client's setting: what perf_analyzer sizes its batches by
    assert config["input"] == [{"name": "patch", "data_type": "TYPE_FP32", "dims": [1, 32, 32, 32]}]
    assert [o["dims"] for o in config["output"]] == [DIMS[h] for h in HEADS]


def test_json_and_binary_tensors_give_the_same_rows_as_one_patch_alone(client):
    x = patches(3)
    as_json = client.post(INFER, json={"id": "r1", "inputs": [tensor(x, data=x.tolist())]})  # nested data
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in as_json.headers
    body = as_json.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("res_mtnet", TEST_VERSION, "r1")
    assert [o["name"] for o in body["outputs"]] == list(HEADS)
    as_binary = infer_binary(client, x, parameters={"binary_data_output": True})
    assert as_binary.status_code == 200, as_binary.text
    assert as_binary.headers["content-type"] == "application/octet-stream"
    a, b = outputs_of(as_json), outputs_of(as_binary)
    alone = outputs_of(infer_json(client, x[1:2]))
    for head in HEADS:
        assert a[head].shape == (3, *DIMS[head])
        np.testing.assert_array_equal(a[head], b[head])
        np.testing.assert_allclose(alone[head][0], a[head][1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["malignancy"].sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(a["malignancy"][0], a["malignancy"][2])  # rows are not mixed up or repeated


def test_requested_outputs_come_in_the_asked_order_each_json_or_binary(client):
    x = patches(2)
    outputs = [{"name": "measurements", "parameters": {"binary_data": True}}, {"name": "malignancy"}]
    r = infer_binary(client, x, outputs=outputs)
    assert r.status_code == 200, r.text
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert [o["name"] for o in header["outputs"]] == ["measurements", "malignancy"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 2 * 3 * 4}
    assert "data" in header["outputs"][1]
    full = outputs_of(infer_json(client, x))
    got = outputs_of(r)
    for head in ("measurements", "malignancy"):
        np.testing.assert_array_equal(got[head], full[head])


@pytest.mark.parametrize("temperature", [None, 3.0])
def test_answers_equal_predicts_for_a_patch_already_on_the_model_grid(store_copy, temperature):
    """/predict resamples and windows a HU patch; v2 takes the same cube preprocessed by the client. With a
    calibration in the manifest, both report the calibrated malignancy (/predict keeps the raw one beside it)."""
    folder = store_copy / "res_mtnet" / TEST_VERSION
    if temperature is not None:
        doc = Manifest.read(folder).model_dump(mode="json")
        Manifest.model_validate({**doc, "calibration": {"temperature": temperature, "fitted_on": "test"}}).write(folder)
    with make_client(store_copy) as client:
        _v2_equals_predict(client, Manifest.read(folder).preprocessing, calibrated=temperature is not None)


def _v2_equals_predict(client, spec, calibrated: bool) -> None:
    z, y, x = (np.mgrid[:32, :32, :32] - 15.5) * spec.spacing_mm
    hu = np.where(z**2 + y**2 + x**2 < 36, 30.0, -850.0).astype(np.float32)
    hu += np.random.default_rng(1).normal(0, 15, hu.shape).astype(np.float32)
    spacing = f"{spec.spacing_mm},{spec.spacing_mm},{spec.spacing_mm}"
    r = client.post("/predict", files={"patch": ("p.npy", npy(hu))}, data={"spacing": spacing})
    assert r.status_code == 200, r.text
    nodule = r.json()["nodules"][0]
    cube, covered = preprocess(hu, (spec.spacing_mm,) * 3, volume_center_vox(hu.shape), spec)
    assert covered == 1.0
    got = outputs_of(infer_binary(client, cube[None, None]))
    for head in HEADS[:-1]:  # the map is not in /predict's answer
        np.testing.assert_allclose(got[head][0], list(nodule[head].values()), rtol=1e-5, atol=2e-6)
    raw = list(nodule["malignancy_raw"].values())
    assert (abs(got["malignancy"][0][1] - raw[1]) > 1e-3) == calibrated


def _with(x: np.ndarray, **changes) -> dict:
    return {"inputs": [tensor(x, data=x.ravel().tolist()) | changes]}


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        pytest.param(_with(patches(1), shape=[1, 1, 16, 16, 128]), "has shape [1, 1, 16, 16, 128]", id="shape"),
        pytest.param(_with(patches(1), shape=[1, 32, 32, 32]), "the model takes [-1, 1, 32, 32, 32]", id="rank"),
        pytest.param(_with(patches(1), datatype="FP64"), "datatype 'FP64'; the model takes FP32", id="datatype"),
        pytest.param({"inputs": []}, "missing input 'patch'", id="missing-input"),
        pytest.param(_with(patches(1), name="image"), "unknown input 'image'", id="unknown-input"),
        pytest.param(_with(patches(1), name=["patch"]), "unknown input ['patch']", id="a-list-for-a-name"),
        pytest.param(_with(patches(1), name={"a": 1}), "unknown input {'a': 1}", id="an-object-for-a-name"),
        pytest.param(_with(patches(1)) | {"id": 7}, "'id' must be a string", id="id-not-a-string"),
        pytest.param(_with(patches(1)) | {"ouputs": []}, "unknown member 'ouputs'", id="unknown-member"),
        pytest.param(_with(patches(1), contents=[]), "input 'patch': unknown member 'contents'", id="input-member"),
        pytest.param(
            _with(patches(1)) | {"outputs": [{"name": "malignancy", "binary": True}]},
            "output 'malignancy': unknown member 'binary'",
            id="output-member",
        ),
        pytest.param(
            _with(patches(1), data=patches(1).reshape(1, 32, 32, 32, 1).tolist()),
            "'data' is nested as [1, 32, 32, 32, 1]",
            id="nested-otherwise",
        ),
        pytest.param(_with(patches(1), data=[0.5] * 100), "'data' has 100 items", id="element-count"),
        pytest.param(_with(patches(1), data=["a"] * 32768), "numbers only", id="strings"),
        pytest.param(_with(patches(1), data=[True] + [0.5] * 32767), "no true or false", id="a-boolean-among-numbers"),
        pytest.param(
            _with(patches(1), data=[[[[[0.5] * 31 + [False]] * 32] * 32]]),
            "no true or false",
            id="a-boolean-nested",
        ),
        pytest.param(_with(patches(5), shape=[5, 1, 32, 32, 32]), "batch size 5 is outside 1 to 4", id="batch"),
        pytest.param(_with(patches(1)) | {"outputs": [{"name": "age"}]}, "unknown output 'age'", id="output"),
        pytest.param(_with(patches(1), parameters={"shared_memory_region": "r"}), "'shared_memory_region'", id="shm"),
        pytest.param({"inputs": "patch"}, "'inputs' must be a list", id="inputs-type"),
    ],
)
def test_protocol_errors_are_400_with_an_error_body(client, request_body, fragment):
    assert_v2_error(client.post(INFER, json=request_body), 400, fragment)


def test_a_member_given_twice_is_a_400(client):
    body = json.dumps({"inputs": [tensor(patches(1), data=patches(1).ravel().tolist())]})
    twice = body[:-1] + ', "inputs": []}'
    assert_v2_error(client.post(INFER, content=twice), 400, "the member 'inputs' is given twice")


def test_values_must_be_finite_and_the_windowed_patch_not_hu(client):
    x = patches(2)
    x[1, 0, 3, 3, 3] = np.nan
    assert_v2_error(infer_binary(client, x), 400, "NaN or infinite")
    text = json.dumps({"inputs": [tensor(patches(1), data=[float("inf")] * 32768)]})  # JSON's Infinity literal
    r = client.post(INFER, content=text, headers={"content-type": "application/json"})
    assert_v2_error(r, 400, "NaN or infinite")
    hu = np.full((1, 1, 32, 32, 32), -850.0, dtype=np.float32)
    assert_v2_error(infer_binary(client, hu), 400, "must be the preprocessed patch in [0, 1]")


def test_binary_sections_must_match_their_declared_sizes(client):
    x = patches(1)
    declared = {"inputs": [tensor(x, parameters={"binary_data_size": x.nbytes - 4})]}
    body, headers = binary_body(declared, x.tobytes()[:-4])
    assert_v2_error(client.post(INFER, content=body, headers=headers), 400, "needs 131072")
    body, headers = binary_body({"inputs": [tensor(x, parameters={"binary_data_size": x.nbytes})]}, x.tobytes())
    assert_v2_error(client.post(INFER, content=body[:-8], headers=headers), 400, "binary section holds")
    assert_v2_error(client.post(INFER, content=body + b"xx", headers=headers), 400, "add up to 131072")
    for length in (str(len(body) + 1), "0", "-5", "²"):  # '²' passes str.isdigit() but not int()
        r = client.post(INFER, content=body, headers={"Inference-Header-Content-Length": length.encode("latin-1")})
        assert_v2_error(r, 400, "Inference-Header-Content-Length")
    r = client.post(INFER, content=b"{not json", headers={"content-type": "application/json"})
    assert_v2_error(r, 400, "not valid JSON")


def test_unknown_model_or_version_is_404_and_other_v2_paths_keep_the_protocols_form(client):
    assert_v2_error(infer_json(client, patches(1), path="/v2/models/other/infer"), 404, "unknown model 'other'")
    r = infer_json(client, patches(1), path="/v2/models/res_mtnet/versions/9.9.9/infer")
    assert_v2_error(r, 404, "no version '9.9.9'")
    assert_v2_error(client.get("/v2/models/other"), 404, "unknown model")
    assert_v2_error(client.get("/v2/models/res_mtnet/versions/9.9.9/ready"), 404, "no version")
    assert_v2_error(client.get("/v2/no/such/route"), 404, "Not Found")
    assert_v2_error(client.get(INFER), 405, "Method Not Allowed")
    assert client.get("/no/such/route").headers["content-type"] == "application/problem+json"  # ours unchanged
    r = infer_json(client, patches(1), path=f"/v2/models/res_mtnet/versions/{TEST_VERSION}/infer")
    assert r.status_code == 200


def test_compressed_bodies_and_the_requests_own_timeout(client):
    x = patches(1)
    text = json.dumps({"inputs": [tensor(x, data=x.ravel().tolist())]}).encode()
    r = client.post(INFER, content=gzip.compress(text), headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert_v2_error(client.post(INFER, content=text, headers={"content-encoding": "br"}), 400, "not supported")
    twice = [("content-encoding", "gzip"), ("content-encoding", "identity")]
    assert_v2_error(client.post(INFER, content=gzip.compress(text), headers=twice), 400, "2 content-encoding headers")
    members = gzip.compress(text[:100]) + gzip.compress(text[100:])  # RFC 1952: members one after another
    assert client.post(INFER, content=members, headers={"content-encoding": "gzip"}).status_code == 200
    junk = gzip.compress(text) + b"junk"
    assert_v2_error(client.post(INFER, content=junk, headers={"content-encoding": "gzip"}), 400, "that are not gzip")
    padded = gzip.compress(text) + b"\0\0\n"  # trailing padding, as the gzip tool tolerates
    assert client.post(INFER, content=padded, headers={"content-encoding": "gzip"}).status_code == 200
    empty_members = gzip.compress(b"") * 100_000  # 2 MB: refused by count, not inflated member after member
    r = client.post(INFER, content=empty_members, headers={"content-encoding": "gzip"})
    assert_v2_error(r, 400, "more than 4096 members")
    deflated = zlib.compress(text) + b"junk"
    assert_v2_error(client.post(INFER, content=deflated, headers={"content-encoding": "deflate"}), 400, "after its end")
    assert infer_json(client, x, parameters={"timeout": 0}).status_code == 200  # 0: no timeout of its own
    assert_v2_error(infer_json(client, x, parameters={"timeout": 1}), 504, "deadline")  # 1 microsecond


def test_not_ready_is_503_with_the_reason(tiny_store):
    with make_client(tiny_store, provider="cuda") as c:  # CUDA required, absent here: loaded but not ready
        assert c.get("/v2/health/live").status_code == 200
        for r in (c.get("/v2/health/ready"), c.get("/v2/models/res_mtnet/ready"), infer_json(c, patches(1))):
            assert_v2_error(r, 503, "RESMTNET_PROVIDER=cuda")
            assert r.headers["retry-after"] == "5"


def test_overload_deadline_and_size_limits_answer_in_the_protocols_form(tiny_store):
    # a full queue's 503 in this form: tests/service/api/test_overload.py
    with make_client(tiny_store, request_timeout_s=1e-6) as c:
        assert_v2_error(infer_binary(c, patches(1)), 504, "deadline")
    with make_client(tiny_store, max_body_bytes=1000) as c:
        assert_v2_error(infer_binary(c, patches(1)), 413, "the limit is 1000 bytes")
    with make_client(tiny_store, max_json_bytes=1000) as c:  # infer bodies: 1000 + 4 binary patches at most
        assert_v2_error(infer_json(c, patches(1)), 413, "the inference request is")
        bomb = gzip.compress(b" " * (1 << 20))  # 1 MiB of spaces in 1 kB
        assert_v2_error(c.post(INFER, content=bomb, headers={"content-encoding": "gzip"}), 413, "decompressed")


def test_v2_routes_share_a_few_metric_labels(tiny_store):
    with make_client(tiny_store, workers=1) as client:  # one session: the rows in one batch (two would share them)
        for name in ("a", "b", "c"):
            client.get(f"/v2/models/{name}")
            infer_json(client, patches(1), path=f"/v2/models/{name}/versions/1/infer")
        assert infer_binary(client, patches(3)).status_code == 200
        fams = scrape(client)
    assert sample(fams, "resmtnet_http_requests_total", route="/v2/models/{name}", status="404") == 3
    assert sample(fams, "resmtnet_http_requests_total", route="/v2/models/{name}/infer", status="404") == 3
    assert sample(fams, "resmtnet_http_requests_total", route="/v2/models/{name}/infer", status="200") == 1
    assert sample(fams, "resmtnet_batch_size_count") == 1  # the rows went through the shared batcher together
    assert sample(fams, "resmtnet_batch_size_sum") == 3
    assert sample(fams, "resmtnet_queue_wait_seconds_count") == 3


def test_more_rows_than_the_queue_holds_is_a_413_and_nothing_runs(tiny_store):
    """A retry could never help it: not a 503, and none of its rows reaches the model."""
    with make_client(tiny_store, max_batch_size=8, max_queue=4) as client:
        assert_v2_error(infer_json(client, patches(8)), 413, "the model's queue holds at most 4")
        metrics = scrape(client)
        assert sample(metrics, "resmtnet_batch_size_count") in (None, 0.0)
        assert infer_json(client, patches(4)).status_code == 200
