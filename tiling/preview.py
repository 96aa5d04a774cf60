"""A preview PNG per slide: thumbnail, tissue outline and kept tiles, to check tiling at a glance.

Tissue detection fails quietly (faint tissue missed, pen marks taken as tissue), so every tiled
slide gets a picture a person can scan in a folder view: the tissue outline in green, the
laid grid in thin grey and every kept tile as a blue square (tiles too small to draw as
outlines are shaded instead, and the grid is left out). A small slide (a 500 px field) is
enlarged, nearest-neighbour so its real pixels stay visible, to at least ``PREVIEW_MIN_LONG``
px on its long side: a 34 px preview cannot be judged.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from tiling.storage import atomic_output

#: Longest side of a preview in px: enough to see tiles, small enough to open anywhere.
PREVIEW_MAX_SIDE = 2048
#: A tissue-detection image smaller than this (a small slide at 8 µm/px) is too small to
#: judge tiles by eye, so the pipeline reads a larger thumbnail for the preview.
PREVIEW_MIN_SIDE = 1024
#: Least long side of the preview PNG: smaller images are enlarged to it.
PREVIEW_MIN_LONG = 512
TISSUE_BGR = (0, 170, 0)
TILE_BGR = (220, 90, 0)
GRID_BGR = (150, 150, 150)
#: The laid grid is drawn only when its cells are at least this many preview px and there are
#: at most ``MAX_GRID_CELLS`` of them (on a whole slide it would hide the picture).
MIN_GRID_CELL_PX = 8
MAX_GRID_CELLS = 10_000
#: Tiles smaller than this many preview px are shaded rather than outlined.
MIN_OUTLINED_TILE_PX = 4
#: Tiles at least this many preview px across get a 2 px outline.
THICK_TILE_PX = 48
#: Fast zlib level and no PNG row filter: ~5x faster than OpenCV's default on a textured
#: thumbnail, for a file ~10 % larger (the preview would otherwise cost more than the read).
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def render_preview(
    thumbnail: np.ndarray,
    downsample: float,
    tissue: np.ndarray,
    coords: np.ndarray,
    tile_size_level0: float,
    columns: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The preview as a BGR image: ``thumbnail`` (RGB) spans ``downsample`` level-0 px per px.

    ``tissue`` is the tissue mask over the whole slide at any scale; it is resized to the preview.
    ``columns`` and ``rows`` are the level-0 positions of the laid grid (kept tiles or not).
    """
    long_side = max(thumbnail.shape[:2])
    scale = min(1.0, PREVIEW_MAX_SIDE / long_side)
    if long_side < PREVIEW_MIN_LONG:
        scale = PREVIEW_MIN_LONG / long_side
    size = (max(1, round(thumbnail.shape[1] * scale)), max(1, round(thumbnail.shape[0] * scale)))
    image = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR)
    if scale != 1.0:
        image = cv2.resize(
            image, size, interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_NEAREST
        )
    if tissue.shape[:2] != image.shape[:2]:
        tissue = cv2.resize(tissue.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    px_per_level0 = scale / downsample
    tile_px = tile_size_level0 * px_per_level0
    if (
        columns is not None
        and rows is not None
        and tile_px >= MIN_GRID_CELL_PX
        and 0 < columns.size * rows.size <= MAX_GRID_CELLS
    ):
        for y in rows:
            for x in columns:
                x0, y0 = round(x * px_per_level0), round(y * px_per_level0)
                x1 = round((x + tile_size_level0) * px_per_level0) - 1
                y1 = round((y + tile_size_level0) * px_per_level0) - 1
                cv2.rectangle(image, (x0, y0), (x1, y1), GRID_BGR, 1)
    corners = np.round(coords * px_per_level0).astype(np.int32)
    far = np.round((coords + tile_size_level0) * px_per_level0).astype(np.int32) - 1
    if tile_px >= MIN_OUTLINED_TILE_PX:
        width = 2 if tile_px >= THICK_TILE_PX else 1  # kept tiles stand out from the grey grid
        for (x0, y0), (x1, y1) in zip(corners, far):
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), TILE_BGR, width)
    else:
        shade = np.zeros(image.shape[:2], np.uint8)
        for (x0, y0), (x1, y1) in zip(corners, far):
            shade[y0 : y1 + 1, x0 : x1 + 1] = 1
        tint = (0.6 * image + 0.4 * np.array(TILE_BGR)).astype(np.uint8)
        image[shade.astype(bool)] = tint[shade.astype(bool)]
    contours, _ = cv2.findContours(tissue.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, TISSUE_BGR, 2 if max(size) > 512 else 1)
    return image


def write_preview(
    path: str | os.PathLike,
    thumbnail: np.ndarray,
    downsample: float,
    tissue: np.ndarray,
    coords: np.ndarray,
    tile_size_level0: float,
    columns: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> Path:
    """Render and write the preview PNG atomically (see :func:`render_preview`)."""
    path = Path(path)
    image = render_preview(thumbnail, downsample, tissue, coords, tile_size_level0, columns, rows)
    ok, encoded = cv2.imencode(".png", image, PNG_OPTIONS)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the preview PNG")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path
