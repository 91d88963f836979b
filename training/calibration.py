"""Calibration of P(malignant): temperature scaling fitted on held-out patients, and an honest estimate of what it
buys. Fitting and scoring on the same patients is optimistic, so the "after" figures are cross-fitted: the held-out
patients are split into folds by patient, each fold is calibrated by a temperature fitted on the other folds, and
the pooled out-of-fold probabilities are scored; repeated over several random fold assignments. The temperature
stored in the manifest is fitted on all held-out patients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

BINS = 10
FOLDS = 5
REPEATS = 20
EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(z: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64) / temperature))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p) - y) ** 2))


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The temperature T that minimises the log loss of sigmoid(z / T); T in [0.05, 20]."""
    y = np.asarray(y, dtype=np.float64)
    result = minimize_scalar(
        lambda log_t: log_loss(apply_temperature(z, float(np.exp(log_t))), y),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> list[dict[str, float]]:
    """Equal-width bins of predicted probability: count, mean prediction, observed fraction positive."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin": b,
                    "count": int(inside.sum()),
                    "mean_predicted": round(float(p[inside].mean()), 4),
                    "fraction_positive": round(float(y[inside].mean()), 4),
                }
            )
    return rows


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """ECE: the count-weighted mean |mean prediction - fraction positive| over equal-width bins."""
    rows = reliability(p, y, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["mean_predicted"] - r["fraction_positive"]) for r in rows))


def patient_folds(patients: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Boolean masks over examples, one per fold; each patient's nodules all fall in the same fold."""
    unique = np.unique(patients)
    order = np.random.default_rng(seed).permutation(unique)
    return [np.isin(patients, part) for part in np.array_split(order, folds)]


def cross_fitted(z: np.ndarray, y: np.ndarray, patients: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold scaled by a temperature fitted on the other folds only."""
    out = np.empty(len(z), dtype=np.float64)
    for test in patient_folds(patients, folds, seed):
        out[test] = apply_temperature(z[test], fit_temperature(z[~test], y[~test]))
    return out


def noise_floor(p: np.ndarray, n_sims: int = 1000, seed: int = 0) -> float:
    """The mean ECE a perfectly calibrated model with these predictions would show on this many examples."""
    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error(p, rng.random(len(p)) < p) for _ in range(n_sims)]))


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def calibration_report(
    p_raw: np.ndarray, y: np.ndarray, patients: np.ndarray, folds: int = FOLDS, repeats: int = REPEATS
) -> dict[str, Any]:
    """Temperature fitted on every held-out patient, and ECE, log loss and Brier before and after (cross-fitted)."""
    y = np.asarray(y, dtype=np.float64)
    z = logit(p_raw)
    temperature = fit_temperature(z, y)
    runs = [cross_fitted(z, y, patients, folds, seed) for seed in range(repeats)]
    eces = [expected_calibration_error(q, y) for q in runs]
    in_sample = apply_temperature(z, temperature)
    return {
        "method": "temperature",
        "temperature": _r(temperature, 6),
        "fitted_on": f"{len(np.unique(patients))} held-out LIDC patients ({len(y)} nodules)",
        "bins": BINS,
        "cross_fitting": f"{folds} folds by patient, {repeats} random fold assignments",
        "ece_raw": _r(expected_calibration_error(p_raw, y)),
        "ece_calibrated_cross_fitted": _r(float(np.mean(eces))),
        "ece_calibrated_cross_fitted_range": [_r(min(eces)), _r(max(eces))],
        "ece_calibrated_in_sample": _r(expected_calibration_error(in_sample, y)),
        "ece_perfectly_calibrated_expected": _r(noise_floor(np.clip(p_raw, 0, 1))),
        "log_loss_raw": _r(log_loss(p_raw, y)),
        "log_loss_calibrated_cross_fitted": _r(float(np.mean([log_loss(q, y) for q in runs]))),
        "brier_raw": _r(brier(p_raw, y)),
        "brier_calibrated_cross_fitted": _r(float(np.mean([brier(q, y) for q in runs]))),
        "reliability_raw": reliability(p_raw, y),
        "reliability_calibrated_cross_fitted": reliability(runs[0], y),
    }
