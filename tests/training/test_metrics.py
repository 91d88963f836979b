import numpy as np

from training.metrics import fit_logistic, roc_auc


def test_roc_auc_counts_ties_half():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_fit_logistic_recovers_the_generating_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    true_w, true_b = np.array([1.5, -0.7]), 0.3
    y = rng.random(20000) < 1 / (1 + np.exp(-(x @ true_w + true_b)))
    w, b = fit_logistic(x, y, l2=0.0)
    np.testing.assert_allclose(w, true_w, atol=0.08)
    assert abs(b - true_b) < 0.08


def test_fit_logistic_shrinks_weights_but_not_the_bias():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    y = rng.random(500) < 0.8  # labels unrelated to x
    w, b = fit_logistic(x, y, l2=10.0)
    assert np.abs(w).max() < 0.01
    assert abs(b - np.log(y.mean() / (1 - y.mean()))) < 0.05
