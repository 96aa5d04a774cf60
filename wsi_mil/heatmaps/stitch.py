"""Tile scores placed back on the slide, at the size of the picture that shows them.

A prediction gives one score per tile; a heatmap is those scores laid out where the tiles are.
CLAM paints every tile into an array the size of the slide (at level 0 that is 40 GB for a
Camelyon slide; at downsample 32 still hundreds of MB), then shrinks it. Here the scores are
first *stitched on the tile grid*, one cell per stride (a few hundred thousand cells at most,
overlapping tiles averaged cell by cell), and the grid is then sampled once for each pixel of
the output canvas. Memory is bounded by the grid plus the output picture, whatever the slide's
size. Smoothing (a Gaussian whose width is given in µm, so it means the same on any scanner)
and the tissue clip (tissue polygons rasterised at output scale) also work on the canvas only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.stats import rankdata

from wsi_mil.mil.predictions import SlidePrediction

NORMALISATIONS = ("rank", "minmax", "raw")
FORMATS = ("png", "zarr", "geojson")
ATTENTION = "attention"


@dataclass(frozen=True)
class HeatmapParams:
    """Everything a user chooses about heatmaps and exports (``wsi-mil heatmap``, YAML ``heatmap``)."""

    #: longest side of the thumbnail (and heatmap canvas) in pixels; ignored when ``mpp`` is set
    max_side: int = 2048
    #: resolution of the thumbnail in µm/px (e.g. 8.0); overrides ``max_side`` when given
    mpp: float | None = None
    #: what the overlay shows: "attention", or a class name (that class's tile probability)
    score: str = ATTENTION
    #: tile scores -> colours: "rank" (percentile, CLAM's default), "minmax" or "raw"
    normalize: str = "rank"
    #: Gaussian smoothing width (sigma) in µm; 0 turns smoothing off
    smooth_um: float = 0.0
    #: matplotlib colour map of the overlay
    cmap: str = "coolwarm"
    #: opacity of the heatmap over the thumbnail, 0..1
    alpha: float = 0.4
    #: clip the heat to the tissue polygons of the tiling step when they are available
    tissue_clip: bool = True
    #: number of most-attended tiles shown in topk.png (0: no topk.png)
    topk: int = 8
    #: class whose tile probability is the segmentation; None = the last class (e.g. "tumor")
    positive_class: str | None = None
    #: tile probability at or above which a grid cell counts as positive in the segmentation
    seg_threshold: float = 0.5
    #: outputs to write: any of "png", "zarr", "geojson"
    formats: tuple[str, ...] = FORMATS
    #: chunk side of the zarr arrays (cells)
    zarr_chunk: int = 256
    #: OME-Zarr metadata version: "0.4" (zarr format 2, read by every OME-Zarr tool) or "0.5"
    ome_zarr_version: str = "0.4"
    #: attention rollout of the encoder over each top-k tile (ViT encoders with weights only)
    rollout: bool = False
    #: how rollout fuses the heads of a layer: "mean", "max" or "min"
    rollout_head_fusion: str = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))  # a YAML list is fine too
        if self.normalize not in NORMALISATIONS:
            raise ValueError(f"normalize must be one of {NORMALISATIONS}, got {self.normalize!r}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown formats {unknown}; choose from {FORMATS}")
        if self.mpp is None and self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 px, got {self.max_side}")
        if self.mpp is not None and not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.smooth_um < 0:
            raise ValueError(f"smooth_um must be >= 0, got {self.smooth_um}")
        if self.topk < 0:
            raise ValueError(f"topk must be >= 0, got {self.topk}")
        if self.ome_zarr_version not in ("0.4", "0.5"):
            raise ValueError(f"ome_zarr_version must be '0.4' or '0.5', got {self.ome_zarr_version!r}")
        if self.rollout_head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"rollout_head_fusion must be mean, max or min, "
                             f"got {self.rollout_head_fusion!r}")


@dataclass(frozen=True)
class SlideGeometry:
    """What a heatmap needs to know about the slide and its tiles, from a file's attributes."""

    width: int  # level-0 px
    height: int
    mpp: float  # level-0 µm/px
    tile_size_level0: float  # side of one tile in level-0 px
    stride_level0: float  # distance between neighbouring tile positions in level-0 px

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], source: str = "predictions") -> SlideGeometry:
        """Read the geometry from tiles/bag/prediction attributes, naming what is missing."""
        needed = ("slide_width", "slide_height", "slide_mpp", "tile_size_level0", "stride")
        missing = [k for k in needed if k not in attrs]
        if missing:
            raise ValueError(f"{source}: slide/tiling attributes missing {missing} (the heatmap "
                             f"needs the tiling geometry carried over from the tiles file)")
        return cls(width=int(attrs["slide_width"]), height=int(attrs["slide_height"]),
                   mpp=float(attrs["slide_mpp"]),
                   tile_size_level0=float(attrs["tile_size_level0"]),
                   stride_level0=stride_level0(attrs))


