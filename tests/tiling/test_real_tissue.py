"""Tissue kept on real H&E fields (UCSB breast TMA images), with the default settings.

The reference is a per-pixel rule at full resolution, independent of the detector: a pixel is
tissue unless it is near-white glass (saturation under 25 and luminance at least 200, after a
5 px median), the rule of ``scripts/bench_tissue.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tiling.pipeline import tile_slide
from tiling.tiles_file import read_tiles_file

pytestmark = pytest.mark.slow


def reference_mask(rgb: np.ndarray) -> np.ndarray:
    rgb = cv2.medianBlur(rgb, 5)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    return (saturation >= 25) | (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 200)


def kept_share(path, mpp: float, out) -> float:
    """Share of the reference tissue of the image at ``path`` that lies in kept tiles."""
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    tiles = read_tiles_file(tile_slide(path, out, mpp_override=mpp))
    size = tiles.attrs["tile_size_level0"]
    covered = np.zeros(rgb.shape[:2], bool)
    for x, y in tiles.coords:
        covered[int(y) : int(np.ceil(y + size)), int(x) : int(np.ceil(x + size))] = True
    reference = reference_mask(rgb)
    return float((covered & reference).sum() / reference.sum())


@pytest.fixture(scope="module")
def ucsb_images(shared_data):
    images = sorted((shared_data / "ucsb_breast" / "images").glob("*.tif"))
    if not images:
        pytest.skip(f"UCSB images not found in {shared_data / 'ucsb_breast' / 'images'}")
    return images


def test_ucsb_fields_keep_their_tissue(ucsb_images, tmp_path):
    """All 58 fields at 0.5 µm/px: none empty, >= 95 % of the tissue in kept tiles on average
    (before issue 13: 80 %, as low as 24 % on one image)."""
    shares = np.array([kept_share(path, 0.5, tmp_path) for path in ucsb_images])
    assert shares.mean() >= 0.95 and shares.min() >= 0.75


def test_small_crops_keep_their_tissue(ucsb_images, tmp_path):
    """500 x 500 crops at 0.55 µm/px (the small fields of issue 13): every crop gets tiles and
    >= 95 % of the tissue is kept on average (before: 73 %, 12 of 116 crops without a tile)."""
    shares = []
    for path in ucsb_images[::3]:
        crop = tmp_path / f"{path.stem}_crop.tif"
        cv2.imwrite(str(crop), cv2.imread(str(path))[:500, :500])
        shares.append(kept_share(crop, 0.55, tmp_path))
    assert np.mean(shares) >= 0.95
