"""What both peer servers share with each other (not with the service): the same committed model, the same
onnxruntime settings as the service, and the same preprocessing, so that the peers differ from the service only
in how requests reach the model."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.inprocess import session_on
from service.imaging.preprocess import preprocess, volume_center_vox
from service.runtime.manifest import Manifest
from service.runtime.session import session_options
from service.runtime.store import ModelEntry, resolve


def load_entry() -> ModelEntry:
    return resolve(Path(os.environ.get("RESMTNET_MODEL_STORE", "model_store")), "res_mtnet")


def worker_threads(setting: int, workers: int) -> int:
    """onnxruntime threads per session: the setting, or the cores shared out among `workers` processes."""
    return setting or max((os.cpu_count() or 1) // workers, 1)


def open_session(entry: ModelEntry, workers: int = 1) -> ort.InferenceSession:
    """A session with the service's options (service.runtime.session.session_options: its threads spin inside a run
    and stop as it ends), the cores shared out among the `workers` sessions running side by side (all of them for
    one); on CUDA when RESMTNET_PROVIDER is cuda (the benchmark's GPU sweep)."""
    threads = worker_threads(int(os.environ.get("RESMTNET_INTRA_OP_THREADS", "0")), workers)
    return session_on(os.environ.get("RESMTNET_PROVIDER", "cpu"), entry.onnx_path, session_options(threads, False))


def prepare(npy: bytes, spacing: str, manifest: Manifest) -> np.ndarray:
    """The model input for one .npy upload, as a typical implementation would write it (np.load, no checks)."""
    volume = np.load(io.BytesIO(npy), allow_pickle=False)
    zyx = tuple(float(v) for v in spacing.split(","))
    cube, _ = preprocess(volume, zyx, volume_center_vox(volume.shape), manifest.preprocessing)
    return cube[None]  # (1, D, D, D): the channel axis


def to_json(manifest: Manifest, outputs: list[np.ndarray]) -> dict:
    """One patch's labelled outputs as {head: {label: value}} (the occupancy map left out, as the service does)."""
    return {
        spec.name: {label: float(v) for label, v in zip(spec.labels or [], row, strict=True)}
        for spec, row in zip(manifest.outputs, outputs, strict=True)
        if spec.per_label
    }
