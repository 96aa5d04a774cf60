"""Opening slides, their resolution, and thumbnails, on real slides and generated ones."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from tiling.slide import (
    SlideMppError,
    SlideOpenError,
    ThumbnailStrips,
    level_for_downsample,
    open_slide,
    read_thumbnail,
    slide_mpp,
)
from wsi_mil.synthetic.pyramid_tiff import Rect, shapes_render, write_pyramidal_tiff


def test_real_slides_open_with_their_mpp(shared_slide):
    cmu = shared_slide("CMU-1-Small-Region.svs")
    assert slide_mpp(open_slide(cmu), cmu) == (0.499, "metadata")
    ndpi = shared_slide("test3-DAPI-2-387.ndpi")
    mpp, source = slide_mpp(open_slide(ndpi), ndpi)
    assert (round(mpp, 6), source) == (0.228175, "metadata")


def test_missing_mpp_says_how_to_supply_one(shared_slide):
    tcga = shared_slide("TCGA-CR-7395-01A-01-TS1.svs")
    slide = open_slide(tcga)
    with pytest.raises(SlideMppError, match="--mpp.*--mpp-csv") as info:
        slide_mpp(slide, tcga)
    assert str(tcga) in str(info.value)
    assert slide_mpp(slide, tcga, override=0.5) == (0.5, "override")
    with pytest.raises(SlideMppError, match="positive"):
        slide_mpp(slide, tcga, override=-1)


def test_placeholder_resolution_is_ignored(shared_slide):
    boxes = shared_slide("fixtures/boxes.tiff")  # 72 dpi in the tags: 352.8 µm/px
    with pytest.raises(SlideMppError, match="placeholder"):
        slide_mpp(open_slide(boxes), boxes)


def test_nonconformant_dicom_fails_with_openslide_reason(shared_slide):
    path = shared_slide("nonconformant-dicom.dcm")
    with pytest.raises(SlideOpenError) as info:
        open_slide(path)
    assert str(path) in str(info.value) and "image flavor" in str(info.value)


def test_dicom_folder_and_stripped_tiff_open(shared_slide):
    folder = shared_slide("fixtures/dicom_boxes")
    assert open_slide(folder).level_dimensions[0] == (16, 16)
    stripped = shared_slide("kidney-48-5-stripped.tif")
    slide = open_slide(stripped)
    assert isinstance(slide, openslide.ImageSlide)
    assert slide.dimensions == (1493, 901)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SlideOpenError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide")
    with pytest.raises(SlideOpenError, match="junk.svs"):
        open_slide(junk)


def test_tiff_tags_used_when_openslide_has_no_mpp(tmp_path):
    # a stripped TIFF opens through the image fallback, which reports no properties
    path = tmp_path / "plain.tif"
    tifffile.imwrite(
        path,
        np.full((40, 60, 3), 200, np.uint8),
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )
    slide = open_slide(path)
    assert isinstance(slide, openslide.ImageSlide)
    assert slide_mpp(slide, path) == (0.5, "metadata")
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(
        inch,
        np.full((40, 60, 3), 200, np.uint8),
        resolution=(25400 / 0.25,) * 2,
        resolutionunit="INCH",
    )
    assert slide_mpp(open_slide(inch), inch) == (0.25, "metadata")


@pytest.fixture(scope="module")
def striped_slide(tmp_path_factory):
    """2000 x 1200 px at 0.25 µm/px: a dark band in rows [400, 800)."""
    path = tmp_path_factory.mktemp("thumb") / "band.tif"
    render = shapes_render([Rect(0, 400, 2000, 800)], tissue_rgb=(20, 20, 20), texture=0)
    return write_pyramidal_tiff(path, 2000, 1200, 0.25, render, tile=256, compression="deflate")


def test_level_choice_is_largest_not_above(striped_slide):
    slide = open_slide(striped_slide)
    assert slide.level_downsamples[:4] == (1.0, 2.0, 4.0, 8.0)
    assert level_for_downsample(slide, 1.0) == 0
    assert level_for_downsample(slide, 3.99) == 1
    assert level_for_downsample(slide, 4.0) == 2
    assert level_for_downsample(slide, 1000) == slide.level_count - 1


@pytest.mark.parametrize("kwargs", [{"max_side": 250}, {"target_mpp": 2.0, "slide_mpp": 0.25}])
def test_thumbnail_geometry(striped_slide, kwargs):
    thumb = read_thumbnail(open_slide(striped_slide), **kwargs)
    assert thumb.downsample == 8.0
    assert thumb.image.shape == (150, 250, 3) and thumb.image.dtype == np.uint8
    dark = thumb.image[:, 10, 0] < 100
    assert np.flatnonzero(dark).tolist() == list(range(50, 100))


def test_thumbnail_of_single_level_image_reads_strips(tmp_path, monkeypatch):
    import tiling.slide as slide_module

    path = tmp_path / "flat.tif"
    image = np.zeros((300, 200, 3), np.uint8)
    image[100:200] = 255
    tifffile.imwrite(path, image)
    monkeypatch.setattr(slide_module, "STRIP_PIXELS", 200 * 30)  # force many strips
    thumb = read_thumbnail(open_slide(path), max_side=30)
    assert thumb.image.shape == (30, 20, 3)
    assert thumb.image[:, 5, 0].tolist() == [0] * 10 + [255] * 10 + [0] * 10


@pytest.mark.parametrize("max_side", [30, 300])  # a shrunk image, the image as it is
def test_thumbnail_bands_are_the_thumbnail_row_by_row(tmp_path, max_side):
    path = tmp_path / "flat.tif"
    image = np.zeros((300, 200, 3), np.uint8)
    image[100:200] = 255
    image[:, ::3] = 90
    tifffile.imwrite(path, image)
    slide = open_slide(path)
    strips = ThumbnailStrips(slide, max_side=max_side, strip_pixels=200 * 30)
    bands = list(strips)
    assert len(bands) > 2
    assert [y0 for y0, _ in bands] == list(range(0, strips.height, strips.band))
    whole = np.concatenate([rows for _, rows in bands])
    assert whole.shape == (strips.height, strips.width, 3)
    assert np.array_equal(whole, read_thumbnail(slide, max_side=max_side).image)


def test_thumbnail_arguments_checked(striped_slide):
    slide = open_slide(striped_slide)
    with pytest.raises(ValueError):
        read_thumbnail(slide)
    with pytest.raises(ValueError):
        read_thumbnail(slide, target_mpp=2.0)


def test_mpp_csv(tmp_path):
    from tiling.slide import read_mpp_csv

    good = tmp_path / "mpp.csv"
    good.write_text("slide_id,mpp,note\na,0.25,x\nb,0.5,\n")
    assert read_mpp_csv(good) == {"a": 0.25, "b": 0.5}
    for text, match in [
        ("id,mpp\na,0.5\n", "columns slide_id,mpp"),
        ("slide_id,mpp\na,-1\n", "line 2"),
        ("slide_id,mpp\na,0.5\na,0.25\n", "twice"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(SlideMppError, match=match):
            read_mpp_csv(bad)
    with pytest.raises(SlideMppError, match="not found"):
        read_mpp_csv(tmp_path / "none.csv")
