"""The peers' sessions: their share of the cores, and no quiet fall-back to CPU in the CUDA sweep."""

import onnxruntime as ort
import pytest

from bench.peer_model import open_session, worker_threads
from service.runtime.store import resolve


def test_peer_workers_share_the_cores_unless_threads_are_set(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert worker_threads(0, 1) == 8
    assert worker_threads(0, 2) == 4
    assert worker_threads(0, 16) == 1
    assert worker_threads(3, 2) == 3


def test_a_peer_session_gets_its_share_of_the_threads(tiny_store, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.delenv("RESMTNET_INTRA_OP_THREADS", raising=False)
    session = open_session(resolve(tiny_store, "res_mtnet"), workers=2)
    assert session.get_session_options().intra_op_num_threads == 2


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is present here")
def test_a_peer_asked_for_cuda_refuses_to_run_on_cpu(tiny_store, monkeypatch):
    monkeypatch.setenv("RESMTNET_PROVIDER", "cuda")
    with pytest.raises(RuntimeError, match="did not activate CUDAExecutionProvider"):
        open_session(resolve(tiny_store, "res_mtnet"))
