"""The segmenter's windows over a slide and the pyramids their outputs are stitched into.

Shared by the mask (:mod:`wsi_mil.segment.infer`) and the explanation maps
(:mod:`wsi_mil.segment.explain`), so both lie on one lattice: the windows (``tile_size`` px at
the segmenter's µm/px) sit on one lattice of step ``tile_size * (1 - overlap)``, a window is
run when its centre is within half a step of a tile to cover (:func:`window_lattice`), the
windows' values are blended per zarr chunk with MONAI's Gaussian importance map and a chunk is
written as soon as no later window touches it (:class:`ChunkStitcher`), and the coarser levels
of the uint8 pyramid are 2x means built from the written chunks, with OME-Zarr 0.4 metadata in
µm (:func:`pyramid_attrs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tiling.annotations import mask_shape
from tiling.lattice import SlideGeometry, TileGrid
from tiling.reader import TileReader
from tiling.slide import level_for_downsample
from tiling.storage import provenance
from wsi_mil.export.ome_zarr import multiscales_metadata
from wsi_mil.mil.predictions import SlidePrediction
from wsi_mil.segment.params import SegmentParams


@dataclasses.dataclass(frozen=True)
class MaskGeometry:
    """The segmenter's pixel lattice over a slide: mask pixel (r, c) covers level-0
    ``[c * downsample, (c + 1) * downsample)`` (the same rule as ``tiling.annotations``)."""

    shape: tuple[int, int]  # (rows, cols) at level 0 of the mask pyramid
    downsample: float  # level-0 px per mask px
    mpp: float  # µm per mask px

    @classmethod
    def for_slide(cls, geometry: SlideGeometry, mpp: float) -> MaskGeometry:
        return cls(
            shape=mask_shape(geometry.width, geometry.height, geometry.mpp, mpp),
            downsample=mpp / geometry.mpp,
            mpp=mpp,
        )


def window_lattice(
    boxes: np.ndarray, tile_size: int, step: int, shape: tuple[int, int]
) -> np.ndarray:
    """(row, col) lattice indices of the windows to run, sorted in raster order.

    ``boxes`` are ``[K, 4]`` (x0, y0, x1, y1) areas in mask px that must be covered. A window
    ``[k * step, k * step + tile_size)`` is kept when its centre lies within ``step / 2`` of a
    box: every pixel of a box then has a window whose centre is at most ``step / 2`` away, so
    it is inside that window (``step <= tile_size``).
    """
    if len(boxes) == 0:
        return np.zeros((0, 2), np.int64)
    half = tile_size / 2
    pairs = []
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64):
        kx = np.arange(
            np.ceil((x0 - step / 2 - half) / step),
            np.floor((x1 + step / 2 - half - 1e-9) / step) + 1,
        )
        ky = np.arange(
            np.ceil((y0 - step / 2 - half) / step),
            np.floor((y1 + step / 2 - half - 1e-9) / step) + 1,
        )
        gy, gx = np.meshgrid(ky, kx, indexing="ij")
        pairs.append(np.column_stack([gy.ravel(), gx.ravel()]))
    lattice = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)  # sorted by row, col
    # windows wholly off the mask (possible at the far edge) contribute nothing
    inside = (
        (lattice[:, 0] * step < shape[0])
        & (lattice[:, 1] * step < shape[1])
        & ((lattice[:, 0] * step + tile_size) > 0)
        & ((lattice[:, 1] * step + tile_size) > 0)
    )
    return lattice[inside]


class ChunkStitcher:
    """Weighted sums of window probabilities per zarr chunk, written when complete.

    ``last_use[chunk]`` is the index of the last window touching the chunk; after window ``i``
    every chunk whose last use is ``<= i`` is final: normalised, written, and freed.
    """

    def __init__(self, array: Any, chunk: int, windows_xy: np.ndarray, tile_size: int):
        self.array, self.chunk, self.size = array, chunk, tile_size
        self.rows, self.cols = array.shape[1:]
        self.sums: dict[tuple[int, int], np.ndarray] = {}
        self.weights: dict[tuple[int, int], np.ndarray] = {}
        self.last_use: dict[tuple[int, int], int] = {}
        for i, (x, y) in enumerate(windows_xy):
            for key in self._chunks_of(int(x), int(y)):
                self.last_use[key] = i
        self.written: set[tuple[int, int]] = set()
        self.peak_chunks = 0

    def _chunks_of(self, x: int, y: int) -> list[tuple[int, int]]:
        c0, c1 = max(0, x) // self.chunk, (min(self.cols, x + self.size) - 1) // self.chunk
        r0, r1 = max(0, y) // self.chunk, (min(self.rows, y + self.size) - 1) // self.chunk
        return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def add(self, x: int, y: int, probs: np.ndarray, weight: np.ndarray) -> None:
        """Add one window (top-left mask px ``(x, y)``) of probabilities with its weights."""
        n = self.chunk
        for r, c in self._chunks_of(x, y):
            key = (r, c)
            if key not in self.sums:
                h, w = min(n, self.rows - r * n), min(n, self.cols - c * n)
                self.sums[key] = np.zeros((h, w), np.float32)
                self.weights[key] = np.zeros((h, w), np.float32)
            # overlap of the window and the chunk, in chunk and in window coordinates
            gy0, gy1 = max(y, r * n), min(y + self.size, r * n + self.sums[key].shape[0])
            gx0, gx1 = max(x, c * n), min(x + self.size, c * n + self.sums[key].shape[1])
            chunk_part = (slice(gy0 - r * n, gy1 - r * n), slice(gx0 - c * n, gx1 - c * n))
            window_part = (slice(gy0 - y, gy1 - y), slice(gx0 - x, gx1 - x))
            self.sums[key][chunk_part] += probs[window_part] * weight[window_part]
            self.weights[key][chunk_part] += weight[window_part]
        self.peak_chunks = max(self.peak_chunks, len(self.sums))

    def flush(self, done: int) -> None:
        """Write every chunk no window after index ``done`` touches."""
        n = self.chunk
        for key in [k for k in self.sums if self.last_use[k] <= done]:
            total, weight = self.sums.pop(key), self.weights.pop(key)
            with np.errstate(invalid="ignore", divide="ignore"):
                prob = np.where(weight > 0, total / weight, 0.0)
            r, c = key
            self.array[0, r * n : r * n + prob.shape[0], c * n : c * n + prob.shape[1]] = np.rint(
                np.clip(prob, 0, 1) * 255
            ).astype(np.uint8)
            self.written.add(key)


def _downsample_level(
    source: Any, target: Any, chunks: set[tuple[int, int]], n: int
) -> set[tuple[int, int]]:
    """Write the 2x mean of ``source`` into ``target`` for the parents of ``chunks``."""
    parents = {(r // 2, c // 2) for r, c in chunks}
    rows, cols = target.shape[1:]
    for r, c in sorted(parents):
        block = source[0, 2 * r * n : 2 * (r + 1) * n, 2 * c * n : 2 * (c + 1) * n].astype(
            np.float32
        )
        h, w = min(n, rows - r * n), min(n, cols - c * n)
        padded = np.zeros((2 * h, 2 * w), np.float32)
        padded[: block.shape[0], : block.shape[1]] = block
        mean = padded.reshape(h, 2, w, 2).mean(axis=(1, 3))
        target[0, r * n : r * n + h, c * n : c * n + w] = np.rint(mean).astype(np.uint8)
    return parents


@dataclasses.dataclass(frozen=True)
class WindowLayout:
    """The segmenter's windows over one slide: their top-left mask px ``(x, y)`` in raster
    order, the window side, and the mask lattice they lie on."""

    windows_xy: np.ndarray  # int64 [K, 2]
    size: int
    mask: MaskGeometry
    geometry: SlideGeometry


def window_layout(
    card: dict[str, Any], prediction: SlidePrediction, selected: np.ndarray, params: SegmentParams
) -> WindowLayout:
    """The windows covering the ``selected`` tiles (see :func:`window_lattice`)."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    seg_mpp, size = float(card["input"]["mpp"]), int(card["input"]["tile_size"])
    mask = MaskGeometry.for_slide(geometry, seg_mpp)
    step = max(1, round(size * (1 - params.overlap)))
    coords = np.asarray(prediction.coords, np.float64)[selected]
    side = geometry.tile_size_level0 / mask.downsample
    boxes = np.column_stack([coords / mask.downsample, coords / mask.downsample + side])
    lattice = window_lattice(boxes, size, step, mask.shape)
    return WindowLayout(lattice[:, ::-1] * step, size, mask, geometry)


