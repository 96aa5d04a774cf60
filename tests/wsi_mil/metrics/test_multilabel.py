"""Multi-label metrics: per-target and macro AUC, Hamming loss, subset accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wsi_mil.metrics.multilabel import multilabel_metrics


def test_per_target_and_overall_metrics():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.1], [0.4, 0.3], [0.1, 0.8]])
    predicted = (probs >= 0.5).astype(int)
    metrics = multilabel_metrics(y, probs, predicted, ["a", "b"], n_boot=50)
    a = roc_auc_score(y[:, 0], probs[:, 0])
    b = roc_auc_score(y[:, 1], probs[:, 1])
    assert metrics["per_target"]["a"]["auc"] == pytest.approx(a)
    assert metrics["macro_auc"] == pytest.approx((a + b) / 2)
    # wrong decisions: slide 2 target b (0.4 < 0.5), slide 4 target a (0.4): 2 of 12
    assert metrics["hamming_loss"] == pytest.approx(2 / 12)
    assert metrics["subset_accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_target"]["a"]["sensitivity"] == pytest.approx(2 / 3)
    low, high = metrics["macro_auc_ci95"]
    assert low <= metrics["macro_auc"] <= high
