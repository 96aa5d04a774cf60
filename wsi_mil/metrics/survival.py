"""Survival metrics of predicted risks, from scikit-survival and lifelines, in JSON-ready form.

* **Harrell's C** (``concordance_index_censored``): the share of comparable pairs (the earlier
  time is an event) whose risks are ordered the same way; 0.5 is chance.
* **Uno's C** (``concordance_index_ipcw``): the same, weighted by the inverse probability of
  censoring (Kaplan-Meier of the censoring times), so it does not depend on the censoring
  distribution; truncated at the last evaluation time ``tau``.
* **time-dependent AUC** (``cumulative_dynamic_auc``): at each evaluation time ``t``, how well
  the risk separates slides with an event by ``t`` from those still event-free after it
  (cumulative cases, dynamic controls, IPCW); its mean is weighted by the survival function.
* **integrated Brier score** (``integrated_brier_score``): the squared error of the predicted
  survival probabilities against the observed status over the evaluation times (IPCW), 0 best;
  0.25 is the score of a constant 0.5.

The censoring distribution of the IPCW metrics is estimated on ``survival_train``, the slides
whose censoring times it should describe: with out-of-fold predictions of one cohort, that cohort
(what scikit-survival's examples do when there is no separate training set). Evaluation times are
the percentiles of the event times a run recorded (:data:`wsi_mil.mil.tasks.SURVIVAL_PERCENTILES`),
kept within the scored slides' follow-up, as the IPCW estimators require.

Confidence intervals are percentile bootstraps of the scored slides (resamples in which a
metric is undefined, e.g. without an event, are skipped). **Risk groups**: Kaplan-Meier curves
(lifelines' ``KaplanMeierFitter``) of the slides the model called high and low risk, each at its
fold's cut (the median risk of that fold's training slides: never chosen on the slides it
splits), with the log-rank test (lifelines' ``multivariate_logrank_test``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_mil.extras import require_extra


def structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """scikit-survival's structured array of (event, time)."""
    require_extra("survival", "survival metrics")
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event, dtype=bool), np.asarray(time, dtype=np.float64))


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    """Harrell's concordance index (scikit-survival); None without a comparable pair."""
    require_extra("survival", "survival metrics")
    from sksurv.metrics import concordance_index_censored

    try:
        return float(
            concordance_index_censored(
                np.asarray(event, bool), np.asarray(time, np.float64), np.asarray(risk, np.float64)
            )[0]
        )
    except (ValueError, ZeroDivisionError):
        return None


