import importlib.util
import logging
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from service.runtime import session
from service.runtime.store import resolve
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION, REPO


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


def model_with_an_unused_initializer() -> bytes:
    """y = x, with a constant no node reads: onnxruntime warns that it removes it."""
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [value("x", TensorProto.FLOAT, [1])],
        [value("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.zeros(3, np.float32), "unused")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_onnxruntimes_own_warnings_stay_out_of_the_json_log(capfd):
    model = model_with_an_unused_initializer()
    warnings = ort.SessionOptions()
    warnings.log_severity_level = 2  # onnxruntime's default: its warnings too, each a coloured line on stderr
    ort.InferenceSession(model, sess_options=warnings, providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused'" in capfd.readouterr().err
    ort.InferenceSession(model, sess_options=session.session_options(1), providers=["CPUExecutionProvider"])
    assert capfd.readouterr().err == ""


IDLE_AFTER_A_RUN = """
import sys, time
import numpy as np
import onnxruntime as ort
from service.runtime.session import session_options
run = ort.InferenceSession(sys.argv[1], sess_options=session_options(2, False), providers=["CPUExecutionProvider"])
run.run(None, {run.get_inputs()[0].name: np.zeros([1, *map(int, sys.argv[2:])], dtype=np.float32)})
started = time.process_time()
time.sleep(0.3)
print(time.process_time() - started)
"""


def test_threads_spin_inside_a_run_and_with_spinning_off_stop_as_it_ends():
    """Spinning inside a run hands an operator's work between the threads without waking one; a thread left
    spinning after the run (onnxruntime's default, for tens of ms) would burn a core the event loop needs. Measured
    in a process of its own: sessions other tests left behind may spin in this one."""
    entry = resolve(DEFAULT_STORE, "res_mtnet", DEFAULT_VERSION)
    for spinning in (False, True):
        options = session.session_options(2, spinning)
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    shape = [str(d) for d in entry.manifest.inputs[0].shape[1:]]
    out = subprocess.run(
        [sys.executable, "-c", IDLE_AFTER_A_RUN, str(entry.onnx_path), *shape],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert float(out.stdout) < 0.005  # nothing runs once the run is over
