"""Tiling one slide end to end: generated slides with exact geometry, and the real slides."""

from __future__ import annotations

import numpy as np
import pytest

from tiling.params import TilingParams
from tiling.pipeline import TilingError, tile_slide, tiling_outputs
from tiling.reader import TileReader
from tiling.slide import SlideMppError, SlideOpenError, open_slide
from tiling.tiles_file import REQUIRED_ATTRS, read_tiles_file
from tiling.tissue_geojson import read_tissue_geojson
from wsi_mil.synthetic.pyramid_tiff import Ellipse, Rect

NDPI_MPP = 0.2281750559028887


def inside_fraction(shapes, x: float, y: float, size: float, samples: int = 24) -> float:
    """Fraction of a level-0 square inside the shapes, by point sampling (the ground truth)."""
    offsets = (np.arange(samples) + 0.5) * size / samples
    ys, xs = np.meshgrid(y + offsets, x + offsets, indexing="ij")
    inside = np.zeros(xs.shape, bool)
    for shape in shapes:
        hit = shape.contains(xs - 0.5, ys - 0.5)  # contains() tests pixel centres
        inside = inside & ~hit if shape.hole else inside | hit
    return float(inside.mean())


def test_grid_aligned_square_gives_exact_tiles(make_slide, tmp_path):
    shapes = [Rect(1024, 512, 3072, 2560)]
    slide = make_slide("square.tif", 4096, 3072, 0.25, shapes)
    path = tile_slide(slide, tmp_path, TilingParams(min_tissue=0.5))
    tiles = read_tiles_file(path)
    expected = {(x, y) for x in range(1024, 3072, 512) for y in range(512, 2560, 512)}
    assert {tuple(c) for c in tiles.coords.tolist()} == expected
    assert tiles.tissue_fraction.min() > 0.95
    attrs = tiles.attrs
    assert set(REQUIRED_ATTRS) <= set(attrs)
    assert (attrs["slide_mpp"], attrs["mpp_source"]) == (0.25, "metadata")
    assert attrs["tile_size_level0"] == 512.0 and attrs["stride"] == 512.0
    assert (attrs["read_level"], attrs["read_downsample"]) == (1, 2.0)
    assert attrs["tissue_params"]["tissue_mpp"] == 8.0
    # a 1 mm slide is detected at 2 µm/px (tissue_min_side), where the rendered square's soft
    # edge adds a ring of ~1 px
    assert attrs["tissue_area_um2"] == pytest.approx(2048 * 2048 * 0.25**2, rel=0.02)
    # the tiles read back as tissue at tile_size, through the shared reader
    tile = TileReader(open_slide(slide), attrs).read(*tiles.coords[0])
    assert tile.shape == (256, 256, 3) and tile[..., 1].mean() < 150
    outputs = tiling_outputs(tmp_path, "square")
    assert outputs.complete()
    assert read_tissue_geojson(outputs.tissue_geojson).area == pytest.approx(2048**2, rel=0.05)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_ellipse_with_hole_count_matches_area(make_slide, tmp_path, overlap):
    shapes = [Ellipse(3100, 2300, 2600, 1700), Ellipse(2600, 2100, 700, 500, hole=True)]
    slide = make_slide("ellipse.tif", 6000, 4500, NDPI_MPP, shapes)
    params = TilingParams(min_tissue=0.5, overlap=overlap)
    tiles = read_tiles_file(tile_slide(slide, tmp_path, params))
    attrs = tiles.attrs
    size = attrs["tile_size_level0"]
    assert size * attrs["slide_mpp"] == pytest.approx(
        params.tile_size * params.target_mpp, rel=1e-12
    )
    assert attrs["stride"] == pytest.approx(size * (1 - overlap))
    assert attrs["read_level"] == 1  # downsample 2.19 needed: level 1 (2.0) is the largest below
    # every kept tile lies in tissue (true fraction >= min_tissue, less mask-resolution slack)
    truth = [inside_fraction(shapes, x, y, size) for x, y in tiles.coords]
    assert min(truth) >= params.min_tissue - 0.1
    # tile count matches the tissue area to within 10 % (edge tiles cut at 50 %)
    area = shapes[0].area - shapes[1].area
    expected = area / attrs["stride"] ** 2
    assert abs(len(tiles) - expected) <= 0.10 * expected
    np.testing.assert_allclose(tiles.tissue_fraction, truth, atol=0.15)


def test_upsampling_is_bounded(make_slide, tmp_path):
    slide = make_slide("coarse.tif", 1024, 1024, 0.5, [Rect(0, 0, 1024, 1024)])
    with pytest.raises(TilingError, match="finer than the slide"):
        tile_slide(slide, tmp_path, TilingParams(target_mpp=0.25))
    tiles = read_tiles_file(
        tile_slide(slide, tmp_path, TilingParams(target_mpp=0.25, max_upsample=2.0))
    )
    assert tiles.attrs["tile_size_level0"] == 128.0 and tiles.attrs["read_level"] == 0
    assert len(tiles) == 64


