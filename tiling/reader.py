"""Read the pixels of one tile exactly as the tiles file says it was laid out.

A tile is ``tile_size_level0`` level-0 pixels wide. It is read from ``read_level`` (the level
whose downsample is the largest not above the one needed), where it spans
``tile_size_level0 / read_downsample`` pixels, and resized to ``tile_size`` pixels, i.e. to
``target_mpp``. Areas outside the scanned region (alpha 0 in OpenSlide) become white, as on glass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA array (OpenSlide's output) onto white, returning uint8 RGB."""
    rgba = np.ascontiguousarray(rgba)
    if rgba.view("<u4").min() >= 0xFF000000:  # fully opaque (the usual tile): just drop alpha
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgb * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square RGB tile to ``size`` px (area averaging when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrinking = image.shape[0] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


class TileReader:
    """Reads tiles of one open slide with the geometry recorded in a tiles file's attributes."""

    def __init__(self, slide: Any, attrs: Mapping[str, Any]):
        self.slide = slide
        self.read_level = int(attrs["read_level"])
        self.read_downsample = float(attrs["read_downsample"])
        self.tile_size = int(attrs["tile_size"])
        self.read_size = max(1, round(float(attrs["tile_size_level0"]) / self.read_downsample))

    def read(self, x: int, y: int) -> np.ndarray:
        """The tile whose level-0 top-left corner is (x, y), as uint8 RGB ``[tile_size]*2 x 3``."""
        region = self.slide.read_region((int(x), int(y)), self.read_level, (self.read_size,) * 2)
        rgb = rgba_to_rgb_on_white(np.asarray(region))
        return resize_rgb(rgb, self.tile_size)
