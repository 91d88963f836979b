"""onnxruntime session: provider choice and verification, shape checks against the manifest, warm-up, runs."""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from service.runtime.manifest import Manifest, TensorSpec
from service.runtime.store import ModelEntry

log = logging.getLogger("resmtnet")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_ERROR = 3  # onnxruntime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
# What a CUDA session needs loaded, by the names tried in order, and the function that reports each one's version.
CUDA_LIBRARIES = (
    ("CUDA driver", ("libcuda.so.1",), "cuDriverGetVersion"),
    ("CUDA runtime", ("libcudart.so.12", "libcudart.so.13", "libcudart.so"), "cudaRuntimeGetVersion"),
    ("cuDNN", ("libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"), "cudnnGetVersion"),
)


class SessionError(Exception):
    """The model cannot be served as configured (shapes, provider)."""


@dataclass
class ModelSession:
    """One onnxruntime session and what the service must know about it. Not thread-safe by design: the batcher
    runs it from a single worker thread, one batch at a time."""

    entry: ModelEntry
    session: ort.InferenceSession
    provider: str
    provider_note: str = ""
    output_names: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Manifest:
        return self.entry.manifest

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """batch: (N, 1, D, D, D) float32 -> one array per manifest output, each (N, k)."""
        return self.session.run(self.output_names, {self.manifest.input.name: batch})


def expected_provider(setting: str) -> str:
    """The provider a session will try first for this setting (it may still fall back to CPU)."""
    return _providers(setting)[0]


def _providers(setting: str) -> list[str]:
    available = ort.get_available_providers()
    if setting in ("auto", "cuda") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels that onnxruntime-gpu[cuda,cudnn] installs (make run on a host
    with only the NVIDIA driver); a no-op where those wheels are absent and the libraries come from the system, as
    in the GPU image."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return
    try:
        preload()
    except (OSError, RuntimeError) as exc:  # the session's provider check reports what is missing
        log.warning("could not preload CUDA libraries from Python packages: %s", type(exc).__name__)


def _check_shapes(declared: list[TensorSpec], actual: list, kind: str) -> None:
    if [d.name for d in declared] != [a.name for a in actual]:
        raise SessionError(
            f"model {kind}s {[a.name for a in actual]} differ from the manifest's {[d.name for d in declared]}"
        )
    for spec, arg in zip(declared, actual, strict=True):
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        if shape != spec.shape:
            raise SessionError(f"{kind} {spec.name}: model shape {shape}, manifest shape {spec.shape}")


def session_options(intra_op_threads: int = 0, spinning: bool = True) -> ort.SessionOptions:
    """The service's session options: full graph optimisation, one run at a time, these intra-op threads. The
    threads spin inside a run, where an operator's work passes between them at once instead of waking a sleeping
    thread; with spinning False they stop as the run ends, leaving the CPU to parsing and preprocessing."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    if not spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    # onnxruntime writes its own (coloured, not JSON) lines to stderr: only its errors, never its warnings, may
    # break the one-JSON-object-per-line log; what an operator must know, the provider check reports.
    ort.set_default_logger_severity(ORT_ERROR)
    options.log_severity_level = ORT_ERROR
    return options


def open_session(entry: ModelEntry, provider: str, intra_op_threads: int = 0, spinning: bool = True) -> ModelSession:
    """Create the session; verify tensors against the manifest and report which provider is really active."""
    options = session_options(intra_op_threads, spinning)
    requested = _providers(provider)
    if CUDA in requested:
        preload_cuda_libraries()
    session = ort.InferenceSession(str(entry.onnx_path), sess_options=options, providers=requested)
    _check_shapes(entry.manifest.inputs, session.get_inputs(), "input")
    _check_shapes(entry.manifest.outputs, session.get_outputs(), "output")
    active = session.get_providers()[0]
    note = ""
    if provider == "cuda" and active != CUDA:
        note = (
            f"RESMTNET_PROVIDER=cuda but onnxruntime's active provider is {active} "
            f"(available: {', '.join(ort.get_available_providers())}; onnxruntime {ort.__version__}); "
            f"seen: {cuda_libraries()}; install onnxruntime-gpu with matching CUDA 12 and cuDNN 9 libraries"
        )
    elif provider == "auto" and active != CUDA:
        note = f"CUDA not available to onnxruntime; serving on CPU (seen: {cuda_libraries()})"
    return ModelSession(entry, session, active, note, [o.name for o in entry.manifest.outputs])


def _cuda_version(code: int) -> str:
    """12080 -> "12.8" (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _cudnn_version(code: int) -> str:
    """90800 -> "9.8.0" (cuDNN 9: 10000 * major + 100 * minor + patch); 8907 -> "8.9.7" (cuDNN 8: 1000 * major...)."""
    major, rest = divmod(code, 10000 if code >= 10000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _library_version(library: ctypes.CDLL, function: str) -> str:
    """Ask a loaded CUDA or cuDNN library its version; "unknown" when the call fails or the symbol is missing."""
    try:
        if function == "cudnnGetVersion":
            library.cudnnGetVersion.restype = ctypes.c_size_t
            return _cudnn_version(library.cudnnGetVersion())
        code = ctypes.c_int(0)
        return _cuda_version(code.value) if getattr(library, function)(ctypes.byref(code)) == 0 else "unknown"
    except AttributeError:
        return "unknown"


def cuda_libraries(load: Callable[[str], ctypes.CDLL] = ctypes.CDLL) -> str:
    """The CUDA driver, CUDA runtime and cuDNN this process can load, with their versions, and the CUDA version
    onnxruntime was built for: what a not-ready reason needs to say when CUDA was required but not active."""
    seen = []
    for label, names, function in CUDA_LIBRARIES:
        for name in names:
            try:
                library = load(name)
            except OSError:
                continue
            seen.append(f"{label} {_library_version(library, function)} ({name})")
            break
        else:
            seen.append(f"{label} not found")
    try:
        built_for = importlib.import_module("onnxruntime.capi.build_and_package_info").cuda_version
    except (ImportError, AttributeError):
        built_for = None
    seen.append(f"onnxruntime built for CUDA {built_for}" if built_for else "onnxruntime built without CUDA")
    return ", ".join(seen)


def warm_up(model: ModelSession, batch_sizes: list[int]) -> None:
    """One run per batch size the batcher can produce, so no request pays for a first-time shape."""
    spec = model.manifest.preprocessing
    for n in batch_sizes:
        model.run(np.zeros((n, 1) + (spec.patch_size,) * 3, dtype=np.float32))
