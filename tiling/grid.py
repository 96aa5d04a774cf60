"""The tile grid: which tiles of a slide hold enough tissue, and how much.

Tiles are squares of ``tile_size_level0`` level-0 px laid every ``stride`` px from the top-left
corner. Tiles wholly inside the slide are considered and, with ``edge_tiles``, also the next
tile of the lattice at the right and bottom edges when a strip of the slide narrower than a
tile is left uncovered: on a small field that strip is a large share of the tissue (13 % of a
500 px field in 233 px tiles). Such a tile overhangs the slide; the reader composites the
overhang onto white, as glass, and the tile stays on the lattice (heatmaps stitch on it). Its
``min_tissue`` and white/black fractions are taken over its part inside the slide, the recorded
tissue fraction over the whole tile (the picture the encoder sees). A tile's tissue fraction is the
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
class TileLayout:
    """Kept tiles, in row-major order (top to bottom, left to right)."""

    coords: np.ndarray  # int64 [N, 2], level-0 (x, y) of each tile's top-left corner
    tissue_fraction: np.ndarray  # float32 [N]
    candidates: int  # tiles laid before filtering, for reports
    columns: np.ndarray  # int64 level-0 x of every laid column (kept or not), for the preview
    rows: np.ndarray  # int64 level-0 y of every laid row


#: An overhanging edge tile is laid only when at least this share of its side lies in the
#: slide: a thinner sliver would be almost all white padding.
EDGE_MIN_INSIDE = 0.1


def grid_positions(length: int, tile: float, stride: float, edge: bool = False) -> np.ndarray:
    """Start positions (int64 level-0 px) of the tiles that fit wholly in ``length`` px.

    With ``edge``, one more lattice position when the tiles leave more than
    ``EDGE_MIN_INSIDE`` of a tile uncovered at the far end (that tile overhangs the slide).
    """
    count = math.floor((length - tile) / stride + 1e-9) + 1 if tile <= length else 0
    if edge:
        covered = (count - 1) * stride + tile if count else 0.0
        if length - covered > 1e-9 and length - count * stride >= EDGE_MIN_INSIDE * tile:
            count += 1
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
    return (
        table[i, j] * (1 - fy) * (1 - fx)
        + table[i, j + 1] * (1 - fy) * fx
        + table[i + 1, j] * fy * (1 - fx)
        + table[i + 1, j + 1] * fy * fx
    )


def region_fractions(table: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: float) -> np.ndarray:
    """Mean mask value over squares ``[x, x + size) x [y, y + size)`` in mask px, all pairs.

    ``ys`` and ``xs`` are 1-D; the result is ``[len(ys), len(xs)]``. Squares are clipped to the
    mask; a square wholly outside it has fraction 0.
    """
    h, w = table.shape[0] - 1, table.shape[1] - 1
    y0 = np.clip(ys, 0, h)[:, None]
    y1 = np.clip(ys + size, 0, h)[:, None]
    x0 = np.clip(xs, 0, w)[None, :]
    x1 = np.clip(xs + size, 0, w)[None, :]
    total = (
        _table_at(table, y1, x1)
        - _table_at(table, y0, x1)
        - _table_at(table, y1, x0)
        + _table_at(table, y0, x0)
    )
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
    edge_tiles: bool = False,
) -> TileLayout:
    """Lay the grid over a ``width`` x ``height`` slide and keep the tiles with tissue.

    ``tissue``, ``white`` and ``black`` are boolean masks whose pixels span ``mask_downsample``
    level-0 px. A tile is kept when its tissue fraction is at least ``min_tissue`` (and above
    zero), and its near-white and near-black fractions do not exceed the given maxima; for a
    tile that overhangs the slide (``edge_tiles``) these fractions are of its part inside.
    """
    xs = grid_positions(width, tile_size_level0, stride, edge_tiles)
    ys = grid_positions(height, tile_size_level0, stride, edge_tiles)
    size = tile_size_level0 / mask_downsample
    mx, my = xs / mask_downsample, ys / mask_downsample
    inside = (
        np.clip((height - ys) / tile_size_level0, 0.0, 1.0)[:, None]
        * np.clip((width - xs) / tile_size_level0, 0.0, 1.0)[None, :]
    )
    fraction = region_fractions(summed_area_table(tissue), my, mx, size)
    keep = (fraction >= min_tissue * inside) & (fraction > 0)
    if white is not None and max_white_fraction < 1.0:
        keep &= (
            region_fractions(summed_area_table(white), my, mx, size) <= max_white_fraction * inside
        )
    if black is not None and max_black_fraction < 1.0:
        keep &= (
            region_fractions(summed_area_table(black), my, mx, size) <= max_black_fraction * inside
        )
    rows, cols = np.nonzero(keep)
    coords = np.stack([xs[cols], ys[rows]], axis=1).astype(np.int64).reshape(-1, 2)
    return TileLayout(
        coords=coords,
        tissue_fraction=fraction[rows, cols].astype(np.float32),
        candidates=int(xs.size * ys.size),
        columns=xs,
        rows=ys,
    )
