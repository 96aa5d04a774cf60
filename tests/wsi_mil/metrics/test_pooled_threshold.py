"""The run's decision threshold: Youden's J on pooled validation, or 0.5 when it is too small."""

from __future__ import annotations

import numpy as np

from wsi_mil.metrics.slide import choose_threshold, pooled_threshold


def _probs(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def test_too_few_pooled_validation_slides_give_half():
    y = np.array([0] * 25 + [1] * 19)
    p = _probs(np.r_[np.linspace(0.0, 0.3, 25), np.linspace(0.2, 0.4, 19)])
    threshold, rule = pooled_threshold(y, p, min_per_class=20)
    assert threshold == 0.5
    assert "25 negative / 19 positive" in rule and "fewer than 20" in rule


def test_enough_pooled_validation_slides_give_youden():
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30)
    p = _probs(np.r_[rng.uniform(0.0, 0.3, 30), rng.uniform(0.2, 0.5, 30)])
    threshold, rule = pooled_threshold(y, p, min_per_class=20)
    assert threshold == choose_threshold(y, p) and threshold < 0.5
    assert rule.startswith("Youden's J on pooled validation (30 negative / 30 positive")


def test_the_negative_class_may_be_the_second_column():
    y = np.array([1] * 20 + [0] * 20)  # class 1 is the negative one here
    p0 = np.r_[np.full(20, 0.1), np.full(20, 0.9)]  # the positive class (0) is column 0
    threshold, _ = pooled_threshold(
        y, np.stack([p0, 1 - p0], axis=1), negative_index=1, min_per_class=20
    )
    assert 0.1 < threshold < 0.9
