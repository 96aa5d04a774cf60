"""The lattice tiles were laid on, rebuilt from their coordinates: stitching per-tile values
into a grid (heatmaps, exports, the viewer) and finding neighbouring tiles (the FROC's local
maxima) use this one reconstruction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_mil.errors import InputError


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
            raise InputError(
                f"{source}: slide/tiling attributes missing {missing} (the heatmap "
                f"needs the tiling geometry carried over from the tiles file; "
                f"for TRIDENT feature files pass --slides so it is read from the "
                f"slide)"
            )
        return cls(
            width=int(attrs["slide_width"]),
            height=int(attrs["slide_height"]),
            mpp=float(attrs["slide_mpp"]),
            tile_size_level0=float(attrs["tile_size_level0"]),
            stride_level0=stride_level0(attrs),
        )


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
        cols = max(
            math.ceil((geometry.width - origin[0]) / stride),
            int(cells_xy[:, 0].max()) + span if len(coords) else 1,
        )
        rows = max(
            math.ceil((geometry.height - origin[1]) / stride),
            int(cells_xy[:, 1].max()) + span if len(coords) else 1,
        )
        return cls(
            origin=(float(origin[0]), float(origin[1])),
            stride=stride,
            span=span,
            shape=(rows, cols),
            cells=cells_xy[:, ::-1].copy(),
        )

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
