"""Tile scores placed back on the slide, at the size of the picture that shows them.

A prediction gives one score per tile; a heatmap is those scores laid out where the tiles are.
CLAM paints every tile into an array the size of the slide (at level 0 that is 40 GB for a
Camelyon slide; at downsample 32 still hundreds of MB), then shrinks it. Here the scores are
first *stitched on the tile grid*, one cell per stride (a few hundred thousand cells at most,
overlapping tiles averaged cell by cell), and the grid is then sampled once for each pixel of
the output canvas. Smoothing (a Gaussian whose width is given in µm, so it means the same on any
scanner) and the tissue clip (tissue polygons rasterised at output scale) also work on the
canvas only. Every canvas step can be computed for a band of rows on its own
(:class:`HeatSource`), so a picture can be rendered strip by strip with memory bounded by the
grid plus one strip, whatever the size of the slide or of the picture.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.stats import rankdata

from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.errors import InputError
from wsi_mil.heatmaps.params import ATTENTION, NORMALISATIONS, HeatmapParams
from wsi_mil.metrics.attention import minmax_scale
from wsi_mil.mil.predictions import SlidePrediction


@dataclass(frozen=True)
class Canvas:
    """An output picture of the whole slide: ``width`` x ``height`` px.

    ``downsample`` is level-0 px per canvas px along (x, y); the two differ by the rounding of
    the canvas size, and keeping both makes the heat line up with a thumbnail to the pixel.
    """

    width: int
    height: int
    downsample: tuple[float, float]

    @classmethod
    def for_slide(
        cls, geometry: SlideGeometry, max_side: int | None = None, mpp: float | None = None
    ) -> Canvas:
        """The canvas at ``mpp`` µm/px, or with its longest side ``max_side`` px."""
        if mpp is not None:
            factor = mpp / geometry.mpp
        elif max_side is not None:
            factor = max(geometry.width, geometry.height) / max_side
        else:
            raise ValueError("give max_side or mpp")
        width = max(1, round(geometry.width / factor))
        height = max(1, round(geometry.height / factor))
        return cls.of_size(geometry, width, height)

    @classmethod
    def of_size(cls, geometry: SlideGeometry, width: int, height: int) -> Canvas:
        """The canvas matching a thumbnail of ``width`` x ``height`` px of the whole slide."""
        return cls(
            width=int(width),
            height=int(height),
            downsample=(geometry.width / width, geometry.height / height),
        )

    def mpp(self, geometry: SlideGeometry) -> float:
        """µm per canvas pixel (the mean of x and y)."""
        return geometry.mpp * (self.downsample[0] + self.downsample[1]) / 2


@dataclass(frozen=True)
class Heatmap:
    """Heat on a canvas: values in [vmin, vmax], NaN where nothing is shown."""

    values: np.ndarray  # float32 [height, width]
    vmin: float
    vmax: float
    label: str  # colour-bar label, e.g. "attention (percentile)"


def score_names(prediction: SlidePrediction) -> list[str]:
    """The scores a heatmap can show: attention, one per class, then any extra scores (the
    explain stage's maps)."""
    return [ATTENTION, *prediction.class_names, *prediction.extra_scores]


def tile_scores(prediction: SlidePrediction, score: str) -> np.ndarray:
    """Raw per-tile values of ``score``: raw attention, or one class's tile probability."""
    if score == ATTENTION:
        return np.asarray(prediction.attention, dtype=np.float64)
    if score in prediction.class_names:
        return np.asarray(
            prediction.tile_probs[:, prediction.class_names.index(score)], dtype=np.float64
        )
    if score in prediction.extra_scores:
        return np.asarray(prediction.extra_scores[score], dtype=np.float64)
    raise InputError(
        f"{prediction.slide_id}: unknown score {score!r}; choose from {score_names(prediction)}"
    )


def normalise_scores(
    scores: np.ndarray, method: str, probability: bool
) -> tuple[np.ndarray, float, float, str]:
    """Map tile scores for display: (values, vmin, vmax, description of the scale).

    ``rank`` turns each score into its percentile among the slide's tiles (CLAM's default):
    attention is only comparable within a slide and is heavy-tailed, so ranks spread the
    colours evenly. ``minmax`` keeps the shape of the distribution; ``raw`` keeps the values
    (probabilities stay on [0, 1], other scores span their own range).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if method == "rank":
        if scores.size == 0:
            return scores, 0.0, 1.0, "percentile"
        return rankdata(scores, method="average") / scores.size, 0.0, 1.0, "percentile"
    if method == "minmax":
        if scores.size == 0:
            return scores, 0.0, 1.0, "min-max scaled"
        return minmax_scale(scores), 0.0, 1.0, "min-max scaled"
    if method == "raw":
        if probability:
            return scores, 0.0, 1.0, "probability"
        if scores.size == 0:
            return scores, 0.0, 1.0, "raw"
        low, high = float(scores.min()), float(scores.max())
        return scores, low, high if high > low else low + 1.0, "raw"
    raise ValueError(f"normalize must be one of {NORMALISATIONS}, got {method!r}")


def block_mean(grid: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware mean over factor x factor blocks (for grids finer than the canvas)."""
    rows, cols = grid.shape
    pad_r, pad_c = (-rows) % factor, (-cols) % factor
    padded = np.pad(grid, ((0, pad_r), (0, pad_c)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    valid = ~np.isnan(blocks)
    counts = valid.sum(axis=(1, 3))
    sums = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(np.float32)


class CanvasSampler:
    """A grid of cell values sampled at canvas pixel centres, any band of rows at a time.

    When cells are smaller than canvas pixels the grid is first averaged in blocks (once, here),
    so every tile counts instead of one in ``factor``.
    """

    def __init__(self, grid_values: np.ndarray, grid: TileGrid, canvas: Canvas) -> None:
        stride = grid.stride
        factor = math.ceil(max(canvas.downsample) / stride - 1e-9)
        if factor > 1:
            grid_values = block_mean(grid_values, factor)
            stride = stride * factor
        self.values = np.asarray(grid_values, dtype=np.float32)
        self.canvas = canvas
        self._origin_y, self._stride = grid.origin[1], stride
        cols = self.values.shape[1]
        cx = ((np.arange(canvas.width) + 0.5) * canvas.downsample[0] - grid.origin[0]) / stride
        ix = np.floor(cx).astype(np.int64)
        self._ok_x = (ix >= 0) & (ix < cols)
        self._ix = np.clip(ix, 0, cols - 1)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Canvas rows ``[y0, y1)`` (float32, NaN off the grid; rows off the canvas are NaN)."""
        rows = self.values.shape[0]
        y = np.arange(y0, y1)
        cy = ((y + 0.5) * self.canvas.downsample[1] - self._origin_y) / self._stride
        iy = np.floor(cy).astype(np.int64)
        ok_y = (iy >= 0) & (iy < rows) & (y >= 0) & (y < self.canvas.height)
        out = self.values[np.clip(iy, 0, rows - 1)[:, None], self._ix[None, :]]
        out[~ok_y, :] = np.nan
        out[:, ~self._ok_x] = np.nan
        return out


def grid_to_canvas(grid_values: np.ndarray, grid: TileGrid, canvas: Canvas) -> np.ndarray:
    """Sample a grid of cell values at each canvas pixel's centre (NaN off the grid).

    The result is the canvas size, nothing larger; :class:`CanvasSampler` gives it by bands.
    """
    return CanvasSampler(grid_values, grid, canvas).rows(0, canvas.height)


#: rows rasterised beyond a band of a mask and dropped (see :func:`rasterise_polygons`)
BAND_MARGIN = 2


def rasterise_polygons(
    geometry: Any, canvas: Canvas, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """A boolean canvas mask of level-0 shapely (Multi)Polygons, holes left out.

    Pixels the boundary passes through count as inside (cv2's rule), a one-pixel margin that
    keeps thin tissue visible on small thumbnails. With ``rows=(y0, y1)`` only those canvas rows
    are rasterised (rows off the canvas are False): the polygons are shifted by whole pixels, so
    a band is exactly the same rows of the whole mask.
    """
    from shapely.geometry.base import BaseMultipartGeometry

    y0, y1 = rows if rows is not None else (0, canvas.height)
    # cv2 fills a polygon cut by the image's lower edge differently in the last row: rasterise
    # a margin of rows beyond the band and drop it, so every band row is filled as in the whole
    margin = BAND_MARGIN if rows is not None else 0
    y0, y1 = y0 - margin, y1 + margin
    mask = np.zeros((y1 - y0, canvas.width), dtype=np.uint8)
    if geometry is None or geometry.is_empty:
        return mask.astype(bool)
    parts = geometry.geoms if isinstance(geometry, BaseMultipartGeometry) else [geometry]
    scale = np.array([1.0 / canvas.downsample[0], 1.0 / canvas.downsample[1]])
    shift = 4  # sub-pixel precision of cv2.fillPoly: coordinates in 1/16 px

    def ring_points(ring: Any) -> np.ndarray:
        # level-0 x -> canvas x; cv2 puts pixel j's centre at j, a continuous coordinate at j + 0.5
        pts = np.rint((np.asarray(ring.coords)[:, :2] * scale - 0.5) * (1 << shift))
        pts[:, 1] -= y0 << shift  # whole rows: the band's rasterisation equals the full one's
        return pts.astype(np.int32)

    for polygon in parts:
        if polygon.geom_type != "Polygon" or polygon.is_empty:
            continue
        cv2.fillPoly(mask, [ring_points(polygon.exterior)], 1, lineType=cv2.LINE_8, shift=shift)
        holes = [ring_points(ring) for ring in polygon.interiors]
        if holes:
            cv2.fillPoly(mask, holes, 0, lineType=cv2.LINE_8, shift=shift)
    mask[: max(0, -y0)] = 0
    mask[max(0, canvas.height - y0) :] = 0
    return mask[margin : len(mask) - margin].astype(bool)


def smooth(values: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing that ignores NaN (normalised convolution) and keeps NaN where it was."""
    if sigma_px <= 0:
        return values
    valid = ~np.isnan(values)
    filled = np.where(valid, values, 0.0).astype(np.float32)
    weight = valid.astype(np.float32)
    blurred = cv2.GaussianBlur(
        filled, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_CONSTANT
    )
    norm = cv2.GaussianBlur(
        weight, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_CONSTANT
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = blurred / norm
    out[~valid] = np.nan
    return out


def smoothing_halo(sigma_px: float) -> int:
    """Rows beyond a band that a Gaussian of ``sigma_px`` reaches (cv2's kernel radius, 4 sigma
    for float images), so a band smoothed with this margin equals the whole picture smoothed."""
    return math.ceil(4 * sigma_px) + 2 if sigma_px > 0 else 0


class HeatSource:
    """The heatmap of ``params.score`` on ``canvas``, computed for any band of rows on demand.

    Normalise over the tiles (before stitching, as in CLAM), stitch on the grid, then per band:
    sample, smooth (with a halo of rows, so bands join seamlessly) and clip to the tissue.
    ``tissue`` is the slide's level-0 tissue (Multi)Polygon, or None to show heat wherever
    there are tiles. Memory: the grid plus one band, whatever the canvas size.
    """

    def __init__(
        self,
        prediction: SlidePrediction,
        canvas: Canvas,
        params: HeatmapParams,
        tissue: Any = None,
        grid: TileGrid | None = None,
    ) -> None:
        geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
        grid = grid or TileGrid.from_coords(prediction.coords, geometry)
        raw = tile_scores(prediction, params.score)
        probability = params.score in prediction.class_names and prediction.has_segmentation
        values, self.vmin, self.vmax, scale = normalise_scores(
            raw, params.normalize, probability=probability
        )
        name = (
            f"P({params.score})"
            if probability
            else f"tile {params.score}"
            if params.score in prediction.class_names
            else params.score
        )
        self.label = f"{name} ({scale})"
        self.canvas = canvas
        self.sampler = CanvasSampler(grid.stitch(values), grid, canvas)
        self.sigma_px = params.smooth_um / canvas.mpp(geometry) if params.smooth_um > 0 else 0.0
        self.tissue = tissue if params.tissue_clip else None

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Heat of canvas rows ``[y0, y1)``: float32, NaN where nothing is shown."""
        halo = smoothing_halo(self.sigma_px)
        heat = self.sampler.rows(y0 - halo, y1 + halo)
        if halo:
            heat = smooth(heat, self.sigma_px)[halo : halo + y1 - y0]
        if self.tissue is not None:
            heat[~rasterise_polygons(self.tissue, self.canvas, (y0, y1))] = np.nan
        return heat


def compute_heatmap(
    prediction: SlidePrediction,
    canvas: Canvas,
    params: HeatmapParams,
    tissue: Any = None,
    grid: TileGrid | None = None,
) -> Heatmap:
    """The whole heatmap of ``params.score`` on ``canvas`` (see :class:`HeatSource`)."""
    source = HeatSource(prediction, canvas, params, tissue, grid)
    return Heatmap(
        values=source.rows(0, canvas.height), vmin=source.vmin, vmax=source.vmax, label=source.label
    )


def positive_cells(
    prediction: SlidePrediction, grid: TileGrid, params: HeatmapParams
) -> np.ndarray:
    """Boolean grid of cells whose (overlap-averaged) positive-class probability >= threshold.

    The same cells are outlined in segmentation.png and merged into segmentation.geojson.
    """
    index = prediction.positive_index(params.positive_class)
    probs = grid.stitch(prediction.tile_probs[:, index])
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(probs, nan=-1.0) >= params.seg_threshold


def tissue_path_for(
    prediction: SlidePrediction, tiles_dir: str | os.PathLike | None
) -> Path | None:
    """The tiling step's ``<slide_id>.tissue.geojson``: in ``tiles_dir``, else beside the tiles
    file the bag came from (recorded as ``tiles_file``); None when there is none."""
    name = f"{prediction.slide_id}.tissue.geojson"
    candidates = []
    if tiles_dir is not None:
        candidates.append(Path(tiles_dir) / name)
    if prediction.attrs.get("tiles_file"):
        candidates.append(Path(str(prediction.attrs["tiles_file"])).with_name(name))
    return next((p for p in candidates if p.is_file()), None)


def load_tissue(path: Path | None) -> Any:
    """Level-0 tissue (Multi)Polygon from the tiling step, or None."""
    if path is None:
        return None
    from tiling.tissue_geojson import read_tissue_geojson

    return read_tissue_geojson(path)
