"""Tile-level segmentation against the lesion annotation: Dice, IoU, sensitivity, specificity,
Hausdorff distance in µm.

The segmentation head gives a tumour probability per tile; the annotation gives each tile's
lesion area fraction (``tile_labels`` in the bag). A tile is predicted positive at
``prob >= threshold`` and truly positive at ``fraction >= min_fraction``. The same scores are
available on pixel masks (:func:`mask_segmentation`) for masks rasterised at one µm/px.

Conventions for the degenerate cases, so that averages over a cohort stay honest: when neither
prediction nor truth has a positive, Dice and IoU are 1 and the Hausdorff distance is 0 (the
prediction is perfect); sensitivity is NaN without true positives and specificity is NaN
without true negatives; the Hausdorff distance is NaN when exactly one side is empty (it is
undefined, not infinite, so it does not poison a mean computed with ``np.nanmean``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.distance import directed_hausdorff
from skimage.metrics import hausdorff_distance


@dataclass(frozen=True)
class SegmentationScores:
    """Overlap and distance scores of one slide."""

    dice: float
    iou: float
    sensitivity: float
    specificity: float
    hausdorff_um: float
    n_predicted: int  # positive units (tiles or pixels) predicted
    n_true: int  # positive units in the annotation

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, sensitivity and specificity of two bool arrays of the same shape."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction of shape {predicted.shape} vs truth of shape {truth.shape}")
    tp = int(np.count_nonzero(predicted & truth))
    fp = int(np.count_nonzero(predicted & ~truth))
    fn = int(np.count_nonzero(~predicted & truth))
    tn = int(predicted.size - tp - fp - fn)
    both_empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if both_empty else tp / (tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def hausdorff_points(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two point sets (same unit as the points)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0]))


def tile_segmentation(tile_probs: np.ndarray, lesion_fraction: np.ndarray, coords: np.ndarray,
                      tile_size_level0: float, slide_mpp: float, threshold: float = 0.5,
                      min_fraction: float = 0.5) -> SegmentationScores:
    """Scores of one slide's tile predictions; the Hausdorff distance is between the centres of
    predicted and annotated positive tiles, in µm."""
    tile_probs = np.asarray(tile_probs, dtype=np.float64).reshape(-1)
    lesion_fraction = np.asarray(lesion_fraction, dtype=np.float64).reshape(-1)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if not (tile_probs.size == lesion_fraction.size == len(coords)):
        raise ValueError(f"{tile_probs.size} tile probabilities, {lesion_fraction.size} lesion "
                         f"fractions and {len(coords)} coordinates: they must match")
    predicted = tile_probs >= threshold
    truth = lesion_fraction >= min_fraction
    centres_um = (coords + tile_size_level0 / 2.0) * slide_mpp
    return SegmentationScores(
        **overlap_scores(predicted, truth),
        hausdorff_um=hausdorff_points(centres_um[predicted], centres_um[truth]),
        n_predicted=int(predicted.sum()), n_true=int(truth.sum()),
    )


def mask_segmentation(predicted: np.ndarray, truth: np.ndarray, mpp: float
                      ) -> SegmentationScores:
    """Scores of two bool masks at ``mpp`` µm/px (Hausdorff from scikit-image, in µm)."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    scores = overlap_scores(predicted, truth)
    distance = hausdorff_distance(predicted, truth)
    hausdorff = float("nan") if math.isinf(distance) else float(distance) * mpp
    return SegmentationScores(**scores, hausdorff_um=hausdorff,
                              n_predicted=int(predicted.sum()), n_true=int(truth.sum()))
