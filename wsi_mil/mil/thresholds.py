"""Decision thresholds of a cross-validated run that never see the slides they judge.

**Per fold.** Fold ``k``'s threshold decides fold ``k``'s test slides. It is chosen on the
validation predictions of *every* fold's model pooled, **minus every prediction of a slide in
fold k's test part**: 0.5 when that pool holds fewer than ``min_per_class`` slides of a class
(:func:`wsi_mil.metrics.slide.pooled_threshold`), else Youden's J if a nested check on
held-out validation folds finds it beats 0.5 (:func:`nested_rule`), else 0.5. Why the
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
from sklearn.metrics import balanced_accuracy_score

from wsi_mil.metrics.slide import choose_threshold, pooled_threshold, positive_index

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
        out: dict[str, object] = {
            "fold": self.fold,
            "threshold": self.threshold,
            "rule": self.rule,
            "n_pool": len(self.pool),
        }
        if with_pool:
            out["pool"] = sorted(set(self.pool))
        return out


def fold_thresholds(
    val_ids: Sequence[Sequence[str]],
    val_y: Sequence[np.ndarray],
    val_p: Sequence[np.ndarray],
    test_ids: Sequence[Sequence[str]],
    folds: Sequence[int],
    negative_index: int,
    min_per_class: int,
    nested_check: bool = True,
    unit: str = "slides",
) -> list[FoldThreshold]:
    """Each fold's threshold from every fold's validation predictions except fold k's test
    slides' (the module docstring says why), with Youden's J kept only where the nested check
    (:func:`nested_rule`) finds it beats 0.5 on validation slides it did not see
    (``nested_check=False``: the pool's Youden cut as it is, the rule before the check, for
    ``scripts/bench_threshold_rules.py``). The ``i``-th entry of each sequence belongs to fold
    ``folds[i]``; ``val_p`` are class probabilities ``[n, C]``; ``unit`` names the ids in the
    rules' text (slides, or patients for patient-level bags)."""
    ids = np.concatenate([np.asarray(v, dtype=str) for v in val_ids]) if val_ids else np.zeros(0)
    y = np.concatenate(val_y) if val_y else np.zeros(0, dtype=int)
    p = np.concatenate(val_p) if val_p else np.zeros((0, 2))
    source = (
        np.concatenate([np.full(len(v), i) for i, v in enumerate(val_ids)])
        if val_ids
        else np.zeros(0, dtype=int)
    )
    out = []
    for fold, test in zip(folds, test_ids, strict=True):
        keep = ~np.isin(ids, np.asarray(test, dtype=str))
        threshold, rule = pooled_threshold(y[keep], p[keep], negative_index, min_per_class, unit)
        if nested_check and rule.startswith("Youden"):
            threshold, rule = nested_rule(
                ids[keep], y[keep], p[keep], source[keep], negative_index, threshold, rule, unit
            )
        out.append(
            FoldThreshold(int(fold), float(threshold), rule, tuple(str(s) for s in ids[keep]))
        )
    return out


def nested_rule(
    ids: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    source: np.ndarray,
    negative_index: int,
    youden: float,
    youden_rule: str,
    unit: str = "slides",
) -> tuple[float, str]:
    """Youden's J on the pool, or 0.5, whichever judged held-out validation slides better.

    Why a check: a Youden cut taken from several fold models' validation predictions pooled is
    applied to one model's test predictions, whose scale differs from the pool's; on small
    cohorts that mismatch and the cut's own variance can cost more than the 0.5 it replaces (0.5
    is where a model trained with the class-weighted loss, the default, balances the two kinds
    of error). Which of the two does better is an empirical question, answered here on
    validation predictions only: each source fold's validation slides in turn are decided by a
    Youden cut taken from the rest of the pool (rows of the same slide ids excluded too) and by
    0.5; the decisions of every held-out fold are pooled and scored by balanced accuracy (what
    Youden's J maximises). Youden's J is kept only when it is strictly better; a tie keeps 0.5,
    the rule that estimates nothing. With fewer than two source folds there is nothing to hold
    out and the pool's Youden cut stands.
    """
    groups = np.unique(source)
    if len(groups) < 2:
        return youden, f"{youden_rule}; no nested check (one validation fold)"
    pos = positive_index(2, negative_index)
    truth, by_youden, by_half = [], [], []
    for g in groups:
        held = source == g
        rest = ~held & ~np.isin(ids, ids[held])
        if len(np.unique(y[rest] == pos)) < 2:
            continue
        cut = choose_threshold(y[rest], p[rest], negative_index)
        truth.append(y[held] == pos)
        by_youden.append(p[held, pos] >= cut)
        by_half.append(p[held, pos] >= 0.5)
    t = np.concatenate(truth) if truth else np.zeros(0, dtype=bool)
    if len(np.unique(t)) < 2:
        return youden, f"{youden_rule}; no nested check (too few {unit} of a class to hold out)"
    score_youden = balanced_accuracy_score(t, np.concatenate(by_youden))
    score_half = balanced_accuracy_score(t, np.concatenate(by_half))
    check = (
        f"nested check over {len(truth)} held-out validation folds: balanced accuracy "
        f"{score_youden:.3f} with Youden's J, {score_half:.3f} with 0.5"
    )
    if score_youden > score_half:
        return youden, f"{youden_rule}; {check}"
    return 0.5, f"0.5: {check}"


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


ENSEMBLE_RULE = (
    "ensemble: geometric mean of the folds' probabilities, threshold at the mean "
    "of the folds' threshold logits (positive when the folds' log-odds exceed "
    "their own thresholds' on average)"
)
