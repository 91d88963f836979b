"""The ceiling: onnxruntime called in-process on the same model, same threads, already-preprocessed input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def open_session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def measure(session: ort.InferenceSession, batch: int, size: int, seconds: float = 5.0) -> dict[str, float]:
    """Patches per second and per-call latency percentiles at one batch size."""
    x = np.random.default_rng(0).random((batch, 1, size, size, size), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - started
    return {
        "batch": batch,
        "patches_per_s": len(times) * batch / total,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
    }
