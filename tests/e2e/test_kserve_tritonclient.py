"""Triton's own HTTP client (tritonclient, from PyPI) against the real server: what a hospital's existing Triton or
KServe client would do, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.imaging.preprocess import preprocess, volume_center_vox
from service.runtime.manifest import Manifest
from tests.conftest import TEST_VERSION
from tests.e2e.servers import npy, server

pytestmark = pytest.mark.slow

MODEL = "res_mtnet"
HEADS = ("malignancy", "nodule_type", "measurements", "attributes")  # the labelled heads /predict answers with
OUTPUTS = (*HEADS, "occupancy")


@pytest.fixture(scope="module")
def url(tiny_store: Path) -> Iterator[str]:
    with server(tiny_store, max_batch_size="8", max_delay_ms="20", intra_op_threads="1") as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def manifest(tiny_store: Path) -> Manifest:
    return Manifest.read(tiny_store / MODEL / TEST_VERSION)


def hu_patches(n: int, spacing_mm: float) -> np.ndarray:
    """n HU patches already on the model's grid (32^3 at the manifest spacing): nodules of growing size."""
    z, y, x = (np.mgrid[:32, :32, :32] - 15.5) * spacing_mm
    rng = np.random.default_rng(3)
    out = [np.where(z**2 + y**2 + x**2 < (3 + 2 * i) ** 2, 30.0, -850.0) + rng.normal(0, 15, z.shape) for i in range(n)]
    return np.stack(out).astype(np.float32)


def patch_input(x: np.ndarray, binary: bool, name: str = "patch", datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def infer(client, x: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    outputs = [triton.InferRequestedOutput(h, binary_data=binary) for h in HEADS]
    result = client.infer(MODEL, [patch_input(x, binary)], outputs=outputs, request_id="42")
    assert result.get_response()["id"] == "42"
    return {h: result.as_numpy(h) for h in HEADS}


def test_server_and_model_are_live_ready_and_described(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, TEST_VERSION)
    assert not client.is_model_ready("no_such_model")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["versions"] == [TEST_VERSION] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "patch", "datatype": "FP32", "shape": [-1, 1, 32, 32, 32]}]
    assert [(o["name"], o["datatype"], o["shape"][0]) for o in meta["outputs"]] == [(h, "FP32", -1) for h in OUTPUTS]
    assert client.get_model_config(MODEL)["max_batch_size"] == 8


def test_a_batch_as_json_or_binary_tensors_equals_predict_patch_by_patch(client, url, manifest):
    spec = manifest.preprocessing
    hu = hu_patches(4, spec.spacing_mm)
    cubes = np.stack([preprocess(p, (spec.spacing_mm,) * 3, volume_center_vox(p.shape), spec)[0] for p in hu])
    x = cubes[:, None]  # (4, 1, 32, 32, 32)
    as_json, as_binary = infer(client, x, binary=False), infer(client, x, binary=True)
    spacing = ",".join([str(spec.spacing_mm)] * 3)
    for i, patch in enumerate(hu):
        r = httpx.post(f"{url}/predict", files={"patch": ("p.npy", npy(patch))}, data={"spacing": spacing})
        assert r.status_code == 200, r.text
        nodule = r.json()["nodules"][0]
        for head in HEADS:
            assert as_json[head].shape == as_binary[head].shape == (4, len(nodule[head]))
            np.testing.assert_allclose(as_binary[head][i], as_json[head][i], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(as_binary[head][i], list(nodule[head].values()), rtol=1e-5, atol=2e-6)
    assert len({round(float(v), 5) for v in as_binary["measurements"][:, 0]}) == 4  # four different answers


def test_default_outputs_come_back_binary_and_whole(client):
    x = np.random.default_rng(0).random((2, 1, 32, 32, 32), dtype=np.float32)
    result = client.infer(MODEL, [patch_input(x, binary=True)])  # no outputs named: all of them, binary
    assert [o["name"] for o in result.get_response()["outputs"]] == list(OUTPUTS)
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert result.as_numpy("attributes").shape == (2, 6)
    assert result.as_numpy("occupancy").shape == (2, 2, 16, 16, 16)


@pytest.mark.parametrize(
    ("model", "tensor", "status", "fragment"),
    [
        ("no_such_model", ("patch", (1, 1, 32, 32, 32), "FP32"), "404", "unknown model 'no_such_model'"),
        (MODEL, ("patch", (1, 1, 16, 16, 16), "FP32"), "400", "has shape [1, 1, 16, 16, 16]"),
        (MODEL, ("patch", (1, 1, 32, 32, 32), "FP64"), "400", "datatype 'FP64'; the model takes FP32"),
        (MODEL, ("image", (1, 1, 32, 32, 32), "FP32"), "400", "unknown input 'image'"),
        (MODEL, None, "400", "missing input 'patch'"),
    ],
    ids=["unknown-model", "wrong-shape", "wrong-datatype", "unknown-input", "missing-input"],
)
def test_protocol_errors_reach_the_client_with_status_and_message(client, model, tensor, status, fragment):
    inputs = []
    if tensor is not None:
        name, shape, datatype = tensor
        data = np.full(shape, 0.5, dtype=np.float64 if datatype == "FP64" else np.float32)
        inputs.append(patch_input(data, binary=True, name=name, datatype=datatype))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs)
    assert caught.value.status() == status
    assert fragment in caught.value.message()
