"""Slide classification metrics, all from scikit-learn, in JSON-ready form.

AUC is one-vs-rest (macro) for more than two classes, with a percentile bootstrap 95 %
interval because slide cohorts are small (a Camelyon16 test set has 129 slides) and a point AUC
alone hides how uncertain it is. For two classes the decision threshold on the positive
probability is chosen on *validation* slides (Youden's J on pooled validation predictions, or
0.5 when they are too few: see :func:`pooled_threshold`; for a cross-validated run one per fold,
never from that fold's test slides: :mod:`wsi_mil.mil.thresholds`) and then applied unchanged
to test slides: choosing it on test would report a number no deployment could reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from wsi_mil.metrics.calibration import calibration_metrics


def positive_index(n_classes: int, negative_index: int) -> int | None:
    """The positive class of a binary problem (the non-negative one); None for > 2 classes."""
    return 1 - negative_index if n_classes == 2 else None


def slide_auc(y: np.ndarray, probs: np.ndarray, negative_index: int = 0) -> float | None:
    """Binary AUC of the positive class, or macro one-vs-rest AUC; None if a class is absent."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    if len(np.unique(y)) < n_classes:
        return None
    pos = positive_index(n_classes, negative_index)
    if pos is not None:
        return float(roc_auc_score(y == pos, probs[:, pos]))
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(
        roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    )


def bootstrap_auc_ci(
    y: np.ndarray,
    probs: np.ndarray,
    negative_index: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`slide_auc` (resamples missing a class skipped).

    None when ``n_boot`` is 0 or too few resamples contain every class.
    """
    if n_boot <= 0:
        return None
    y, probs = np.asarray(y), np.asarray(probs)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        auc = slide_auc(y[idx], probs[idx], negative_index)
        if auc is not None:
            values.append(auc)
    if len(values) < n_boot // 2:
        return None
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def choose_threshold(y_val: np.ndarray, probs_val: np.ndarray, negative_index: int = 0) -> float:
    """Validation threshold on the positive probability maximising Youden's J (TPR - FPR).

    0.5 when validation lacks one of the classes (no ROC to choose from). Only meaningful for
    two classes; more classes are decided by the largest probability.
    """
    y_val, probs_val = np.asarray(y_val), np.asarray(probs_val)
    pos = positive_index(probs_val.shape[1], negative_index)
    if pos is None or len(np.unique(y_val == pos)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y_val == pos, probs_val[:, pos], drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    if 0 < best < len(thresholds) - 1:
        # Midway between the lowest validation score called positive and the next lower one:
        # a cut at the score itself puts unseen slides a hair below it on the wrong side.
        return float((thresholds[best] + thresholds[best + 1]) / 2)
    return float(min(thresholds[best], 1.0))


#: pooled validation slides of each class below which no threshold is estimated (0.5 is used).
MIN_VAL_PER_CLASS = 20


def pooled_threshold(
    y_val: np.ndarray,
    probs_val: np.ndarray,
    negative_index: int = 0,
    min_per_class: int = MIN_VAL_PER_CLASS,
    unit: str = "slides",
) -> tuple[float, str]:
    """A decision threshold and the rule that gave it, from pooled validation scores (``unit``:
    what one score is, in the rule's text: slides, or patients for patient-level bags).

    ``y_val``/``probs_val`` are validation predictions of several folds' models pooled (for a
    fold's threshold, without that fold's test slides: :mod:`wsi_mil.mil.thresholds`). The
    rule: Youden's J (:func:`choose_threshold`) when the pool holds at least ``min_per_class``
    slides of each class, else 0.5. Why a floor: below it the ROC is too coarse to beat 0.5,
    the cut at which a model trained with a class-weighted loss (the default; see
    :func:`wsi_mil.mil.train.slide_loss`) balances the two kinds of error.
    """
    y_val, probs_val = np.asarray(y_val), np.asarray(probs_val)
    if probs_val.ndim != 2 or probs_val.shape[1] != 2:
        return 0.5, "argmax (more than two classes)"
    pos = positive_index(2, negative_index)
    counts = np.bincount((y_val == pos).astype(int), minlength=2)
    if counts.min() < min_per_class:
        return 0.5, (
            f"0.5: pooled validation has {counts[0]} negative / {counts[1]} positive "
            f"{unit}, fewer than {min_per_class} of a class"
        )
    return choose_threshold(y_val, probs_val, negative_index), (
        f"Youden's J on pooled validation ({counts[0]} negative / {counts[1]} positive {unit})"
    )


def predict_indices(
    probs: np.ndarray, threshold: float | np.ndarray | None = None, negative_index: int = 0
) -> np.ndarray:
    """Class indices: positive when its probability reaches ``threshold`` (binary; one number,
    or one per row), else argmax."""
    probs = np.asarray(probs)
    pos = positive_index(probs.shape[1], negative_index)
    if pos is None or threshold is None:
        return probs.argmax(axis=1)
    return np.where(probs[:, pos] >= threshold, pos, negative_index)


def sensitivity_at_specificity(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, specificity: float
) -> float | None:
    """The highest sensitivity of any threshold whose specificity is at least ``specificity``
    (the operating points of the ROC curve; None without both classes).

    This is the screening question the study plan asks ("how many tumours are caught if 90 %
    of normal slides must be cleared?"), read off scikit-learn's ROC curve.
    """
    y_true = np.asarray(y_true, dtype=bool)
    if y_true.all() or not y_true.any():
        return None
    fpr, tpr, _ = roc_curve(y_true, np.asarray(scores, dtype=np.float64))
    allowed = fpr <= 1.0 - specificity + 1e-12
    return float(tpr[allowed].max())


def false_negative_rate(y_true: npt.ArrayLike, predicted: npt.ArrayLike) -> float | None:
    """Share of positive slides predicted negative (1 - sensitivity at the chosen threshold)."""
    y_true, predicted = np.asarray(y_true, dtype=bool), np.asarray(predicted, dtype=bool)
    if not y_true.any():
        return None
    return float((~predicted[y_true]).mean())


def slide_metrics(
    y: npt.ArrayLike,
    probs: np.ndarray,
    predicted: npt.ArrayLike,
    class_names: Sequence[str],
    negative_index: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC (+ bootstrap 95 % CI), accuracy, balanced accuracy, F1, confusion matrix, ROC curve,
    calibration (Brier score, ECE, reliability points: :mod:`wsi_mil.metrics.calibration`), and
    for two classes the sensitivity at 90 % and 95 % specificity and the false-negative rate at
    the chosen threshold.

    ``predicted`` are class indices already decided (with a validation threshold); F1 is the
    positive class's for two classes, macro otherwise. The confusion matrix has true classes as
    rows, predicted as columns, in ``class_names`` order.
    """
    y, probs, predicted = np.asarray(y), np.asarray(probs, np.float64), np.asarray(predicted)
    n_classes = len(class_names)
    labels = list(range(n_classes))
    pos = positive_index(n_classes, negative_index)
    auc = slide_auc(y, probs, negative_index)
    ci = bootstrap_auc_ci(y, probs, negative_index, n_boot, seed) if auc is not None else None
    if pos is not None:
        f1 = f1_score(y, predicted, labels=labels, pos_label=pos, average="binary", zero_division=0)
    else:
        f1 = f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
    roc: dict[str, Any] = {}
    for c in [pos] if pos is not None else labels:
        if len(np.unique(y == c)) == 2:
            fpr, tpr, _ = roc_curve(y == c, probs[:, c])
            roc[class_names[c]] = {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}
    return {
        "n_slides": len(y),
        "class_names": list(class_names),
        "positive_class": class_names[pos] if pos is not None else None,
        "auc": auc,
        "auc_ci95": list(ci) if ci is not None else None,
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted))
        if len(np.unique(y)) > 1
        else None,
        "f1": float(f1),
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
        # binary only: the screening operating points and the misses at the chosen threshold
        "sensitivity_at_90_specificity": sensitivity_at_specificity(y == pos, probs[:, pos], 0.90)
        if pos is not None
        else None,
        "sensitivity_at_95_specificity": sensitivity_at_specificity(y == pos, probs[:, pos], 0.95)
        if pos is not None
        else None,
        "false_negative_rate": false_negative_rate(y == pos, predicted == pos)
        if pos is not None
        else None,
        "roc": roc,
        **calibration_metrics(y, probs, pos),
    }


