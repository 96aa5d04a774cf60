"""Overlay tiles on their own: heat sampling (nearest and linear) and outline drawing."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from wsi_mil.viewer.layers import (
    TRANSPARENT,
    HeatLayer,
    OutlineLayer,
    TileWindow,
    palette_index,
    tissue_mask,
)

GRID = np.array([[0.0, 1.0, np.nan], [0.5, 0.5, 0.5]], np.float32)


def layer() -> HeatLayer:
    # cells of 100 level-0 px from (50, 20); a coarser level of 200 px
    coarse = np.array([[0.5, 0.5]], np.float32)
    return HeatLayer("attention", "attention", (GRID, coarse), (50.0, 20.0), 100.0)


def test_nearest_puts_each_cell_where_it_lies() -> None:
    window = TileWindow(x=0, y=0, width=400, height=250, scale=1.0)
    values = layer().sample(window, "nearest")
    assert np.isnan(values[10, 100]) and np.isnan(values[100, 40])  # above / left of the grid
    assert values[20, 50] == 0.0 and values[119, 149] == 0.0 and values[20, 150] == 1.0
    assert np.isnan(values[50, 260]) and values[150, 300] == 0.5


def test_level_choice_and_zoomed_out_sampling() -> None:
    heat = layer()
    assert heat.level_for(1.0) == 0 and heat.level_for(100.0) == 0
    assert heat.level_for(150.0) == 1 and heat.level_for(10_000.0) == 1
    values = heat.sample(TileWindow(0, 0, 2, 1, scale=200.0), "nearest")
    assert values[0, 0] == 0.5  # the coarse level's cell (50..450, 20..220) holds x = 100


def test_linear_interpolates_between_cell_centres_and_keeps_the_extent() -> None:
    window = TileWindow(x=0, y=0, width=400, height=250, scale=1.0)
    nearest = layer().sample(window, "nearest")
    linear = layer().sample(window, "linear")
    np.testing.assert_array_equal(np.isnan(linear), np.isnan(nearest))
    # pixel centres are at +0.5: row 70 is 0.5 px off the centre of grid row 0
    # halfway between the centres of cells (0, 0) = 0 and (0, 1) = 1
    assert linear[70, 150] == pytest.approx(0.5, abs=0.01)
    assert 0.1 < linear[70, 120] < 0.4
    assert linear[70, 100] == pytest.approx(0.0, abs=0.01)  # at a centre: the cell's value
    # NaN neighbours are left out, not read as zero: next to the missing cell stays 1
    assert linear[70, 200] == pytest.approx(1.0, abs=0.01)


def test_palette_index_and_tissue_mask() -> None:
    values = np.array([[0.0, 1.0, np.nan, 0.5]], np.float32)
    index = palette_index(values, 0.0, 1.0, mask=np.array([[True, True, True, False]]))
    assert index.tolist() == [[0, TRANSPARENT - 1, TRANSPARENT, TRANSPARENT]]
    tissue = box(100, 100, 300, 300)
    assert tissue_mask(tissue, TileWindow(12, 12, 10, 10, scale=10.0)) is None  # inside
    mask = tissue_mask(tissue, TileWindow(0, 0, 40, 40, scale=10.0))
    assert mask[15, 15] and not mask[5, 15] and not mask[35, 35]
    assert not tissue_mask(tissue, TileWindow(100, 100, 10, 10, scale=10.0)).any()


def test_outline_drawn_at_its_position() -> None:
    outline = OutlineLayer.from_geometry("segmentation", box(20, 40, 120, 140))
    rgba = outline.render(TileWindow(x=0, y=0, width=64, height=96, scale=2.0))
    drawn = rgba[..., 3] > 128
    assert drawn[20:70, 10].any() and drawn[20, 10:60].any()  # left and top edges at /2
    assert not drawn[45, 35] and not drawn[5, 5]  # inside and outside the ring
    assert tuple(rgba[20, 30, :3]) == (230, 20, 60)
    empty = outline.render(TileWindow(x=500, y=500, width=64, height=64, scale=2.0))
    assert not empty.any()
