"""Tile-level segmentation against the lesion annotation: Dice, IoU, sensitivity, specificity,
and the Hausdorff distance and its 95th percentile (HD95) between boundaries, in µm.

The segmentation head gives a tumour probability per tile; the annotation gives each tile's
lesion area fraction (``tile_labels`` in the bag). A tile is predicted positive at
``prob >= threshold`` and truly positive at ``fraction >= min_fraction``. The same scores are
available on pixel masks (:func:`mask_segmentation`) for masks rasterised at one µm/px.

The Hausdorff distances are the field's (MONAI's ``compute_hausdorff_distance``, MedPy's
``hd``/``hd95``): between the two **boundaries** (a mask's pixels that its binary erosion removes),
not between the filled sets, which a hole or an inlet inside a lesion would leave unmeasured
(a 6 x 6 hole: 16 µm between boundaries, 3 µm between filled sets). HD95 is the larger of the two
directed 95th percentiles of the boundary-to-boundary distances, as MONAI computes it; it ignores
the few farthest boundary points, so one stray pixel does not decide it. On tiles the masks are
the tiles' cells on their lattice, with the lattice step as the spacing. Written with SciPy
(erosion, k-d tree) instead of importing MONAI so that the metrics need no optional
segmentation extra; ``tests/wsi_mil/metrics/test_segmentation.py`` checks them against MONAI.

Conventions for the degenerate cases, so that averages over a cohort stay honest: when neither
prediction nor truth has a positive, Dice and IoU are 1 and the Hausdorff distance is 0 (the
prediction is perfect); sensitivity is NaN without true positives and specificity is NaN
without true negatives; the Hausdorff distance is NaN when exactly one side is empty (it is
undefined, not infinite, so it does not poison a mean computed with ``np.nanmean``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial import cKDTree

from wsi_mil.metrics.params import LESION_FRACTION


@dataclass(frozen=True)
class SegmentationScores:
    """Overlap and distance scores of one slide."""

    dice: float
    iou: float
    sensitivity: float
    specificity: float
    hausdorff_um: float  # between boundaries (see the module docstring)
    hd95_um: float  # 95th percentile between boundaries
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


def boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that one binary erosion (4-connected) removes."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~binary_erosion(mask)


def hausdorff(
    predicted: np.ndarray, truth: np.ndarray, spacing: float | tuple[float, float] = 1.0
) -> tuple[float, float]:
    """(Hausdorff distance, HD95) between the boundaries of two bool masks, in the unit of
    ``spacing`` (per pixel, or per axis): 0 when both masks are empty, NaN when one is."""
    predicted, truth = boundary(predicted), boundary(truth)
    if not predicted.any() and not truth.any():
        return 0.0, 0.0
    if not predicted.any() or not truth.any():
        return float("nan"), float("nan")
    scale = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (predicted.ndim,))
    a, b = np.argwhere(predicted) * scale, np.argwhere(truth) * scale
    a_to_b = cKDTree(b).query(a)[0]
    b_to_a = cKDTree(a).query(b)[0]
    return (
        float(max(a_to_b.max(), b_to_a.max())),
        float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))),
    )


def tile_segmentation(
    tile_probs: np.ndarray,
    lesion_fraction: np.ndarray,
    coords: np.ndarray,
    tile_size_level0: float,
    slide_mpp: float,
    threshold: float = 0.5,
    min_fraction: float = LESION_FRACTION,
    stride_level0: float | None = None,
) -> SegmentationScores:
    """Scores of one slide's tile predictions; the Hausdorff distances are between the
    boundaries of the predicted and annotated positive tiles on the tiles' lattice (the
    tiles' level-0 corners divided by the stride, the tile size unless given; one cell is a
    stride in µm)."""
    tile_probs = np.asarray(tile_probs, dtype=np.float64).reshape(-1)
    lesion_fraction = np.asarray(lesion_fraction, dtype=np.float64).reshape(-1)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if not (tile_probs.size == lesion_fraction.size == len(coords)):
        raise ValueError(
            f"{tile_probs.size} tile probabilities, {lesion_fraction.size} lesion "
            f"fractions and {len(coords)} coordinates: they must match"
        )
    predicted = tile_probs >= threshold
    truth = lesion_fraction >= min_fraction
    step = tile_size_level0 if stride_level0 is None else stride_level0
    cells = np.rint(coords / step).astype(np.int64)
    cells -= cells.min(axis=0) if len(cells) else 0
    shape = tuple(cells.max(axis=0)[::-1] + 1) if len(cells) else (0, 0)
    grid_pred, grid_true = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    grid_pred[cells[predicted, 1], cells[predicted, 0]] = True
    grid_true[cells[truth, 1], cells[truth, 0]] = True
    hd, hd95 = hausdorff(grid_pred, grid_true, step * slide_mpp)
    return SegmentationScores(
        **overlap_scores(predicted, truth),
        hausdorff_um=hd,
        hd95_um=hd95,
        n_predicted=int(predicted.sum()),
        n_true=int(truth.sum()),
    )


def mask_segmentation(predicted: np.ndarray, truth: np.ndarray, mpp: float) -> SegmentationScores:
    """Scores of two bool masks at ``mpp`` µm/px."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    hd, hd95 = hausdorff(predicted, truth, mpp)
    return SegmentationScores(
        **overlap_scores(predicted, truth),
        hausdorff_um=hd,
        hd95_um=hd95,
        n_predicted=int(predicted.sum()),
        n_true=int(truth.sum()),
    )
