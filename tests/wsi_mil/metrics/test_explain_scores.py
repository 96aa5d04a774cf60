"""Energy-based pointing game, tile AUC/AP, partial-lesion tiles, the randomisation check,
MPRT, patch flipping and bootstrap means, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.explain import (
    bootstrap_mean,
    energy_pointing_game,
    flip_order,
    map_weights,
    mprt,
    partial_tiles,
    patch_flipping,
    pointing_game,
    randomisation_check,
    tile_ranking,
)


def test_energy_pointing_game_by_hand():
    # lesion tiles 1 and 2 -> (3 + 5) / (1 + 3 + 5 + 2)
    scores = np.array([1.0, 3.0, 5.0, 2.0])
    lesion = np.array([0.0, 0.6, 1.0, 0.4])  # tile 3 below min_fraction 0.5
    assert energy_pointing_game(scores, lesion) == pytest.approx(8 / 11)
    assert energy_pointing_game(10 * scores, lesion) == pytest.approx(8 / 11)  # scale-free
    # the border tile 3 left out: (3 + 5) / (1 + 3 + 5)
    assert energy_pointing_game(scores, lesion, exclude_partial=True) == pytest.approx(8 / 9)
    # a constant map scores the lesion's share of the tiles
    assert energy_pointing_game(np.ones(4), lesion) == pytest.approx(0.5)
    assert math.isnan(energy_pointing_game(scores, np.zeros(4)))
    assert math.isnan(energy_pointing_game(np.zeros(4), lesion))


def test_energy_pointing_game_of_a_signed_map_is_its_positive_evidence():
    """The issue's example: lesion +1, background 0, five tiles -1. Min-max scaling (the old
    rule) gave the zeros energy and scored 0.18; the positive part puts it all on the lesion."""
    scores = np.array([1.0] + [0.0] * 3 + [-1.0] * 5)
    lesion = np.array([1.0] + [0.0] * 8)
    assert energy_pointing_game(map_weights(scores), lesion) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        energy_pointing_game(scores, lesion)


def test_partial_lesion_tiles_are_left_out_of_ranking_and_pointing():
    lesion = np.array([1.0, 0.3, 0.0, 0.0])  # tile 1 on the border
    scores = np.array([0.5, 0.9, 0.1, 0.2])
    np.testing.assert_array_equal(partial_tiles(lesion), [False, True, False, False])
    # counted as background the border tile outranks the lesion: AUC 2/3, top-1 misses
    assert tile_ranking(scores, lesion).auc == pytest.approx(2 / 3)
    assert not pointing_game(scores, lesion, k=1).hit
    # left out, the lesion tile is first among the rest
    assert tile_ranking(scores, lesion, exclude_partial=True).auc == 1.0
    assert pointing_game(scores, lesion, k=1, exclude_partial=True).hit


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


def test_randomisation_check_does_not_depend_on_the_maps_scale():
    """Two different maps near 1e-9 are different maps (an absolute tolerance of 1e-8 called
    them equal and flagged the method)."""
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    small = randomisation_check(1e-9 * a, 1e-9 * b)
    assert small.spearman == pytest.approx(randomisation_check(a, b).spearman)
    assert not small.flagged
    assert randomisation_check(1e-12 * np.ones(40), 1e-9 * a).spearman == 0.0


def test_mprt_by_hand():
    trained = np.array([1.0, 2.0, 3.0, 4.0])
    cascade = [
        np.array([10.0, 20.0, 30.0, 40.0]),  # same order: 1
        np.array([2.0, 1.0, 3.0, 4.0]),  # one swap: 1 - 6 * 2 / (4 * 15) = 0.8
        np.array([4.0, 3.0, 2.0, 1.0]),
    ]  # reversed: -1
    np.testing.assert_allclose(mprt(trained, cascade), [1.0, 0.8, -1.0])


def test_patch_flipping_by_hand():
    """A "model" whose score is the share of tiles 0 and 1 still in the bag (1 when empty is
    the zero bag: 0). The perfect map removes them first."""

    def score(subsets):
        return np.array([np.isin([0, 1], s).sum() / 2 for s in subsets])

    perfect = np.array([4.0, 3.0, 2.0, 1.0])
    curves = patch_flipping(perfect, score, steps=4, n_random=2)
    np.testing.assert_allclose(curves.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curves.morf, [1, 0.5, 0, 0, 0])  # tiles 0, 1, 2, 3 removed
    np.testing.assert_allclose(curves.lerf, [1, 1, 1, 0.5, 0])  # tiles 3, 2, 1, 0 removed
    assert curves.morf_aupc == pytest.approx(0.3) and curves.lerf_aupc == pytest.approx(0.7)
    assert curves.srg == pytest.approx(0.4)
    assert curves.morf_aupc <= curves.random_aupc <= curves.lerf_aupc


def test_flip_order_breaks_ties_at_random_not_by_position():
    firsts = {int(flip_order(np.zeros(10), seed)[0]) for seed in range(20)}
    assert len(firsts) > 3
    np.testing.assert_array_equal(flip_order(np.array([0.1, 0.9, 0.5])), [1, 2, 0])


def test_bootstrap_mean_and_map_weights():
    ci = bootstrap_mean(np.array([1.0, 2.0, 3.0, np.nan]), n_boot=200)
    assert ci.mean == pytest.approx(2.0) and ci.n == 3 and 1.0 <= ci.low <= 2.0 <= ci.high <= 3.0
    assert math.isnan(bootstrap_mean(np.array([np.nan])).mean)
    np.testing.assert_array_equal(map_weights(np.array([-1.0, 0.5])), [0.0, 0.5])
