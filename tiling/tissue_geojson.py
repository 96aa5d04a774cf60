"""Tissue outlines as GeoJSON in level-0 pixel coordinates, the form QuPath imports and exports.

The tissue mask is a raster at low resolution; its outline is traced with OpenCV (outer
boundaries and their holes), scaled to level-0 px and written as one QuPath annotation per
tissue piece (``objectType: annotation``, classification ``Tissue``). A person can correct it
in QuPath (File > Import objects; export as GeoJSON) and later stages can read it back with
:func:`read_tissue_geojson` as one shapely MultiPolygon.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from tiling.storage import write_text_atomic
from wsi_mil.errors import WsiMilError

TISSUE_CLASS = {"name": "Tissue", "color": [0, 160, 0]}


class TissueGeoJSONError(WsiMilError, ValueError):
    """A tissue GeoJSON file that is missing or not a GeoJSON of polygons."""


def _polygonal(geometry: shapely.Geometry) -> list[Polygon]:
    """The polygons of a geometry (after make_valid, which may return a collection)."""
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _polygonal(g)]
    return []


def mask_to_polygons(mask: np.ndarray, downsample: float) -> MultiPolygon:
    """Outline a boolean mask as level-0 polygons with holes.

    Contours run through the centres of the boundary pixels, so pixel ``(i, j)`` maps to
    level-0 ``((j + 0.5) * downsample, (i + 0.5) * downsample)``.
    """
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return MultiPolygon()
    links = hierarchy[0]  # [next, previous, first_child, parent]

    def ring(index: int) -> np.ndarray:
        return (contours[index][:, 0, :].astype(np.float64) + 0.5) * downsample

    polygons: list[Polygon] = []
    for index, (_, _, child, parent) in enumerate(links):
        if parent != -1 or len(contours[index]) < 3:
            continue
        holes = []
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append(ring(child))
            child = links[child][0]
        polygon = Polygon(ring(index), holes)
        if not polygon.is_valid:
            polygons += _polygonal(shapely.make_valid(polygon))
        elif not polygon.is_empty:
            polygons.append(polygon)
    return MultiPolygon([p for p in polygons if p.area > 0])


def tissue_feature_collection(polygons: MultiPolygon, slide_id: str) -> dict:
    """A GeoJSON FeatureCollection with one QuPath tissue annotation per polygon."""
    features = []
    for number, polygon in enumerate(polygons.geoms, start=1):
        geometry = mapping(shapely.set_precision(polygon, 0.01))
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "objectType": "annotation",
                    "name": f"{slide_id} tissue {number}",
                    "classification": TISSUE_CLASS,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_tissue_geojson(path: str | os.PathLike, polygons: MultiPolygon, slide_id: str) -> Path:
    """Write the tissue polygons (level-0 px) as a QuPath-importable GeoJSON, atomically."""
    path = Path(path)
    write_text_atomic(path, json.dumps(tissue_feature_collection(polygons, slide_id)))
    return path


def read_tissue_geojson(path: str | os.PathLike) -> MultiPolygon:
    """All polygons of a GeoJSON file (FeatureCollection, Feature or geometry) as one shape.

    Works on files written here and on tissue annotations exported from QuPath.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TissueGeoJSONError(f"{path}: tissue GeoJSON not found") from exc
    except (OSError, ValueError) as exc:
        raise TissueGeoJSONError(f"{path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        geometries = [f.get("geometry") for f in data.get("features", [])]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        geometries = [data.get("geometry")]
    elif isinstance(data, list):  # QuPath may export a bare list of features
        geometries = [f.get("geometry") for f in data if isinstance(f, dict)]
    else:
        geometries = [data]
    polygons: list[Polygon] = []
    for geometry in geometries:
        if geometry is None:
            continue
        try:
            polygons += _polygonal(shape(geometry))
        except (AttributeError, TypeError, ValueError, shapely.errors.ShapelyError) as exc:
            raise TissueGeoJSONError(f"{path}: invalid GeoJSON geometry ({exc})") from exc
    return MultiPolygon(polygons)