def evaluation_times(time: np.ndarray, grid: npt.ArrayLike) -> np.ndarray:
    """The ``grid`` times strictly inside the scored slides' follow-up (IPCW needs both)."""
    time = np.asarray(time, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    return grid[(grid > time.min()) & (grid < time.max())]


def uno_c(
    train: np.ndarray, time: np.ndarray, event: np.ndarray, risk: np.ndarray, tau: float
) -> float | None:
    """Uno's IPCW concordance index truncated at ``tau`` (scikit-survival)."""
    require_extra("survival", "survival metrics")
    from sksurv.metrics import concordance_index_ipcw

    try:
        return float(
            concordance_index_ipcw(
                train, structured(time, event), np.asarray(risk, np.float64), tau=tau
            )[0]
        )
    except (ValueError, ZeroDivisionError):
        return None


def td_auc(
    train: np.ndarray, time: np.ndarray, event: np.ndarray, risk: np.ndarray, times: np.ndarray
) -> tuple[list[float | None], float] | None:
    """(AUC at each time, their mean weighted by the survival function): scikit-survival's
    ``cumulative_dynamic_auc``. A time at which the scored slides hold no case (no event yet) or
    no control is undefined (None; numpy's 0/0 warning is not shown: a few test slides of a
    fold often have such a time); None when the mean is."""
    require_extra("survival", "survival metrics")
    from sksurv.metrics import cumulative_dynamic_auc

    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs, mean = cumulative_dynamic_auc(
                train, structured(time, event), np.asarray(risk, np.float64), times
            )
    except (ValueError, ZeroDivisionError):
        return None
    if not np.isfinite(mean):
        return None
    return [float(a) if np.isfinite(a) else None for a in aucs], float(mean)


def integrated_brier(
    train: np.ndarray, time: np.ndarray, event: np.ndarray, survival: np.ndarray, times: np.ndarray
) -> float | None:
    """Integrated Brier score of survival probabilities ``[n, len(times)]`` (scikit-survival);
    None with fewer than two times (nothing to integrate)."""
    require_extra("survival", "survival metrics")
    from sksurv.metrics import integrated_brier_score

    if len(times) < 2:
        return None
    try:
        return float(
            integrated_brier_score(
                train, structured(time, event), np.asarray(survival, np.float64), times
            )
        )
    except (ValueError, ZeroDivisionError):
        return None


def _bootstrap(
    n: int, statistic: Callable[[np.ndarray], float | None], n_boot: int, seed: int
) -> list[float] | None:
    """Percentile bootstrap 95 % interval of ``statistic(indices)`` over ``n`` slides."""
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # a resample without a case or control at some time divides by zero inside
        # scikit-survival; its metric is then NaN or None and is skipped
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(n_boot):
            value = statistic(rng.integers(0, n, n))
            if value is not None and np.isfinite(value):
                values.append(value)
    if len(values) < n_boot // 2:
        return None
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


@contextmanager
def _quiet_lifelines() -> Iterator[None]:
    """No deprecation warnings from lifelines' own pandas calls (under pandas 3: positional
    arguments that pandas 4 will refuse): nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def logrank(time: np.ndarray, event: np.ndarray, groups: npt.ArrayLike) -> dict[str, Any] | None:
    """lifelines' log-rank test between the groups; None with fewer than two groups."""
    require_extra("survival", "survival metrics")
    from lifelines.statistics import multivariate_logrank_test

    groups = np.asarray(groups)
    if len(np.unique(groups)) < 2:
        return None
    with _quiet_lifelines():
        result = multivariate_logrank_test(
            np.asarray(time, np.float64), groups, np.asarray(event, bool)
        )
    return {
        "p_value": float(result.p_value),
        "statistic": float(result.test_statistic),
        "test": "log-rank (lifelines multivariate_logrank_test)",
        "groups": {str(g): int((groups == g).sum()) for g in np.unique(groups)},
    }


def survival_metrics(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    survival: np.ndarray | None,
    grid: npt.ArrayLike,
    groups: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    train: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Harrell's and Uno's C, the time-dependent AUC and the integrated Brier score with
    bootstrap 95 % intervals, and the log-rank test of the risk ``groups`` (module docstring).

    ``survival`` ``[n, len(grid)]``: each slide's predicted survival at the ``grid`` times (for
    the Brier score). ``train``: (time, event) of the slides whose censoring the IPCW weights
    describe (default: the scored slides).
    """
    time, event = np.asarray(time, np.float64), np.asarray(event, np.float64)
    risk = np.asarray(risk, np.float64).reshape(-1)
    grid = np.asarray(grid, np.float64)
    ref = structured(*(train if train is not None else (time, event)))
    times = evaluation_times(time, grid)
    columns = np.isin(grid, times)
    tau = float(times.max()) if len(times) else None

    def at(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return time[idx], event[idx], risk[idx]

    every = np.arange(len(time))
    harrell = harrell_c(*at(every))
    uno = uno_c(ref, *at(every), tau) if tau is not None else None
    auc = td_auc(ref, *at(every), times) if len(times) else None
    surv = None if survival is None else np.asarray(survival, np.float64)[:, columns]
    ibs = integrated_brier(ref, time, event, surv, times) if surv is not None else None

    def boot(fn: Callable[[np.ndarray], float | None]) -> list[float] | None:
        return _bootstrap(len(time), fn, n_boot, seed)

    def boot_ibs(idx: np.ndarray) -> float | None:
        inside = evaluation_times(time[idx], times)
        if surv is None or len(inside) < 2:  # (bootstrapped only when there is a score)
            return None
        return integrated_brier(
            ref, time[idx], event[idx], surv[idx][:, np.isin(times, inside)], inside
        )

    def boot_uno(idx: np.ndarray) -> float | None:
        return None if tau is None else uno_c(ref, *at(idx), tau)

    def boot_auc(idx: np.ndarray) -> float | None:
        inside = evaluation_times(time[idx], times)
        result = td_auc(ref, *at(idx), inside) if len(inside) else None
        return None if result is None else result[1]

    out: dict[str, Any] = {
        "n_slides": len(time),
        "n_events": int(event.sum()),
        "harrell_c": harrell,
        "harrell_c_ci95": boot(lambda i: harrell_c(*at(i))) if harrell is not None else None,
        "uno_c": uno,
        "uno_c_ci95": boot(boot_uno) if uno is not None else None,
        "uno_c_tau": tau,
        "td_auc_times": times.tolist(),
        "td_auc": None if auc is None else auc[0],
        "td_auc_mean": None if auc is None else auc[1],
        "td_auc_mean_ci95": boot(boot_auc) if auc is not None else None,
        "integrated_brier": ibs,
        "integrated_brier_ci95": boot(boot_ibs) if ibs is not None else None,
        "evaluation_times": "percentiles 10-90 of the run's labelled event times, within the "
        "scored slides' follow-up",
    }
    if groups is not None:
        out["logrank"] = logrank(time, event, groups)
    return out


def kaplan_meier_curves(
    time: np.ndarray, event: np.ndarray, groups: npt.ArrayLike
) -> dict[str, dict[str, list[float]]]:
    """Each group's Kaplan-Meier curve (lifelines' ``KaplanMeierFitter``): times, survival and
    its 95 % confidence band."""
    require_extra("survival", "survival metrics")
    from lifelines import KaplanMeierFitter

    groups = np.asarray(groups)
    curves = {}
    for group in sorted(np.unique(groups)):
        keep = groups == group
        with _quiet_lifelines():
            km = KaplanMeierFitter().fit(
                np.asarray(time, np.float64)[keep], np.asarray(event, bool)[keep], label=str(group)
            )
        band = km.confidence_interval_survival_function_
        curves[str(group)] = {
            "time": km.survival_function_.index.to_numpy(dtype=float).tolist(),
            "survival": km.survival_function_.iloc[:, 0].to_numpy(dtype=float).tolist(),
            "lower": band.iloc[:, 0].to_numpy(dtype=float).tolist(),
            "upper": band.iloc[:, 1].to_numpy(dtype=float).tolist(),
        }
    return curves
