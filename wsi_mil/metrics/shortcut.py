"""Shortcut measures: can a probe tell the site from the features, and does attention go to junk?

A MIL model trained on a multi-centre cohort can learn the centre (stain, scanner, tissue
handling) instead of the disease when the centre goes with the label. Two checks, on arrays:

* :func:`site_probe`: a cross-validated logistic regression (scikit-learn) predicting the site
  from one vector per slide; its balanced accuracy is compared with chance (1 / number of
  sites) by a permutation test (scikit-learn's ``permutation_test_score``: the same
  cross-validation on labels shuffled ``permutations`` times), which holds for any class
  balance and any fold structure, where a binomial reference would not.
* :func:`label_association`: how strongly the site alone predicts the label (Cramér's V with a
  chi-squared p-value, scipy), the other half of a shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated balanced accuracy of a probe, with chance and a permutation p-value."""

    balanced_accuracy: float
    chance: float
    p_value: float
    n_slides: int
    n_classes: int
    folds: int
    permutations: int


def site_probe(
    vectors: np.ndarray, sites: np.ndarray, folds: int = 5, permutations: int = 200, seed: int = 0
) -> ProbeResult:
    """Balanced accuracy of predicting ``sites`` from ``vectors`` ``[slides, D]`` (stratified
    k-fold, standardised features, L2 logistic regression), and its permutation p-value."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, permutation_test_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    vectors = np.asarray(vectors, dtype=np.float64)
    sites = np.asarray(sites)
    classes, counts = np.unique(sites, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the probe needs at least two sites, got {list(classes)}")
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise ValueError(
            f"every site needs at least two slides for a cross-validated probe; "
            f"site {classes[counts.argmin()]!r} has {counts.min()}"
        )
    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # thousands of fits on a few dozen slides: BLAS threads only contend (measured 5x slower)
    with threadpool_limits(limits=1):
        score, _, p_value = permutation_test_score(
            model,
            vectors,
            sites,
            scoring="balanced_accuracy",
            cv=cv,
            n_permutations=permutations,
            random_state=seed,
        )
    return ProbeResult(
        float(score),
        1.0 / len(classes),
        float(p_value),
        len(sites),
        len(classes),
        folds,
        permutations,
    )


@dataclass(frozen=True)
class Association:
    cramers_v: float
    p_value: float


def label_association(sites: np.ndarray, labels: np.ndarray) -> Association:
    """Cramér's V between site and label, with the chi-squared test's p-value."""
    from scipy.stats import chi2_contingency

    site_values, site_index = np.unique(np.asarray(sites), return_inverse=True)
    label_values, label_index = np.unique(np.asarray(labels), return_inverse=True)
    table = np.zeros((len(site_values), len(label_values)))
    np.add.at(table, (site_index, label_index), 1)
    if min(table.shape) < 2:
        return Association(0.0, 1.0)
    chi2, p_value, _, _ = chi2_contingency(table, correction=False)
    v = np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
    return Association(float(v), float(p_value))


def flagged_share(weights: np.ndarray, flagged: np.ndarray) -> float:
    """The share of one slide's attention (``weights`` summing to 1) on ``flagged`` tiles."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return float(weights[np.asarray(flagged, dtype=bool)].sum() / total) if total > 0 else 0.0
