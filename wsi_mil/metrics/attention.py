"""Attention scores of a bag: their min-max scaling, and how spread out they are (the Shannon
entropy of the softmax weights).

:func:`minmax_scale` is the one scaling to [0, 1] that predictions files (``attention_norm``),
heatmaps (``--normalize minmax``) and explanation scores share.

Logged per epoch by training (``log.csv``) because it shows two failures that the loss hides:
attention collapsing onto one tile (entropy near 0, the model decides from a single instance
and usually overfits) and attention that never leaves uniform (entropy near ``log N``, the
model is a mean-pooling classifier and the heatmaps say nothing). The normalised form divides
by ``log N`` so bags of different sizes are comparable (0: one tile, 1: uniform).
"""

from __future__ import annotations

import numpy as np


def attention_entropy(weights: np.ndarray, normalised: bool = False) -> float:
    """Entropy in nats, ``-sum(a * log a)``, of one bag's attention weights (summing to 1).

    Zero weights contribute 0 (the limit of ``a log a``). ``normalised`` divides by ``log N``
    (``N`` the number of weights); a one-tile bag has entropy 0 either way.
    """
    a = np.asarray(weights, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("attention_entropy needs at least one weight")
    if (a < 0).any() or not np.isclose(a.sum(), 1.0, atol=1e-4):
        raise ValueError(f"attention weights must be >= 0 and sum to 1, got sum {a.sum():.6f}")
    nz = a[a > 0]
    h = float(-(nz * np.log(nz)).sum())
    h = max(h, 0.0)  # rounding can give -1e-17 for a one-hot bag
    if normalised:
        return h / float(np.log(a.size)) if a.size > 1 else 0.0
    return h


def attention_entropies(weights: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(entropy in nats, normalised entropy) of each row of ``weights`` ``[B, N]`` over its
    ``mask``ed entries, renormalised to sum to 1 (rows whose masked weights sum to 0 are left
    out). The batched form of :func:`attention_entropy`, for training's per-epoch log."""
    w = np.where(mask, np.asarray(weights, dtype=np.float64), 0.0)
    total = w.sum(axis=1)
    keep = total > 0
    w, n = w[keep] / total[keep, None], mask[keep].sum(axis=1)
    safe = np.where(w > 0, w, 1.0)
    h = np.maximum(-(w * np.log(safe)).sum(axis=1), 0.0)
    norm = np.where(n > 1, h / np.log(np.maximum(n, 2)), 0.0)
    return h, norm


def minmax_scale(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] (float64); all-equal values (no ranking) map to 1."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.ones_like(values)
    return (values - low) / (high - low)
