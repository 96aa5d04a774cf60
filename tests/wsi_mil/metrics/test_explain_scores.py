"""Energy-based pointing game, tile AUC/AP, the randomisation check and bootstrap means,
against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.explain import (
    bootstrap_mean,
    energy_pointing_game,
    map_weights,
    randomisation_check,
    tile_ranking,
)


def test_energy_pointing_game_by_hand():
    # min-max scaled: [0, 0.5, 1, 0.25]; lesion tiles 1 and 2 -> (0.5 + 1) / 1.75
    scores = np.array([1.0, 3.0, 5.0, 2.0])
    lesion = np.array([0.0, 0.6, 1.0, 0.4])  # tile 3 below min_fraction 0.5
    assert energy_pointing_game(scores, lesion) == pytest.approx(1.5 / 1.75)
    # invariant to offset and scale
    assert energy_pointing_game(10 * scores - 7, lesion) == pytest.approx(1.5 / 1.75)
    # a constant map scores the lesion's share of the tiles
    assert energy_pointing_game(np.ones(4), lesion) == pytest.approx(0.5)
    assert math.isnan(energy_pointing_game(scores, np.zeros(4)))


def test_tile_ranking_by_hand():
    # lesion = {0, 2}; pairs (lesion, other): (0.9 > 0.1), (0.9 > 0.8), (0.3 > 0.1), (0.3 < 0.8)
    scores = np.array([0.9, 0.1, 0.3, 0.8])
    lesion = np.array([1.0, 0.0, 1.0, 0.0])
    ranking = tile_ranking(scores, lesion)
    assert ranking.auc == pytest.approx(3 / 4)
    # ranked: 0.9 (hit, P=1), 0.8 (miss), 0.3 (hit, P=2/3) -> AP = (1 + 2/3) / 2
    assert ranking.average_precision == pytest.approx((1 + 2 / 3) / 2)
    assert ranking.prevalence == 0.5
    assert math.isnan(tile_ranking(scores, np.ones(4)).auc)


def test_randomisation_check():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    assert randomisation_check(np.ones(50), np.ones(50)).flagged  # constant map: unchanged
    assert randomisation_check(a, 2 * a + 1).spearman == pytest.approx(1.0)
    independent = randomisation_check(a, rng.random(50))
    assert not independent.flagged and abs(independent.spearman) < 0.5
    assert randomisation_check(a, np.ones(50)).spearman == 0.0


def test_bootstrap_mean_and_map_weights():
    ci = bootstrap_mean(np.array([1.0, 2.0, 3.0, np.nan]), n_boot=200)
    assert ci.mean == pytest.approx(2.0) and ci.n == 3 and 1.0 <= ci.low <= 2.0 <= ci.high <= 3.0
    assert math.isnan(bootstrap_mean(np.array([np.nan])).mean)
    np.testing.assert_array_equal(map_weights(np.array([-1.0, 0.5])), [0.0, 0.5])
