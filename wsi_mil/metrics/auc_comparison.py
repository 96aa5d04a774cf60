"""Is one model's AUC higher than another's on the same slides? DeLong's test.

DeLong, DeLong & Clarke-Pearson (Biometrics 1988) give the covariance of two correlated AUCs
(two scores of the same slides) from the "structural components" of the Mann-Whitney statistic:
for each positive slide ``i`` its share ``V10_i`` of negatives scored below it, for each
negative slide ``j`` its share ``V01_j`` of positives scored above it (ties count one half).
``AUC = mean(V10) = mean(V01)``, and
``Var(AUC_a - AUC_b) = (S10_aa + S10_bb - 2 S10_ab) / m + (S01_aa + S01_bb - 2 S01_ab) / n``
with ``S10``/``S01`` the sample covariances (ddof 1) of the components over the ``m``
positive / ``n`` negative slides. The components come from midranks (Sun & Xu, IEEE SPL
2014), O(N log N). The test is two-sided on ``z = diff / sqrt(Var)``, and the 95 % interval of
the difference is ``diff ± 1.96 sqrt(Var)``.

Hand-written because neither scikit-learn, SciPy nor statsmodels has it; pROC's ``roc.test``
(R) is the reference implementation the tests are checked against by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata


def structural_components(
    scores: np.ndarray, positive: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 over positives, V01 over negatives) of one score vector."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    x, y = scores[positive], scores[~positive]
    m, n = len(x), len(y)
    combined = rankdata(np.concatenate([x, y]))  # midranks
    v10 = (combined[:m] - rankdata(x)) / n
    v01 = 1.0 - (combined[m:] - rankdata(y)) / m
    return float(v10.mean()), v10, v01


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    """DeLong's test of AUC(a) - AUC(b) on the same slides (``positive``: bool truth)."""
    positive = np.asarray(positive, dtype=bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's test needs at least 2 positive and 2 negative slides, got "
            f"{m} positive and {n} negative"
        )
    auc_a, v10_a, v01_a = structural_components(scores_a, positive)
    auc_b, v10_b, v01_b = structural_components(scores_b, positive)
    s10 = np.cov(np.stack([v10_a, v10_b]), ddof=1)
    s01 = np.cov(np.stack([v01_a, v01_b]), ddof=1)
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n)
    diff = auc_a - auc_b
    se = float(np.sqrt(max(variance, 0.0)))
    # no variance (e.g. both rankings perfect): no evidence of a difference
    z = diff / se if se > 0 else 0.0
    p_value = float(2 * norm.sf(abs(z))) if se > 0 else 1.0
    half = float(norm.ppf(0.975) * se)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "se": se,
        "z": float(z),
        "p_value": p_value,
        "ci95": [diff - half, diff + half],
        "n_positive": m,
        "n_negative": n,
        "test": "DeLong (paired, two-sided)",
    }
