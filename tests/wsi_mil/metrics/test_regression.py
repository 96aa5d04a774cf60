"""Regression metrics against scikit-learn and SciPy, with bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, r2_score

from wsi_mil.metrics.regression import regression_metrics


def test_metrics_and_intervals():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    predicted = y + 0.5 * rng.normal(size=50)
    metrics = regression_metrics(y, predicted, n_boot=300)
    assert metrics["r2"] == pytest.approx(r2_score(y, predicted))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, predicted))
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((y - predicted) ** 2)))
    assert metrics["pearson_r"] == pytest.approx(pearsonr(y, predicted).statistic)
    assert metrics["spearman_r"] == pytest.approx(spearmanr(y, predicted).statistic)
    for name in ("r2", "mae", "rmse", "pearson_r", "spearman_r"):
        low, high = metrics[f"{name}_ci95"]
        assert low < metrics[name] < high, name
    assert metrics["pearson_r_fisher_ci95"][0] < metrics["pearson_r"]


def test_a_constant_prediction_has_no_correlation():
    metrics = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.5] * 4, n_boot=0)
    assert metrics["r2"] == pytest.approx(0.0) and metrics["pearson_r"] is None
