"""The startup check's evidence: which CUDA driver, runtime and cuDNN the process can load, named in /readyz."""

from __future__ import annotations

import ctypes

from service.runtime.session import cuda_libraries
from tests.service.api.conftest import make_client


class Function:
    """A C function as ctypes exposes it: callable, with a settable restype."""

    def __init__(self, body) -> None:
        self.body, self.restype = body, ctypes.c_int

    def __call__(self, *args):
        return self.body(*args)


class FakeLibrary:
    """A shared library answering the version calls the probe makes, like the real ones (0 = success)."""

    def __init__(self, version: int, status: int = 0) -> None:
        def out(ref) -> int:
            ref._obj.value = version
            return status

        self.cuDriverGetVersion = self.cudaRuntimeGetVersion = Function(out)
        self.cudnnGetVersion = Function(lambda: version)


def loader(found: dict[str, int]):
    def load(name: str) -> FakeLibrary:
        if name not in found:
            raise OSError(f"{name}: cannot open shared object file")
        return FakeLibrary(found[name])

    return load


def test_names_each_library_and_version_it_loads():
    seen = cuda_libraries(loader({"libcuda.so.1": 12090, "libcudart.so.12": 12080, "libcudnn.so.9": 90800}))
    assert "CUDA driver 12.9 (libcuda.so.1)" in seen
    assert "CUDA runtime 12.8 (libcudart.so.12)" in seen
    assert "cuDNN 9.8.0 (libcudnn.so.9)" in seen


def test_says_not_found_and_falls_back_to_older_names():
    seen = cuda_libraries(loader({"libcudnn.so.8": 8907}))
    assert "CUDA driver not found" in seen and "CUDA runtime not found" in seen
    assert "cuDNN 8.9.7 (libcudnn.so.8)" in seen


def test_failed_version_call_reads_unknown():
    broken = FakeLibrary(0, status=3)  # CUDA_ERROR_NOT_INITIALIZED
    seen = cuda_libraries(lambda name: broken if name == "libcuda.so.1" else loader({})(name))
    assert "CUDA driver unknown (libcuda.so.1)" in seen


def test_the_real_loader_never_raises():
    seen = cuda_libraries(ctypes.CDLL)
    assert seen.count(",") == 3 and "onnxruntime built" in seen


def test_cuda_required_on_cpu_is_not_ready_and_names_cuda_and_cudnn(tiny_store):
    with make_client(tiny_store, provider="cuda") as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "RESMTNET_PROVIDER=cuda" in detail and "CPUExecutionProvider" in detail
    assert "CUDA driver" in detail and "CUDA runtime" in detail and "cuDNN" in detail


def test_a_library_without_the_version_symbol_reads_unknown():
    seen = cuda_libraries(lambda name: object() if name == "libcudnn.so.9" else loader({})(name))
    assert "cuDNN unknown (libcudnn.so.9)" in seen
