"""Overlay layers of one slide, rendered as tiles of the slide's own Deep Zoom pyramid.

A heat layer is a pyramid of tile-grid arrays: ``heatmap.zarr``'s levels when the project
wrote one, else the same arrays built in memory from the predictions with the functions that
write the zarr (stitch on the tile grid, NaN-aware 2x means). A Deep Zoom tile is coloured by
sampling the level whose cells are just larger than the tile's pixels at each pixel's centre
(in level-0 coordinates), so the heat sits where the tiles were at every zoom, and then
clipped to the tissue polygons with the rasteriser the PNGs use. Sampling a grid window per
tile is written here because the heatmap code samples whole-slide canvases only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from tiling.lattice import TileGrid
from wsi_mil.heatmaps.stitch import Canvas, rasterise_polygons

#: outline colours (RGB): the heatmap PNGs' segmentation and tissue colours, lesions in black
OUTLINE_COLORS = {"segmentation": (230, 20, 60), "tissue": (20, 120, 40), "lesions": (0, 0, 0)}
OUTLINE_NAMES = {
    "segmentation": "segmentation outline",
    "tissue": "tissue outline",
    "lesions": "lesion annotations",
}


@dataclass(frozen=True)
class TileWindow:
    """One Deep Zoom tile: its top-left in level pixels, size, and level-0 px per pixel."""

    x: int
    y: int
    width: int
    height: int
    scale: float  # level-0 px per tile px

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in level-0 px."""
        return (
            self.x * self.scale,
            self.y * self.scale,
            (self.x + self.width) * self.scale,
            (self.y + self.height) * self.scale,
        )


@dataclass(frozen=True)
class HeatLayer:
    """A heat pyramid: level k has cells of ``stride * 2**k`` level-0 px from ``origin``."""

    name: str
    label: str  # colour-bar label
    levels: tuple[np.ndarray, ...]  # float32 [rows, cols], NaN where no tile
    origin: tuple[float, float]  # level-0 (x, y) of cell (0, 0)'s top-left corner
    stride: float  # level-0 px per level-0 cell
    vmin: float = 0.0
    vmax: float = 1.0

    def level_for(self, scale: float) -> int:
        """The coarsest level whose cells are not smaller than ``scale`` level-0 px."""
        wanted = math.ceil(math.log2(max(scale / self.stride, 1.0)) - 1e-9)
        return min(max(wanted, 0), len(self.levels) - 1)

    def sample(self, window: TileWindow, interpolation: str) -> np.ndarray:
        """The layer's values at the centres of the window's pixels (NaN off the heat)."""
        k = self.level_for(window.scale)
        values = self.levels[k]
        grid = TileGrid(
            origin=self.origin,
            stride=self.stride * 2**k,
            span=1,
            shape=values.shape,
            cells=np.zeros((0, 2), np.int64),
        )
        xs = (
            (window.x + np.arange(window.width) + 0.5) * window.scale - grid.origin[0]
        ) / grid.stride
        ys = (
            (window.y + np.arange(window.height) + 0.5) * window.scale - grid.origin[1]
        ) / grid.stride
        near = _gather(values, np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64))
        if interpolation != "linear":
            return near
        # bilinear between cell centres, ignoring NaN neighbours; the heat keeps the extent
        # of the nearest-cell picture (NaN where the nearest cell is NaN)
        u, v = xs - 0.5, ys - 0.5
        x0, y0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fx, fy = (u - x0)[None, :], (v - y0)[:, None]
        total = np.zeros(near.shape, np.float64)
        weight = np.zeros(near.shape, np.float64)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                cell = _gather(values, y0 + dy, x0 + dx)
                w = np.where(np.isnan(cell), 0.0, wy * wx)
                total += np.nan_to_num(cell) * w
                weight += w
        with np.errstate(invalid="ignore", divide="ignore"):
            smooth = (total / weight).astype(np.float32)
        smooth[np.isnan(near)] = np.nan
        return smooth

    def value_at(self, x: float, y: float) -> float | None:
        """The level-0 cell value at level-0 point (x, y), None off the heat."""
        values = self.levels[0]
        c = math.floor((x - self.origin[0]) / self.stride)
        r = math.floor((y - self.origin[1]) / self.stride)
        if 0 <= r < values.shape[0] and 0 <= c < values.shape[1] and not np.isnan(values[r, c]):
            return float(values[r, c])
        return None


