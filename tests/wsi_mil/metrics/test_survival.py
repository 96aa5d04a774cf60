"""Survival metrics: Harrell's and Uno's C, the time-dependent AUC and the integrated Brier
score against scikit-survival's own functions on the same arrays (and Harrell's C against a
count by hand), the log-rank test against lifelines."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from wsi_mil.metrics.survival import evaluation_times, harrell_c, logrank, survival_metrics


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(3)
    n = 60
    z = rng.uniform(0, 1, n)
    event_time = 60 * np.exp(-2.5 * z + 0.4 * rng.standard_normal(n))
    censor = rng.uniform(0, 120, n)
    time, event = np.minimum(event_time, censor), (event_time <= censor).astype(float)
    risk = z + 0.3 * rng.standard_normal(n)
    grid = np.percentile(time[event > 0], np.arange(10, 91, 10))
    survival = np.exp(-np.outer(np.exp(risk), grid) / 60)  # any curves falling with risk
    return time, event, risk, grid, survival


def test_harrell_c_counts_concordant_pairs_by_hand():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1.0, 0.0, 1.0, 1.0])
    risk = np.array([0.9, 0.1, 0.5, 0.6])
    # comparable pairs (the earlier time an event): (0,1) (0,2) (0,3) (2,3); concordant when
    # the earlier has the higher risk: (0,1) (0,2) (0,3) yes, (2,3) no -> 3 / 4
    assert harrell_c(time, event, risk) == pytest.approx(0.75)


def test_metrics_equal_scikit_survivals_on_the_same_arrays(cohort):
    time, event, risk, grid, survival = cohort
    metrics = survival_metrics(time, event, risk, survival, grid, n_boot=0)
    y = Surv.from_arrays(event.astype(bool), time)
    times = evaluation_times(time, grid)
    assert len(times) == len(grid)  # the percentiles lie within the follow-up
    assert metrics["harrell_c"] == pytest.approx(
        concordance_index_censored(event.astype(bool), time, risk)[0]
    )
    assert metrics["uno_c"] == pytest.approx(concordance_index_ipcw(y, y, risk, tau=times.max())[0])
    aucs, mean = cumulative_dynamic_auc(y, y, risk, times)
    assert metrics["td_auc"] == pytest.approx(aucs.tolist())
    assert metrics["td_auc_mean"] == pytest.approx(mean)
    assert metrics["integrated_brier"] == pytest.approx(
        integrated_brier_score(y, y, survival, times)
    )
    assert metrics["harrell_c"] > 0.6  # the risks carry the burden: not a chance ranking


def test_intervals_bracket_the_estimates_and_a_separate_reference_changes_uno(cohort):
    time, event, risk, grid, survival = cohort
    metrics = survival_metrics(time, event, risk, survival, grid, n_boot=60, seed=1)
    for name in ("harrell_c", "uno_c", "td_auc_mean", "integrated_brier"):
        low, high = metrics[f"{name}_ci95"]
        estimate = metrics[name if name != "td_auc_mean" else "td_auc_mean"]
        assert low <= estimate <= high, name
    # the IPCW weights come from the reference set when one is given
    half = slice(0, 30)
    scored = survival_metrics(
        time[half], event[half], risk[half], survival[half], grid, n_boot=0, train=(time, event)
    )
    times = evaluation_times(time[half], grid)
    y_all = Surv.from_arrays(event.astype(bool), time)
    y_half = Surv.from_arrays(event[half].astype(bool), time[half])
    assert scored["uno_c"] == pytest.approx(
        concordance_index_ipcw(y_all, y_half, risk[half], tau=times.max())[0]
    )


def test_logrank_is_lifelines(cohort):
    from lifelines.statistics import multivariate_logrank_test

    time, event, risk, _, _ = cohort
    groups = np.where(risk >= np.median(risk), "high risk", "low risk")
    result = logrank(time, event, groups)
    with warnings.catch_warnings():  # lifelines' own pandas calls, deprecated in pandas 3
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = multivariate_logrank_test(time, groups, event.astype(bool)).p_value
    assert result["p_value"] == pytest.approx(reference)
    assert result["groups"] == {"high risk": 30, "low risk": 30}
    assert logrank(time, event, ["all"] * len(time)) is None


def test_td_auc_at_a_time_without_cases_is_none_and_prints_nothing():
    from wsi_mil.metrics.survival import structured, td_auc

    time, event = np.array([5.0, 6.0, 7.0, 8.0]), np.array([0.0, 1.0, 1.0, 1.0])
    train = structured(time, event)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 0/0 would raise here
        result = td_auc(
            train, time, event, np.array([4.0, 3.0, 2.0, 1.0]), np.array([5.5, 6.5])
        )  # by 5.5 no slide has had its event
    assert result is None
