"""Decision thresholds of a cross-validated run that never see the slides they judge.

**Per fold.** Fold ``k``'s threshold decides fold ``k``'s test slides. It is chosen (by
:func:`wsi_mil.metrics.slide.pooled_threshold`: Youden's J when the pool holds
``min_per_class`` slides of each class, else 0.5) on the validation predictions of *every*
fold's model pooled, **minus every prediction of a slide in fold k's test part**. Why the
exclusion: fold ``j``'s validation slides are carved from everything outside fold ``j``'s test,
so they include other folds' test slides; one threshold from all folds' validation predictions
pooled had, in a 174-slide cohort, seen the labels of 40-74 % of the test slides it was then
applied to. Why pooled rather than fold ``k``'s own ~18 validation slides: a per-fold Youden
threshold on so few slides swings from 0.17 to 0.96 between folds. The pooled out-of-fold
metrics then use each fold's own threshold for its test slides.

**Ensemble.** For new slides the folds' models are combined in log-odds: the ensemble's class
probabilities are the normalised geometric mean of the members' (for two classes, the mean of
their logits), and its threshold is the one whose logit is the mean of the members' threshold
logits (:func:`ensemble_threshold`). So the ensemble calls a slide positive exactly when its
members' log-odds lie above their own thresholds' on average: no threshold is ever chosen for
fold-averaged probabilities from single-fold ones (whose spread differs), and none needs the
ensemble-like predictions on labelled slides that cross-validation cannot give (every cohort
slide trained all but one or two of the members).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsi_mil.metrics.slide import pooled_threshold

#: a probability's logit is taken after clipping to [EPS, 1 - EPS] (a 0 or 1 has no logit)
EPS = 1e-7


@dataclass(frozen=True)
class FoldThreshold:
    """One fold's decision threshold, the rule that chose it and the slides it was chosen on."""

    fold: int
    threshold: float
    rule: str
    pool: tuple[str, ...]  # slide ids of the validation predictions it was chosen on

    def as_dict(self, with_pool: bool = False) -> dict[str, object]:
        out: dict[str, object] = {"fold": self.fold, "threshold": self.threshold,
                                  "rule": self.rule, "n_pool": len(self.pool)}
        if with_pool:
            out["pool"] = sorted(set(self.pool))
        return out


def fold_thresholds(val_ids: Sequence[Sequence[str]], val_y: Sequence[np.ndarray],
                    val_p: Sequence[np.ndarray], test_ids: Sequence[Sequence[str]],
                    folds: Sequence[int], negative_index: int,
                    min_per_class: int) -> list[FoldThreshold]:
    """Each fold's threshold from every fold's validation predictions except fold k's test
    slides' (the module docstring says why). The ``i``-th entry of each sequence belongs to
    fold ``folds[i]``; ``val_p`` are class probabilities ``[n, C]``."""
    ids = np.concatenate([np.asarray(v, dtype=str) for v in val_ids]) if val_ids else np.zeros(0)
    y = np.concatenate(val_y) if val_y else np.zeros(0, dtype=int)
    p = np.concatenate(val_p) if val_p else np.zeros((0, 2))
    out = []
    for fold, test in zip(folds, test_ids, strict=True):
        keep = ~np.isin(ids, np.asarray(test, dtype=str))
        threshold, rule = pooled_threshold(y[keep], p[keep], negative_index, min_per_class)
        out.append(FoldThreshold(int(fold), float(threshold), rule,
                                 tuple(str(s) for s in ids[keep])))
    return out


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def ensemble_probs(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Normalised geometric mean of the members' class probabilities (``[C]`` or ``[n, C]``
    each): the softmax of their mean log-probabilities. One member: its own probabilities."""
    if len(member_probs) == 1:
        return np.asarray(member_probs[0], dtype=np.float64)
    logs = np.log(np.clip(np.asarray(member_probs, dtype=np.float64), EPS, None))
    mean = logs.mean(axis=0)
    mean -= mean.max(axis=-1, keepdims=True)
    probs = np.exp(mean)
    return probs / probs.sum(axis=-1, keepdims=True)


def ensemble_threshold(thresholds: Sequence[float]) -> float:
    """The threshold whose logit is the mean of the members' thresholds' logits (one member:
    its own). With :func:`ensemble_probs` the ensemble is positive exactly when the members'
    log-odds exceed their own thresholds' log-odds on average."""
    if len(thresholds) == 1:
        return float(thresholds[0])
    mean = float(np.mean(logit(np.asarray(thresholds, dtype=np.float64))))
    return float(1.0 / (1.0 + np.exp(-mean)))


ENSEMBLE_RULE = ("ensemble: geometric mean of the folds' probabilities, threshold at the mean "
                 "of the folds' threshold logits (positive when the folds' log-odds exceed "
                 "their own thresholds' on average)")
