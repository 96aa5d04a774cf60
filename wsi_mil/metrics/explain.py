"""Is the attention right? Objective explainability scores against lesion annotations.

A heatmap that looks plausible is not evidence; these numbers are. All take per-tile arrays in
the order of the bag (and of its predictions file):

* :func:`lesion_attention_mass`: the share of the attention weight that falls on lesion
  (tiles weighted by their lesion area fraction). Uniform attention scores the lesion's share
  of the tissue, which :func:`lesion_attention_mass` returns alongside as the baseline.
* :func:`pointing_game`: is the most attended tile in a lesion; the top-k variant asks whether
  any of the k most attended tiles is, and which share of them are (precision at k).
* :func:`perturbation_curve`: deletion and insertion curves (Petsiuk et al., RISE, 2018). Tiles
  are removed from (deletion) or added to (insertion) the bag in order of attention and the
  slide is re-scored with the model each time; the area under the curve summarises how fast the
  score falls or rises. The same curve for random orders (averaged) is the baseline: attention
  that explains the prediction gives a lower deletion AUC and a higher insertion AUC than random.
* :func:`energy_pointing_game` (Score-CAM's share of the map's energy in the lesion),
  :func:`tile_ranking` (tile-level ROC AUC and average precision against lesion tiles) and
  :func:`randomisation_check` (Adebayo et al.'s sanity check) score any explanation map, not
  only attention; :func:`bootstrap_mean` gives cohort means their confidence intervals.

A MIL model cannot score an empty bag, so a bag never goes below one tile: the deletion curve
ends with only the least attended tile left and the insertion curve starts from the single most
attended one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import auc

from wsi_mil.metrics.attention import minmax_scale

#: ``score(subsets) -> scores``: for each sorted int64 array of tile indices (into the bag's tile
#: order), the slide score (e.g. tumour probability) of the bag made of those tiles. It takes
#: the whole list at once so a model can score the bags of a curve in a few padded batches.
ScoreFn = Callable[[list[np.ndarray]], np.ndarray]


def attention_weights(attention: np.ndarray) -> np.ndarray:
    """Softmax of raw attention scores: the weights attention pooling actually applies."""
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    if attention.size == 0:
        return attention
    shifted = np.exp(attention - attention.max())
    return shifted / shifted.sum()


def _check(attention: np.ndarray, lesion_fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    lesion_fraction = np.asarray(lesion_fraction, dtype=np.float64).reshape(-1)
    if attention.shape != lesion_fraction.shape:
        raise ValueError(f"{attention.size} attention values for {lesion_fraction.size} tiles")
    if attention.size == 0:
        raise ValueError("no tiles")
    return attention, lesion_fraction


@dataclass(frozen=True)
class LesionMass:
    """Share of attention on lesion, and what uniform attention would give."""

    mass: float
    uniform: float


def lesion_attention_mass(weights: np.ndarray, lesion_fraction: np.ndarray) -> LesionMass:
    """Σ wᵢ fᵢ / Σ wᵢ for non-negative attention weights (use :func:`attention_weights` on raw
    scores) and lesion area fractions fᵢ; ``uniform`` is the mean fᵢ (the random baseline)."""
    weights, lesion_fraction = _check(weights, lesion_fraction)
    if (weights < 0).any():
        raise ValueError("attention weights must be non-negative (apply attention_weights to "
                         "raw scores)")
    total = weights.sum()
    mass = float((weights * lesion_fraction).sum() / total) if total > 0 else float("nan")
    return LesionMass(mass=mass, uniform=float(lesion_fraction.mean()))


@dataclass(frozen=True)
class PointingResult:
    """Pointing game on one slide."""

    hit: bool  # the most attended tile is in a lesion
    hit_at_k: bool  # one of the k most attended tiles is in a lesion
    precision_at_k: float  # share of the k most attended tiles that are in a lesion
    k: int
    chance: float  # share of tiles in a lesion: the hit rate of a random pick


def pointing_game(attention: np.ndarray, lesion_fraction: np.ndarray, k: int = 5,
                  min_fraction: float = 0.5) -> PointingResult:
    """Whether the top-1 / top-k attended tiles fall in a lesion.

    A tile is "in a lesion" when at least ``min_fraction`` of its area is. Ties in attention are
    broken by tile order, so the result is deterministic. Meaningful only on slides that have a
    lesion tile; raises ``ValueError`` otherwise.
    """
    attention, lesion_fraction = _check(attention, lesion_fraction)
    in_lesion = lesion_fraction >= min_fraction
    if not in_lesion.any():
        raise ValueError(f"no tile has a lesion fraction >= {min_fraction}: the pointing game "
                         "needs a slide with a lesion")
    k = max(1, min(int(k), attention.size))
    order = np.argsort(-attention, kind="stable")
    top = in_lesion[order[:k]]
    return PointingResult(hit=bool(top[0]), hit_at_k=bool(top.any()),
                          precision_at_k=float(top.mean()), k=k, chance=float(in_lesion.mean()))


@dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve and its random-order baseline."""

    kind: str  # "deletion" | "insertion"
    fractions: np.ndarray  # share of tiles removed (deletion) or added (insertion), 0..1
    scores: np.ndarray  # slide score at each fraction, tiles in attention order
    auc: float  # trapezoidal area under ``scores`` over ``fractions``
    random_scores: np.ndarray  # mean slide score over random orders
    random_auc: float


