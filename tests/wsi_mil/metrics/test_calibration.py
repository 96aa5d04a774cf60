"""Calibration figures against values worked out by hand, and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_mil.metrics.calibration import (
    apply_temperature,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
)

# positive-class probabilities and outcomes; with 15 bins of width 1/15, 0.9 and 0.92 share
# bin 13 and every other probability has a bin of its own
P = np.array([0.1, 0.25, 0.81, 0.9, 0.92, 0.97])
Y = np.array([0, 1, 1, 1, 1, 0])


def test_ece_by_hand() -> None:
    # |0 - .1| + |1 - .25| + |1 - .81| + 2 |1 - .91| + |0 - .97|, over 6 slides
    assert expected_calibration_error(Y, P) == pytest.approx(2.19 / 6)
    assert expected_calibration_error(Y, P, n_bins=1) == pytest.approx(abs(Y.mean() - P.mean()))


def test_brier_by_hand() -> None:
    probs = np.stack([1 - P, P], axis=1)
    squares = [0.01, 0.5625, 0.0361, 0.01, 0.0064, 0.9409]
    assert brier_score(Y, probs, positive=1) == pytest.approx(np.mean(squares))
    # three classes: squared distance to the one-hot truth, summed over classes
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2
    assert brier_score(np.array([0, 1]), three, positive=None) == pytest.approx(expected)


def test_calibration_metrics_binary_and_multiclass() -> None:
    probs = np.stack([1 - P, P], axis=1)
    binary = calibration_metrics(Y, probs, positive=1)
    assert binary["ece"] == pytest.approx(2.19 / 6) and binary["ece_bins"] == 15
    assert len(binary["reliability"]["observed"]) == 5  # five non-empty bins
    # 0.9 and 0.92 share the bin (0.867, 0.933]; every other probability has one of its own
    assert binary["reliability"]["count"] == [1, 1, 1, 2, 1]
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    multi = calibration_metrics(np.array([0, 1, 1]), three, positive=None)
    # top-label confidences .7 (right), .8 (wrong), .5 (right), each in a bin of its own
    assert multi["ece"] == pytest.approx((0.3 + 0.8 + 0.5) / 3)
    assert multi["calibrated_quantity"] == "top-label confidence"


def test_temperature_recovers_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at logit z
    overconfident = 1 / (1 + np.exp(-3 * z))  # the same ranking, logits three times too big
    probs = np.stack([1 - overconfident, overconfident], axis=1)
    temperature = fit_temperature(y, probs)
    assert temperature == pytest.approx(3.0, rel=0.05)
    fixed = apply_temperature(probs, temperature)
    assert np.argsort(fixed[:, 1])[:50].tolist() == np.argsort(probs[:, 1])[:50].tolist()
    before = expected_calibration_error(y, probs[:, 1])
    assert expected_calibration_error(y, fixed[:, 1]) < before / 3
    assert fit_temperature(np.zeros(5, int), probs[:5]) == 1.0  # one class: nothing to fit
