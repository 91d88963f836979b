import importlib.util
import logging

import onnxruntime as ort

from service.runtime import session


def with_nvidia_wheels(monkeypatch, present: bool) -> None:
    """As if the nvidia-* CUDA and cuDNN wheels were installed (make run on a GPU host) or not (the GPU image)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "nvidia" and present else (None if name == "nvidia" else real(name, *a)),
    )


def test_preloading_cuda_libraries_that_fail_only_warns(monkeypatch, caplog):
    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    with_nvidia_wheels(monkeypatch, True)
    with caplog.at_level(logging.WARNING, logger="resmtnet"):
        session.preload_cuda_libraries()
    assert "could not preload CUDA libraries" in caplog.text


def test_without_the_nvidia_wheels_the_systems_libraries_are_left_to_onnxruntime(monkeypatch):
    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    with_nvidia_wheels(monkeypatch, False)
    session.preload_cuda_libraries()
    assert calls == []
    with_nvidia_wheels(monkeypatch, True)
    session.preload_cuda_libraries()
    assert calls == [1]


def test_preloading_is_skipped_by_an_onnxruntime_without_it(monkeypatch):
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    session.preload_cuda_libraries()  # nothing to call, nothing raised
