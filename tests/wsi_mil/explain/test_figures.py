"""The comparison figure's tile grid is in level-0 pixels."""

from __future__ import annotations

import numpy as np

from wsi_mil.explain.figures import score_grid, tile_stride


def test_tile_stride_is_the_tiles_files_level0_stride():
    # 128 px tiles read at 1 µm/px from a 0.5 µm/px slide: 256 level-0 px per tile and step
    attrs = {"tile_size": 128, "tile_size_level0": 256.0, "stride": 256.0}
    assert tile_stride(attrs) == 256.0
    assert tile_stride({"tile_size": 128, "tile_size_level0": 256.0}) == 256.0
    coords = np.array([[0, 0], [256, 0], [512, 256]])
    grid = score_grid(coords, np.array([1.0, 2.0, 3.0]), tile_stride(attrs), 768, 512)
    assert grid.shape == (2, 3)  # one cell per tile, none shared
    np.testing.assert_array_equal(grid[0, :2], [1.0, 2.0])
    assert grid[1, 2] == 3.0 and np.isnan(grid[1, 0])
