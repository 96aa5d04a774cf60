"""Scores of the pixel segmenter's mask beside the tile head's, on the same pixels.

The tile head is scored in tiles (``metrics.segmentation.tile_segmentation``); to say whether
the pixel masks outline lesions better, both are also scored on one pixel lattice: the mask
pyramid's coarsest level at or finer than ``eval_mpp`` (so memory stays bounded on a Camelyon
slide: 4 µm/px is 6k x 12k px), against the annotation rasterised there with exclusions cut
out, and the tile head as the union of its positive tiles' squares rasterised on the same
lattice. Lesion-level FROC detections of the mask are its connected components (8-connected)
at the pixel of highest probability, with that probability.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from scipy import ndimage

from tiling.annotations import as_multipolygon, geometry_mask
from wsi_mil.metrics.froc import Detections
from wsi_mil.metrics.segmentation import SegmentationScores, mask_segmentation
from wsi_mil.segment.infer import read_mask_level

#: µm/px of the lattice the pixel scores are computed on (the pyramid level at or below it).
EVAL_MPP = 4.0


@dataclass(frozen=True)
class PixelScores:
    """One slide's pixel-level scores: the segmenter's mask and the tile head's squares."""

    mask: SegmentationScores
    tile_head: SegmentationScores
    detections: Detections
    mpp: float  # µm/px of the lattice they were computed on


def tile_head_mask(
    coords: np.ndarray,
    positive: np.ndarray,
    tile_size_level0: float,
    shape: tuple[int, int],
    scale: float,
) -> np.ndarray:
    """The tile head's segmentation as pixels: the union of its positive tiles' squares."""
    coords = np.asarray(coords, np.float64)[np.asarray(positive, bool)]
    boxes = shapely.box(
        coords[:, 0], coords[:, 1], coords[:, 0] + tile_size_level0, coords[:, 1] + tile_size_level0
    )
    return geometry_mask(shapely.union_all(boxes) if len(boxes) else None, shape, scale)


def drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_pixels`` pixels (what
    lesions.geojson leaves out as below ``min_area_um2``)."""
    if min_pixels <= 1:
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def mask_detections(
    probability: np.ndarray, threshold: float, downsample: float, min_pixels: int = 1
) -> Detections:
    """One detection per connected lesion of the mask (of at least ``min_pixels``), at its most
    probable pixel (level-0 coordinates), with that probability."""
    labels, count = ndimage.label(probability >= threshold, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    index = np.flatnonzero(sizes >= min_pixels)
    index = index[index > 0]
    if index.size == 0:
        return Detections(np.zeros(0), np.zeros(0), np.zeros(0))
    peaks = ndimage.maximum_position(probability, labels, index)
    rows, cols = np.asarray(peaks, np.float64).reshape(-1, 2).T
    return Detections(
        probs=np.asarray(ndimage.maximum(probability, labels, index), np.float64),
        x=(cols + 0.5) * downsample,
        y=(rows + 0.5) * downsample,
    )


def pixel_scores(
    folder: str | os.PathLike,
    prediction: Any,
    positive_index: int,
    lesions: Any,
    head_threshold: float,
    mask_threshold: float,
    eval_mpp: float = EVAL_MPP,
    min_area_um2: float = 0.0,
) -> PixelScores:
    """Score ``folder/mask.zarr`` (a ``segment`` output) and the tile head of ``prediction``
    against ``lesions`` (level-0 polygons; None or empty on a normal slide). Components of the
    mask under ``min_area_um2`` are left out of the scores and the detections, as they are
    left out of lesions.geojson."""
    probability, mpp = read_mask_level(folder, eval_mpp)
    slide_mpp = float(prediction.attrs["slide_mpp"])
    scale = slide_mpp / mpp
    truth = geometry_mask(as_multipolygon(lesions), probability.shape, scale)
    min_pixels = max(1, int(min_area_um2 / mpp**2))
    predicted = drop_small(probability >= mask_threshold, min_pixels)
    head = tile_head_mask(
        prediction.coords,
        prediction.tile_probs[:, positive_index] >= head_threshold,
        float(prediction.attrs["tile_size_level0"]),
        probability.shape,
        scale,
    )
    return PixelScores(
        mask=mask_segmentation(predicted, truth, mpp),
        tile_head=mask_segmentation(head, truth, mpp),
        detections=mask_detections(probability, mask_threshold, 1.0 / scale, min_pixels),
        mpp=mpp,
    )


def slide_pixel_scores(
    folder: str | os.PathLike,
    prediction: Any,
    positive_index: int,
    lesions: Any,
    head_threshold: float,
    eval_mpp: float = EVAL_MPP,
) -> PixelScores:
    """:func:`pixel_scores` of a ``segment`` folder with the mask threshold and smallest
    lesion area it was made with (from its ``segment.json``)."""
    from wsi_mil.segment.infer import SUMMARY

    made = json.loads((Path(folder) / SUMMARY).read_text(encoding="utf-8"))["params"]
    return pixel_scores(
        folder,
        prediction,
        positive_index,
        lesions,
        head_threshold,
        float(made["mask_threshold"]),
        eval_mpp,
        float(made["min_area_um2"]),
    )


def pixel_row(scores: PixelScores) -> dict[str, float]:
    """A slide's pixel scores as ``lesion_per_slide.csv`` columns (``pixel_*`` for the mask,
    ``tile_pixel_*`` for the tile head on the same pixels)."""
    row: dict[str, float] = {"pixel_eval_mpp": scores.mpp}
    for prefix, part in (("pixel_", scores.mask), ("tile_pixel_", scores.tile_head)):
        for key in ("dice", "iou", "sensitivity", "specificity", "hausdorff_um", "hd95_um"):
            row[prefix + key] = getattr(part, key)
    return row


def summarise_pixels(rows: list[dict[str, Any]], hits: list[Any]) -> dict[str, Any] | None:
    """Cohort means of the pixel scores (tumour slides; specificity of normal slides too) and
    the lesion-level FROC of the mask detections; None when no slide was segmented."""
    from wsi_mil.metrics.froc import froc

    scored = [r for r in rows if "pixel_dice" in r]
    if not scored:
        return None
    tumour = [r for r in scored if "dice" in r]
    normal = [r for r in scored if "dice" not in r]

    def mean(key: str, chosen: list[dict[str, Any]]) -> float | None:
        values = [
            float(r[key])
            for r in chosen
            if r.get(key) is not None and not math.isnan(float(r[key]))
        ]
        return float(np.mean(values)) if values else None

    summary: dict[str, Any] = {
        "n_slides": len(scored),
        "n_tumour": len(tumour),
        "eval_mpp": scored[0]["pixel_eval_mpp"],
        "mask": {
            k: mean(f"pixel_{k}", tumour)
            for k in ("dice", "iou", "sensitivity", "specificity", "hausdorff_um", "hd95_um")
        },
        "tile_head": {
            k: mean(f"tile_pixel_{k}", tumour)
            for k in ("dice", "iou", "sensitivity", "specificity", "hausdorff_um", "hd95_um")
        },
        "normal_specificity": mean("pixel_specificity", normal),
        "froc": None,
        "froc_sensitivities": None,
    }
    if any(h.lesion_probs.size for h in hits):
        result = froc(hits)
        summary["froc"] = result.score
        summary["froc_sensitivities"] = dict(
            zip([str(r) for r in result.fp_rates], result.sensitivities.tolist())
        )
    return summary


class SegmentedSlides:
    """The ``pixels`` of :func:`wsi_mil.explain.lesions.evaluate_lesions`: the masks of
    ``wsi-mil segment`` in ``segment_dir`` (one folder per slide) scored beside the tile head."""

    def __init__(self, segment_dir: str | os.PathLike) -> None:
        self.segment_dir = Path(segment_dir)

    def slide(
        self,
        slide_id: str,
        prediction: Any,
        positive_index: int,
        lesions: Any,
        head_threshold: float,
    ) -> tuple[dict[str, float], Detections] | None:
        """(the slide's ``pixel_*`` columns, its mask detections); None: not segmented."""
        from wsi_mil.segment.infer import is_segmented

        folder = self.segment_dir / slide_id
        if not is_segmented(folder):
            return None
        scores = slide_pixel_scores(folder, prediction, positive_index, lesions, head_threshold)
        return pixel_row(scores), scores.detections

    def summary(self, rows: list[dict[str, Any]], hits: list[Any]) -> dict[str, Any] | None:
        return summarise_pixels(rows, hits)
