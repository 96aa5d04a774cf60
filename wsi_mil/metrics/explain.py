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
  :func:`tile_ranking` (tile-level ROC AUC and average precision against lesion tiles),
  :func:`randomisation_check` and :func:`mprt` (Adebayo et al.'s sanity checks: full and
  cascading model randomisation) and :func:`patch_flipping` (xMIL's faithfulness curves, no
  annotation needed) score any explanation map, not only attention; :func:`bootstrap_mean`
  gives cohort means their confidence intervals.

Tiles on a lesion's border (``0 < fraction < min_fraction``) are neither lesion nor
background: ``exclude_partial=True`` leaves them out of the pointing games and the tile
ranking (their share of the lesion area still counts in :func:`lesion_attention_mass`); by
default they count as background, as before.

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

from wsi_mil.metrics.params import LESION_FRACTION

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


def _scored_tiles(
    scores: np.ndarray, lesion_fraction: np.ndarray, min_fraction: float, exclude_partial: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, in-lesion flags) of the tiles a tile-level score uses: all of them, or without
    the partial-lesion tiles (``0 < fraction < min_fraction``) when ``exclude_partial``."""
    scores, lesion_fraction = _check(scores, lesion_fraction)
    keep = ~partial_tiles(lesion_fraction, min_fraction) if exclude_partial else slice(None)
    return scores[keep], lesion_fraction[keep] >= min_fraction


def partial_tiles(lesion_fraction: np.ndarray, min_fraction: float = LESION_FRACTION) -> np.ndarray:
    """Tiles partly in a lesion, below the share that makes a lesion tile."""
    fraction = np.asarray(lesion_fraction, dtype=np.float64).reshape(-1)
    return (fraction > 0) & (fraction < min_fraction)


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
        raise ValueError(
            "attention weights must be non-negative (apply attention_weights to raw scores)"
        )
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


def pointing_game(
    attention: np.ndarray,
    lesion_fraction: np.ndarray,
    k: int = 5,
    min_fraction: float = LESION_FRACTION,
    exclude_partial: bool = False,
) -> PointingResult:
    """Whether the top-1 / top-k attended tiles fall in a lesion.

    A tile is "in a lesion" when at least ``min_fraction`` of its area is; ``exclude_partial``
    leaves the tiles partly in a lesion out of the game. Ties in attention are broken by tile
    order, so the result is deterministic. Meaningful only on slides that have a lesion tile;
    raises ``ValueError`` otherwise.
    """
    attention, in_lesion = _scored_tiles(attention, lesion_fraction, min_fraction, exclude_partial)
    if not in_lesion.any():
        raise ValueError(
            f"no tile has a lesion fraction >= {min_fraction}: the pointing game "
            "needs a slide with a lesion"
        )
    k = max(1, min(int(k), attention.size))
    order = np.argsort(-attention, kind="stable")
    top = in_lesion[order[:k]]
    return PointingResult(
        hit=bool(top[0]),
        hit_at_k=bool(top.any()),
        precision_at_k=float(top.mean()),
        k=k,
        chance=float(in_lesion.mean()),
    )


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
        return order[min(moved, n - 1) :]
    return order[: max(moved, 1)]


def _curve(order: np.ndarray, fractions: np.ndarray, score: ScoreFn, kind: str) -> np.ndarray:
    subsets = [np.sort(_kept(order, f, kind)) for f in fractions]
    scores = np.asarray(score(subsets), dtype=np.float64).reshape(-1)
    if scores.size != len(subsets):
        raise ValueError(f"score returned {scores.size} values for {len(subsets)} bags")
    return scores


def perturbation_curve(
    attention: np.ndarray,
    score: ScoreFn,
    kind: Literal["deletion", "insertion"] = "deletion",
    steps: int = 20,
    n_random: int = 5,
    seed: int = 0,
) -> PerturbationCurve:
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
    random_scores = np.mean(
        [_curve(rng.permutation(attention.size), fractions, score, kind) for _ in range(n_random)],
        axis=0,
    )
    return PerturbationCurve(
        kind=kind,
        fractions=fractions,
        scores=scores,
        auc=float(auc(fractions, scores)),
        random_scores=random_scores,
        random_auc=float(auc(fractions, random_scores)),
    )


def _score(fold: Any, logits: Any, index: int) -> np.ndarray:
    """Output ``index`` of a fold's raw outputs as its task reads them (a class probability, a
    target probability, the risk, the value; :mod:`wsi_mil.mil.tasks`)."""
    task = getattr(fold, "task", None)
    if task is None:
        return logits.float().softmax(1)[:, index].cpu().numpy()
    return task.decode(logits.float().cpu().numpy())[:, index]


def run_score_fn(
    run: Any,
    features: np.ndarray,
    class_index: int,
    max_batch_values: int = 1 << 25,
    coords: np.ndarray | None = None,
) -> ScoreFn:
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
    grid = (
        None
        if coords is None
        else torch.as_tensor(np.asarray(coords, dtype=np.float32)).to(run.device)
    )

    @torch.no_grad()
    def score_batch(subsets: list[np.ndarray]) -> np.ndarray:
        length = max(len(s) for s in subsets)
        batch = x.new_zeros((len(subsets), length, x.shape[1]))
        mask = torch.zeros((len(subsets), length), dtype=torch.bool, device=run.device)
        positions = None if grid is None else grid.new_zeros((len(subsets), length, 2))
        for i, subset in enumerate(subsets):
            index = torch.from_numpy(np.asarray(subset, dtype=np.int64)).to(run.device)
            batch[i, : len(subset)] = x[index]
            mask[i, : len(subset)] = True
            if positions is not None and grid is not None:  # (positions exist with a grid)
                positions[i, : len(subset)] = grid[index]
        probs = [
            _score(fm, fm.model(batch, mask, coords=positions).logits, class_index)
            for fm in run.folds
        ]
        return np.mean(probs, axis=0)

    def score(subsets: list[np.ndarray]) -> np.ndarray:
        scores, start = [], 0
        while start < len(subsets):
            end = start + 1  # grow the batch while the padded batch stays within budget
            while (
                end < len(subsets)
                and (end + 1 - start) * max(len(s) for s in subsets[start : end + 1]) * x.shape[1]
                <= max_batch_values
            ):
                end += 1
            scores.append(score_batch(subsets[start:end]))
            start = end
        return np.concatenate(scores)

    return score


@dataclass(frozen=True)
class PatchFlipping:
    """xMIL's patch-flipping curves of one map on one slide, and their AUPC."""

    fractions: np.ndarray  # share of the tiles removed, 0..1
    morf: np.ndarray  # target probability, most relevant tiles removed first
    lerf: np.ndarray  # least relevant first
    random: np.ndarray  # mean over random orders
    morf_aupc: float  # area under each curve: its mean over the steps (xMIL)
    lerf_aupc: float
    random_aupc: float

    @property
    def srg(self) -> float:
        """xMIL's symmetric relevance gain, ``LeRF AUPC - MoRF AUPC``: faithfulness in one
        number (0 for a map unrelated to the model, higher is better)."""
        return self.lerf_aupc - self.morf_aupc


