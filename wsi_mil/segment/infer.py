"""Segmenting the tiles the MIL model flags, stitched into a bounded-memory mask pyramid.

For one slide's predictions file (the windows and pyramids are :mod:`wsi_mil.segment.windows`):

1. **Flag**: tiles whose positive-class probability (the MIL segmentation head) reaches
   ``threshold``, or whose normalised attention reaches ``attention_threshold``, plus
   ``margin`` rings of neighbouring tiles on the tile grid (a lesion's edge often lies in a
   tile the head scores just below the threshold).
2. **Windows**: the segmenter's windows (``tile_size`` px at its µm/px) lie on one lattice
   of step ``tile_size * (1 - overlap)``; a window is run when its centre is within half a
   step of a flagged tile, which covers every flagged pixel with the fewest windows.
3. **Blend**: the windows' lesion probabilities are averaged with MONAI's Gaussian importance
   map (``monai.data.utils.compute_importance_map``, the weights of its sliding-window
   inferer), so overlapping windows leave no seams. Sums and weights live in per-chunk
   accumulators; windows are processed in raster order, and a chunk is written to zarr and
   dropped as soon as no later window touches it. Memory is bounded by one row of chunks
   under a batch of windows, never by the slide's size; chunks no window touched are not
   stored (zarr fill value 0).
4. **Pyramid**: ``mask.zarr`` holds level 0 (uint8 lesion probability x 255 at the
   segmenter's µm/px) and 2x means of it, with OME-Zarr ``multiscales`` metadata in µm
   (:func:`wsi_mil.export.ome_zarr.multiscales_metadata`), each level built chunk by chunk
   from the chunks below that were written.
5. **Polygons**: the pixels at or above ``mask_threshold`` of each written chunk become row
   runs (one box per run), merged with shapely into polygons with holes across chunk borders,
   clipped to the slide, simplified by ``simplify_px`` and written to ``lesions.geojson``
   (QuPath annotations classified as the positive class, with their area in µm²).
   ``outline.png`` draws them in red over a thumbnail, next to the tile head's outline in cyan.
6. **Explanations** (``explain`` methods given): :mod:`wsi_mil.segment.explain` explains the
   mask in the same windows into ``explain.zarr``, ``explain.json`` and ``explain.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
import zarr
from scipy import ndimage
from shapely.geometry import mapping
from shapely.geometry.polygon import orient

from tiling.lattice import SlideGeometry, TileGrid
from tiling.slide import open_slide, read_thumbnail
from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.export.geojson import class_colors, segmentation_regions
from wsi_mil.extras import require_extra
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import positive_cells
from wsi_mil.mil.predictions import SlidePrediction, read_prediction
from wsi_mil.segment.params import SegmentParams
from wsi_mil.segment.windows import (
    ChunkStitcher,
    MaskGeometry,
    finish_pyramid,
    pyramid_arrays,
    pyramid_attrs,
    window_layout,
    window_reader,
)

MASK = "mask.zarr"
LESIONS = "lesions.geojson"
OUTLINE = "outline.png"
SUMMARY = "segment.json"
OUTPUT_FILES = (MASK, LESIONS, OUTLINE, SUMMARY)
#: outline colours in outline.png (RGB): the segmenter's and the tile head's
REFINED_RGB = (230, 20, 60)
TILE_RGB = (0, 200, 255)


def flagged_tiles(
    prediction: SlidePrediction, grid: TileGrid, params: SegmentParams
) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, selected) boolean arrays over the tiles: flagged by the head or attention,
    and selected = flagged plus ``margin`` rings of neighbouring tiles."""
    index = prediction.positive_index(params.positive_class)
    flagged = np.asarray(prediction.tile_probs[:, index]) >= params.threshold
    if params.attention_threshold is not None:
        flagged |= np.asarray(prediction.attention_norm) >= params.attention_threshold
    if params.margin == 0 or not flagged.any():
        return flagged, flagged.copy()
    marks = np.zeros(grid.shape, bool)
    rows, cols = grid.cells[:, 0], grid.cells[:, 1]
    marks[rows[flagged], cols[flagged]] = True
    reach = params.margin * grid.span
    grown = ndimage.binary_dilation(marks, np.ones((2 * reach + 1,) * 2, bool))
    return flagged, grown[rows, cols]


