import json
import logging
import shutil

import pytest

from service.runtime.manifest import Manifest
from service.runtime.session import SessionError, open_session
from service.runtime.store import ModelStoreError, list_versions, resolve
from tests.conftest import TEST_VERSION


def add_version(store, version: str) -> None:
    src = store / "res_mtnet" / TEST_VERSION
    dst = store / "res_mtnet" / version
    shutil.copytree(src, dst)
    doc = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**doc, "version": version}))


def test_newest_version_is_served_unless_one_is_pinned(store_copy):
    for v in ("0.0.9", "0.0.10", "0.0.2"):
        add_version(store_copy, v)
    assert list_versions(store_copy, "res_mtnet") == ["0.0.1", "0.0.2", "0.0.9", "0.0.10"]
    assert resolve(store_copy, "res_mtnet").manifest.version == "0.0.10"
    assert resolve(store_copy, "res_mtnet", "0.0.2").manifest.version == "0.0.2"
    with pytest.raises(ModelStoreError, match="no version '9.9'"):
        resolve(store_copy, "res_mtnet", "9.9")


def test_a_release_is_newer_than_its_pre_releases(store_copy):
    for v in ("1.3.0", "1.3.0-rc1", "1.2.0", "1.3.0-rc.2", "1.3.0-rc.10", "1.3.0-alpha"):
        add_version(store_copy, v)
    assert list_versions(store_copy, "res_mtnet") == [
        "0.0.1",
        "1.2.0",
        "1.3.0-alpha",
        "1.3.0-rc.2",
        "1.3.0-rc.10",
        "1.3.0-rc1",
        "1.3.0",
    ]
    assert resolve(store_copy, "res_mtnet").manifest.version == "1.3.0"


def test_folders_that_are_not_versions_are_skipped_with_a_warning(store_copy, caplog):
    add_version(store_copy, "0.0.2")
    add_version(store_copy, "candidate")  # a valid manifest whose version is "candidate"
    shutil.copytree(store_copy / "res_mtnet" / "0.0.2", store_copy / "res_mtnet" / "0.0.2.bak")
    shutil.copytree(store_copy / "res_mtnet" / "0.0.2", store_copy / "res_mtnet" / ".0.0.3.export-tmp")
    assert list_versions(store_copy, "res_mtnet") == ["0.0.1", "0.0.2"]
    with caplog.at_level(logging.WARNING, logger="resmtnet"):
        assert resolve(store_copy, "res_mtnet").manifest.version == "0.0.2"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "candidate is not a version" in warned and "0.0.2.bak is not a version" in warned
    assert "export-tmp" not in warned  # hidden folders are skipped silently
    with pytest.raises(ModelStoreError, match="'candidate' is not a version"):
        resolve(store_copy, "res_mtnet", "candidate")


def test_empty_store_and_invalid_manifest_are_refused(tmp_path, store_copy):
    with pytest.raises(ModelStoreError, match="no versions"):
        resolve(tmp_path, "res_mtnet")
    path = store_copy / "res_mtnet" / TEST_VERSION / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "sha256": "nope"}))
    with pytest.raises(ModelStoreError, match="invalid"):
        resolve(store_copy, "res_mtnet")


def test_tampered_model_fails_its_sha256(store_copy):
    onnx = store_copy / "res_mtnet" / TEST_VERSION / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="sha256"):
        resolve(store_copy, "res_mtnet")


def test_manifest_shapes_must_match_the_graph(store_copy):
    path = store_copy / "res_mtnet" / TEST_VERSION / "manifest.json"
    doc = json.loads(path.read_text())
    doc["inputs"][0]["shape"] = [-1, 1, 48, 48, 48]
    doc["preprocessing"]["patch_size"] = 48
    path.write_text(json.dumps(doc))
    with pytest.raises(SessionError, match="shape"):
        open_session(resolve(store_copy, "res_mtnet"), "cpu")


def test_manifest_round_trips(tiny_store, tmp_path):
    m = Manifest.read(tiny_store / "res_mtnet" / TEST_VERSION)
    m.write(tmp_path)
    assert Manifest.read(tmp_path) == m


def test_session_reports_the_active_provider(tiny_store):
    model = open_session(resolve(tiny_store, "res_mtnet"), "auto")
    assert model.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    cpu = open_session(resolve(tiny_store, "res_mtnet"), "cpu")
    assert cpu.provider == "CPUExecutionProvider" and cpu.provider_note == ""


def test_worker_plan_shares_the_cores_among_sessions_on_cpu(monkeypatch):
    from service.config import Settings
    from service.state import WorkerPlan, worker_plan

    def plan(cores: int, **settings) -> WorkerPlan:
        monkeypatch.setattr("service.state.available_cpus", lambda: cores)
        monkeypatch.setattr("service.state.affinity_mask", lambda: [])  # pinning: see the test below
        return worker_plan(Settings(**settings), "CPUExecutionProvider")

    assert plan(1) == WorkerPlan((1,))
    assert plan(2) == WorkerPlan((1, 1), 2)  # two 1-thread sessions and a 2-thread solo one
    assert plan(3) == WorkerPlan((2, 1), 3)  # every core given to a session
    assert plan(4) == WorkerPlan((2, 2), 4)
    assert plan(7) == WorkerPlan((4, 3), 7)
    assert plan(16) == WorkerPlan((4, 4, 4, 4), 16)
    assert plan(2, solo_session=False) == WorkerPlan((1, 1))
    assert plan(2, workers=1) == WorkerPlan((2,))  # one session already has every core
    assert plan(8, workers=8) == WorkerPlan((1,) * 8, 8)
    assert plan(8, workers=1, intra_op_threads=3) == WorkerPlan((3,))
    assert plan(8, workers=2, intra_op_threads=4) == WorkerPlan((4, 4), 8)
    assert worker_plan(Settings(), "CUDAExecutionProvider") == WorkerPlan((0,))
    assert worker_plan(Settings(workers=2), "CUDAExecutionProvider").sessions == 2


def test_single_threaded_sessions_get_a_cpu_each_where_the_process_owns_its_cpus(monkeypatch):
    from service.config import Settings
    from service.state import worker_plan

    def cpus(mask: list[int], cores: int, **settings) -> tuple[int, ...]:
        monkeypatch.setattr("service.state.available_cpus", lambda: cores)
        monkeypatch.setattr("service.state.affinity_mask", lambda: mask)
        return worker_plan(Settings(**settings), "CPUExecutionProvider").cpus

    assert cpus([0, 1], 2) == (0, 1)
    assert cpus([4, 9], 2) == (4, 9)  # the CPUs of its mask (a cpuset), not the first ones of the machine
    assert cpus([0, 1], 2, pin_sessions=False) == ()
    assert cpus(list(range(64)), 2) == ()  # a 2-CPU limit on a 64-core node: those CPUs are shared, pin none
    assert cpus([0, 1, 2], 3) == ()  # a 2-thread session: its own threads are onnxruntime's, not pinned
    assert cpus(list(range(8)), 8, workers=8) == tuple(range(8))
    assert cpus([0], 1) == ()  # one session: nothing to keep apart
    assert cpus([], 2) == ()  # no affinity masks on this platform
    monkeypatch.setattr("service.state.affinity_mask", lambda: [0, 1])
    assert worker_plan(Settings(workers=2), "CUDAExecutionProvider").cpus == ()
