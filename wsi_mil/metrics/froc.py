"""The Camelyon16 lesion-level FROC, computed as the challenge's official ``Evaluation_FROC.py``.

The official evaluation (Ehteshami Bejnordi et al., JAMA 2017), step by step, and here:

1. **Evaluation mask** (:func:`evaluation_mask`): the lesion mask at level 5 of the 0.243 µm/px
   scans (7.776 µm/px), grown by 37.5 µm on every side (the official ``distance <
   75 / (2 * resolution)``: 75 µm, "the size of 5 tumour cells", added to the diameter), holes
   filled, and connected components (8-connectivity) labelled as lesions.
2. **Isolated tumour cells** (:func:`itc_labels`): a lesion whose longest diameter is below
   200 µm is ITC; on the grown mask that is a region whose major axis (scikit-image
   ``regionprops``) is below 275 µm. ITC lesions are not counted as lesions to find, and a
   detection that falls in one is neither a true nor a false positive.
3. **Hits** (:func:`slide_hits`): a detection is a point (x, y) with a probability. On a tumour
   slide, a detection on a (non-ITC) lesion makes it found with the highest such probability;
   one outside every lesion is a false positive. On a normal slide every detection is a false
   positive.
4. **Curve** (:func:`froc`): for every threshold among the pooled probabilities (0, the
   probability of a missed lesion, dropped as the official script does), the mean number of false positives per slide and the
   share of lesions found; the score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false
   positives per slide, linearly interpolated (``np.interp``) on that curve.

Detections come from tile-probability maps as their local maxima (:func:`tile_detections`):
each tile is a pixel of the map at the tile grid, and a plateau of equal maxima gives one
detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from shapely.geometry.base import BaseGeometry
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops

from tiling.annotations import as_multipolygon, lesion_mask
from tiling.lattice import SlideGeometry, TileGrid

#: False-positive rates (per slide) at which the Camelyon16 score averages sensitivity.
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
from wsi_mil.metrics.params import FrocParams


@dataclass(frozen=True)
class Detections:
    """Candidate lesion locations of one slide, level-0 pixel coordinates."""

    probs: np.ndarray  # float64 [K]
    x: np.ndarray  # float64 [K]
    y: np.ndarray  # float64 [K]

    def __post_init__(self) -> None:
        if not (len(self.probs) == len(self.x) == len(self.y)):
            raise ValueError(
                f"{len(self.probs)} probabilities for {len(self.x)} x and "
                f"{len(self.y)} y coordinates"
            )


def tile_detections(
    coords: np.ndarray,
    tile_probs: np.ndarray,
    tile_size_level0: float,
    params: FrocParams = FrocParams(),
    stride_level0: float | None = None,
) -> Detections:
    """Local maxima of a tile-probability map as detections at tile centres (level-0 px).

    The map is the tiles' lattice (:class:`tiling.lattice.TileGrid`, the reconstruction the
    heatmaps use) with one cell per stride (``stride_level0``, default: the tile size).
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    tile_probs = np.asarray(tile_probs, dtype=np.float64).reshape(-1)
    if len(coords) != len(tile_probs):
        raise ValueError(f"{len(coords)} tiles but {len(tile_probs)} probabilities")
    if len(coords) == 0:
        return Detections(np.zeros(0), np.zeros(0), np.zeros(0))
    stride = tile_size_level0 if stride_level0 is None else stride_level0
    lattice = TileGrid.from_coords(
        coords,
        SlideGeometry(
            width=0, height=0, mpp=1.0, tile_size_level0=tile_size_level0, stride_level0=stride
        ),
    )
    rows, cols = lattice.cells[:, 0], lattice.cells[:, 1]
    grid = np.full((rows.max() + 1, cols.max() + 1), -1.0)  # -1: no tile (below any prob)
    index = np.full(grid.shape, -1, dtype=np.int64)
    grid[rows, cols] = tile_probs
    index[rows, cols] = np.arange(len(coords))
    peaks = peak_local_max(
        grid,
        min_distance=max(1, params.min_distance_tiles),
        threshold_abs=params.min_probability,
        exclude_border=False,
    )
    # a plateau of equal maxima comes back as all its pixels: keep one per connected plateau
    marked = np.zeros(grid.shape, dtype=bool)
    marked[peaks[:, 0], peaks[:, 1]] = True
    plateaus = label(marked, connectivity=2)
    _, first = np.unique(plateaus[peaks[:, 0], peaks[:, 1]], return_index=True)
    tiles = np.sort(index[peaks[first, 0], peaks[first, 1]])
    half = tile_size_level0 / 2.0
    return Detections(probs=tile_probs[tiles], x=coords[tiles, 0] + half, y=coords[tiles, 1] + half)