def run_pyramid(
    model: Any,
    card: dict[str, Any],
    prediction: SlidePrediction,
    slide: Any,
    path: Path,
    selected: np.ndarray,
    params: SegmentParams,
) -> dict[str, Any]:
    """Run the segmenter over the windows covering the ``selected`` tiles and write the mask
    pyramid at ``path`` (a zarr group); returns what was done."""
    import torch

    require_extra("segment", "pixel segmentation")
    from monai.data.utils import compute_importance_map

    from wsi_mil.segment.nets import to_input

    layout = window_layout(card, prediction, selected, params)
    windows_xy, size, n = layout.windows_xy, layout.size, params.zarr_chunk
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arrays = pyramid_arrays(group, layout.mask.shape, n)
    stitcher = ChunkStitcher(arrays[0], n, windows_xy, size)
    device = next(model.parameters()).device
    weight = compute_importance_map((size, size), mode="gaussian", device="cpu").numpy()
    read = window_reader(slide, layout)
    with torch.no_grad():
        for start in range(0, len(windows_xy), params.batch_size):
            batch = windows_xy[start : start + params.batch_size]
            probs = torch.softmax(model(to_input(read(batch), device)), dim=1)[:, 1].cpu().numpy()
            for (x, y), prob in zip(batch, probs):
                stitcher.add(int(x), int(y), prob, weight)
            stitcher.flush(start + len(batch) - 1)
    finish_pyramid(arrays, stitcher.written, n)
    group.attrs.update(
        pyramid_attrs(
            prediction,
            layout,
            len(arrays),
            n,
            "lesion_probability",
            "lesion probability x 255 (uint8) of the pixel segmenter at level 0; each next level "
            "is the 2x2 mean of the one before; 0 where no window ran",
            "FF0000",
            card,
            "probability x 255",
        )
    )
    return {
        "windows": len(windows_xy),
        "mask_shape": list(layout.mask.shape),
        "mask_mpp": layout.mask.mpp,
        "written_chunks": sorted(stitcher.written),
        "peak_chunks_in_memory": stitcher.peak_chunks,
        "levels": len(arrays),
    }


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first col, end col) of every horizontal run of True pixels."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    start_r, start_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    return start_r, start_c, end_c


def mask_polygons(
    array: Any,
    chunks: list[tuple[int, int]],
    chunk: int,
    downsample: float,
    threshold: float,
    geometry: SlideGeometry,
    simplify_px: float,
    min_area_um2: float,
) -> list[Any]:
    """Level-0 polygons of the mask pixels at or above ``threshold``, chunk by chunk.

    Each run of pixels becomes a box with pixel-edge corners, so boxes of neighbouring rows
    and chunks share edges and ``unary_union`` merges them exactly, holes included.
    """
    level = int(np.ceil(threshold * 255))
    pieces = []
    for r, c in chunks:
        block = array[0, r * chunk : (r + 1) * chunk, c * chunk : (c + 1) * chunk] >= level
        if not block.any():
            continue
        rows, c0, c1 = _runs(block)
        y0, x0 = r * chunk, c * chunk
        boxes = shapely.box(
            (x0 + c0) * downsample,
            (y0 + rows) * downsample,
            (x0 + c1) * downsample,
            (y0 + rows + 1) * downsample,
        )
        pieces.append(shapely.union_all(boxes))
    if not pieces:
        return []
    merged = shapely.intersection(
        shapely.union_all(pieces), shapely.box(0, 0, geometry.width, geometry.height)
    )
    if simplify_px > 0:
        merged = shapely.simplify(merged, simplify_px * downsample, preserve_topology=True)
    polygons = [
        orient(p)
        for p in getattr(merged, "geoms", [merged])
        if p.geom_type == "Polygon" and not p.is_empty
    ]
    keep = [p for p in polygons if p.area * geometry.mpp**2 >= min_area_um2]
    return sorted(keep, key=lambda p: -p.area)


