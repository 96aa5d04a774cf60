"""The preview PNG: thumbnail with tissue outline and tiles drawn where they are."""

from __future__ import annotations

import cv2
import numpy as np

from tiling.preview import TILE_BGR, TISSUE_BGR, write_preview


def test_preview_draws_outline_and_tiles(tmp_path):
    thumb = np.full((100, 120, 3), 240, np.uint8)
    tissue = np.zeros((100, 120), bool)
    tissue[20:80, 20:100] = True
    coords = np.array([[320, 320], [640, 320]])  # level-0; downsample 8 -> (40, 40), (80, 40)
    path = write_preview(tmp_path / "p.preview.png", thumb, 8.0, tissue, coords, 160.0)
    image = cv2.imread(str(path))
    assert image.shape == (100, 120, 3)
    assert tuple(image[40, 50]) == TILE_BGR  # top edge of the first tile
    assert tuple(image[59, 59]) == TILE_BGR  # bottom-right corner of the first tile (40 + 20 - 1)
    assert tuple(image[50, 20]) == TISSUE_BGR  # left edge of the tissue outline
    assert tuple(image[5, 5]) == (240, 240, 240)
    assert not (tmp_path / "p.preview.png.tmp").exists()


def test_small_tiles_are_shaded(tmp_path):
    thumb = np.full((50, 50, 3), 240, np.uint8)
    coords = np.array([[0, 0]])
    path = write_preview(tmp_path / "s.png", thumb, 16.0, np.zeros((50, 50), bool), coords, 32.0)
    image = cv2.imread(str(path)).astype(int)
    assert (image[0, 0] != 240).any() and (image[10, 10] == 240).all()