def _gather(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """values[rows x cols] with NaN outside the array."""
    out = values[
        np.clip(rows, 0, values.shape[0] - 1)[:, None],
        np.clip(cols, 0, values.shape[1] - 1)[None, :],
    ].astype(np.float32)
    out[(rows < 0) | (rows >= values.shape[0]), :] = np.nan
    out[:, (cols < 0) | (cols >= values.shape[1])] = np.nan
    return out


#: palette index of transparent pixels in heat tiles; indices 0..254 are the colour map
TRANSPARENT = 255


def palette_of(lut: np.ndarray) -> np.ndarray:
    """The 255-colour PNG palette sampling a 256-entry colour-map LUT end to end."""
    return lut[np.rint(np.linspace(0, len(lut) - 1, TRANSPARENT)).astype(np.int64)]


def palette_index(
    values: np.ndarray, vmin: float, vmax: float, mask: np.ndarray | None = None
) -> np.ndarray:
    """uint8 palette indices of the values on [vmin, vmax]; TRANSPARENT at NaN or ~mask.

    An indexed picture (one byte per pixel, the colours in the PNG palette) encodes several
    times faster than RGBA and decodes to the same colours.
    """
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = (values - np.float32(vmin)) * np.float32((TRANSPARENT - 1) / span) + np.float32(0.5)
    index = np.clip(np.nan_to_num(scaled, nan=0.0), 0, TRANSPARENT - 1).astype(np.uint8)
    index[np.isnan(values)] = TRANSPARENT
    if mask is not None:
        index[~mask] = TRANSPARENT
    return index


def encode_indexed_png(index: np.ndarray, palette: np.ndarray) -> bytes:
    """PNG bytes of palette indices, TRANSPARENT shown as fully transparent."""
    from PIL import Image

    image = Image.fromarray(index, mode="P")
    image.putpalette(np.vstack([palette, [[0, 0, 0]]]).astype(np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, "png", transparency=TRANSPARENT, compress_level=1)
    return buffer.getvalue()


def tissue_mask(tissue: Any, window: TileWindow) -> np.ndarray | None:
    """Boolean mask of the tissue (a level-0 shapely shape, prepared) over the window's
    pixels; None when the whole window is tissue (nothing to clip)."""
    import shapely

    x0, y0, x1, y1 = window.bounds
    if tissue is None or tissue.is_empty:
        return np.zeros((window.height, window.width), bool)
    minx, miny, maxx, maxy = tissue.bounds
    if maxx < x0 or maxy < y0 or minx > x1 or miny > y1:
        return np.zeros((window.height, window.width), bool)
    if shapely.contains(
        tissue,
        shapely.box(x0 - window.scale, y0 - window.scale, x1 + window.scale, y1 + window.scale),
    ):
        return None
    if minx >= x0 and miny >= y0 and maxx <= x1 and maxy <= y1:
        local = shapely.transform(tissue, lambda xy: xy - (x0, y0))
    else:
        local = shapely.transform(
            shapely.clip_by_rect(
                tissue, x0 - window.scale, y0 - window.scale, x1 + window.scale, y1 + window.scale
            ),
            lambda xy: xy - (x0, y0),
        )
    canvas = Canvas(window.width, window.height, (window.scale, window.scale))
    return rasterise_polygons(local, canvas)


@dataclass(frozen=True)
class OutlineLayer:
    """Closed rings (level-0 px) drawn as lines in one colour."""

    name: str
    label: str
    rings: tuple[np.ndarray, ...]  # each float64 [K, 2]
    boxes: np.ndarray  # float64 [R, 4] (x0, y0, x1, y1) of each ring
    color: tuple[int, int, int]

    @classmethod
    def from_geometry(cls, name: str, geometry: Any) -> OutlineLayer:
        from shapely.geometry.base import BaseMultipartGeometry

        parts = geometry.geoms if isinstance(geometry, BaseMultipartGeometry) else [geometry]
        rings = []
        for polygon in parts:
            if polygon.geom_type != "Polygon" or polygon.is_empty:
                continue
            rings += [
                np.asarray(r.coords, np.float64)[:, :2]
                for r in (polygon.exterior, *polygon.interiors)
            ]
        boxes = (
            np.array([[*r.min(axis=0), *r.max(axis=0)] for r in rings])
            if rings
            else np.zeros((0, 4))
        )
        return cls(
            name,
            OUTLINE_NAMES.get(name, name),
            tuple(rings),
            boxes,
            OUTLINE_COLORS.get(name, (0, 0, 0)),
        )

    def render(self, window: TileWindow, width_px: int = 2) -> np.ndarray:
        """RGBA tile with the rings crossing the window drawn ``width_px`` wide."""
        rgba = np.zeros((window.height, window.width, 4), np.uint8)
        x0, y0, x1, y1 = window.bounds
        pad = width_px * window.scale
        hit = np.flatnonzero(
            (self.boxes[:, 2] >= x0 - pad)
            & (self.boxes[:, 0] <= x1 + pad)
            & (self.boxes[:, 3] >= y0 - pad)
            & (self.boxes[:, 1] <= y1 + pad)
        )
        if hit.size == 0:
            return rgba
        shift = 4  # sub-pixel precision, as the PNG outlines
        lines = [
            np.rint(((self.rings[i] - (x0, y0)) / window.scale - 0.5) * (1 << shift)).astype(
                np.int32
            )
            for i in hit
        ]
        cv2.polylines(rgba, lines, True, (*self.color, 255), width_px, cv2.LINE_AA, shift)
        return rgba


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGBA image (OpenCV: fast, and the viewer already depends on it)."""
    ok, data = cv2.imencode(
        ".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


@dataclass(frozen=True)
class ZarrHeatLayer:
    """A heat layer read from a uint8 x 255 zarr pyramid on the slide's pixels, a window at a
    time: the pixel segmenter's ``mask.zarr`` and its ``explain.zarr/<method>`` maps, which at
    1 µm/px are too large to hold whole (a Camelyon16 slide's level 0 is 24k x 48k). Level k
    has cells of ``stride * 2**k`` level-0 px from ``origin`` (the mask pyramid's 2x means), as
    :class:`HeatLayer`'s; a 0 is transparent (no window ran there, or nothing to show).
    Sampling reads the cells under a Deep Zoom tile and samples them with :class:`HeatLayer`."""

    name: str
    label: str
    arrays: tuple[Any, ...]  # zarr arrays [1, rows, cols] uint8, finest first
    origin: tuple[float, float]
    stride: float
    vmin: float = 0.0
    vmax: float = 1.0

    def level_for(self, scale: float) -> int:
        wanted = math.ceil(math.log2(max(scale / self.stride, 1.0)) - 1e-9)
        return min(max(wanted, 0), len(self.arrays) - 1)

    def _block(self, k: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        values = np.asarray(self.arrays[k][0, rows[0] : rows[1], cols[0] : cols[1]], np.float32)
        values /= 255.0
        values[values == 0] = np.nan
        return values

    def sample(self, window: TileWindow, interpolation: str) -> np.ndarray:
        """The layer's values at the centres of the window's pixels (NaN off the heat)."""
        k = self.level_for(window.scale)
        stride = self.stride * 2**k
        shape = self.arrays[k].shape[1:]
        x0, y0, x1, y1 = window.bounds
        c0 = min(max(math.floor((x0 - self.origin[0]) / stride) - 1, 0), shape[1])
        c1 = min(max(math.ceil((x1 - self.origin[0]) / stride) + 1, 0), shape[1])
        r0 = min(max(math.floor((y0 - self.origin[1]) / stride) - 1, 0), shape[0])
        r1 = min(max(math.ceil((y1 - self.origin[1]) / stride) + 1, 0), shape[0])
        if c1 <= c0 or r1 <= r0:
            return np.full((window.height, window.width), np.nan, np.float32)
        block = self._block(k, (r0, r1), (c0, c1))
        local = HeatLayer(
            self.name,
            self.label,
            (block,),
            (self.origin[0] + c0 * stride, self.origin[1] + r0 * stride),
            stride,
            self.vmin,
            self.vmax,
        )
        return local.sample(window, interpolation)

    def value_at(self, x: float, y: float) -> float | None:
        """The level-0 value at level-0 point (x, y), None off the heat."""
        c = math.floor((x - self.origin[0]) / self.stride)
        r = math.floor((y - self.origin[1]) / self.stride)
        rows, cols = self.arrays[0].shape[1:]
        if not (0 <= r < rows and 0 <= c < cols):
            return None
        value = float(self.arrays[0][0, r, c]) / 255.0
        return value if value > 0 else None