def write_lesions_geojson(
    path: Path,
    polygons: list[Any],
    prediction: SlidePrediction,
    geometry: SlideGeometry,
    params: SegmentParams,
) -> None:
    """``lesions.geojson``: one classified QuPath annotation per lesion, area in µm²."""
    index = prediction.positive_index(params.positive_class)
    name = prediction.class_names[index]
    color = list(class_colors(prediction.class_names, index)[index])
    features = [
        {
            "type": "Feature",
            "geometry": mapping(polygon),
            "properties": {
                "objectType": "annotation",
                "name": f"{name} lesion {number}",
                "classification": {"name": name, "color": color},
                "measurements": {
                    "area_um2": float(polygon.area * geometry.mpp**2),
                    "perimeter_um": float(polygon.length * geometry.mpp),
                    "mask_threshold": float(params.mask_threshold),
                },
            },
        }
        for number, polygon in enumerate(polygons, 1)
    ]
    write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))


def _draw(
    image: np.ndarray,
    shapes: list[Any],
    downsample: float,
    rgb: tuple[int, int, int],
    thickness: int,
) -> None:
    for shape in shapes:
        for polygon in getattr(shape, "geoms", [shape]):
            for ring in (polygon.exterior, *polygon.interiors):
                points = np.rint(np.asarray(ring.coords)[:, :2] / downsample).astype(np.int32)
                cv2.polylines(image, [points], True, rgb, thickness, lineType=cv2.LINE_AA)


