"""Regression metrics of predicted values, in JSON-ready form: R², MAE, RMSE, Pearson's and
Spearman's r, each with a 95 % confidence interval.

R² and MAE are scikit-learn's (``r2_score``: 1 - residual / total sum of squares, so a model
worse than the mean scores below 0); Pearson's and Spearman's r are SciPy's. Intervals are
percentile bootstraps of the scored slides for every metric (for Pearson's r SciPy's Fisher-z
interval is reported beside it, which assumes normality), since slide cohorts are small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _bootstrap(
    y: np.ndarray,
    p: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int,
    seed: int,
) -> list[float] | None:
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if np.ptp(y[idx]) == 0 or np.ptp(p[idx]) == 0:
            continue  # R² and the correlations are undefined on a constant resample
        values.append(fn(y[idx], p[idx]))
    if len(values) < n_boot // 2:
        return None
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def regression_metrics(
    y: np.ndarray, predicted: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """R², MAE, RMSE, Pearson's and Spearman's r of ``predicted`` against ``y``, with bootstrap
    95 % intervals."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    y, predicted = np.asarray(y, np.float64), np.asarray(predicted, np.float64).reshape(-1)

    def rmse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a - b) ** 2)))

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        return float(pearsonr(a, b).statistic)

    def spearman(a: np.ndarray, b: np.ndarray) -> float:
        return float(spearmanr(a, b).statistic)

    def r2(a: np.ndarray, b: np.ndarray) -> float:
        return float(r2_score(a, b))

    def mae(a: np.ndarray, b: np.ndarray) -> float:
        return float(mean_absolute_error(a, b))

    varied = len(y) > 2 and np.ptp(y) > 0 and np.ptp(predicted) > 0
    out: dict[str, Any] = {"n_slides": len(y)}
    for name, fn, needs_variation in (
        ("r2", r2, False),
        ("mae", mae, False),
        ("rmse", rmse, False),
        ("pearson_r", pearson, True),
        ("spearman_r", spearman, True),
    ):
        if needs_variation and not varied:
            out[name], out[f"{name}_ci95"] = None, None
            continue
        out[name] = fn(y, predicted)
        out[f"{name}_ci95"] = _bootstrap(y, predicted, fn, n_boot, seed)
    if varied:
        interval = pearsonr(y, predicted).confidence_interval(0.95)
        out["pearson_r_fisher_ci95"] = [float(interval.low), float(interval.high)]
    return out
