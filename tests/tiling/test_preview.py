"""The preview PNG: thumbnail with tissue outline and tiles drawn where they are."""

from __future__ import annotations

import cv2
import numpy as np

from tiling.preview import GRID_BGR, PREVIEW_MIN_LONG, TILE_BGR, TISSUE_BGR, write_preview


def test_preview_draws_outline_and_tiles(tmp_path):
    thumb = np.full((600, 720, 3), 240, np.uint8)
    tissue = np.zeros((600, 720), bool)
    tissue[20:80, 20:100] = True
    coords = np.array([[320, 320], [640, 320]])  # level-0; downsample 8 -> (40, 40), (80, 40)
    path = write_preview(tmp_path / "p.preview.png", thumb, 8.0, tissue, coords, 160.0)
    image = cv2.imread(str(path))
    assert image.shape == (600, 720, 3)
    assert tuple(image[40, 50]) == TILE_BGR  # top edge of the first tile
    assert tuple(image[59, 59]) == TILE_BGR  # bottom-right corner of the first tile (40 + 20 - 1)
    assert tuple(image[50, 20]) == TISSUE_BGR  # left edge of the tissue outline
    assert tuple(image[5, 5]) == (240, 240, 240)
    assert not (tmp_path / "p.preview.png.tmp").exists()


def test_small_tiles_are_shaded(tmp_path):
    thumb = np.full((600, 600, 3), 240, np.uint8)
    coords = np.array([[0, 0]])
    path = write_preview(tmp_path / "s.png", thumb, 16.0, np.zeros((600, 600), bool), coords, 32.0)
    image = cv2.imread(str(path)).astype(int)
    assert (image[0, 0] != 240).any() and (image[10, 10] == 240).all()


def test_a_tiny_slide_is_enlarged_and_shows_its_grid(tmp_path):
    """A 34 px tissue image (a 275 µm field at 8 µm/px) becomes a 512 px preview, grid drawn."""
    thumb = np.full((34, 34, 3), 240, np.uint8)
    columns = rows = np.array([0, 233, 466])  # level-0 px, 233 px tiles, 16 level-0 px per px
    coords = np.array([[233, 233]])  # one kept tile
    path = write_preview(
        tmp_path / "t.png", thumb, 500 / 34, np.zeros((34, 34), bool), coords, 233.0, columns, rows
    )
    image = cv2.imread(str(path))
    assert image.shape == (PREVIEW_MIN_LONG, PREVIEW_MIN_LONG, 3)
    scale = PREVIEW_MIN_LONG / 500  # preview px per level-0 px
    assert tuple(image[round(233 * scale), 20]) == GRID_BGR  # a dropped cell's top edge
    assert tuple(image[round(233 * scale), round(300 * scale)]) == TILE_BGR  # the kept tile
    assert tuple(image[100, 100]) == (240, 240, 240)