def stride_level0(attrs: Mapping[str, Any]) -> float:
    """The tile stride in level-0 pixels (the tiles file records ``stride`` in level-0 px)."""
    stride = float(attrs["stride"])
    if not stride > 0:
        raise ValueError(f"tile stride must be positive, got {stride}")
    return stride


@dataclass(frozen=True)
class TileGrid:
    """The lattice the tiles were laid on: one cell per stride; a tile covers span x span cells."""

    origin: tuple[float, float]  # level-0 (x, y) of cell (0, 0)'s top-left corner
    stride: float  # level-0 px per cell
    span: int  # cells per tile side (1 without overlap, 2 with 50 % overlap)
    shape: tuple[int, int]  # (rows, cols)
    cells: np.ndarray  # int64 [N, 2], (row, col) of each tile's top-left cell

    @classmethod
    def from_coords(cls, coords: np.ndarray, geometry: SlideGeometry) -> TileGrid:
        """Lay the tiles' level-0 corners on their lattice (rounding absorbs float strides)."""
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        stride = geometry.stride_level0
        span = max(1, round(geometry.tile_size_level0 / stride))
        if len(coords):
            first = coords.min(axis=0)
            origin = first - np.round(first / stride) * stride
        else:
            origin = np.zeros(2)
        cells_xy = np.rint((coords - origin) / stride).astype(np.int64)
        cols = max(math.ceil((geometry.width - origin[0]) / stride),
                   int(cells_xy[:, 0].max()) + span if len(coords) else 1)
        rows = max(math.ceil((geometry.height - origin[1]) / stride),
                   int(cells_xy[:, 1].max()) + span if len(coords) else 1)
        return cls(origin=(float(origin[0]), float(origin[1])), stride=stride, span=span,
                   shape=(rows, cols), cells=cells_xy[:, ::-1].copy())

    def stitch(self, values: np.ndarray) -> np.ndarray:
        """Per-cell mean of the values of the tiles covering it; NaN where no tile lies.

        Each tile adds its value to its span x span cells, so overlapping tiles are averaged.
        """
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != self.cells.shape[0]:
            raise ValueError(f"{values.shape[0]} values for {self.cells.shape[0]} tiles")
        rows, cols = self.shape
        sums = np.zeros(rows * cols, dtype=np.float64)
        counts = np.zeros(rows * cols, dtype=np.float64)
        for dy in range(self.span):
            for dx in range(self.span):
                r = self.cells[:, 0] + dy
                c = self.cells[:, 1] + dx
                inside = (r < rows) & (c < cols)
                flat = r[inside] * cols + c[inside]
                sums += np.bincount(flat, weights=values[inside], minlength=rows * cols)
                counts += np.bincount(flat, minlength=rows * cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            grid = (sums / counts).astype(np.float32)
        return grid.reshape(rows, cols)


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
    def for_slide(cls, geometry: SlideGeometry, max_side: int | None = None,
                  mpp: float | None = None) -> Canvas:
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
        return cls(width=int(width), height=int(height),
                   downsample=(geometry.width / width, geometry.height / height))

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
    """The scores a heatmap can show: attention, then one per class."""
    return [ATTENTION, *prediction.class_names]


def tile_scores(prediction: SlidePrediction, score: str) -> np.ndarray:
    """Raw per-tile values of ``score``: raw attention, or one class's tile probability."""
    if score == ATTENTION:
        return np.asarray(prediction.attention, dtype=np.float64)
    if score in prediction.class_names:
        return np.asarray(prediction.tile_probs[:, prediction.class_names.index(score)],
                          dtype=np.float64)
    raise ValueError(f"{prediction.slide_id}: unknown score {score!r}; choose from "
                     f"{score_names(prediction)}")


def normalise_scores(scores: np.ndarray, method: str,
                     probability: bool) -> tuple[np.ndarray, float, float, str]:
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
        low, high = float(scores.min()), float(scores.max())
        scaled = (scores - low) / (high - low) if high - low > 1e-12 else np.ones_like(scores)
        return scaled, 0.0, 1.0, "min-max scaled"
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


def grid_to_canvas(grid_values: np.ndarray, grid: TileGrid, canvas: Canvas) -> np.ndarray:
    """Sample a grid of cell values at each canvas pixel's centre (NaN off the grid).

    When cells are smaller than canvas pixels the grid is first averaged in blocks, so every
    tile counts instead of one in ``factor``. The result is the canvas size, nothing larger.
    """
    stride = grid.stride
    factor = math.ceil(max(canvas.downsample) / stride - 1e-9)
    if factor > 1:
        grid_values = block_mean(grid_values, factor)
        stride = stride * factor
    rows, cols = grid_values.shape
    cx = ((np.arange(canvas.width) + 0.5) * canvas.downsample[0] - grid.origin[0]) / stride
    cy = ((np.arange(canvas.height) + 0.5) * canvas.downsample[1] - grid.origin[1]) / stride
    ix = np.floor(cx).astype(np.int64)
    iy = np.floor(cy).astype(np.int64)
    ok_x = (ix >= 0) & (ix < cols)
    ok_y = (iy >= 0) & (iy < rows)
    out = grid_values[np.clip(iy, 0, rows - 1)[:, None], np.clip(ix, 0, cols - 1)[None, :]]
    out[~ok_y, :] = np.nan
    out[:, ~ok_x] = np.nan
    return out.astype(np.float32, copy=False)


def rasterise_polygons(geometry: Any, canvas: Canvas) -> np.ndarray:
    """A boolean canvas mask of level-0 shapely (Multi)Polygons, holes left out.

    Pixels the boundary passes through count as inside (cv2's rule), a one-pixel margin that
    keeps thin tissue visible on small thumbnails.
    """
    from shapely.geometry.base import BaseMultipartGeometry

    mask = np.zeros((canvas.height, canvas.width), dtype=np.uint8)
    if geometry is None or geometry.is_empty:
        return mask.astype(bool)
    parts = geometry.geoms if isinstance(geometry, BaseMultipartGeometry) else [geometry]
    scale = np.array([1.0 / canvas.downsample[0], 1.0 / canvas.downsample[1]])
    shift = 4  # sub-pixel precision of cv2.fillPoly: coordinates in 1/16 px

    def ring_points(ring: Any) -> np.ndarray:
        # level-0 x -> canvas x; cv2 puts pixel j's centre at j, a continuous coordinate at j + 0.5
        pts = np.asarray(ring.coords)[:, :2] * scale - 0.5
        return np.rint(pts * (1 << shift)).astype(np.int32)

    for polygon in parts:
        if polygon.geom_type != "Polygon" or polygon.is_empty:
            continue
        cv2.fillPoly(mask, [ring_points(polygon.exterior)], 1, lineType=cv2.LINE_8, shift=shift)
        holes = [ring_points(ring) for ring in polygon.interiors]
        if holes:
            cv2.fillPoly(mask, holes, 0, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def smooth(values: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing that ignores NaN (normalised convolution) and keeps NaN where it was."""
    if sigma_px <= 0:
        return values
    valid = ~np.isnan(values)
    filled = np.where(valid, values, 0.0).astype(np.float32)
    weight = valid.astype(np.float32)
    blurred = cv2.GaussianBlur(filled, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px,
                               borderType=cv2.BORDER_CONSTANT)
    norm = cv2.GaussianBlur(weight, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px,
                            borderType=cv2.BORDER_CONSTANT)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = blurred / norm
    out[~valid] = np.nan
    return out


def compute_heatmap(
    prediction: SlidePrediction,
    canvas: Canvas,
    params: HeatmapParams,
    tissue: Any = None,
    grid: TileGrid | None = None,
) -> Heatmap:
    """The heatmap of ``params.score`` on ``canvas``: normalise, stitch, sample, smooth, clip.

    ``tissue`` is the slide's level-0 tissue (Multi)Polygon, or None to show heat wherever
    there are tiles. Normalisation is over the tiles (before stitching), as in CLAM.
    """
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    grid = grid or TileGrid.from_coords(prediction.coords, geometry)
    raw = tile_scores(prediction, params.score)
    values, vmin, vmax, scale = normalise_scores(raw, params.normalize,
                                                 probability=params.score != ATTENTION)
    heat = grid_to_canvas(grid.stitch(values), grid, canvas)
    if params.smooth_um > 0:
        heat = smooth(heat, params.smooth_um / canvas.mpp(geometry))
    if params.tissue_clip and tissue is not None:
        heat[~rasterise_polygons(tissue, canvas)] = np.nan
    name = "attention" if params.score == ATTENTION else f"P({params.score})"
    return Heatmap(values=heat, vmin=vmin, vmax=vmax, label=f"{name} ({scale})")


def positive_class_index(class_names: Sequence[str], positive_class: str | None) -> int:
    """Index of the segmentation's class: the one named, else the last (e.g. "tumor")."""
    if positive_class is None:
        return len(class_names) - 1
    if positive_class not in class_names:
        raise ValueError(f"positive_class {positive_class!r} is not one of {list(class_names)}")
    return list(class_names).index(positive_class)


def positive_cells(prediction: SlidePrediction, grid: TileGrid, params: HeatmapParams) -> np.ndarray:
    """Boolean grid of cells whose (overlap-averaged) positive-class probability >= threshold.

    The same cells are outlined in segmentation.png and merged into segmentation.geojson.
    """
    index = positive_class_index(prediction.class_names, params.positive_class)
    probs = grid.stitch(prediction.tile_probs[:, index])
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(probs, nan=-1.0) >= params.seg_threshold
