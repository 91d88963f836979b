"""The JSON answer of /predict, for a patch and for a CT series alike: per-nodule entries in an envelope naming
the model, the units, the timings and the research-use notice. Labels and units come from the manifest."""

from __future__ import annotations

import time
from typing import Any

from service.api.schemas import NOTICE
from service.batching import Prediction
from service.runtime.manifest import Manifest


def nodule_result(manifest: Manifest, outputs: list, center: dict[str, float], warnings: list[str]) -> dict[str, Any]:
    """One nodule's entry: the centre used, every head labelled from the manifest (maps left out), warnings."""
    nodule: dict[str, Any] = {"center": center}
    for spec, row in zip(manifest.outputs, outputs, strict=True):
        if spec.per_label:
            nodule[spec.name] = dict(zip(spec.labels or [], (round(float(v), 6) for v in row), strict=True))
    nodule["warnings"] = warnings
    return nodule


def answer(
    request_id: str,
    manifest: Manifest,
    nodules: list[dict[str, Any]],
    predictions: list[Prediction],
    preprocess_s: float,
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """The envelope; `extra` (the series geometry) follows the model. Queue and inference times are the slowest
    nodule's, since the nodules of one request wait and run together."""
    return {
        "request_id": request_id,
        "model": {"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256},
        **extra,
        "nodules": nodules,
        "units": {o.name: dict(zip(o.labels or [], o.units, strict=True)) for o in manifest.outputs if o.units},
        "timings_ms": {
            "preprocess": round(preprocess_s * 1000, 3),
            "queue": round(max(p.queue_s for p in predictions) * 1000, 3),
            "inference": round(max(p.inference_s for p in predictions) * 1000, 3),
            "total": round((time.perf_counter() - started) * 1000, 3),
        },
        "notice": NOTICE,
    }
