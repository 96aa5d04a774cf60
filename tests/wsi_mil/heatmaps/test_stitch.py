"""Stitching tile scores on the tile grid, sampling them on a canvas, smoothing and clipping."""

from __future__ import annotations

import numpy as np
import pytest
from shapely import contains_xy
from shapely.geometry import Polygon, box

from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import (
    Canvas,
    block_mean,
    compute_heatmap,
    grid_to_canvas,
    normalise_scores,
    positive_cells,
    rasterise_polygons,
    smooth,
)


def geometry(width=1000, height=800, tile=100.0, stride=100.0, mpp=0.5) -> SlideGeometry:
    return SlideGeometry(
        width=width, height=height, mpp=mpp, tile_size_level0=tile, stride_level0=stride
    )


def canvas_points(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 coordinates of every canvas pixel centre."""
    return np.meshgrid(
        (np.arange(canvas.width) + 0.5) * canvas.downsample[0],
        (np.arange(canvas.height) + 0.5) * canvas.downsample[1],
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_overlapping_tiles_are_averaged_cell_by_cell():
    # two tiles of 2x2 cells (50 % overlap) side by side, overlapping in one column of cells
    grid = TileGrid.from_coords(np.array([[0, 0], [50, 0]]), geometry(tile=100, stride=50))
    assert grid.span == 2
    stitched = grid.stitch(np.array([1.0, 3.0]))
    assert stitched[0, 0] == 1.0 and stitched[1, 0] == 1.0
    assert stitched[0, 1] == 2.0 and stitched[1, 1] == 2.0  # covered by both tiles
    assert stitched[0, 2] == 3.0
    assert np.isnan(stitched[0, 3]) and np.isnan(stitched[2, 0])  # no tile there


def test_grid_from_float_stride_puts_rounded_positions_on_their_cells():
    stride = 513.6  # a tile of 256 px at 0.5 µm/px on a 0.2492 µm/px scanner
    positions = np.round(np.arange(6) * stride).astype(np.int64)
    xs, ys = np.meshgrid(positions[1:], positions[2:])
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    grid = TileGrid.from_coords(
        coords, geometry(width=4000, height=4000, tile=stride, stride=stride)
    )
    assert abs(grid.origin[0]) < 1 and abs(grid.origin[1]) < 1
    assert set(grid.cells[:, 1]) == {1, 2, 3, 4, 5} and set(grid.cells[:, 0]) == {2, 3, 4, 5}


def test_normalisations():
    scores = np.array([5.0, -1.0, 2.0, 2.0])
    ranks, low, high, _ = normalise_scores(scores, "rank", probability=False)
    assert np.allclose(ranks, [1.0, 0.25, 0.625, 0.625]) and (low, high) == (0.0, 1.0)
    scaled, *_ = normalise_scores(scores, "minmax", probability=False)
    assert np.allclose(scaled, [1.0, 0.0, 0.5, 0.5])
    raw, low, high, _ = normalise_scores(scores, "raw", probability=False)
    assert np.array_equal(raw, scores) and (low, high) == (-1.0, 5.0)
    _, low, high, _ = normalise_scores(np.array([0.2, 0.3]), "raw", probability=True)
    assert (low, high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="normalize"):
        normalise_scores(scores, "zscore", probability=False)


def test_planted_lesion_is_found_where_it_is_on_the_thumbnail(lesion):
    prediction = lesion.make_prediction("unused.tiff")
    geo = SlideGeometry.from_attrs(prediction.attrs)
    canvas = Canvas.for_slide(geo, max_side=1024)
    assert (canvas.width, canvas.height) == (1024, 768)
    heat = compute_heatmap(prediction, canvas, HeatmapParams(normalize="minmax"), lesion.tissue)
    assert heat.values.shape == (768, 1024)
    xs, ys = canvas_points(canvas)
    found = np.nan_to_num(heat.values, nan=-1.0) >= 0.5
    assert iou(found, contains_xy(lesion.lesion, xs, ys)) >= 0.9
    # the class probability gives the same region, and a transposed or shifted map would not
    heat_p = compute_heatmap(prediction, canvas, HeatmapParams(score="tumor", normalize="raw"))
    assert (
        iou(np.nan_to_num(heat_p.values, nan=-1.0) >= 0.5, contains_xy(lesion.lesion, xs, ys))
        >= 0.9
    )
    assert iou(found, contains_xy(lesion.lesion, xs + 300, ys)) < 0.7


def test_heat_is_clipped_to_tissue_and_absent_off_tiles(lesion):
    prediction = lesion.make_prediction("unused.tiff")
    canvas = Canvas.for_slide(SlideGeometry.from_attrs(prediction.attrs), mpp=8.0)
    heat = compute_heatmap(prediction, canvas, HeatmapParams(), lesion.tissue)
    xs, ys = canvas_points(canvas)
    # cv2 rasterisation counts pixels the boundary touches as inside: one pixel of slack
    outside = ~contains_xy(lesion.tissue.buffer(canvas.downsample[0]), xs, ys)
    assert outside.sum() > 1000 and np.isnan(heat.values[outside]).all()
    assert not np.isnan(heat.values[contains_xy(lesion.tissue.buffer(-200), xs, ys)]).any()


def test_canvas_coarser_than_cells_averages_blocks():
    grid = TileGrid.from_coords(
        np.array([[0, 0], [10, 0], [0, 10], [10, 10]]),
        geometry(width=20, height=20, tile=10, stride=10),
    )
    values = grid.stitch(np.array([0.0, 1.0, 2.0, np.nan]))
    canvas = Canvas.of_size(geometry(width=20, height=20), 1, 1)  # one pixel for 2x2 cells
    assert grid_to_canvas(values, grid, canvas)[0, 0] == pytest.approx(1.0)  # NaN ignored
    assert block_mean(np.array([[np.nan, np.nan], [np.nan, np.nan]]), 2).shape == (1, 1)


def test_smoothing_keeps_constant_fields_and_nan_outside():
    values = np.full((40, 40), 0.7, np.float32)
    values[:, :10] = np.nan
    smoothed = smooth(values, 3.0)
    assert np.isnan(smoothed[:, :10]).all()
    assert np.allclose(smoothed[:, 10:], 0.7, atol=1e-5)  # normalised convolution: no edge dip
    spike = np.zeros((41, 41), np.float32)
    spike[20, 20] = 1.0
    assert smooth(spike, 2.0)[20, 20] < 0.1


def test_smoothing_width_is_in_micrometres(lesion):
    prediction = lesion.make_prediction("unused.tiff")
    geo = SlideGeometry.from_attrs(prediction.attrs)

    def steepest_um(max_side: int, smooth_um: float) -> float:
        """The steepest change of the heat per µm along x."""
        canvas = Canvas.for_slide(geo, max_side=max_side)
        heat = compute_heatmap(
            prediction, canvas, HeatmapParams(normalize="minmax", smooth_um=smooth_um)
        )
        return float(np.nanmax(np.abs(np.diff(heat.values, axis=1)))) / canvas.mpp(geo)

    # the same 100 µm sigma blurs the lesion edge equally at 4 and 8 µm/px ...
    coarse, fine = steepest_um(512, 100.0), steepest_um(1024, 100.0)
    assert 0.75 < coarse / fine < 1.33
    # ... and much more than no smoothing at all
    assert steepest_um(1024, 0.0) > 2 * fine


def test_rasterised_polygon_keeps_its_hole():
    ring = Polygon(box(0, 0, 400, 400).exterior.coords, [box(100, 100, 300, 300).exterior.coords])
    canvas = Canvas.of_size(geometry(width=800, height=800), 80, 80)
    mask = rasterise_polygons(ring, canvas)
    assert mask[5, 5] and not mask[20, 20] and not mask[60, 60]
    assert abs(int(mask.sum()) - (40 * 40 - 20 * 20)) <= 60  # boundary pixels count as inside


def test_positive_cells_follow_the_threshold(lesion):
    prediction = lesion.make_prediction("unused.tiff")
    grid = TileGrid.from_coords(prediction.coords, SlideGeometry.from_attrs(prediction.attrs))
    loose = positive_cells(prediction, grid, HeatmapParams(seg_threshold=0.2))
    strict = positive_cells(prediction, grid, HeatmapParams(seg_threshold=0.8))
    assert strict.sum() < loose.sum() and (loose | strict).sum() == loose.sum()
    with pytest.raises(ValueError, match="positive class 'stroma'"):
        positive_cells(prediction, grid, HeatmapParams(positive_class="stroma"))


def test_params_reject_bad_values(lesion):
    with pytest.raises(ValueError, match="formats"):
        HeatmapParams(formats=("png", "tiff"))
    with pytest.raises(ValueError, match="alpha"):
        HeatmapParams(alpha=1.5)
    with pytest.raises(ValueError, match="unknown score"):
        compute_heatmap(
            lesion.make_prediction("x"),
            Canvas(10, 10, (409.6, 307.2)),
            HeatmapParams(score="stroma"),
        )


def test_missing_geometry_attributes_are_named(lesion):
    prediction = lesion.make_prediction("x")
    del prediction.attrs["stride"]
    with pytest.raises(ValueError, match="stride"):
        SlideGeometry.from_attrs(prediction.attrs, "p.h5")
