import logging

import onnxruntime as ort

from service.runtime import session


def test_preloading_cuda_libraries_that_fail_only_warns(monkeypatch, caplog):
    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    with caplog.at_level(logging.WARNING, logger="resmtnet"):
        session.preload_cuda_libraries()
    assert "could not preload CUDA libraries" in caplog.text


def test_preloading_is_skipped_by_an_onnxruntime_without_it(monkeypatch):
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    session.preload_cuda_libraries()  # nothing to call, nothing raised
