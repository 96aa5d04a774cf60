"""The PNG pictures: sizes as asked, heat and outlines where the lesion is, top-k tiles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from shapely import contains_xy

from tiling.lattice import SlideGeometry
from tiling.reader import TileReader
from tiling.slide import open_slide, read_thumbnail
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.render import (
    SEGMENTATION_COLOR,
    blend_heat,
    colorbar_band,
    colormap_lut,
    text_band,
    write_overlay_png,
    write_segmentation_png,
    write_topk_png,
)
from wsi_mil.heatmaps.stitch import Canvas


def read_png(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def thumbnail(lesion_slide):
    slide = open_slide(lesion_slide)
    yield read_thumbnail(slide, max_side=800).image
    slide.close()


def test_overlay_is_the_asked_size_with_bands_and_heat_on_the_lesion(
    tmp_path, lesion, lesion_slide, thumbnail
):
    prediction = lesion.make_prediction(lesion_slide)
    assert thumbnail.shape[:2] == (600, 800)
    params = HeatmapParams(max_side=800, normalize="minmax", cmap="viridis", alpha=1.0)
    png = read_png(
        write_overlay_png(tmp_path / "overlay.png", prediction, thumbnail, params, lesion.tissue)
    )
    top = text_band(800, "t", "s").shape[0]
    bottom = colorbar_band(800, "viridis", 0, 1, "x").shape[0]
    assert png.shape == (top + 600 + bottom, 800, 3)
    picture = png[top : top + 600]
    # alpha 1: the lesion centre shows the colour map's top colour, glass is left untouched
    geo = SlideGeometry.from_attrs(prediction.attrs)
    canvas = Canvas.of_size(geo, 800, 600)
    cx, cy = (int(c / canvas.downsample[0]) for c in (2700, 1200))
    assert np.abs(picture[cy, cx].astype(int) - colormap_lut("viridis")[255]).max() <= 2
    assert np.array_equal(picture[5, 5], thumbnail[5, 5])


def test_overlay_at_a_resolution_in_micrometres(tmp_path, lesion, lesion_slide):
    slide = open_slide(lesion_slide)
    thumb = read_thumbnail(slide, target_mpp=16.0, slide_mpp=lesion.mpp).image
    slide.close()
    assert thumb.shape[:2] == (96, 128)  # 4096 x 3072 px at 0.5 µm/px -> 16 µm/px
    png = read_png(
        write_overlay_png(
            tmp_path / "o.png", lesion.make_prediction(lesion_slide), thumb, HeatmapParams(mpp=16.0)
        )
    )
    assert png.shape[1] == 128


def test_blend_keeps_pixels_without_heat():
    from wsi_mil.heatmaps.stitch import Heatmap

    thumb = np.full((4, 4, 3), 200, np.uint8)
    values = np.full((4, 4), np.nan, np.float32)
    values[1, 1] = 1.0
    out = blend_heat(thumb, Heatmap(values, 0.0, 1.0, "x"), "gray", 0.5)
    assert np.array_equal(out[0, 0], [200, 200, 200]) and np.array_equal(out[1, 1], [228] * 3)
    with pytest.raises(ValueError, match="colour map"):
        colormap_lut("no-such-map")


def test_segmentation_outline_surrounds_the_lesion(tmp_path, lesion, lesion_slide, thumbnail):
    prediction = lesion.make_prediction(lesion_slide)
    png = read_png(
        write_segmentation_png(
            tmp_path / "seg.png", prediction, thumbnail, HeatmapParams(), lesion.tissue
        )
    )
    top = text_band(800, "t", "s").shape[0]
    picture = png[top : top + 600].astype(int)
    red = np.abs(picture - np.array(SEGMENTATION_COLOR)).max(axis=2) <= 40
    ys, xs = np.nonzero(red)
    assert len(xs) > 100
    ds = 4096 / 800
    # every outline pixel lies within a tile (128 px) of the lesion's circle
    distance = np.hypot((xs + 0.5) * ds - 2700, (ys + 0.5) * ds - 1200)
    assert np.abs(distance - 700).max() < 128 + 2 * ds


def test_topk_shows_the_most_attended_tiles(tmp_path, lesion, lesion_slide):
    prediction = lesion.make_prediction(lesion_slide)
    slide = open_slide(lesion_slide)
    reader = TileReader(slide, prediction.attrs)
    written = write_topk_png(tmp_path / "topk.png", prediction, reader.read, HeatmapParams(topk=6))
    slide.close()
    assert written == [tmp_path / "topk.png"]
    png = read_png(written[0])
    assert png.shape[1] == 4 * (256 + 10) + 10  # 4 columns, 128-px tiles shown at 256 px
    # the top tiles are lesion tiles: lesion purple dominates the picture's tile area
    purple = np.abs(png.astype(int) - [110, 50, 150]).max(axis=2) <= 30
    assert purple.mean() > 0.3
    top = np.argsort(-prediction.attention)[:6]
    centres = prediction.coords[top] + 64
    assert contains_xy(lesion.lesion, centres[:, 0], centres[:, 1]).all()


@pytest.mark.parametrize("write", [write_overlay_png, write_segmentation_png])
def test_each_slide_picture_says_which_model_predicted_it(
    tmp_path, lesion, lesion_slide, thumbnail, monkeypatch, write
):
    """overlay.png and segmentation.png both carry the provenance line (in-sample in capitals)."""
    from wsi_mil.heatmaps import render

    prediction = lesion.make_prediction(lesion_slide)
    prediction.attrs.update(in_sample=True, folds=[0])
    bands = []

    def recording(width, title, subtitle):
        bands.append(subtitle)
        return text_band(width, title, subtitle)

    monkeypatch.setattr(render, "text_band", recording)
    write(tmp_path / "p.png", prediction, thumbnail, HeatmapParams(), lesion.tissue)
    assert bands and bands[0].startswith("IN-SAMPLE: predicted by a model that trained on")
