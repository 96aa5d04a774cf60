"""Scores of a pixel explanation map against its window's lesion mask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.pixel_explain import lesion_overlap, pixel_map_scores


def _lesion(shape=(32, 32), rows=slice(0, 12)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows] = True
    return mask


def test_a_map_that_is_the_lesion_scores_perfectly():
    lesion = _lesion()
    scores = pixel_map_scores(lesion.astype(float), lesion)
    assert scores["overlap"] == scores["mass_share"] == scores["pointing"] == 1.0
    assert scores["energy_pointing"] == 1.0
    assert scores["lesion_share"] == pytest.approx(12 / 32)


def test_the_plans_overlap_is_the_mean_scaled_map_inside_the_lesion():
    lesion = _lesion()
    values = np.where(lesion, 3.0, 1.0)
    values[0, 0] = 2.0  # one lesion pixel at half the scaled range
    expected = (lesion.sum() - 1 + 0.5) / lesion.sum()
    assert lesion_overlap(values, lesion) == pytest.approx(expected)


def test_a_constant_map_tops_the_overlap_but_not_the_mass_share():
    """The plan's overlap does not look outside the lesion: a map that is high everywhere
    scores 1, while its mass share is the lesion's share of the window (the uniform
    baseline)."""
    lesion = _lesion()
    scores = pixel_map_scores(np.ones(lesion.shape), lesion)
    assert scores["overlap"] == 1.0
    assert scores["mass_share"] == pytest.approx(scores["lesion_share"])


def test_noise_scores_its_chance_levels():
    lesion = _lesion((128, 128), slice(0, 40))
    noise = np.random.default_rng(0).random(lesion.shape)
    scores = pixel_map_scores(noise, lesion)
    assert scores["overlap"] == pytest.approx(0.5, abs=0.02)
    assert scores["mass_share"] == pytest.approx(scores["lesion_share"], abs=0.02)


def test_negative_evidence_is_left_out():
    lesion = _lesion()
    values = np.where(lesion, 1.0, -5.0)  # strongly negative outside: clipped to zero
    assert pixel_map_scores(values, lesion)["mass_share"] == 1.0


def test_a_map_without_positive_mass_has_no_scores():
    lesion = _lesion()
    scores = pixel_map_scores(np.zeros(lesion.shape), lesion)
    assert all(
        math.isnan(scores[k]) for k in ("overlap", "mass_share", "pointing", "energy_pointing")
    )
    with pytest.raises(ValueError, match="shape"):
        pixel_map_scores(np.zeros((4, 4)), lesion)
