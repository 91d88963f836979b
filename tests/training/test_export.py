"""ONNX export: parity with PyTorch, the manifest the service validates, FLOPs and latency recorded."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.runtime.manifest import Manifest, sha256_of
from service.runtime.store import resolve
from tests.conftest import TEST_VERSION
from training.defaults import PREPROCESSING
from training.export import PARITY_LIMIT, ExportError, count_flops, export_model, parity
from training.export import main as export_main
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


def tiny_model() -> ResMTNet:
    torch.manual_seed(0)
    return ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8)).eval()


def test_a_byte_identical_re_export_keeps_the_latency_measured_before(tmp_path):
    model = tiny_model()
    first = export_model(model, tmp_path, "0.0.3", PREPROCESSING)
    folder = tmp_path / "res_mtnet" / "0.0.3"
    doc = Manifest.read(folder).model_dump(mode="json")
    doc["performance"]["ms_per_patch_batch1"] = 123.0  # stands in for a timing taken earlier, on a quiet machine
    Manifest.model_validate(doc).write(folder)
    again = export_model(model, tmp_path, "0.0.3", PREPROCESSING, overwrite=True)
    assert again.sha256 == first.sha256
    assert again.performance["ms_per_patch_batch1"] == 123.0
    remeasured = export_model(model, tmp_path, "0.0.3", PREPROCESSING, remeasure=True, overwrite=True)
    assert remeasured.performance["ms_per_patch_batch1"] != 123.0
    assert sorted(p.name for p in (tmp_path / "res_mtnet").iterdir()) == ["0.0.3"]  # nothing staged left beside it


def test_an_existing_version_is_refused_unless_overwrite_is_given(store_copy):
    folder = store_copy / "res_mtnet" / TEST_VERSION
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ExportError, match=rf"{folder} exists.*MODEL_VERSION=.*--overwrite"):
        export_model(tiny_model(), store_copy, TEST_VERSION, PREPROCESSING)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(ExportError, match="not a version"):
        export_model(tiny_model(), store_copy, "candidate", PREPROCESSING)
    with pytest.raises(SystemExit, match="exists"):
        export_main(["--check-only", "--version", TEST_VERSION, "--store", str(store_copy)])
    export_main(["--check-only", "--version", "0.0.2", "--store", str(store_copy)])  # allowed: returns
    export_main(["--check-only", "--version", TEST_VERSION, "--store", str(store_copy), "--overwrite"])


def test_a_failed_export_leaves_the_version_as_it_was(store_copy, monkeypatch):
    folder = store_copy / "res_mtnet" / TEST_VERSION
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr("training.export.PARITY_LIMIT", -1.0)  # every parity check fails
    with pytest.raises(RuntimeError, match="parity"):
        export_model(tiny_model(), store_copy, TEST_VERSION, PREPROCESSING, overwrite=True)
    with pytest.raises(RuntimeError, match="parity"):
        export_model(tiny_model(), store_copy, "0.0.2", PREPROCESSING)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in (store_copy / "res_mtnet").iterdir()) == [TEST_VERSION]
    assert resolve(store_copy, "res_mtnet").manifest.version == TEST_VERSION