def window_reader(slide: Any, layout: WindowLayout) -> Callable[[np.ndarray], np.ndarray]:
    """``read(windows_xy) -> uint8 [K, T, T, 3]``: the RGB windows at the segmenter's µm/px."""
    down = layout.mask.downsample
    read_level = level_for_downsample(slide, down)
    reader = TileReader(
        slide,
        {
            "read_level": read_level,
            "read_downsample": slide.level_downsamples[read_level],
            "tile_size": layout.size,
            "tile_size_level0": layout.size * down,
        },
    )

    def read(windows_xy: np.ndarray) -> np.ndarray:
        return np.stack([reader.read(round(x * down), round(y * down)) for x, y in windows_xy])

    return read


def pyramid_arrays(group: Any, shape: tuple[int, int], chunk: int) -> list[Any]:
    """The empty uint8 levels of a mask-shaped pyramid in zarr ``group`` (level k: 2^k x
    coarser, until one chunk holds it)."""
    levels = [shape]
    while max(levels[-1]) > chunk:
        levels.append(((levels[-1][0] + 1) // 2, (levels[-1][1] + 1) // 2))
    return [
        group.create_array(
            str(k),
            shape=(1, *level),
            dtype="uint8",
            chunks=(1, min(chunk, level[0]), min(chunk, level[1])),
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            config={"write_empty_chunks": False},
        )
        for k, level in enumerate(levels)
    ]


def finish_pyramid(arrays: list[Any], written: set[tuple[int, int]], chunk: int) -> None:
    """Fill the coarser levels from the level-0 chunks that were written."""
    chunks = written
    for k in range(1, len(arrays)):
        chunks = _downsample_level(arrays[k - 1], arrays[k], chunks, chunk)


def pyramid_attrs(
    prediction: SlidePrediction,
    layout: WindowLayout,
    levels: int,
    chunk: int,
    label: str,
    description: str,
    color: str,
    card: dict[str, Any],
    scale: str,
) -> dict[str, Any]:
    """OME-Zarr 0.4 ``multiscales`` and ``omero`` metadata (µm) of one uint8 x 255 channel,
    and the ``wsi_mil`` block readers use to place it on the slide."""
    mask, geometry = layout.mask, layout.geometry
    lattice_grid = TileGrid(
        origin=(0.0, 0.0),
        stride=mask.downsample,
        span=1,
        shape=mask.shape,
        cells=np.zeros((0, 2), np.int64),
    )
    multiscales = multiscales_metadata(prediction.slide_id, lattice_grid, geometry, levels, "0.4")
    multiscales["metadata"] = {"description": description}
    return {
        "multiscales": [multiscales],
        "omero": {
            "version": "0.4",
            "name": prediction.slide_id,
            "channels": [
                {
                    "label": label,
                    "color": color,
                    "active": True,
                    "coefficient": 1.0,
                    "family": "linear",
                    "inverted": False,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
            ],
            "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
        },
        "wsi_mil": {
            **provenance(),
            "slide_id": prediction.slide_id,
            "mask_mpp": mask.mpp,
            "slide_mpp": geometry.mpp,
            "downsample_level0": mask.downsample,
            "shape": list(mask.shape),
            "chunk": chunk,
            "checkpoint_sha256": card.get("checkpoint_sha256"),
            "scale": scale,
        },
    }