def test_real_slides_tile(shared_slide, tmp_path):
    cmu = read_tiles_file(tile_slide(shared_slide("CMU-1-Small-Region.svs"), tmp_path))
    assert len(cmu) > 10 and cmu.attrs["slide_mpp"] == 0.499
    assert cmu.attrs["tile_size_level0"] == pytest.approx(256 * 0.5 / 0.499)
    for name in ("test3-DAPI-2-387.ndpi", "test3-TRITC-2-560.ndpi"):
        tiles = read_tiles_file(tile_slide(shared_slide(name), tmp_path))
        assert len(tiles) > 0 and tiles.attrs["read_level"] == 1
        assert tiles.attrs["slide_vendor"] == "hamamatsu"


def test_tcga_needs_an_override(shared_slide, tmp_path):
    tcga = shared_slide("TCGA-CR-7395-01A-01-TS1.svs")
    with pytest.raises(SlideMppError, match="--mpp"):
        tile_slide(tcga, tmp_path)
    assert not tiling_outputs(tmp_path, tcga.stem).tiles.exists()
    tiles = read_tiles_file(tile_slide(tcga, tmp_path, mpp_override=0.5))
    assert (tiles.attrs["slide_mpp"], tiles.attrs["mpp_source"]) == (0.5, "override")
    assert len(tiles) > 50


def test_stripped_tiff_tiles_through_image_fallback(shared_slide, tmp_path):
    """The near-empty IHC image opens through the image fallback; its one grey-blue speck of
    tissue is too pale and small for a tile, so tiling fails and says so."""
    path = shared_slide("kidney-48-5-stripped.tif")
    with pytest.raises(TilingError, match=r"0 tiles kept of 24 laid .*look at .*preview\.png"):
        tile_slide(path, tmp_path, mpp_override=0.5)
    assert tiling_outputs(tmp_path, path.stem).preview.is_file()
    everything = TilingParams(
        tissue_method="fixed",
        saturation_threshold=5,
        min_tissue=0.01,
        size_filter_fraction=0.0,
        max_white_fraction=1.0,
    )
    tiles = read_tiles_file(tile_slide(path, tmp_path, everything, mpp_override=0.5))
    assert tiles.attrs["slide_vendor"] == "image"
    assert tiles.attrs["candidate_tiles"] == (1493 // 256 + 1) * (901 // 256 + 1)  # edge tiles
    assert 0 < len(tiles) <= 0.1 * tiles.attrs["candidate_tiles"]  # ~2 % tissue: near-empty


def test_dicom_fails_cleanly(shared_slide, tmp_path):
    path = shared_slide("nonconformant-dicom.dcm")
    with pytest.raises(SlideOpenError, match="nonconformant-dicom.dcm"):
        tile_slide(path, tmp_path)
    assert not (tmp_path / "tiles").exists() or not any((tmp_path / "tiles").iterdir())


GLASS = (243, 243, 243)
DENSE = (200, 110, 170)
PALE = (236, 212, 228)  # saturation 26: pale stroma


def faint_field(x: int, y: int, w: int, h: int) -> np.ndarray:
    """A 500 px field: dense tissue on the left, pale stroma to x = 460, glass beyond; noisy."""
    yy, xx = np.mgrid[y : y + h, x : x + w]
    image = np.empty((h, w, 3), np.int16)
    image[:] = GLASS
    image[xx < 460] = PALE
    image[xx < 200] = DENSE
    noise = ((xx * 7 + yy * 13) % 9 - 4).astype(np.int16)[..., None]
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def covered(coords: np.ndarray, size: float, truth: np.ndarray) -> float:
    """Share of ``truth`` (level-0 bool) inside the union of the tiles."""
    tiles = np.zeros_like(truth)
    for x, y in coords:
        tiles[int(y) : int(np.ceil(y + size)), int(x) : int(np.ceil(x + size))] = True
    return float((tiles & truth).sum() / truth.sum())


def test_small_field_with_faint_tissue_keeps_it(make_slide, tmp_path):
    """Issue 13: a 500 px field at 0.55 µm/px, mostly pale tissue, keeps >= 95 % of it with
    the defaults (Otsu alone dropped the pale part and a 233 px grid leaves a 35 px strip)."""
    slide = make_slide("faint_field.tif", 500, 500, 0.55, faint_field)
    tiles = read_tiles_file(tile_slide(slide, tmp_path))
    truth = np.zeros((500, 500), bool)
    truth[:, :460] = True
    assert covered(tiles.coords, tiles.attrs["tile_size_level0"], truth) >= 0.95
    tissue_um2 = truth.sum() * 0.55**2
    assert 0.95 * tissue_um2 <= tiles.attrs["tissue_area_um2"] <= 1.05 * tissue_um2
    assert tiles.attrs["tissue_downsample"] < 2  # detected near full resolution, not 34 px


def test_a_slide_without_tissue_fails_at_tiling(make_slide, tmp_path):
    slide = make_slide(
        "glass.tif", 1024, 1024, 0.5, lambda x, y, w, h: np.full((h, w, 3), 243, np.uint8)
    )
    with pytest.raises(
        TilingError,
        match=r"0 tiles kept of 16 laid .*no tissue was found.*"
        r"--saturation-threshold",
    ):
        tile_slide(slide, tmp_path)
    outputs = tiling_outputs(tmp_path, "glass")
    assert outputs.preview.is_file() and outputs.tissue_geojson.is_file()
    assert not outputs.tiles.exists() and not outputs.complete()
