"""Tissue polygons in level-0 coordinates, as GeoJSON QuPath imports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiling.tissue_geojson import (
    TissueGeoJSONError,
    mask_to_polygons,
    read_tissue_geojson,
    write_tissue_geojson,
)


def ring_mask() -> np.ndarray:
    mask = np.zeros((60, 80), bool)
    mask[10:50, 10:50] = True
    mask[20:30, 20:30] = False  # a hole
    mask[25:28, 23:26] = True  # an island inside the hole
    mask[5:15, 60:75] = True  # a second piece
    return mask


def test_polygons_with_holes_in_level0_coordinates(tmp_path):
    polygons = mask_to_polygons(ring_mask(), downsample=16.0)
    assert len(polygons.geoms) == 3
    big = max(polygons.geoms, key=lambda p: p.area)
    assert len(big.interiors) == 1
    # outline through boundary pixel centres: (10 + 0.5) * 16 = 168 ... (49 + 0.5) * 16 = 792
    assert big.bounds == (168.0, 168.0, 792.0, 792.0)
    assert big.is_valid
    path = write_tissue_geojson(tmp_path / "s.tissue.geojson", polygons, "s")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 3
    props = data["features"][0]["properties"]
    assert props["objectType"] == "annotation" and props["classification"]["name"] == "Tissue"
    back = read_tissue_geojson(path)
    assert back.area == pytest.approx(polygons.area)
    assert back.contains(back.representative_point())


def test_empty_mask(tmp_path):
    polygons = mask_to_polygons(np.zeros((10, 10), bool), 4.0)
    assert polygons.is_empty
    path = write_tissue_geojson(tmp_path / "e.geojson", polygons, "e")
    assert read_tissue_geojson(path).is_empty


def test_reads_qupath_style_feature_list(tmp_path):
    path = tmp_path / "q.geojson"
    square = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    path.write_text(json.dumps([{"type": "Feature", "geometry": square, "properties": {}}]))
    assert read_tissue_geojson(path).area == 100


def test_bad_files_named(tmp_path):
    with pytest.raises(TissueGeoJSONError, match="not found"):
        read_tissue_geojson(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(TissueGeoJSONError, match="bad.geojson"):
        read_tissue_geojson(bad)