def write_outline_png(
    path: Path,
    slide: Any,
    prediction: SlidePrediction,
    grid: TileGrid,
    polygons: list[Any],
    params: SegmentParams,
) -> None:
    """``outline.png``: the thumbnail with the segmenter's outlines (red) and the tile head's
    (cyan), the difference the segmenter makes at a glance."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    thumb = read_thumbnail(slide, max_side=params.png_max_side)
    image = np.ascontiguousarray(thumb.image)
    head = HeatmapParams(positive_class=params.positive_class, seg_threshold=params.threshold)
    tile_regions = [
        shape
        for shape, _ in segmentation_regions(positive_cells(prediction, grid, head), grid, geometry)
    ]
    thickness = max(1, round(max(image.shape) / 700))
    _draw(image, tile_regions, thumb.downsample, TILE_RGB, thickness)
    _draw(image, polygons, thumb.downsample, REFINED_RGB, thickness)
    legend = [("tile head", TILE_RGB), ("pixel segmenter", REFINED_RGB)]
    unit = max(1.0, max(image.shape[:2]) / 1000)  # legend size follows the picture's
    for i, (text, rgb) in enumerate(legend):
        y = round(unit * (20 + 20 * i))
        cv2.rectangle(
            image,
            (round(6 * unit), y - round(11 * unit)),
            (round(18 * unit), y + round(1 * unit)),
            rgb,
            -1,
        )
        cv2.putText(
            image,
            text,
            (round(24 * unit), y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * unit,
            (0, 0, 0),
            max(1, round(unit)),
            cv2.LINE_AA,
        )
    with atomic_output(path) as tmp:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())


def segment_slide(
    prediction_path: str | os.PathLike,
    model: Any,
    card: dict[str, Any],
    out_dir: str | os.PathLike,
    params: SegmentParams | None = None,
    slide_path: str | os.PathLike | None = None,
    annotation_path: str | os.PathLike | None = None,
) -> Path:
    """Write ``mask.zarr``, ``lesions.geojson``, ``outline.png`` and ``segment.json`` of one
    slide into ``out_dir`` (its own folder, written whole and atomically); with
    ``params.explain`` also the explanations, scored against the lesions of
    ``annotation_path`` when given."""
    started = time.perf_counter()
    params = params or SegmentParams()
    out_dir = Path(out_dir)
    prediction = read_prediction(prediction_path)
    geometry = SlideGeometry.from_attrs(prediction.attrs, str(prediction_path))
    grid = TileGrid.from_coords(prediction.coords, geometry)
    flagged, selected = flagged_tiles(prediction, grid, params)
    slide_path = Path(slide_path or prediction.attrs.get("slide_path", ""))
    slide = open_slide(slide_path)
    try:
        with atomic_output(out_dir) as tmp:
            tmp.mkdir(parents=True)
            done = run_pyramid(model, card, prediction, slide, tmp / MASK, selected, params)
            array = zarr.open_array(str(tmp / MASK / "0"), mode="r")
            mask = MaskGeometry.for_slide(geometry, done["mask_mpp"])
            polygons = mask_polygons(
                array,
                done.pop("written_chunks"),
                params.zarr_chunk,
                mask.downsample,
                params.mask_threshold,
                geometry,
                params.simplify_px,
                params.min_area_um2,
            )
            write_lesions_geojson(tmp / LESIONS, polygons, prediction, geometry, params)
            write_outline_png(tmp / OUTLINE, slide, prediction, grid, polygons, params)
            summary = {
                **provenance(),
                "slide_id": prediction.slide_id,
                "predictions": str(prediction_path),
                "slide_path": str(slide_path),
                "tiles": len(flagged),
                "tiles_flagged": int(flagged.sum()),
                "tiles_segmented": int(selected.sum()),
                "share_segmented": float(selected.mean()) if len(selected) else 0.0,
                **done,
                "lesions": len(polygons),
                "lesion_area_um2": float(sum(p.area for p in polygons) * geometry.mpp**2),
                "net": card.get("net"),
                "checkpoint_sha256": card.get("checkpoint_sha256"),
                "params": dataclasses.asdict(params),
                "seconds": time.perf_counter() - started,
            }
            if params.explain:
                _explain(model, card, prediction, slide, tmp, selected, params, annotation_path)
            write_text_atomic(tmp / SUMMARY, json.dumps(summary, indent=2) + "\n")
    finally:
        slide.close()
    return out_dir


def _explain(
    model: Any,
    card: dict[str, Any],
    prediction: SlidePrediction,
    slide: Any,
    folder: Path,
    selected: np.ndarray,
    params: SegmentParams,
    annotation_path: str | os.PathLike | None,
) -> None:
    """``explain.zarr``, ``explain.png`` and ``explain.json`` in ``folder``."""
    from tiling.annotations import read_annotations
    from wsi_mil.segment.explain import EXPLAIN_JSON, EXPLAIN_PNG, EXPLAIN_ZARR, explain_pyramid

    started = time.perf_counter()
    lesions = read_annotations(annotation_path).lesions if annotation_path is not None else None
    done = explain_pyramid(
        model,
        card,
        prediction,
        slide,
        folder / EXPLAIN_ZARR,
        selected,
        params,
        lesions,
        folder / EXPLAIN_PNG,
    )
    summary = {
        **provenance(),
        "slide_id": prediction.slide_id,
        "annotation_path": None if annotation_path is None else str(annotation_path),
        "checkpoint_sha256": card.get("checkpoint_sha256"),
        **done,
        "params": dataclasses.asdict(params),
        "seconds": time.perf_counter() - started,
    }
    write_text_atomic(folder / EXPLAIN_JSON, json.dumps(summary, indent=2) + "\n")


def is_segmented(folder: Path) -> bool:
    """Whether a slide's folder holds every output of ``segment``."""
    return folder.is_dir() and all((folder / name).exists() for name in OUTPUT_FILES)


def read_mask_level(folder: str | os.PathLike, max_mpp: float) -> tuple[np.ndarray, float]:
    """The coarsest pyramid level of ``folder/mask.zarr`` at or finer than ``max_mpp`` µm/px,
    as float32 probabilities in [0, 1], and its µm/px (for evaluation at a bounded size)."""
    path = Path(folder) / MASK
    # JSON values, in the layout pyramid_attrs writes
    attrs: dict[str, Any] = zarr.open_group(str(path), mode="r").attrs.asdict()
    base = float(attrs["wsi_mil"]["mask_mpp"])
    levels = len(attrs["multiscales"][0]["datasets"])
    k = 0
    while k + 1 < levels and base * 2 ** (k + 1) <= max_mpp * (1 + 1e-9):
        k += 1
    level = zarr.open_array(str(path / str(k)), mode="r")
    return np.asarray(level[0], dtype=np.float32) / 255.0, base * 2**k
