"""Segmentation scores on predictions whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_mil.metrics.segmentation import (
    hausdorff,
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


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="must match"):
        tile_segmentation(np.zeros(5), FRACTION, COORDS, 100, 0.5)


def _lesion_with_hole() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 40 lesion with a 6 x 6 hole in the middle, and a prediction that fills the hole."""
    truth = np.zeros((64, 64), bool)
    truth[12:52, 12:52] = True
    truth[29:35, 29:35] = False
    predicted = np.zeros((64, 64), bool)
    predicted[12:52, 12:52] = True
    return predicted, truth


def test_hausdorff_is_between_boundaries_not_filled_sets() -> None:
    predicted, truth = _lesion_with_hole()
    s = mask_segmentation(predicted, truth, mpp=1.0)
    assert s.dice > 0.98
    # the hole's boundary is 17 px from the nearest predicted boundary (the square's edge)
    # along the row through the hole: 29 - 12 = 17; a filled-set distance would be 3 (the
    # hole's centre to its own rim), which says nothing about the missed hole
    assert s.hausdorff_um == pytest.approx(np.hypot(17, 0), abs=1.0)
    assert 0 < s.hd95_um <= s.hausdorff_um


def test_hausdorff_and_hd95_equal_monai() -> None:
    monai_hd = pytest.importorskip("monai.metrics").compute_hausdorff_distance
    import torch

    predicted, truth = _lesion_with_hole()
    rng = np.random.default_rng(0)
    blob = np.zeros((64, 64), bool)
    blob[5:25, 30:60] = True
    noisy = blob ^ (rng.random((64, 64)) < 0.02)
    for a, b, spacing in ((predicted, truth, 0.5), (noisy, truth, 2.0), (blob, noisy, 1.0)):
        mine = hausdorff(a, b, spacing)
        pair = [torch.from_numpy(m[None, None].astype(np.float32)) for m in (a, b)]
        full = float(monai_hd(*pair, include_background=True, spacing=spacing)[0, 0])
        p95 = float(monai_hd(*pair, include_background=True, spacing=spacing, percentile=95)[0, 0])
        assert mine == pytest.approx((full, p95), rel=1e-5)


def test_hausdorff_empty_masks() -> None:
    empty = np.zeros((8, 8), bool)
    one = empty.copy()
    one[2:4, 2:4] = True
    assert hausdorff(empty, empty) == (0.0, 0.0)
    assert all(math.isnan(v) for v in hausdorff(one, empty))
