"""Whether a model's probabilities mean what they say: Brier score, expected calibration error
(ECE), the reliability curve, and temperature scaling.

**Which probability.** For two classes, the positive class's probability against the slide
being positive (the number a pathologist reads off a report); for more classes, the top-label
confidence (the largest probability) against the prediction being right, as Guo et al. 2017
define ECE for multi-class models.

**ECE** (Naeini et al. 2015; Guo et al. 2017): the probabilities are cut into ``n_bins``
equal-width bins on [0, 1] (15, Guo et al.'s choice), and ECE is the slide-weighted mean over
bins of |observed frequency - mean probability|. Hand-written because scikit-learn has the
reliability curve (:func:`sklearn.calibration.calibration_curve`, used here for the diagram's
points) but no ECE; the bin edges are scikit-learn's, so both agree.

**Temperature scaling** (Guo et al. 2017): one scalar ``T`` divides the logits, fitted by
minimising the negative log-likelihood of held-out (validation) predictions; it changes no
ranking (AUC is unchanged) and, for two classes, moves probabilities towards or away from 0.5.
Fitted here from stored class probabilities: ``log p`` differs from the logits by a per-slide
constant, which a softmax ignores, so ``softmax(log p / T)`` equals ``softmax(logits / T)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

#: Guo et al. 2017's bin count for ECE and reliability diagrams.
N_BINS = 15
#: probabilities are clipped to [EPS, 1 - EPS] before a logarithm
EPS = 1e-12


def calibration_target(
    y: np.ndarray, probs: np.ndarray, positive: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(outcome in {0, 1}, probability of that outcome) that calibration is measured on: the
    positive class's probability for two classes (``positive`` its index), else the top-label
    confidence and whether the top label is right."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if positive is not None:
        return (y == positive).astype(float), probs[:, positive]
    return (probs.argmax(axis=1) == y).astype(float), probs.max(axis=1)


def brier_score(y: np.ndarray, probs: np.ndarray, positive: int | None) -> float:
    """For two classes the usual binary Brier score, the mean squared error of the positive
    class's probability (scikit-learn's ``brier_score_loss``, in [0, 1]); for more classes
    Brier's (1950) multi-class form, the squared distance to the one-hot truth summed over
    classes (in [0, 2])."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if positive is not None:
        return float(brier_score_loss(y == positive, probs[:, positive]))
    onehot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _bin_of(prob: np.ndarray, n_bins: int) -> np.ndarray:
    """Each probability's bin, scikit-learn's binning (calibration_curve): bin i holds
    edges[i] < p <= edges[i+1] of ``n_bins`` equal-width bins on [0, 1]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], prob)


def expected_calibration_error(
    outcome: np.ndarray, prob: np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE of probabilities ``prob`` of binary ``outcome`` (see the module docstring)."""
    outcome, prob = np.asarray(outcome, dtype=float), np.asarray(prob, dtype=np.float64)
    if outcome.size == 0:
        return float("nan")
    which = _bin_of(prob, n_bins)
    total = 0.0
    for b in np.unique(which):
        in_bin = which == b
        total += in_bin.sum() * abs(outcome[in_bin].mean() - prob[in_bin].mean())
    return float(total / outcome.size)


def calibration_metrics(
    y: np.ndarray, probs: np.ndarray, positive: int | None, n_bins: int = N_BINS
) -> dict[str, Any]:
    """Brier score, ECE and the reliability curve's points with the slides behind each (a point
    of two slides says little: the diagram prints the counts), JSON-ready."""
    outcome, prob = calibration_target(y, probs, positive)
    observed, predicted = calibration_curve(outcome, prob, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(_bin_of(prob, n_bins), minlength=n_bins)
    return {
        "brier": brier_score(y, probs, positive),
        "ece": expected_calibration_error(outcome, prob, n_bins),
        "ece_bins": n_bins,
        "calibrated_quantity": (
            "positive-class probability" if positive is not None else "top-label confidence"
        ),
        "reliability": {
            "mean_predicted": predicted.round(6).tolist(),
            "observed": observed.round(6).tolist(),
            "count": counts[counts > 0].tolist(),  # calibration_curve's non-empty bins
        },
    }


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log probs / temperature)`` row-wise (``[C]`` or ``[n, C]``)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    scaled = np.log(np.clip(probs, EPS, None)) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    out = np.exp(scaled)
    return out / out.sum(axis=-1, keepdims=True)


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``probs`` for labels ``y``
    (searched on log T in [-3, 3], i.e. T in [0.05, 20]); 1.0 with fewer than two classes
    present (nothing to calibrate against)."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return 1.0
    log_p = np.log(np.clip(probs, EPS, None))

    def nll(log_t: float) -> float:
        scaled = log_p / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[np.arange(len(y)), y]))

    best = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x))
