import numpy as np
import pytest

from service.clinical.calibration import calibrated_positive, calibrated_row
from service.runtime.manifest import Calibration
from training.calibration import apply_temperature, logit

T = Calibration(temperature=1.7, fitted_on="test")


@pytest.mark.parametrize("p", [1e-9, 0.01, 0.3, 0.5, 0.8, 0.999, 1.0])
def test_the_service_applies_the_same_temperature_scaling_that_training_fitted(p):
    expected = float(apply_temperature(logit(np.array([p])), 1.7)[0])
    assert calibrated_positive(p, T) == pytest.approx(expected, abs=1e-9)


def test_a_temperature_above_one_pulls_probabilities_towards_one_half():
    assert 0.5 < calibrated_positive(0.9, T) < 0.9
    assert 0.1 < calibrated_positive(0.1, T) < 0.5
    assert calibrated_positive(0.5, T) == pytest.approx(0.5)


def test_rows_keep_their_label_order_and_sum_to_one():
    benign, malignant = calibrated_row([0.2, 0.8], ["benign", "malignant"], T)
    assert malignant == pytest.approx(calibrated_positive(0.8, T))
    assert benign + malignant == pytest.approx(1.0)


def test_without_a_calibration_the_raw_probabilities_pass_through():
    assert calibrated_positive(0.37, None) == 0.37
    assert calibrated_row([0.63, 0.37], ["benign", "malignant"], None) == [0.63, 0.37]


def test_whole_outputs_are_calibrated_as_each_row_is():
    from service.clinical.calibration import calibrated_row, calibrated_rows

    rows = np.array([[0.9, 0.1], [0.25, 0.75], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    got = calibrated_rows(rows, ["benign", "malignant"], T)
    assert got.dtype == np.float32
    for row, out in zip(rows, got, strict=True):
        np.testing.assert_allclose(out, calibrated_row(row, ["benign", "malignant"], T), atol=1e-7)
    assert calibrated_rows(rows, ["benign", "malignant"], None) is rows
