"""QuPath GeoJSON: every feature parses, lies inside the slide and carries its measurements."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import Polygon, box, shape

from tiling.lattice import SlideGeometry, TileGrid
from wsi_mil.export.geojson import (
    POSITIVE_COLOR,
    segmentation_regions,
    write_segmentation_geojson,
    write_tiles_geojson,
)
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import positive_cells


def test_tiles_geojson_one_detection_per_tile(tmp_path, lesion):
    prediction = lesion.make_prediction("unused.tiff")
    path = write_tiles_geojson(tmp_path / "tiles.geojson", prediction, HeatmapParams())
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    assert len(features) == len(prediction.coords)
    slide = box(0, 0, lesion.width, lesion.height)
    keys = {"attention", "attention_percentile", "prob_normal", "prob_tumor"}
    for i, feature in enumerate(features):
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and slide.covers(geometry)
        x, y = prediction.coords[i]
        assert geometry.bounds == (x, y, x + lesion.tile, y + lesion.tile)
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert set(props["measurements"]) == keys
        assert props["measurements"]["prob_tumor"] == pytest.approx(
            float(prediction.tile_probs[i, 1]), abs=1e-5
        )
        assert props["classification"]["name"] in lesion.classes
        assert len(props["classification"]["color"]) == 3
    tumour = [f for f in features if f["properties"]["classification"]["name"] == "tumor"]
    assert tumour and all(
        f["properties"]["classification"]["color"] == list(POSITIVE_COLOR) for f in tumour
    )


def test_tiles_geojson_streams_in_chunks(tmp_path, lesion, monkeypatch):
    from wsi_mil.export import geojson as export_geojson

    monkeypatch.setattr(export_geojson, "CHUNK", 7)  # chunk joins must still give valid JSON
    prediction = lesion.make_prediction("unused.tiff")
    path = write_tiles_geojson(tmp_path / "tiles.geojson", prediction, HeatmapParams())
    assert len(json.loads(path.read_text())["features"]) == len(prediction.coords)


def test_segmentation_geojson_merges_positive_cells(tmp_path, lesion):
    prediction = lesion.make_prediction("unused.tiff")
    geometry = SlideGeometry.from_attrs(prediction.attrs)
    grid = TileGrid.from_coords(prediction.coords, geometry)
    positive = positive_cells(prediction, grid, HeatmapParams())
    path = write_segmentation_geojson(
        tmp_path / "seg.geojson", prediction, grid, positive, HeatmapParams()
    )
    features = json.loads(path.read_text())["features"]
    assert len(features) == 1  # one lesion, one region
    props = features[0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "tumor", "color": list(POSITIVE_COLOR)}
    region = shape(features[0]["geometry"])
    assert region.is_valid and box(0, 0, lesion.width, lesion.height).covers(region)
    assert region.area == pytest.approx(positive.sum() * 64 * 64)
    assert region.intersection(lesion.lesion).area / region.union(lesion.lesion).area > 0.9
    measurements = props["measurements"]
    assert measurements["area_um2"] == pytest.approx(region.area * 0.25)
    assert 0.5 <= measurements["mean_prob_tumor"] <= measurements["max_prob_tumor"] <= 1.0


def test_segmentation_regions_keep_holes_and_separate_components():
    geometry = SlideGeometry(
        width=1000, height=1000, mpp=1.0, tile_size_level0=100, stride_level0=100
    )
    ys, xs = np.mgrid[0:10, 0:10]
    grid = TileGrid.from_coords(np.stack([xs.ravel() * 100, ys.ravel() * 100], 1), geometry)
    positive = np.zeros((10, 10), bool)
    positive[1:6, 1:6] = True
    positive[3, 3] = False  # a hole
    positive[8, 8] = True  # a second, separate region ...
    positive[9, 9] = True  # ... with a cell touching it at a corner only
    regions = segmentation_regions(positive, grid, geometry)
    assert len(regions) == 2
    (ring, ring_cells), (pair, _) = sorted(regions, key=lambda r: -r[0].area)
    assert ring.geom_type == "Polygon" and ring_cells.sum() == 24
    assert len(ring.interiors) == 1 and Polygon(ring.interiors[0]).area == 100 * 100
    assert ring.area == (25 - 1) * 100 * 100
    assert pair.geom_type == "MultiPolygon" and pair.bounds == (800, 800, 1000, 1000)
