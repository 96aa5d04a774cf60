"""Scores of one pixel explanation map against the lesion mask of its window.

The pixel form of :mod:`wsi_mil.metrics.explain`'s tile scores: a window's pixels are its
"tiles" (lesion fraction 0 or 1), and every score but the first is the existing function
called on them, so a pixel map and a tile map are scored by one definition.

* ``overlap``: the attention-lesion overlap as the study plan writes it, "map mass inside the
  lesion over the lesion's area": ``sum_{p in L} m_p / |L|`` with ``m`` the map's non-negative
  part min-max scaled to [0, 1] in the window (:func:`wsi_mil.metrics.attention.minmax_scale`,
  the scaling every heatmap uses). It is the mean map value inside the lesion, so it does not look outside it:
  a constant map scores 1 and uniform noise 0.5, and it rewards broad maps over sharp ones.
* ``mass_share``: the normalised mass share, ``sum_{p in L} m_p / sum_p m_p`` on the map's
  non-negative part (:func:`~wsi_mil.metrics.explain.lesion_attention_mass` after
  :func:`~wsi_mil.metrics.explain.map_weights`); a uniform map scores the lesion's share of the
  window, returned as ``lesion_share``.
* ``pointing``: :func:`~wsi_mil.metrics.explain.pointing_game`, is the map's highest pixel in the
  lesion (1 or 0; a random pick hits with probability ``lesion_share``).
* ``energy_pointing``: :func:`~wsi_mil.metrics.explain.energy_pointing_game` on the non-negative
  part (Score-CAM's min-max scaled energy share).

A map without positive mass (a window the segmenter outlined nothing in) has no scores: NaN.
"""

from __future__ import annotations

import numpy as np

from wsi_mil.metrics.attention import minmax_scale
from wsi_mil.metrics.explain import (
    energy_pointing_game,
    lesion_attention_mass,
    map_weights,
    pointing_game,
)

#: The keys of :func:`pixel_map_scores`, in table order.
PIXEL_SCORES = ("overlap", "mass_share", "pointing", "energy_pointing")


def lesion_overlap(scores: np.ndarray, lesion: np.ndarray) -> float:
    """The plan's overlap: mean of the min-max scaled map over the lesion pixels (NaN without
    lesion pixels)."""
    inside = np.asarray(lesion, dtype=bool).reshape(-1)
    if not inside.any():
        return float("nan")
    scaled = minmax_scale(np.asarray(scores, dtype=np.float64).reshape(-1))
    return float(scaled[inside].sum() / inside.sum())


def pixel_map_scores(scores: np.ndarray, lesion: np.ndarray) -> dict[str, float]:
    """``overlap``, ``mass_share``, ``pointing``, ``energy_pointing`` and ``lesion_share`` of
    one window's map ``[H, W]`` against its lesion mask ``[H, W]`` (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    lesion = np.asarray(lesion, dtype=bool)
    if scores.shape != lesion.shape:
        raise ValueError(f"a map of shape {scores.shape} against a mask of shape {lesion.shape}")
    fraction = lesion.reshape(-1).astype(np.float64)
    weights = map_weights(scores)
    out = {"lesion_share": float(fraction.mean())}
    if weights.sum() <= 0 or not lesion.any():
        return {**out, **{key: float("nan") for key in PIXEL_SCORES}}
    out["overlap"] = lesion_overlap(weights, lesion)
    out["mass_share"] = lesion_attention_mass(weights, fraction).mass
    out["pointing"] = float(pointing_game(weights, fraction, k=1).hit)
    out["energy_pointing"] = energy_pointing_game(weights, fraction)
    return out
