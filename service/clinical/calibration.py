"""The manifest's calibration applied to one row of a two-label output: p = sigmoid(logit(p_raw) / temperature)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.runtime.manifest import Calibration

EPS = 1e-7


def calibrated_positive(p_raw: float, calibration: Calibration | None) -> float:
    """The calibrated probability of the positive label (the raw one when the model has no calibration)."""
    if calibration is None:
        return float(p_raw)
    p = min(max(float(p_raw), EPS), 1.0 - EPS)
    z = (math.log(p) - math.log1p(-p)) / calibration.temperature
    return 1.0 / (1.0 + math.exp(-z))


def calibrated_row(row: Sequence[float], labels: Sequence[str], calibration: Calibration | None) -> list[float]:
    """Both probabilities of a two-label row, in its own label order, after calibration."""
    if calibration is None:
        return [float(v) for v in row]
    positive = labels.index(calibration.positive_label)
    p = calibrated_positive(float(row[positive]), calibration)
    return [p if i == positive else 1.0 - p for i in range(len(labels))]


def calibrated_rows(rows: np.ndarray, labels: Sequence[str], calibration: Calibration | None) -> np.ndarray:
    """calibrated_row of every row of an (N, 2) output, float32 (the Open Inference Protocol's tensors; N is at most
    a batch, so one row at a time costs microseconds)."""
    if calibration is None:
        return rows
    return np.array([calibrated_row(row, labels, calibration) for row in rows], dtype=np.float32).reshape(rows.shape)
