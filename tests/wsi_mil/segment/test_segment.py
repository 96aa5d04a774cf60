"""Pixel segmentation: window layout, blending, training masks, alignment (the segmenter on the
test device, ``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr

from tiling.annotations import geometry_mask, read_annotations
from wsi_mil.segment.data import TrainingSlide, kind_counts, sample_slide
from wsi_mil.segment.infer import segment_slide
from wsi_mil.segment.params import SegmentParams, SegmentTrainParams
from wsi_mil.segment.windows import ChunkStitcher, window_lattice
from wsi_mil.synthetic.pyramid_tiff import Ellipse, Rect, shapes_render, write_pyramidal_tiff


def test_params_reject_what_the_networks_cannot_take():
    with pytest.raises(ValueError, match="multiple of 32"):
        SegmentTrainParams(tile_size=100)
    with pytest.raises(ValueError, match="net = .vnet.: must be one of attention_unet"):
        SegmentTrainParams(net="vnet")
    with pytest.raises(ValueError, match="overlap"):
        SegmentParams(overlap=1.0)


def test_kind_counts_split_the_total_over_available_kinds():
    assert kind_counts(10, (0.4, 0.3, 0.3), [True, True, True]) == [4, 3, 3]
    assert sum(kind_counts(7, (0.35, 0.35, 0.3), [True, True, True])) == 7
    assert kind_counts(5, (0.4, 0.3, 0.3), [False, False, True]) == [0, 0, 5]


def test_windows_cover_every_box_pixel():
    rng = np.random.default_rng(0)
    size, step, shape = 64, 48, (600, 700)
    boxes = []
    for _ in range(12):
        x0, y0 = rng.integers(0, 600, 2)
        boxes.append([x0, y0, x0 + rng.integers(1, 90), y0 + rng.integers(1, 90)])
    boxes = np.array(boxes, np.float64)
    lattice = window_lattice(boxes, size, step, shape)
    covered = np.zeros((800, 800), bool)
    for ky, kx in lattice:
        covered[max(0, ky * step) : ky * step + size, max(0, kx * step) : kx * step + size] = True
    for x0, y0, x1, y1 in boxes.astype(int):
        assert covered[y0:y1, x0:x1].all()
    assert np.array_equal(lattice, np.unique(lattice, axis=0))  # raster order, no repeats


def test_chunk_stitcher_equals_dense_blending(tmp_path):
    rng = np.random.default_rng(1)
    rows, cols, size, chunk = 300, 260, 64, 100
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="w", zarr_format=2)
    array = group.create_array(
        "0", shape=(1, rows, cols), dtype="uint8", chunks=(1, chunk, chunk), fill_value=0
    )
    corners = np.array(sorted({(int(y), int(x)) for x, y in rng.integers(-30, 250, (20, 2))}))
    windows_xy = corners[:, ::-1]
    stitcher = ChunkStitcher(array, chunk, windows_xy, size)
    weight = rng.uniform(0.1, 1.0, (size, size)).astype(np.float32)
    total = np.zeros((rows + 200, cols + 200), np.float64)
    norm = np.zeros_like(total)
    for i, (x, y) in enumerate(windows_xy):
        probs = rng.random((size, size)).astype(np.float32)
        stitcher.add(int(x), int(y), probs, weight)
        stitcher.flush(i)
        total[y + 100 : y + 100 + size, x + 100 : x + 100 + size] += probs * weight
        norm[y + 100 : y + 100 + size, x + 100 : x + 100 + size] += weight
    assert not stitcher.sums  # every chunk was written and freed
    with np.errstate(invalid="ignore"):
        dense = np.where(norm > 0, total / norm, 0)[100 : 100 + rows, 100 : 100 + cols]
    np.testing.assert_allclose(array[0] / 255.0, dense, atol=0.5 / 255 + 1e-6)


def test_training_masks_never_mark_exclusion_regions(tmp_path):
    slide = tmp_path / "slides" / "s1.tif"
    slide.parent.mkdir()
    write_pyramidal_tiff(slide, 1024, 1024, 0.5, shapes_render([Rect(100, 100, 924, 924)], seed=3))
    annotation = tmp_path / "s1.json"
    annotation.write_text(
        json.dumps(
            {
                "positive": [
                    {"name": "t", "vertices": [[300, 300], [760, 300], [760, 760], [300, 760]]}
                ],
                "negative": [
                    {"name": "x", "vertices": [[450, 450], [610, 450], [610, 610], [450, 610]]}
                ],
            }
        )
    )
    params = SegmentTrainParams(mpp=2.0, tile_size=64, channels=(8, 16), tiles_per_slide=40)
    tiles = sample_slide(TrainingSlide("s1", slide, annotation), params, np.random.default_rng(0))
    exclusion = read_annotations(annotation).regions["exclusion"]
    assert tiles.masks.any()
    for mask, (x, y) in zip(tiles.masks, tiles.corners):
        excluded = geometry_mask(exclusion, mask.shape, 1 / 4.0, origin=(float(x), float(y)))
        assert not (mask.astype(bool) & excluded).any()
    assert (tiles.kinds == 0).any() and (tiles.kinds == 1).any()


@pytest.mark.slow
def test_stitched_mask_is_aligned_and_inside_the_slide(tmp_path, segment_helpers, device):
    DarkPixels, dark_card, grid_prediction = segment_helpers
    width, height, mpp = 2000, 1600, 0.5
    disc = (1000.3, 777.7, 150.0)
    edge = (1950.0, 400.0, 120.0)  # crosses the slide's right border
    shapes = [
        Ellipse(disc[0], disc[1], disc[2], disc[2]),
        Ellipse(edge[0], edge[1], edge[2], edge[2]),
    ]
    slide = tmp_path / "disc.tif"
    write_pyramidal_tiff(slide, width, height, mpp, shapes_render(shapes, texture=0))
    tile = 256

    def near(x, y):
        return any(
            x < cx + r and x + tile > cx - r and y < cy + r and y + tile > cy - r
            for cx, cy, r in (disc, edge)
        )

    grid_prediction(tmp_path / "disc.h5", slide, width, height, mpp, tile, near)
    out = segment_slide(
        tmp_path / "disc.h5",
        DarkPixels().to(device),
        dark_card(2.0, 64),
        tmp_path / "seg",
        SegmentParams(simplify_px=0.0, zarr_chunk=128),
    )
    group = zarr.open_group(str(out / "mask.zarr"), mode="r")
    mask = group["0"][0] >= 128
    assert mask.shape == (math.ceil(height / 4), math.ceil(width / 4))
    rows, cols = np.nonzero(mask[:, :400])  # the disc, away from the edge one
    centroid = ((cols + 0.5).mean(), (rows + 0.5).mean())
    assert abs(centroid[0] - disc[0] / 4) < 2 and abs(centroid[1] - disc[1] / 4) < 2
    assert group["1"].shape == (1, math.ceil(mask.shape[0] / 2), math.ceil(mask.shape[1] / 2))
    features = json.loads((out / "lesions.geojson").read_text())["features"]
    assert len(features) == 2
    for feature in features:
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert ring[:, 0].min() >= 0 and ring[:, 0].max() <= width
        assert ring[:, 1].min() >= 0 and ring[:, 1].max() <= height
        assert feature["properties"]["classification"]["name"] == "tumor"
    areas = sorted(f["properties"]["measurements"]["area_um2"] for f in features)
    assert areas[-1] == pytest.approx(math.pi * (150 * mpp) ** 2, rel=0.05)
    summary = json.loads((out / "segment.json").read_text())
    assert 0 < summary["tiles_segmented"] < summary["tiles"]


def test_segment_stage_runs_only_with_a_segment_section(tmp_path):
    from wsi_mil.config.pipeline import ConfigError, parse_config

    base = {"out": str(tmp_path), "cohort": {"train_normal": 1}}
    assert "segment" not in parse_config(base).stages
    config = parse_config({**base, "segment": {"margin": 2, "train": {"net": "swin_unetr"}}})
    assert "segment" in config.stages and config.segment.train.net == "swin_unetr"
    assert config.segment.params() == SegmentParams(margin=2)
    assert config.segmenter_dir == tmp_path / "segmenter"
    with pytest.raises(ConfigError, match="net"):
        parse_config({**base, "segment": {"train": {"net": "vnet"}}})
