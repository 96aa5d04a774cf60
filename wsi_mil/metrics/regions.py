"""Region–label report: what the model did inside each annotated class or region.

For every annotated class of a slide (tumour, exclusion, or any class a pathologist drew in
QuPath), and for the tissue outside all of them ("background"): the mean and max normalised
attention, and the share of the region the model marked, by attention (``attention_norm >=
attention_threshold``) and by the segmentation head (tumour probability ``>= threshold``).

Tiles count in proportion to the share of their area inside the region (exact polygon
overlap, :func:`tiling.annotations.tile_fractions`), so a region is weighted by area, not by
how many tiles happen to touch it; the max is over tiles that overlap the region at all.
Exclusion areas (Camelyon16 ``_2``) are cut out of every other class. Point annotations (ASAP
Dot/PointSet, GeoJSON Point) are reported by the tile under each point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from tiling.annotations import EXCLUSION, SlideAnnotations, points_in_tiles, tile_fractions
from tiling.storage import csv_text

BACKGROUND = "background"


@dataclass(frozen=True)
class RegionRow:
    """The model's behaviour inside one region of one slide."""

    slide_id: str
    region: str  # canonical class name, or "background"
    kind: str  # "area" | "points" | "background"
    n_tiles: int  # tiles overlapping the region (points: tiles under a point)
    area_tiles: float  # region size in tile areas (points: number of points on a tile)
    mean_attention: float  # area-weighted mean of attention_norm
    max_attention: float
    marked_attention: float  # share of the region with attention_norm >= attention_threshold
    marked_segmentation: float  # share with tumour probability >= probability_threshold


def _row(
    slide_id: str,
    region: str,
    kind: str,
    weights: np.ndarray,
    attention: np.ndarray,
    tumor_prob: np.ndarray,
    attention_threshold: float,
    probability_threshold: float,
) -> RegionRow:
    touched = weights > 0
    total = float(weights.sum())
    nan = float("nan")
    if total <= 0:
        return RegionRow(slide_id, region, kind, 0, 0.0, nan, nan, nan, nan)
    return RegionRow(
        slide_id=slide_id,
        region=region,
        kind=kind,
        n_tiles=int(touched.sum()),
        area_tiles=total,
        mean_attention=float((weights * attention).sum() / total),
        max_attention=float(attention[touched].max()),
        marked_attention=float(weights[attention >= attention_threshold].sum() / total),
        marked_segmentation=float(weights[tumor_prob >= probability_threshold].sum() / total),
    )


def region_report(
    annotations: SlideAnnotations,
    slide_id: str,
    coords: np.ndarray,
    attention: np.ndarray,
    tumor_prob: np.ndarray,
    tile_size_level0: float,
    attention_threshold: float = 0.5,
    probability_threshold: float = 0.5,
) -> list[RegionRow]:
    """One row per annotated class, per point class, and one for the unannotated tissue.

    ``attention`` is the normalised attention in [0, 1] and ``tumor_prob`` the tumour column of
    the tile probabilities, both in tile order of ``coords`` (level-0 corners).
    """
    attention = np.asarray(attention, dtype=np.float64)
    tumor_prob = np.asarray(tumor_prob, dtype=np.float64)
    args = (attention, tumor_prob, attention_threshold, probability_threshold)
    exclusion = annotations.regions.get(EXCLUSION)
    rows, covered = [], np.zeros(len(coords))
    for name, geometry in sorted(annotations.regions.items()):
        if name != EXCLUSION and exclusion is not None:
            geometry = geometry.difference(exclusion)
        weights = tile_fractions(geometry, coords, tile_size_level0).astype(np.float64)
        covered += weights
        rows.append(_row(slide_id, name, "area", weights, *args))
    for name, points in sorted(annotations.points.items()):
        tiles = points_in_tiles(points, coords, tile_size_level0)
        weights = np.bincount(tiles[tiles >= 0], minlength=len(coords)).astype(np.float64)
        rows.append(_row(slide_id, name, "points", weights, *args))
    background = np.clip(1.0 - covered, 0.0, 1.0)
    rows.append(_row(slide_id, BACKGROUND, "background", background, *args))
    return rows


def rows_to_csv(rows: Sequence[RegionRow]) -> str:
    """The rows as CSV text with a header."""
    return csv_text((asdict(row) for row in rows), [f.name for f in fields(RegionRow)])


def summarise_regions(rows: Sequence[RegionRow]) -> dict[str, dict[str, float]]:
    """Per region name, the mean over slides of each score (NaN rows left out)."""
    keys = ("mean_attention", "max_attention", "marked_attention", "marked_segmentation")
    summary: dict[str, dict[str, float]] = {}
    for region in sorted({r.region for r in rows}):
        chosen = [r for r in rows if r.region == region and r.n_tiles > 0]
        summary[region] = {"slides": float(len(chosen))}
        for key in keys:
            values = [getattr(r, key) for r in chosen]
            summary[region][key] = float(np.mean(values)) if values else float("nan")
    return summary
