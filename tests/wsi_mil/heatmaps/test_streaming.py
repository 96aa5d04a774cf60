"""Pictures rendered band by band: the same pixels as whole, memory bounded by one band."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from tiling.lattice import SlideGeometry
from tiling.slide import ThumbnailStrips, open_slide, read_thumbnail
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.render import slide_title, write_overlay_png, write_segmentation_png
from wsi_mil.heatmaps.stitch import Canvas, HeatSource, rasterise_polygons


def read_png(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_heat_by_bands_equals_the_whole_heat_with_smoothing_and_clip(lesion, lesion_slide):
    prediction = lesion.make_prediction(lesion_slide)
    geo = SlideGeometry.from_attrs(prediction.attrs)
    canvas = Canvas.for_slide(geo, max_side=400)
    # sigma of 6 canvas px: bands of 7 rows need rows well beyond their neighbours
    params = HeatmapParams(smooth_um=6 * canvas.mpp(geo), normalize="minmax")
    source = HeatSource(prediction, canvas, params, lesion.tissue)
    whole = source.rows(0, canvas.height)
    bands = np.concatenate(
        [source.rows(y, min(y + 7, canvas.height)) for y in range(0, canvas.height, 7)]
    )
    np.testing.assert_allclose(bands, whole, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.isnan(bands), np.isnan(whole))
    mask = rasterise_polygons(lesion.tissue, canvas)
    assert mask.any() and not mask.all()
    assert np.array_equal(
        np.concatenate(
            [
                rasterise_polygons(lesion.tissue, canvas, (y, y + 13))
                for y in range(0, canvas.height, 13)
            ]
        )[: canvas.height],
        mask,
    )
    # rows off the canvas are empty, not wrapped around
    assert not rasterise_polygons(lesion.tissue, canvas, (-5, 0)).any()


@pytest.mark.parametrize("side", [512, 500])  # a pyramid level as it is, a shrunk level
def test_streamed_pictures_equal_the_pictures_of_the_whole_thumbnail(
    tmp_path, lesion, lesion_slide, side
):
    prediction = lesion.make_prediction(lesion_slide)
    params = HeatmapParams(max_side=side, smooth_um=40.0)
    slide = open_slide(lesion_slide)
    strips = ThumbnailStrips(slide, max_side=side, strip_pixels=16 * 1024)
    assert strips.band < strips.height // 4  # really several bands
    whole = np.concatenate([rows for _, rows in strips])
    assert whole.shape == read_thumbnail(slide, max_side=side).image.shape
    for write, name in ((write_overlay_png, "overlay"), (write_segmentation_png, "seg")):
        a = read_png(
            write(tmp_path / f"{name}_whole.png", prediction, whole, params, lesion.tissue)
        )
        b = read_png(
            write(tmp_path / f"{name}_bands.png", prediction, strips, params, lesion.tissue)
        )
        assert a.shape == b.shape
        # anti-aliased outlines that run along a band seam may differ by a shade in a few pixels
        # (their segments are split differently); an outline of the seams themselves is 5 %
        differs = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 2
        assert differs.mean() < 0.003
    slide.close()


class GeneratedStrips:
    """A large picture that exists only band by band (as a slide read strip-wise)."""

    def __init__(self, width: int, height: int, band: int = 128) -> None:
        self.width, self.height, self.band = width, height, band

    def __iter__(self):
        for y0 in range(0, self.height, self.band):
            rows = np.full((min(self.band, self.height - y0), self.width, 3), 230, np.uint8)
            rows[:, ::7] = 180
            yield y0, rows


def test_streamed_overlay_memory_does_not_grow_with_the_picture(tmp_path, lesion, lesion_slide):
    prediction = lesion.make_prediction(lesion_slide)
    params = HeatmapParams(smooth_um=8.0)
    width = 1024
    peaks = {}
    for height in (768, 6144):  # a 2.3 MB and an 18.9 MB picture
        tracemalloc.start()
        try:
            write_overlay_png(
                tmp_path / f"{height}.png",
                prediction,
                GeneratedStrips(width, height),
                params,
                lesion.tissue,
            )
            peaks[height] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert read_png(tmp_path / f"{height}.png").shape[1] == width
    # 8 times the rows, (nearly) the same peak: one band and its margins, never the picture
    # (a renderer holding the picture would grow by at least the 16.5 MB it gained)
    assert peaks[6144] - peaks[768] < 0.1 * width * (6144 - 768) * 3, peaks


def test_title_gives_the_score_and_the_threshold(lesion, lesion_slide):
    prediction = lesion.make_prediction(lesion_slide)
    prediction.probs[:] = [0.3, 0.7]
    name = prediction.class_names[1]
    prediction.predicted_label = name
    prediction.attrs.update(threshold=0.41, negative_class=prediction.class_names[0])
    title = slide_title(prediction)
    assert f"predicted {name} ({name} score 0.700, threshold 0.410)" in title
    assert "p =" not in title
    # a recorded positive class wins over "not the negative class"
    prediction.attrs["positive_class"] = prediction.class_names[0]
    assert f"({prediction.class_names[0]} score 0.300, threshold 0.410)" in slide_title(prediction)
    # without a threshold only the predicted class's score is shown
    prediction.attrs.pop("threshold")
    assert slide_title(prediction).endswith(f"predicted {name} (score 0.700)")


def test_overlay_says_which_model_predicted_the_slide():
    from wsi_mil.heatmaps.render import prediction_provenance

    assert prediction_provenance({}) is None  # written before in_sample was recorded
    assert (
        prediction_provenance({"in_sample": False, "out_of_fold": True, "folds": [2]})
        == "out of fold (fold 2)"
    )
    assert prediction_provenance(
        {"in_sample": False, "out_of_fold": False, "folds": [0, 1, 2]}
    ).startswith("ensemble of 3 folds")
    assert prediction_provenance({"in_sample": True, "folds": [0]}).startswith("IN-SAMPLE")
    # one fold's model on a slide none of its folds held (a new slide): no "ensemble of 1 folds"
    assert (
        prediction_provenance({"in_sample": False, "out_of_fold": False, "folds": [0]})
        == "fold 0's model, not trained on this slide"
    )
