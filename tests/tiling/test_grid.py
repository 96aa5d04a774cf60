"""The tile grid: positions, exact fractional tissue fractions, and filtering."""

from __future__ import annotations

import numpy as np
import pytest

from tiling.grid import grid_positions, region_fractions, summed_area_table, tile_grid


def test_positions_fit_inside():
    assert grid_positions(1000, 256, 256).tolist() == [0, 256, 512]
    assert grid_positions(1024, 256, 256).tolist() == [0, 256, 512, 768]
    assert grid_positions(100, 256, 256).size == 0
    # fractional tile and stride (e.g. 0.5 µm/px tiles on a 0.2282 µm/px slide)
    pos = grid_positions(2000, 561.0, 280.5)
    assert pos.tolist() == [0, 280, 561, 841, 1122, 1402] and pos[-1] + 561.0 <= 2000


def test_edge_positions_cover_the_far_strip_on_the_lattice():
    assert grid_positions(1000, 256, 256, edge=True).tolist() == [0, 256, 512, 768]
    assert grid_positions(1024, 256, 256, edge=True).tolist() == [0, 256, 512, 768]
    assert grid_positions(780, 256, 256, edge=True).tolist() == [0, 256, 512]  # 12 px: sliver
    assert grid_positions(100, 256, 256, edge=True).tolist() == [0]  # smaller than a tile
    # 500 px field, 233 px tiles: the third column covers the last 34 px
    assert grid_positions(500, 232.7, 232.7, edge=True).tolist() == [0, 232, 465]


def test_edge_tiles_judge_tissue_on_their_part_inside_the_slide():
    mask = np.zeros((10, 10), bool)  # mask px = 50 level-0 px; slide 500 x 500
    mask[:, 8:] = True  # tissue only in the last 100 px: the strip a 200 px grid leaves out
    plain = tile_grid(500, 500, 200.0, 200.0, 50.0, mask, 0.25)
    assert len(plain.coords) == 0
    edge = tile_grid(500, 500, 200.0, 200.0, 50.0, mask, 0.25, edge_tiles=True)
    assert edge.coords.tolist() == [[400, 0], [400, 200], [400, 400]]
    # recorded over the whole tile (half of it overhangs): the picture the encoder sees
    np.testing.assert_allclose(edge.tissue_fraction, [0.5, 0.5, 0.25])
    assert edge.columns.tolist() == [0, 200, 400] and edge.candidates == 9


def test_fractions_are_exact_at_fractional_edges():
    rng = np.random.default_rng(1)
    mask = rng.random((40, 50)) < 0.4
    table = summed_area_table(mask)
    ys, xs = np.array([0.0, 3.25, 17.5]), np.array([0.0, 5.75, 30.1])
    size = 7.3
    fine = np.kron(mask, np.ones((20, 20))).astype(float)  # 20x supersampled reference
    got = region_fractions(table, ys, xs, size)
    for a, y in enumerate(ys):
        for b, x in enumerate(xs):
            block = fine[
                round(y * 20) : round((y + size) * 20), round(x * 20) : round((x + size) * 20)
            ]
            assert got[a, b] == pytest.approx(block.mean(), abs=0.01)


def test_tile_grid_keeps_tissue_tiles_in_row_major_order():
    mask = np.zeros((32, 32), bool)  # mask px = 32 level-0 px; slide 1024 x 1024
    mask[8:24, 8:16] = True  # level-0 [256, 512) x [256, 768): two 256-px tiles exactly
    mask[0:4, 28:32] = True  # a quarter of the tile at (896, 0)
    grid = tile_grid(1024, 1024, 256.0, 256.0, 32.0, mask, min_tissue=0.2)
    assert grid.coords.tolist() == [[768, 0], [256, 256], [256, 512]]
    assert grid.tissue_fraction.tolist() == pytest.approx([0.25, 1.0, 1.0])
    assert grid.candidates == 16
    assert tile_grid(1024, 1024, 256.0, 256.0, 32.0, mask, min_tissue=0.5).coords.shape == (2, 2)
    # overlap: stride 128 lays 7 x 7 candidates
    assert tile_grid(1024, 1024, 256.0, 128.0, 32.0, mask, min_tissue=0.5).candidates == 49


def test_white_and_black_tiles_dropped():
    tissue = np.ones((8, 8), bool)
    white = np.zeros((8, 8), bool)
    white[:4, :4] = True
    black = np.zeros((8, 8), bool)
    black[4:, 4:] = True
    grid = tile_grid(8, 8, 4.0, 4.0, 1.0, tissue, 0.5, white, black, 0.9, 0.5)
    assert grid.coords.tolist() == [[4, 0], [0, 4]]


def test_no_tissue_no_tiles():
    grid = tile_grid(512, 512, 256.0, 256.0, 16.0, np.zeros((32, 32), bool), min_tissue=0.0)
    assert grid.coords.shape == (0, 2) and grid.coords.dtype == np.int64