def flip_order(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Tiles from the most to the least relevant; ties in random order (seeded), never in
    tile order, so a constant map flips like a random one."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    shuffled = np.random.default_rng(seed).permutation(scores.size)
    return shuffled[np.argsort(-scores[shuffled], kind="stable")]


def _flip_curve(order: np.ndarray, counts: np.ndarray, score: ScoreFn) -> np.ndarray:
    subsets = [np.sort(order[k:]) for k in counts]
    values = np.asarray(score(subsets), dtype=np.float64).reshape(-1)
    if values.size != len(subsets):
        raise ValueError(f"score returned {values.size} values for {len(subsets)} bags")
    return values


def patch_flipping(
    scores: np.ndarray,
    score: ScoreFn,
    steps: int = 20,
    n_random: int = 3,
    seed: int = 0,
    random_curve: np.ndarray | None = None,
) -> PatchFlipping:
    """Patch flipping as xMIL runs it (Hense et al., NeurIPS 2024; ``xai/evaluation.py``
    ``patch_drop_or_add``, ``approach="drop"``): tiles are removed from the bag in the order
    of the map, most relevant first (MoRF) or least relevant first (LeRF), ``1 / steps`` of
    the tiles at a time, and the bag is re-scored (``score``: the target probability of each
    subset, an empty subset the all-zero bag) until none is left. The area under each curve
    (AUPC, the mean of its ``steps + 1`` points as in xMIL's ``patch_flipping_measures``) is
    low for MoRF and high for LeRF when the map ranks the tiles by what the model uses; random
    orders (``n_random``, averaged, or ``random_curve`` when already computed for the slide)
    lie between. xMIL removes 1 % per step; ``steps`` sets the resolution.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("no tiles")
    if steps < 1 or n_random < 1:
        raise ValueError(f"steps and n_random must be at least 1, got {steps} and {n_random}")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.rint(fractions * scores.size).astype(int)
    order = flip_order(scores, seed)
    morf = _flip_curve(order, counts, score)
    lerf = _flip_curve(order[::-1], counts, score)
    if random_curve is None:
        random_curve = random_flip_curve(scores.size, score, steps, n_random, seed)
    return PatchFlipping(
        fractions,
        morf,
        lerf,
        random_curve,
        float(morf.mean()),
        float(lerf.mean()),
        float(np.mean(random_curve)),
    )


def random_flip_curve(
    n_tiles: int, score: ScoreFn, steps: int = 20, n_random: int = 3, seed: int = 0
) -> np.ndarray:
    """The patch-flipping curve of random tile orders, averaged: the baseline every map's
    curves are compared with (one per slide, whatever the method)."""
    counts = np.rint(np.linspace(0.0, 1.0, steps + 1) * n_tiles).astype(int)
    rng = np.random.default_rng(seed + 1)
    return np.mean(
        [_flip_curve(rng.permutation(n_tiles), counts, score) for _ in range(n_random)], axis=0
    )


def map_weights(scores: np.ndarray) -> np.ndarray:
    """Any explanation map as non-negative weights: negative evidence clipped to 0 (as Grad-CAM's
    ReLU), so signed attribution maps can be scored with :func:`lesion_attention_mass` and
    :func:`energy_pointing_game`."""
    return np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, None)


def energy_pointing_game(
    scores: np.ndarray,
    lesion_fraction: np.ndarray,
    min_fraction: float = LESION_FRACTION,
    exclude_partial: bool = False,
) -> float:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020): the share of a
    non-negative map's energy inside the lesion, ``sum_{i in lesion} s_i / sum_i s_i``. A tile
    is in the lesion when at least ``min_fraction`` of it is (``exclude_partial``: tiles partly
    in it are left out).

    The map must be non-negative: its zero is "no evidence". Score-CAM's min-max scaling is not
    applied, because on a signed map it moves the zero (a map of lesion +1, background 0 and
    five tiles -1 would give the background's zeros energy and score 0.18); a signed
    attribution's positive part (:func:`map_weights`) is its evidence for the class. A constant
    map scores the lesion's share of the tiles (its random baseline); NaN without a lesion tile
    or without energy.
    """
    scores, in_lesion = _scored_tiles(scores, lesion_fraction, min_fraction, exclude_partial)
    if (scores < 0).any():
        raise ValueError(
            "energy_pointing_game needs a non-negative map (take the positive part "
            "of a signed attribution with map_weights)"
        )
    total = scores.sum()
    if not in_lesion.any() or total <= 0:
        return float("nan")
    return float(scores[in_lesion].sum() / total)


@dataclass(frozen=True)
class TileRanking:
    """How well a map ranks lesion tiles above the others."""

    auc: float  # ROC AUC of the scores against lesion tiles (0.5: random)
    average_precision: float  # area under the precision-recall curve
    prevalence: float  # share of lesion tiles: the average precision of a random map


def tile_ranking(
    scores: np.ndarray,
    lesion_fraction: np.ndarray,
    min_fraction: float = LESION_FRACTION,
    exclude_partial: bool = False,
) -> TileRanking:
    """Tile-level ROC AUC and average precision; NaN when every tile is on the same side.
    ``exclude_partial`` leaves the tiles partly in a lesion out of both classes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, in_lesion = _scored_tiles(scores, lesion_fraction, min_fraction, exclude_partial)
    prevalence = float(in_lesion.mean())
    if in_lesion.all() or not in_lesion.any():
        return TileRanking(float("nan"), float("nan"), prevalence)
    return TileRanking(
        float(roc_auc_score(in_lesion, scores)),
        float(average_precision_score(in_lesion, scores)),
        prevalence,
    )


@dataclass(frozen=True)
class RandomisationCheck:
    """Adebayo et al.'s model-parameter randomisation test for one map."""

    spearman: float  # rank correlation of the trained model's map with the randomised model's
    flagged: bool  # |spearman| >= threshold: the map barely depends on the learned weights


def _is_constant(values: np.ndarray) -> bool:
    """No ranking at all: every value equal up to rounding, relative to the values' size."""
    return bool(np.ptp(values) <= 1e-9 * max(float(np.abs(values).max()), 1e-300))


def randomisation_check(
    trained: np.ndarray, randomised: np.ndarray, threshold: float = 0.5
) -> RandomisationCheck:
    """Sanity check (Adebayo et al., NeurIPS 2018): an explanation of a model must change when
    the model's weights are randomised. The Spearman rank correlation of the two maps, so the
    check does not depend on their scale (maps of 1e-9 are compared like maps of 1): identical
    maps correlate 1, two constant maps too; a constant map against a varying one 0 (the
    correlation is undefined, and a map that becomes constant did change)."""
    from scipy.stats import spearmanr

    trained, randomised = _check(trained, randomised)
    if np.array_equal(trained, randomised):
        rho = 1.0
    elif _is_constant(trained) or _is_constant(randomised):
        rho = 1.0 if _is_constant(trained) and _is_constant(randomised) else 0.0
    else:
        rho = float(spearmanr(trained, randomised).statistic)
    return RandomisationCheck(spearman=rho, flagged=abs(rho) >= threshold)


def mprt(trained: np.ndarray, cascade: list[np.ndarray]) -> list[float]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018; Quantus' MPRT): the
    Spearman correlation of the trained model's map with the map after each step of the
    cascade (:mod:`wsi_mil.explain.randomisation`), output layers first. A map that explains
    the model falls towards 0 from the first steps; one that does not stays near 1."""
    return [randomisation_check(trained, m).spearman for m in cascade]


@dataclass(frozen=True)
class MeanCI:
    """A mean over slides with its bootstrap 95 % confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> MeanCI:
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