def evaluation_mask(
    lesions: BaseGeometry,
    slide_width: int,
    slide_height: int,
    slide_mpp: float,
    params: FrocParams = FrocParams(),
) -> np.ndarray:
    """Labelled lesions (int32, 0 = background) at ``params.mask_mpp``, grown and filled as
    the official evaluation mask is."""
    mask = lesion_mask(
        as_multipolygon(lesions), slide_width, slide_height, slide_mpp, params.mask_mpp
    )
    distance = ndimage.distance_transform_edt(~mask)
    grown = distance < params.dilation_um / (2.0 * params.mask_mpp)
    filled = ndimage.binary_fill_holes(grown)
    return label(filled, connectivity=2).astype(np.int32)


def itc_labels(evaluation: np.ndarray, params: FrocParams = FrocParams()) -> set[int]:
    """Labels of the evaluation mask that are isolated tumour cells (major axis too short)."""
    threshold_px = params.itc_axis_um / params.mask_mpp
    return {
        int(region.label)
        for region in regionprops(evaluation)
        if region.axis_major_length < threshold_px
    }


@dataclass(frozen=True)
class SlideHits:
    """One slide's contribution to the FROC."""

    fp_probs: np.ndarray  # probabilities of false-positive detections
    lesion_probs: np.ndarray  # per non-ITC lesion: highest probability of a hit, 0 if missed
    n_itc: int  # ITC lesions (neither counted nor penalised)


def slide_hits(
    detections: Detections,
    slide_width: int,
    slide_height: int,
    slide_mpp: float,
    lesions: BaseGeometry | None,
    params: FrocParams = FrocParams(),
) -> SlideHits:
    """True and false positives of one slide (``lesions`` None or empty: a normal slide)."""
    probs = np.asarray(detections.probs, dtype=np.float64)
    if lesions is None or as_multipolygon(lesions).is_empty:
        return SlideHits(fp_probs=probs.copy(), lesion_probs=np.zeros(0), n_itc=0)
    evaluation = evaluation_mask(lesions, slide_width, slide_height, slide_mpp, params)
    itc = itc_labels(evaluation, params)
    scale = slide_mpp / params.mask_mpp
    rows = np.clip((np.asarray(detections.y) * scale).astype(np.int64), 0, evaluation.shape[0] - 1)
    cols = np.clip((np.asarray(detections.x) * scale).astype(np.int64), 0, evaluation.shape[1] - 1)
    hit = evaluation[rows, cols]
    best = np.zeros(int(evaluation.max()) + 1)
    for label_id, prob in zip(hit, probs):
        if label_id != 0 and label_id not in itc:
            best[label_id] = max(best[label_id], prob)
    counted = [k for k in range(1, len(best)) if k not in itc]
    return SlideHits(fp_probs=probs[hit == 0], lesion_probs=best[counted], n_itc=len(itc))


@dataclass(frozen=True)
class FrocResult:
    """The FROC curve over a set of slides and its Camelyon16 score."""

    fps_per_slide: np.ndarray  # ascending
    sensitivity: np.ndarray  # at each point of ``fps_per_slide``
    fp_rates: tuple[float, ...]
    sensitivities: np.ndarray  # at each of ``fp_rates``
    score: float  # mean of ``sensitivities``
    n_slides: int
    n_lesions: int  # lesions to find (ITC excluded)
    n_itc: int


def froc(hits: Sequence[SlideHits], fp_rates: Sequence[float] = FP_RATES) -> FrocResult:
    """Pool per-slide hits into the FROC curve and score, as the official ``computeFROC``."""
    if not hits:
        raise ValueError("FROC needs at least one slide")
    fps = np.concatenate([h.fp_probs for h in hits])
    lesion = np.concatenate([h.lesion_probs for h in hits])
    n_lesions = int(lesion.size)
    if n_lesions == 0:
        raise ValueError("FROC needs at least one lesion that is not isolated tumour cells")
    # The official script thresholds at every pooled probability but the lowest, which is the 0
    # of a missed (or ITC) lesion: at threshold 0 every lesion would count as found. Here the 0
    # is always the one dropped; the official script would drop the lowest real probability in
    # the one case without a missed or ITC lesion, losing its most sensitive point.
    thresholds = np.unique(np.concatenate([fps, lesion, np.zeros(1)]))[1:]
    total_fps = fps.size - np.searchsorted(np.sort(fps), thresholds, side="left")
    total_tps = lesion.size - np.searchsorted(np.sort(lesion), thresholds, side="left")
    # then the point (0 FP, 0 found), and the curve in ascending order for np.interp
    fp_curve = np.append(total_fps, 0)[::-1].astype(np.float64) / len(hits)
    sens_curve = np.append(total_tps, 0)[::-1].astype(np.float64) / n_lesions
    sensitivities = np.interp(np.asarray(fp_rates, dtype=np.float64), fp_curve, sens_curve)
    return FrocResult(
        fps_per_slide=fp_curve,
        sensitivity=sens_curve,
        fp_rates=tuple(fp_rates),
        sensitivities=sensitivities,
        score=float(np.mean(sensitivities)),
        n_slides=len(hits),
        n_lesions=n_lesions,
        n_itc=int(sum(h.n_itc for h in hits)),
    )
