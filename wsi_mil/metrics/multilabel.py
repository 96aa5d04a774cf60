"""Multi-label slide metrics (several 0/1 targets per slide), from scikit-learn, JSON-ready.

Per target: AUC with a bootstrap 95 % interval (:func:`wsi_mil.metrics.slide.bootstrap_auc_ci`),
sensitivity and specificity at the target's decision threshold, Brier score. Over targets: the
macro AUC (the mean of the targets' AUCs) with a bootstrap interval, the Hamming loss (the share
of slide-target decisions that are wrong: scikit-learn's ``hamming_loss``) and the subset
accuracy (the share of slides whose every target is right: ``accuracy_score`` on the 0/1
matrix). The decisions are taken at each target's threshold, chosen on validation slides as a
binary classification's (:mod:`wsi_mil.mil.thresholds`), never on the slides scored here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, hamming_loss, roc_auc_score, roc_curve


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean AUC over the targets that have both values among the slides (None if none has)."""
    values = [v for t in range(y.shape[1]) if (v := _auc(y[:, t], probs[:, t])) is not None]
    return float(np.mean(values)) if values else None


def multilabel_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    predicted: np.ndarray,
    targets: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-target and overall metrics (module docstring); ``y``, ``predicted``: 0/1
    ``[n, T]``, ``probs`` ``[n, T]``."""
    from wsi_mil.metrics.slide import bootstrap_auc_ci

    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=int)
    per_target = {}
    roc = {}
    for t, name in enumerate(targets):
        auc = _auc(y[:, t], probs[:, t])
        two = np.stack([1 - probs[:, t], probs[:, t]], axis=1)
        pos, neg = y[:, t] == 1, y[:, t] == 0
        per_target[name] = {
            "auc": auc,
            "auc_ci95": (
                list(ci)
                if auc is not None
                and (ci := bootstrap_auc_ci(y[:, t], two, 0, n_boot, seed)) is not None
                else None
            ),
            "sensitivity": float(predicted[pos, t].mean()) if pos.any() else None,
            "specificity": float(1 - predicted[neg, t].mean()) if neg.any() else None,
            "brier": float(brier_score_loss(y[:, t], probs[:, t])),
            "n_positive": int(pos.sum()),
        }
        if auc is not None:
            fpr, tpr, _ = roc_curve(y[:, t], probs[:, t])
            roc[name] = {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}
    macro = macro_auc(y, probs)
    macro_ci: list[float] | None = None
    if macro is not None and n_boot > 0:
        rng = np.random.default_rng(seed)
        values: list[float] = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            if (
                all(len(np.unique(y[idx, t])) == 2 for t in range(y.shape[1]))
                and (resampled := macro_auc(y[idx], probs[idx])) is not None
            ):
                values.append(resampled)
        if len(values) >= n_boot // 2:
            macro_ci = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
    return {
        "n_slides": len(y),
        "targets": list(targets),
        "per_target": per_target,
        "macro_auc": macro,
        "macro_auc_ci95": macro_ci,
        "hamming_loss": float(hamming_loss(y, predicted)),
        "subset_accuracy": float(accuracy_score(y, predicted)),
        "roc": roc,
    }
