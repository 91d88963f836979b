"""The ceiling: onnxruntime called in-process on the same model, same threads, already-preprocessed input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.cpus import affinity_mask, pin_this_thread
from service.runtime.session import CPU, CUDA, preload_cuda_libraries


def session_on(provider: str, model: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """The session on CUDA for provider "cuda", else on CPU. A session that fell back to CPU raises: a contender or
    ceiling quietly on CPU would make the CUDA sweep meaningless."""
    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    if provider == "cuda":
        preload_cuda_libraries()  # CUDA and cuDNN from the onnxruntime-gpu extras' wheels, as the service does
    session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"onnxruntime did not activate {providers[0]} (active: {session.get_providers()[0]})")
    return session


def open_session(model: Path, threads: int, provider: str = "cpu") -> ort.InferenceSession:
    """A session as the service opens it, on the given provider."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return session_on(provider, model, options)


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


def measure_parallel(
    model: Path, sessions: int, batch: int, size: int, seconds: float = 5.0, pinned: bool = False
) -> dict[str, float]:
    """Patches per second of `sessions` single-threaded sessions running side by side (as the service's workers),
    with `pinned` each thread on a CPU of its own (as the service pins them, RESMTNET_PIN_SESSIONS)."""
    import threading

    pool = [open_session(model, 1) for _ in range(sessions)]
    x = np.random.default_rng(0).random((batch, 1, size, size, size), dtype=np.float32)
    name = pool[0].get_inputs()[0].name
    for s in pool:
        s.run(None, {name: x})
    counts = [0] * sessions
    stop = time.perf_counter() + seconds

    cpus = affinity_mask()

    def loop(i: int) -> None:
        if pinned and cpus:
            pin_this_thread(cpus[i % len(cpus)])
        while time.perf_counter() < stop:
            pool[i].run(None, {name: x})
            counts[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    return {"batch": batch, "sessions": sessions, "patches_per_s": sum(counts) * batch / total}


def best(rows: list[dict], layout: str | None = None) -> float:
    """The most patches per second among ceiling rows, of one layout or of all."""
    return max(r["patches_per_s"] for r in rows if layout is None or r["layout"] == layout)