def _kept(order: np.ndarray, fraction: float, kind: str) -> np.ndarray:
    """The tiles in the bag at ``fraction`` of the way along ``order`` (never fewer than one)."""
    n = order.size
    moved = round(fraction * n)
    if kind == "deletion":
        return order[min(moved, n - 1):]
    return order[:max(moved, 1)]


def _curve(order: np.ndarray, fractions: np.ndarray, score: ScoreFn, kind: str) -> np.ndarray:
    subsets = [np.sort(_kept(order, f, kind)) for f in fractions]
    scores = np.asarray(score(subsets), dtype=np.float64).reshape(-1)
    if scores.size != len(subsets):
        raise ValueError(f"score returned {scores.size} values for {len(subsets)} bags")
    return scores


def perturbation_curve(attention: np.ndarray, score: ScoreFn,
                       kind: Literal["deletion", "insertion"] = "deletion", steps: int = 20,
                       n_random: int = 5, seed: int = 0) -> PerturbationCurve:
    """Re-score the slide while removing (deletion) or adding (insertion) tiles by attention.

    ``score`` re-scores the bag restricted to each subset of tiles (see :data:`ScoreFn`). The
    slide is scored at ``steps + 1`` evenly spaced fractions, for the attention order and for ``n_random``
    random orders drawn from ``seed``.
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    if attention.size == 0:
        raise ValueError("no tiles")
    if steps < 1 or n_random < 1:
        raise ValueError(f"steps and n_random must be at least 1, got {steps} and {n_random}")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    order = np.argsort(-attention, kind="stable")
    scores = _curve(order, fractions, score, kind)
    rng = np.random.default_rng(seed)
    random_scores = np.mean([_curve(rng.permutation(attention.size), fractions, score, kind)
                             for _ in range(n_random)], axis=0)
    return PerturbationCurve(kind=kind, fractions=fractions, scores=scores,
                             auc=float(auc(fractions, scores)),
                             random_scores=random_scores,
                             random_auc=float(auc(fractions, random_scores)))


def _score(fold: Any, logits: Any, index: int) -> np.ndarray:
    """Output ``index`` of a fold's raw outputs as its task reads them (a class probability, a
    target probability, the risk, the value; :mod:`wsi_mil.mil.tasks`)."""
    task = getattr(fold, "task", None)
    if task is None:
        return logits.float().softmax(1)[:, index].cpu().numpy()
    return task.decode(logits.float().cpu().numpy())[:, index]


def run_score_fn(run: Any, features: np.ndarray, class_index: int,
                 max_batch_values: int = 1 << 25, coords: np.ndarray | None = None) -> ScoreFn:
    """A :data:`ScoreFn` re-scoring subsets of one bag with a trained run.

    ``run`` is a :class:`wsi_mil.mil.predict.LoadedRun` (one fold or the fold ensemble, whose slide
    probability is the mean of the folds', as in prediction); ``features`` the bag's ``[N, D]``
    features; the score is the probability of ``class_index``. Subsets are scored as padded,
    masked batches of at most ``max_batch_values`` feature values (128 MB in float32).
    ``coords``: the bag's grid positions ``[N, 2]`` (:func:`wsi_mil.mil.bags.read_grid_coords`),
    needed by a model that uses them; each subset keeps its tiles' positions.
    """
    import torch

    x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(run.device)
    grid = (None if coords is None
            else torch.as_tensor(np.asarray(coords, dtype=np.float32)).to(run.device))

    @torch.no_grad()
    def score_batch(subsets: list[np.ndarray]) -> np.ndarray:
        length = max(len(s) for s in subsets)
        batch = x.new_zeros((len(subsets), length, x.shape[1]))
        mask = torch.zeros((len(subsets), length), dtype=torch.bool, device=run.device)
        positions = None if grid is None else grid.new_zeros((len(subsets), length, 2))
        for i, subset in enumerate(subsets):
            index = torch.from_numpy(np.asarray(subset, dtype=np.int64)).to(run.device)
            batch[i, :len(subset)] = x[index]
            mask[i, :len(subset)] = True
            if positions is not None:
                positions[i, :len(subset)] = grid[index]
        probs = [_score(fm, fm.model(batch, mask, coords=positions).logits, class_index)
                 for fm in run.folds]
        return np.mean(probs, axis=0)

    def score(subsets: list[np.ndarray]) -> np.ndarray:
        scores, start = [], 0
        while start < len(subsets):
            end = start + 1  # grow the batch while the padded batch stays within budget
            while (end < len(subsets) and (end + 1 - start)
                   * max(len(s) for s in subsets[start:end + 1]) * x.shape[1] <= max_batch_values):
                end += 1
            scores.append(score_batch(subsets[start:end]))
            start = end
        return np.concatenate(scores)

    return score


def map_weights(scores: np.ndarray) -> np.ndarray:
    """Any explanation map as non-negative weights: negative evidence clipped to 0 (as Grad-CAM's
    ReLU), so signed gradient maps can be scored with :func:`lesion_attention_mass`."""
    return np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, None)


def energy_pointing_game(scores: np.ndarray, lesion_fraction: np.ndarray,
                         min_fraction: float = 0.5) -> float:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020): the share of the map's
    energy inside the lesion, ``sum_{i in lesion} s_i / sum_i s_i``, with the map min-max scaled
    to [0, 1] first as Score-CAM does (so the value does not depend on the map's offset or
    scale). A tile is in the lesion when at least ``min_fraction`` of it is. A constant map
    scores the lesion's share of the tiles (its random baseline); NaN without a lesion tile.
    """
    scores, lesion_fraction = _check(scores, lesion_fraction)
    in_lesion = lesion_fraction >= min_fraction
    if not in_lesion.any():
        return float("nan")
    scaled = minmax_scale(scores)
    return float(scaled[in_lesion].sum() / scaled.sum())


@dataclass(frozen=True)
class TileRanking:
    """How well a map ranks lesion tiles above the others."""

    auc: float  # ROC AUC of the scores against lesion tiles (0.5: random)
    average_precision: float  # area under the precision-recall curve
    prevalence: float  # share of lesion tiles: the average precision of a random map


def tile_ranking(scores: np.ndarray, lesion_fraction: np.ndarray,
                 min_fraction: float = 0.5) -> TileRanking:
    """Tile-level ROC AUC and average precision; NaN when every tile is on the same side."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, lesion_fraction = _check(scores, lesion_fraction)
    in_lesion = lesion_fraction >= min_fraction
    prevalence = float(in_lesion.mean())
    if in_lesion.all() or not in_lesion.any():
        return TileRanking(float("nan"), float("nan"), prevalence)
    return TileRanking(float(roc_auc_score(in_lesion, scores)),
                       float(average_precision_score(in_lesion, scores)), prevalence)


@dataclass(frozen=True)
class RandomisationCheck:
    """Adebayo et al.'s model-parameter randomisation test for one map."""

    spearman: float  # rank correlation of the trained model's map with the randomised model's
    flagged: bool  # |spearman| >= threshold: the map barely depends on the learned weights


def randomisation_check(trained: np.ndarray, randomised: np.ndarray,
                        threshold: float = 0.5) -> RandomisationCheck:
    """Sanity check (Adebayo et al., NeurIPS 2018): an explanation of a model must change when
    the model's weights are randomised. Identical maps (including two constant ones) correlate
    1; a constant map against a varying one 0 (the correlation is undefined, and a map that
    becomes constant did change)."""
    from scipy.stats import spearmanr

    trained, randomised = _check(trained, randomised)
    if np.allclose(trained, randomised):
        rho = 1.0
    elif np.ptp(trained) < 1e-12 or np.ptp(randomised) < 1e-12:
        rho = 0.0
    else:
        rho = float(spearmanr(trained, randomised).statistic)
    return RandomisationCheck(spearman=rho, flagged=abs(rho) >= threshold)


@dataclass(frozen=True)
class MeanCI:
    """A mean over slides with its bootstrap 95 % confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> MeanCI:
    """Mean of the finite ``values`` and the percentile bootstrap interval over them."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if values.size == 1 or n_boot < 1:
        return MeanCI(mean, mean, mean, int(values.size))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return MeanCI(mean, float(low), float(high), int(values.size))
