"""ONNX export: parity with PyTorch, the manifest the service validates, FLOPs and latency recorded."""

import numpy as np
import onnxruntime as ort
import torch

from service.runtime.manifest import Manifest, sha256_of
from service.runtime.store import resolve
from tests.conftest import TEST_VERSION
from training.export import PARITY_LIMIT, count_flops, parity
from training.model import ResMTNet, ResMTNetConfig


def test_export_writes_a_verified_manifest_and_card(tiny_store):
    folder = tiny_store / "res_mtnet" / TEST_VERSION
    m = Manifest.read(folder)
    assert m.sha256 == sha256_of(folder / "model.onnx")
    assert resolve(tiny_store, "res_mtnet").manifest == m
    assert m.export["parity_max_abs_diff_probabilities"] <= PARITY_LIMIT
    assert m.performance["flops_per_patch"] > 0 and m.performance["ms_per_patch_batch1"] > 0
    assert [o.name for o in m.outputs] == ["malignancy", "nodule_type", "measurements", "attributes", "occupancy"]
    occupancy = m.outputs[-1]
    assert occupancy.shape == [-1, 2, 16, 16, 16] and occupancy.labels == ["nodule", "solid_part"]
    assert "2.5 mm voxel" in occupancy.description
    assert m.inputs[0].shape == [-1, 1, 32, 32, 32]
    assert (
        "Not a diagnosis" in (folder / "MODEL_CARD.md").read_text()
        or "not a diagnosis" in (folder / "MODEL_CARD.md").read_text().lower()
    )


def test_dynamic_batch_axis_and_parity_at_several_batch_sizes(tiny_store):
    path = tiny_store / "res_mtnet" / TEST_VERSION / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3, 16):
        outs = session.run(None, {"patch": np.random.default_rng(n).random((n, 1, 32, 32, 32), dtype=np.float32)})
        assert [o.shape[0] for o in outs] == [n] * 5


def test_parity_detects_a_different_model(tiny_store):
    path = tiny_store / "res_mtnet" / TEST_VERSION / "model.onnx"
    torch.manual_seed(123)
    other = ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8)).eval()
    x = np.random.default_rng(0).random((4, 1, 32, 32, 32), dtype=np.float32)
    assert max(parity(other, path, x).values()) > PARITY_LIMIT


def test_flops_grow_with_width():
    small = count_flops(ResMTNet(ResMTNetConfig(widths=[4, 8, 8])), 32)
    large = count_flops(ResMTNet(ResMTNetConfig(widths=[8, 16, 16])), 32)
    assert 3 < large / small < 5


def test_a_byte_identical_re_export_keeps_the_latency_measured_before(tmp_path):
    from training.defaults import PREPROCESSING
    from training.export import export_model

    torch.manual_seed(0)
    model = ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8)).eval()
    first = export_model(model, tmp_path, "0.0.3", PREPROCESSING)
    folder = tmp_path / "res_mtnet" / "0.0.3"
    doc = Manifest.read(folder).model_dump(mode="json")
    doc["performance"]["ms_per_patch_batch1"] = 123.0  # stands in for a timing taken earlier, on a quiet machine
    Manifest.model_validate(doc).write(folder)
    again = export_model(model, tmp_path, "0.0.3", PREPROCESSING)
    assert again.sha256 == first.sha256
    assert again.performance["ms_per_patch_batch1"] == 123.0
    remeasured = export_model(model, tmp_path, "0.0.3", PREPROCESSING, remeasure=True)
    assert remeasured.performance["ms_per_patch_batch1"] != 123.0
