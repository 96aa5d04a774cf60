"""The tile grid: which tiles of a slide hold enough tissue, and how much.

Tiles are squares of ``tile_size_level0`` level-0 px laid every ``stride`` px from the top-left
corner; only tiles wholly inside the slide are considered. A tile's tissue fraction is the
area-weighted mean of the low-resolution tissue mask under it, computed for every tile at once
from a summed-area table (integral image). Reading the table at fractional positions by
bilinear interpolation is exact for a piecewise-constant mask, so a tile that covers a mask
pixel by a third counts a third of it: no rounding of tile edges to mask pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Kept tiles, in row-major order (top to bottom, left to right)."""

    coords: np.ndarray  # int64 [N, 2], level-0 (x, y) of each tile's top-left corner
    tissue_fraction: np.ndarray  # float32 [N]
    candidates: int  # tiles laid before filtering, for reports


def grid_positions(length: int, tile: float, stride: float) -> np.ndarray:
    """Start positions (int64 level-0 px) of the tiles that fit wholly in ``length`` px."""
    if tile > length:
        return np.zeros(0, np.int64)
    count = math.floor((length - tile) / stride + 1e-9) + 1
    return np.floor(np.arange(count) * stride + 1e-9).astype(np.int64)  # floor: stays inside


def summed_area_table(mask: np.ndarray) -> np.ndarray:
    """``S[i, j] = mask[:i, :j].sum()`` as float64 ``[h + 1, w + 1]`` (OpenCV: ~10x NumPy)."""
    return cv2.integral(np.ascontiguousarray(mask, dtype=np.uint8), sdepth=cv2.CV_64F)


def _table_at(table: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The summed-area table at fractional (y, x) (broadcast), by bilinear interpolation."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    y = np.clip(y, 0, h)
    x = np.clip(x, 0, w)
    i = np.minimum(np.floor(y).astype(np.int64), max(h - 1, 0))
    j = np.minimum(np.floor(x).astype(np.int64), max(w - 1, 0))
    fy, fx = y - i, x - j
    return (table[i, j] * (1 - fy) * (1 - fx) + table[i, j + 1] * (1 - fy) * fx
            + table[i + 1, j] * fy * (1 - fx) + table[i + 1, j + 1] * fy * fx)


def region_fractions(table: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: float
                     ) -> np.ndarray:
    """Mean mask value over squares ``[x, x + size) x [y, y + size)`` in mask px, all pairs.

    ``ys`` and ``xs`` are 1-D; the result is ``[len(ys), len(xs)]``. Squares are clipped to the
    mask; a square wholly outside it has fraction 0.
    """
    h, w = table.shape[0] - 1, table.shape[1] - 1
    y0 = np.clip(ys, 0, h)[:, None]
    y1 = np.clip(ys + size, 0, h)[:, None]
    x0 = np.clip(xs, 0, w)[None, :]
    x1 = np.clip(xs + size, 0, w)[None, :]
    total = (_table_at(table, y1, x1) - _table_at(table, y0, x1)
             - _table_at(table, y1, x0) + _table_at(table, y0, x0))
    return np.clip(total / (size * size), 0.0, 1.0)


def tile_grid(
    width: int,
    height: int,
    tile_size_level0: float,
    stride: float,
    mask_downsample: float,
    tissue: np.ndarray,
    min_tissue: float,
    white: np.ndarray | None = None,
    black: np.ndarray | None = None,
    max_white_fraction: float = 1.0,
    max_black_fraction: float = 1.0,
) -> TileGrid:
    """Lay the grid over a ``width`` x ``height`` slide and keep the tiles with tissue.

    ``tissue``, ``white`` and ``black`` are boolean masks whose pixels span ``mask_downsample``
    level-0 px. A tile is kept when its tissue fraction is at least ``min_tissue`` (and above
    zero), and its near-white and near-black fractions do not exceed the given maxima.
    """
    xs = grid_positions(width, tile_size_level0, stride)
    ys = grid_positions(height, tile_size_level0, stride)
    size = tile_size_level0 / mask_downsample
    mx, my = xs / mask_downsample, ys / mask_downsample
    fraction = region_fractions(summed_area_table(tissue), my, mx, size)
    keep = (fraction >= min_tissue) & (fraction > 0)
    if white is not None and max_white_fraction < 1.0:
        keep &= region_fractions(summed_area_table(white), my, mx, size) <= max_white_fraction
    if black is not None and max_black_fraction < 1.0:
        keep &= region_fractions(summed_area_table(black), my, mx, size) <= max_black_fraction
    rows, cols = np.nonzero(keep)
    coords = np.stack([xs[cols], ys[rows]], axis=1).astype(np.int64).reshape(-1, 2)
    return TileGrid(coords=coords, tissue_fraction=fraction[rows, cols].astype(np.float32),
                    candidates=int(xs.size * ys.size))
