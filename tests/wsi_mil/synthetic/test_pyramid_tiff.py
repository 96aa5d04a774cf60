"""The synthetic slide writer: OpenSlide must read what it writes, at the mpp it was given."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from tiling.slide import open_slide, slide_mpp
from wsi_mil.synthetic.pyramid_tiff import (
    Ellipse,
    Rect,
    mpp_to_resolution,
    pyramid_shapes,
    shapes_render,
    write_pyramidal_tiff,
)


def gradient(x: int, y: int, w: int, h: int) -> np.ndarray:
    """Pixels that encode their own coordinates, to check placement exactly (lossless)."""
    ys, xs = np.mgrid[y : y + h, x : x + w]
    return np.stack([xs % 256, ys % 256, (xs // 256 + ys // 256) % 256], axis=-1).astype(np.uint8)


def test_lossless_levels_are_exact_box_filters(tmp_path):
    path = write_pyramidal_tiff(
        tmp_path / "g.tif", 555, 301, 0.5, gradient, tile=128, compression="deflate"
    )
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert slide.level_dimensions == ((555, 301), (278, 151), (139, 76), (70, 38))
    level0 = np.asarray(slide.read_region((0, 0), 0, (555, 301)).convert("RGB"))
    np.testing.assert_array_equal(level0, gradient(0, 0, 555, 301))
    # level 1 is the 2x2 mean of level 0 (odd edges repeated)
    padded = np.pad(level0.astype(np.float64), ((0, 1), (0, 1), (0, 0)), mode="edge")
    expected = padded.reshape(151, 2, 278, 2, 3).mean(axis=(1, 3))
    level1 = np.asarray(slide.read_region((0, 0), 1, (278, 151)).convert("RGB"))
    assert np.abs(level1 - expected).max() <= 1.0


@pytest.mark.parametrize("mpp", [0.25, 0.499, 0.2281750559028887, 1.0 / 3.0])
def test_mpp_reads_back_exactly(tmp_path, mpp):
    path = write_pyramidal_tiff(tmp_path / "m.tif", 64, 48, mpp, gradient, tile=32)
    slide = open_slide(path)
    assert slide_mpp(slide, path) == (mpp, "metadata")
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages.first.tags["XResolution"].value
        assert tif.pages.first.tags["ResolutionUnit"].value == 3  # centimetre
        assert len(tif.pages) == 2  # 64 px > one 32 px tile: one reduced level
    assert 10_000 * den / num == mpp


def test_jpeg_pyramid_with_shapes(tmp_path):
    shapes = [
        Ellipse(300, 200, 150, 100),
        Ellipse(300, 200, 40, 30, hole=True),
        Rect(600, 50, 700, 350),
    ]
    render = shapes_render(shapes, texture=0)
    path = write_pyramidal_tiff(tmp_path / "s.tif", 800, 400, 0.25, render, quality=95)
    slide = openslide.OpenSlide(path)
    assert slide.level_count == 3
    image = np.asarray(slide.read_region((0, 0), 0, (800, 400)).convert("RGB")).astype(int)
    tissue = np.abs(image - np.array([196, 96, 168])).sum(-1) < 40
    expected = np.zeros((400, 800), bool)
    ys, xs = np.ogrid[0:400, 0:800]
    for shape in shapes:
        expected = (
            expected & ~shape.contains(xs, ys) if shape.hole else expected | shape.contains(xs, ys)
        )
    assert (tissue != expected).mean() < 0.01  # JPEG blurs edges only
    assert (
        abs(expected.sum() - (shapes[0].area - shapes[1].area + shapes[2].area))
        < 0.01 * expected.sum()
    )


def test_writer_is_atomic_and_checks_render(tmp_path):
    def bad(x, y, w, h):
        return np.zeros((h, w), np.uint8)

    with pytest.raises(ValueError, match="render"):
        write_pyramidal_tiff(tmp_path / "bad.tif", 100, 100, 0.5, bad, tile=64)
    assert list(tmp_path.iterdir()) == []


def test_pyramid_shapes_and_resolution():
    assert pyramid_shapes(50_000, 40_000, 256, None)[-1] == (196, 157)
    assert len(pyramid_shapes(1000, 1000, 256, 2)) == 2
    assert mpp_to_resolution(0.499) == (10_000_000, 499)
    with pytest.raises(ValueError):
        mpp_to_resolution(0)
