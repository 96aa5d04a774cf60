"""QuPath GeoJSON: the model's view of a slide as objects a pathologist drags onto the slide.

Written in the form QuPath (0.4 and later) reads and writes itself: a ``FeatureCollection`` of
``Feature``s in level-0 pixel coordinates, with ``properties.objectType`` (``"detection"`` or
``"annotation"``), ``properties.classification`` ``{"name", "color": [r, g, b]}`` and
``properties.measurements`` as a name -> number object.

* ``tiles.geojson``: one detection per tile (its level-0 square), classified by the tile's most
  probable class, with measurements ``attention`` (raw), ``attention_percentile`` (rank among
  the slide's tiles, 0-1) and ``prob_<class>``. In QuPath, *Measure > Show
  measurement maps* then colours the tiles by any of them. The file is streamed in chunks, so
  300 000 tiles never become 300 000 Python dicts.
* ``segmentation.geojson``: the grid cells whose positive-class probability reaches the
  threshold, merged with shapely ``unary_union`` into polygons with holes, one annotation per
  8-connected region, with its area and probabilities as measurements.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, mapping
from shapely.geometry.polygon import orient

from tiling.lattice import SlideGeometry, TileGrid
from tiling.storage import atomic_output, write_text_atomic
from wsi_mil.errors import InputError
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import normalise_scores
from wsi_mil.mil.predictions import SlidePrediction

#: colour of the positive (segmentation) class, the same red as segmentation.png
POSITIVE_COLOR = (230, 20, 60)
#: colours of the other classes, in order (matplotlib tab10 without red)
OTHER_COLORS = (
    (31, 119, 180),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
CHUNK = 20_000


def class_colors(class_names: Sequence[str], positive_index: int) -> list[tuple[int, int, int]]:
    """One RGB colour per class: red for the positive class, distinct colours for the rest."""
    others = iter(OTHER_COLORS * (1 + len(class_names) // len(OTHER_COLORS)))
    return [
        POSITIVE_COLOR if i == positive_index else next(others) for i in range(len(class_names))
    ]


#: decimals of measurements known to lie in [0, 1] (probabilities, percentiles)
UNIT_DECIMALS = 5


def _feature_template(keys: Sequence[str], preformatted: Sequence[bool]) -> str:
    """One tile's Feature with %-slots: 10 ring coordinates, classification, measurements
    (``%s`` for those given as strings, ``%.6g`` for the others).

    Compact separators: tiles.geojson is by far the largest file.
    """
    ring = ",".join(["[%s,%s]"] * 5)
    measurements = ",".join(
        f"{json.dumps(k)}:" + ("%s" if text else "%.6g") for k, text in zip(keys, preformatted)
    )
    return (
        '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[['
        + ring
        + ']]},"properties":{"objectType":"detection","classification":%s,'
        '"measurements":{' + measurements + "}}}"
    )


@functools.lru_cache(maxsize=1)
def _unit_table() -> np.ndarray:
    """Every number of [0, 1] at ``UNIT_DECIMALS`` decimals, as strings (built once)."""
    steps = 10**UNIT_DECIMALS
    return np.array([f"{i / steps:.{UNIT_DECIMALS}f}" for i in range(steps + 1)], dtype=object)


def _as_strings(values: np.ndarray, unit: bool) -> np.ndarray:
    """JSON number strings of ``values`` (object array), formatting each distinct value once.

    Tile coordinates take a few hundred distinct values per axis, and values in [0, 1] are
    written to ``UNIT_DECIMALS`` decimals from a table of every possible string, so 300 000
    tiles need only thousands of number formats, not millions.
    """
    if unit:
        return _unit_table()[np.rint(values * 10**UNIT_DECIMALS).astype(np.int64)]
    distinct, inverse = np.unique(values, return_inverse=True)
    integral = np.array_equal(distinct, np.round(distinct))
    table = np.array(
        [str(int(v)) if integral else format(v, ".10g") for v in distinct.tolist()], dtype=object
    )
    return table[inverse.reshape(-1)]


def write_tiles_geojson(
    path: str | os.PathLike, prediction: SlidePrediction, params: HeatmapParams
) -> Path:
    """Write ``tiles.geojson``: one QuPath detection per tile with its scores as measurements.

    Every number is turned into text once per distinct value (see :func:`_as_strings`) and the
    features of a chunk are produced by one C-level %-format of a repeated template: 300 000
    tiles in about a second, never as Python dicts.
    """
    path = Path(path)
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    prefix = "prob_" if prediction.has_segmentation else "tile_"  # a risk or value: no probability
    names = ["attention", "attention_percentile", *[f"{prefix}{c}" for c in prediction.class_names]]
    percentile, *_ = normalise_scores(prediction.attention, "rank", probability=False)
    values = np.column_stack([prediction.attention, percentile, prediction.tile_probs]).astype(
        np.float64
    )
    if values.size and not np.isfinite(values).all():
        raise InputError(
            f"{prediction.slide_id}: predictions hold non-finite scores; "
            f"GeoJSON measurements must be numbers"
        )
    positive = (
        prediction.positive_index(params.positive_class) if prediction.has_segmentation else 0
    )
    classes = np.array(
        [
            json.dumps({"name": name, "color": list(color)}, separators=(",", ":"))
            for name, color in zip(
                prediction.class_names, class_colors(prediction.class_names, positive)
            )
        ],
        dtype=object,
    )
    best = (
        np.argmax(prediction.tile_probs, axis=1)
        if prediction.tile_probs.size
        else np.zeros(len(prediction.coords), np.int64)
    )
    x0 = np.clip(prediction.coords[:, 0].astype(np.float64), 0, geometry.width)
    y0 = np.clip(prediction.coords[:, 1].astype(np.float64), 0, geometry.height)
    x1 = np.minimum(x0 + geometry.tile_size_level0, geometry.width)
    y1 = np.minimum(y0 + geometry.tile_size_level0, geometry.height)
    a, b, c, d = (_as_strings(np.round(v, 3), unit=False) for v in (x0, y0, x1, y1))
    # values in [0, 1] become table strings; others (raw attention) are formatted by the template
    in_unit = [
        bool(values[:, j].min() >= 0 and values[:, j].max() <= 1) if values.size else True
        for j in range(values.shape[1])
    ]
    in_unit[0] = False
    measurements = [
        _as_strings(values[:, j], unit=True) if in_unit[j] else values[:, j]
        for j in range(values.shape[1])
    ]
    columns = [a, b, c, b, c, d, a, d, a, b, classes[best], *measurements]
    template = _feature_template(names, in_unit)

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        for start in range(0, len(x0), CHUNK):
            stop = min(start + CHUNK, len(x0))
            slots = chain.from_iterable(zip(*(col[start:stop].tolist() for col in columns)))
            f.write(",\n".join([template] * (stop - start)) % tuple(slots))
            if stop < len(x0):
                f.write(",\n")
        f.write("\n]}\n")
    return path


def _cell_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first col, end col) of every horizontal run of True cells."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    start_r, start_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    # nonzero walks rows in order and columns in order within a row: starts and ends pair up
    return start_r, start_c, end_c


def segmentation_regions(
    positive: np.ndarray, grid: TileGrid, geometry: SlideGeometry
) -> list[tuple[shapely.Geometry, np.ndarray]]:
    """Level-0 shapes (polygons with holes) of the positive cells, one per 8-connected region.

    Each region's cells are merged row run by row run (one box per run, not per cell) with
    ``unary_union`` and clipped to the slide; cells touching only at a corner stay one region,
    as a MultiPolygon. Returns (shape, boolean cell mask of the region) pairs.
    """
    labels, count = ndimage.label(positive, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    rows, c0, c1 = _cell_runs(positive)
    run_labels = labels[rows, c0]
    ox, oy = grid.origin
    s = grid.stride
    boxes = shapely.box(ox + c0 * s, oy + rows * s, ox + c1 * s, oy + (rows + 1) * s)
    slide_box = shapely.box(0, 0, geometry.width, geometry.height)
    order = np.argsort(run_labels, kind="stable")
    bounds = np.searchsorted(run_labels[order], np.arange(1, count + 2))
    regions = []
    for label in range(1, count + 1):
        members = order[bounds[label - 1] : bounds[label]]
        merged = shapely.intersection(shapely.unary_union(boxes[members]), slide_box)
        parts = [
            orient(p)
            for p in getattr(merged, "geoms", [merged])
            if p.geom_type == "Polygon" and not p.is_empty
        ]
        if parts:
            regions.append((parts[0] if len(parts) == 1 else MultiPolygon(parts), labels == label))
    return regions


def write_segmentation_geojson(
    path: str | os.PathLike,
    prediction: SlidePrediction,
    grid: TileGrid,
    positive: np.ndarray,
    params: HeatmapParams,
) -> Path:
    """Write ``segmentation.geojson``: the positive regions as classified QuPath annotations."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    index = prediction.positive_index(params.positive_class)
    name = prediction.class_names[index]
    color = list(class_colors(prediction.class_names, index)[index])
    probs = grid.stitch(prediction.tile_probs[:, index])
    percentile, *_ = normalise_scores(prediction.attention, "rank", probability=False)
    attention = grid.stitch(percentile)
    features = []
    for number, (polygon, cells) in enumerate(segmentation_regions(positive, grid, geometry), 1):
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(polygon),
                "properties": {
                    "objectType": "annotation",
                    "name": f"{name} region {number}",
                    "classification": {"name": name, "color": color},
                    "measurements": {
                        "area_um2": float(polygon.area * geometry.mpp**2),
                        f"mean_prob_{name}": float(np.nanmean(probs[cells])),
                        f"max_prob_{name}": float(np.nanmax(probs[cells])),
                        "max_attention_percentile": float(np.nanmax(attention[cells])),
                        "threshold": float(params.seg_threshold),
                    },
                },
            }
        )
    write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))
    return Path(path)
