"""Slide metrics: AUC (binary and one-vs-rest) with bootstrap CI, validation threshold."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_mil.metrics.slide import (
    bootstrap_auc_ci,
    choose_threshold,
    predict_indices,
    slide_auc,
    slide_metrics,
)


def test_binary_metrics_with_known_values():
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    predicted = predict_indices(probs, threshold=0.65)
    assert predicted.tolist() == [0, 0, 1, 0, 1, 1]
    m = slide_metrics(y, probs, predicted, ["normal", "tumor"], n_boot=200)
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["f1"] == pytest.approx(2 / 3)
    lo, hi = m["auc_ci95"]
    assert 0.3 < lo <= m["auc"] <= hi <= 1.0
    assert m["roc"]["tumor"]["fpr"][0] == 0.0 and m["roc"]["tumor"]["tpr"][-1] == 1.0


def test_negative_class_second_thresholds_the_first_column():
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]])
    assert predict_indices(probs, 0.75, negative_index=1).tolist() == [1, 1, 1, 0]
    assert predict_indices(probs, 0.75, negative_index=0).tolist() == [1, 1, 0, 0]
    m = slide_metrics(
        np.array([1, 1, 0, 0]),
        probs,
        np.array([1, 1, 0, 0]),
        ["a", "b"],
        negative_index=1,
        n_boot=0,
    )
    assert m["positive_class"] == "a" and m["auc"] == pytest.approx(1.0)


def test_multiclass_auc_is_one_vs_rest():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    probs = rng.dirichlet(np.ones(3), 30)
    probs[np.arange(30), y] += 2
    probs /= probs.sum(1, keepdims=True)
    assert slide_auc(y, probs) == pytest.approx(1.0)
    m = slide_metrics(y, probs, predict_indices(probs), ["a", "b", "c"], n_boot=0)
    assert m["accuracy"] == 1.0 and m["auc_ci95"] is None and set(m["roc"]) == {"a", "b", "c"}


def test_validation_threshold_separates_validation_classes():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    t = choose_threshold(y, probs)
    assert 0.2 < t <= 0.3
    assert predict_indices(probs, t).tolist() == [0, 0, 1, 1]
    assert choose_threshold(np.array([0, 0]), probs[:2]) == 0.5


def test_auc_undefined_with_one_class():
    probs = np.array([[0.4, 0.6], [0.3, 0.7]])
    assert slide_auc(np.array([1, 1]), probs) is None
    assert bootstrap_auc_ci(np.array([1, 1]), probs, n_boot=10) is None


def test_sensitivity_at_specificity_and_fnr_against_hand_computed_values():
    from wsi_mil.metrics.slide import false_negative_rate, sensitivity_at_specificity

    # 10 negatives scored 0.0..0.9, 4 positives at 0.95, 0.85, 0.5, 0.05
    neg = [i / 10 for i in range(10)]
    pos = [0.95, 0.85, 0.5, 0.05]
    y = [False] * 10 + [True] * 4
    scores = neg + pos
    # specificity >= 0.9 allows one false positive (the 0.9 negative): threshold 0.85 catches 2
    assert sensitivity_at_specificity(y, scores, 0.90) == 0.5
    # specificity >= 0.95 allows none: only 0.95 is above every negative
    assert sensitivity_at_specificity(y, scores, 0.95) == 0.25
    assert sensitivity_at_specificity([True, True], [0.1, 0.2], 0.9) is None
    assert false_negative_rate(y, [s >= 0.5 for s in scores]) == 0.25
    assert false_negative_rate([False], [True]) is None


def test_patients_are_positive_when_any_slide_is_and_combine_by_mean_or_max():
    import numpy as np

    from wsi_mil.metrics.slide import aggregate_patients

    patients = ["p1", "p1", "p2", "p3", "p3"]
    y = np.array([0, 1, 0, 0, 0])  # p1 has one positive slide: a positive patient
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2], [0.4, 0.6]])
    thresholds = np.array([0.5, 0.5, 0.4, 0.6, 0.6])
    ids, py, pp, pt = aggregate_patients(patients, y, probs, thresholds, 0, "mean")
    assert ids == ["p1", "p2", "p3"] and py.tolist() == [1, 0, 0]
    np.testing.assert_allclose(pp[:, 1], [0.4, 0.4, 0.4])
    np.testing.assert_allclose(pt, [0.5, 0.4, 0.6])
    _, _, pmax, _ = aggregate_patients(patients, y, probs, thresholds, 0, "max")
    np.testing.assert_allclose(pmax[:, 1], [0.7, 0.4, 0.6])
    three = np.array([[0.2, 0.5, 0.3]] * 5)
    with pytest.raises(ValueError, match="'max' needs two classes"):
        aggregate_patients(patients, y, three, thresholds, 0, "max")
    with pytest.raises(ValueError, match="slides of different classes"):
        aggregate_patients(patients, np.array([0, 2, 1, 1, 1]), three, thresholds, 0, "mean")
