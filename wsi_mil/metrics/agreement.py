"""Agreement between raters who scored the same slides on an ordinal 1-5 scale.

Two raters: Cohen's kappa with quadratic weights (scikit-learn), which counts a 4 against a 5
as a near miss and a 1 against a 5 as a full disagreement, the usual choice for ordinal
scores. Three or more: Fleiss' kappa (statsmodels), which has no weighted form but is the
standard chance-corrected agreement of a fixed number of raters per subject. Only slides that
every rater scored enter the kappa; each rater's own count is reported beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsi_mil.extras import require_extra

#: the ordinal scale of the ratings
CATEGORIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class QuestionAgreement:
    """The agreement on one question."""

    question: str
    method: str  # "cohen_quadratic" or "fleiss"
    kappa: float  # NaN when undefined (fewer than 2 common slides, or no variation at all)
    n_common: int  # slides scored by every rater
    n_raters: int


def cohen_quadratic_kappa(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cohen's kappa with quadratic weights between two raters' scores of the same slides."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores against {len(b)}")
    if len(a) < 2:
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # raters who both gave one same score leave kappa undefined: NaN, reported as n/a
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(cohen_kappa_score(a, b, labels=list(CATEGORIES), weights="quadratic"))


def fleiss_kappa(scores: np.ndarray) -> float:
    """Fleiss' kappa of ``scores`` ``[n_slides, n_raters]`` (every rater scored every slide)."""
    require_extra("agreement", "Fleiss' kappa")
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"need [slides, raters] with at least 2 raters, got {scores.shape}")
    if scores.shape[0] < 2:
        return math.nan
    counts, _ = aggregate_raters(scores, n_cat=None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(sm_fleiss_kappa(counts, method="fleiss"))


def agreement(
    ratings: Mapping[str, Mapping[str, Mapping[str, int]]], questions: Sequence[str]
) -> list[QuestionAgreement]:
    """Per-question agreement of ``ratings`` (rater -> slide id -> question -> score)."""
    raters = sorted(ratings)
    if len(raters) < 2:
        raise ValueError(f"agreement needs at least 2 raters, got {len(raters)} ({raters})")
    common = sorted(set.intersection(*(set(ratings[r]) for r in raters)))
    rows = []
    for question in questions:
        table = np.array(
            [[int(ratings[r][s][question]) for r in raters] for s in common], dtype=np.int64
        ).reshape(len(common), len(raters))
        if len(raters) == 2:
            kappa, method = cohen_quadratic_kappa(table[:, 0], table[:, 1]), "cohen_quadratic"
        else:
            kappa, method = fleiss_kappa(table), "fleiss"
        rows.append(QuestionAgreement(question, method, kappa, len(common), len(raters)))
    return rows
