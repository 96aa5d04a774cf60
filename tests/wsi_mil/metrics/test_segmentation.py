"""Segmentation scores on predictions whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.segmentation import (
    hausdorff_points,
    mask_segmentation,
    overlap_scores,
    tile_segmentation,
)

# a 1 x 6 strip of 100-px tiles at 0.5 µm/px: tiles 1 and 2 are lesion
COORDS = np.array([[x * 100, 0] for x in range(6)])
FRACTION = np.array([0.0, 1.0, 0.8, 0.2, 0.0, 0.0])


def test_perfect_prediction() -> None:
    s = tile_segmentation(np.array([0, 1, 1, 0, 0, 0.0]), FRACTION, COORDS, 100, 0.5)
    assert (s.dice, s.iou, s.sensitivity, s.specificity, s.hausdorff_um) == (1, 1, 1, 1, 0)


def test_inverted_prediction() -> None:
    s = tile_segmentation(np.array([1, 0, 0, 1, 1, 1.0]), FRACTION, COORDS, 100, 0.5)
    assert s.dice == 0 and s.iou == 0 and s.sensitivity == 0 and s.specificity == 0
    # farthest predicted tile (5) from the nearest lesion tile (2): 3 tiles of 50 µm
    assert s.hausdorff_um == pytest.approx(150.0)


def test_partial_prediction_by_hand() -> None:
    s = tile_segmentation(np.array([0, 0.9, 0.2, 0.7, 0, 0]), FRACTION, COORDS, 100, 0.5)
    # TP = tile 1, FN = tile 2, FP = tile 3, TN = 0, 4, 5
    assert s.dice == pytest.approx(2 / 4) and s.iou == pytest.approx(1 / 3)
    assert s.sensitivity == 0.5 and s.specificity == 0.75
    assert s.hausdorff_um == pytest.approx(50.0)
    assert (s.n_predicted, s.n_true) == (2, 2)


def test_empty_cases_follow_the_documented_conventions() -> None:
    none = tile_segmentation(np.zeros(6), np.zeros(6), COORDS, 100, 0.5)
    assert none.dice == 1 and none.iou == 1 and none.hausdorff_um == 0
    assert math.isnan(none.sensitivity) and none.specificity == 1
    missed = tile_segmentation(np.zeros(6), FRACTION, COORDS, 100, 0.5)
    assert missed.dice == 0 and math.isnan(missed.hausdorff_um)


def test_random_prediction_is_near_chance() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(20000) < 0.3
    scores = overlap_scores(rng.random(20000) < 0.5, truth)
    assert scores["sensitivity"] == pytest.approx(0.5, abs=0.02)
    assert scores["specificity"] == pytest.approx(0.5, abs=0.02)
    assert scores["dice"] == pytest.approx(2 * 0.15 / (0.5 + 0.3), abs=0.02)


def test_mask_segmentation_hausdorff_in_um() -> None:
    truth = np.zeros((50, 50), bool)
    truth[10:20, 10:20] = True
    pred = np.zeros((50, 50), bool)
    pred[10:20, 13:23] = True  # shifted 3 px right
    s = mask_segmentation(pred, truth, mpp=2.0)
    assert s.hausdorff_um == pytest.approx(6.0)
    assert s.iou == pytest.approx(70 / 130)


def test_hausdorff_points_and_shape_errors() -> None:
    assert hausdorff_points(np.array([[0, 0]]), np.array([[3, 4]])) == 5.0
    with pytest.raises(ValueError, match="must match"):
        tile_segmentation(np.zeros(5), FRACTION, COORDS, 100, 0.5)