def aggregate_patients(
    patients: Sequence[str],
    y: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray,
    negative_index: int,
    aggregate: str = "mean",
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(patient ids, labels, probabilities, thresholds) with one row per patient.

    A patient's label is positive when any of its slides is (two classes; a lymph-node
    patient with one metastatic node is a positive patient); with more classes its slides must
    agree. Its probabilities are the mean of its slides' (``aggregate="mean"``) or those of its
    most positive slide (``"max"``, two classes only), and its threshold the mean of its
    slides' (one number when, as cross-validation by patient ensures, one fold predicted them).
    """
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pos = positive_index(probs.shape[1], negative_index)
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be mean or max, got {aggregate!r}")
    if aggregate == "max" and pos is None:
        raise ValueError("patient aggregate 'max' needs two classes (use 'mean')")
    order = list(dict.fromkeys(patients))
    members = {p: np.flatnonzero(np.asarray(patients) == p) for p in order}
    out_y, out_p, out_t = [], [], []
    for patient in order:
        idx = members[patient]
        if pos is not None:
            out_y.append(pos if (y[idx] == pos).any() else negative_index)
        elif len(set(y[idx].tolist())) > 1:
            raise ValueError(
                f"patient {patient!r} has slides of different classes; "
                f"patient-level metrics need one class per patient"
            )
        else:
            out_y.append(int(y[idx][0]))
        if aggregate == "max":
            out_p.append(probs[idx[np.argmax(probs[idx, pos])]])
        else:
            out_p.append(probs[idx].mean(axis=0))
        out_t.append(float(thresholds[idx].mean()))
    return order, np.asarray(out_y), np.asarray(out_p), np.asarray(out_t)
