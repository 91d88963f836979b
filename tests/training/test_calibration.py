"""Calibration of P(malignant): temperature fitting, patient-level cross-fitting, the export that records it."""

import json

import numpy as np
import pytest

import training.calibration as cal
from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION
from training.reliability_plot import PLOT_FILE


def overconfident(n_patients: int = 120, seed: int = 0, sharpen: float = 3.0):
    """Labels drawn from true logits; the 'model' reports those logits times `sharpen` (overconfident).
    Patients carry 1-3 nodules each."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"P{i:04d}" for i in range(n_patients)], per)
    z_true = rng.normal(-0.7, 1.5, len(patients))
    y = (rng.random(len(patients)) < 1 / (1 + np.exp(-z_true))).astype(float)
    return 1 / (1 + np.exp(-sharpen * z_true)), y, patients


def test_fit_temperature_recovers_how_overconfident_a_model_is():
    p, y, _ = overconfident(n_patients=2000, sharpen=2.5)
    assert cal.fit_temperature(cal.logit(p), y) == pytest.approx(2.5, rel=0.1)


def test_ece_of_a_hand_computed_example():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    # bins: [0.0, 0.1): mean 0.05 vs 0.5 (2 of 5); [0.9, 1.0]: 0.95 vs 1.0 (2 of 5); [0.5, 0.6): 0.55 vs 0 (1 of 5)
    expected = 2 / 5 * 0.45 + 2 / 5 * 0.05 + 1 / 5 * 0.55
    assert cal.expected_calibration_error(p, y) == pytest.approx(expected)


def test_cross_fitted_calibration_lowers_the_ece_of_an_overconfident_model_on_held_out_patients():
    p, y, patients = overconfident()
    report = cal.calibration_report(p, y, patients, repeats=3)
    assert report["temperature"] > 1.5
    assert report["ece_calibrated_cross_fitted"] < report["ece_raw"] / 2
    assert report["log_loss_calibrated_cross_fitted"] < report["log_loss_raw"]
    assert report["ece_calibrated_in_sample"] <= report["ece_calibrated_cross_fitted"] + 0.02


def test_cross_fitting_never_fits_on_the_patients_it_scores(monkeypatch):
    p, y, patients = overconfident(n_patients=40)
    z = cal.logit(p) + np.arange(len(p)) * 1e-9  # every nodule's logit unique, so we can tell who was fitted on
    seen: list[set[float]] = []
    real_fit = cal.fit_temperature

    def recording_fit(zz, yy):
        seen.append(set(zz.tolist()))
        return real_fit(zz, yy)

    monkeypatch.setattr(cal, "fit_temperature", recording_fit)
    cal.cross_fitted(z, y, patients, folds=5, seed=1)
    folds = cal.patient_folds(patients, 5, seed=1)
    assert len(seen) == 5
    for fitted, test in zip(seen, folds, strict=True):
        assert not fitted & set(z[test].tolist())
        assert set(patients[test]).isdisjoint(set(patients[~test]))  # a patient's nodules never straddle folds


def test_export_stores_the_calibration_and_draws_the_reliability_plot(tmp_path):
    import torch

    from training.defaults import PREPROCESSING
    from training.export import export_model
    from training.model import ResMTNet, ResMTNetConfig

    p, y, patients = overconfident(n_patients=60)
    evaluation = {"malignancy_calibration": cal.calibration_report(p, y, patients, repeats=2)}
    torch.manual_seed(0)
    model = ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8)).eval()
    manifest = export_model(model, tmp_path, "0.0.2", PREPROCESSING, evaluation=evaluation)
    folder = tmp_path / "res_mtnet" / "0.0.2"
    assert Manifest.read(folder).calibration == manifest.calibration
    assert manifest.calibration.temperature == evaluation["malignancy_calibration"]["temperature"]
    assert (folder / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (folder / "MODEL_CARD.md").read_text()
    assert "expected calibration error" in card and f"({PLOT_FILE})" in card


def test_the_committed_model_records_its_calibration_before_and_after():
    folder = DEFAULT_STORE / "res_mtnet" / DEFAULT_VERSION
    manifest = Manifest.read(folder)
    fitted = manifest.evaluation["malignancy_calibration"]
    assert manifest.calibration is not None and manifest.calibration.temperature == fitted["temperature"]
    for key in (
        "ece_raw",
        "ece_calibrated_cross_fitted",
        "ece_calibrated_in_sample",
        "ece_perfectly_calibrated_expected",
    ):
        assert 0 <= fitted[key] < 0.5, key
    assert "by patient" in fitted["cross_fitting"]
    assert (folder / PLOT_FILE).is_file()
    assert json.dumps(fitted["ece_raw"]) in (folder / "MODEL_CARD.md").read_text()
