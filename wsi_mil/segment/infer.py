"""Segmenting the tiles the MIL model flags, stitched into a bounded-memory mask pyramid.

For one slide's predictions file:

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

from tiling.annotations import mask_shape
from tiling.lattice import SlideGeometry, TileGrid
from tiling.reader import TileReader
from tiling.slide import level_for_downsample, open_slide, read_thumbnail
from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.export.geojson import class_colors, segmentation_regions
from wsi_mil.export.ome_zarr import multiscales_metadata
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import positive_cells
from wsi_mil.mil.predictions import SlidePrediction, read_prediction
from wsi_mil.segment.params import SegmentParams

MASK = "mask.zarr"
LESIONS = "lesions.geojson"
OUTLINE = "outline.png"
SUMMARY = "segment.json"
OUTPUT_FILES = (MASK, LESIONS, OUTLINE, SUMMARY)
#: outline colours in outline.png (RGB): the segmenter's and the tile head's
REFINED_RGB = (230, 20, 60)
TILE_RGB = (0, 200, 255)


@dataclasses.dataclass(frozen=True)
class MaskGeometry:
    """The segmenter's pixel lattice over a slide: mask pixel (r, c) covers level-0
    ``[c * downsample, (c + 1) * downsample)`` (the same rule as ``tiling.annotations``)."""

    shape: tuple[int, int]  # (rows, cols) at level 0 of the mask pyramid
    downsample: float  # level-0 px per mask px
    mpp: float  # µm per mask px

    @classmethod
    def for_slide(cls, geometry: SlideGeometry, mpp: float) -> MaskGeometry:
        return cls(shape=mask_shape(geometry.width, geometry.height, geometry.mpp, mpp),
                   downsample=mpp / geometry.mpp, mpp=mpp)


def flagged_tiles(prediction: SlidePrediction, grid: TileGrid, params: SegmentParams
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


def window_lattice(boxes: np.ndarray, tile_size: int, step: int, shape: tuple[int, int]
                   ) -> np.ndarray:
    """(row, col) lattice indices of the windows to run, sorted in raster order.

    ``boxes`` are ``[K, 4]`` (x0, y0, x1, y1) areas in mask px that must be covered. A window
    ``[k * step, k * step + tile_size)`` is kept when its centre lies within ``step / 2`` of a
    box: every pixel of a box then has a window whose centre is at most ``step / 2`` away, so
    it is inside that window (``step <= tile_size``).
    """
    if len(boxes) == 0:
        return np.zeros((0, 2), np.int64)
    half = tile_size / 2
    pairs = []
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64):
        kx = np.arange(np.ceil((x0 - step / 2 - half) / step),
                       np.floor((x1 + step / 2 - half - 1e-9) / step) + 1)
        ky = np.arange(np.ceil((y0 - step / 2 - half) / step),
                       np.floor((y1 + step / 2 - half - 1e-9) / step) + 1)
        gy, gx = np.meshgrid(ky, kx, indexing="ij")
        pairs.append(np.column_stack([gy.ravel(), gx.ravel()]))
    lattice = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)  # sorted by row, col
    # windows wholly off the mask (possible at the far edge) contribute nothing
    inside = ((lattice[:, 0] * step < shape[0]) & (lattice[:, 1] * step < shape[1])
              & ((lattice[:, 0] * step + tile_size) > 0) & ((lattice[:, 1] * step + tile_size) > 0))
    return lattice[inside]


class ChunkStitcher:
    """Weighted sums of window probabilities per zarr chunk, written when complete.

    ``last_use[chunk]`` is the index of the last window touching the chunk; after window ``i``
    every chunk whose last use is ``<= i`` is final: normalised, written, and freed.
    """

    def __init__(self, array: Any, chunk: int, windows_xy: np.ndarray, tile_size: int):
        self.array, self.chunk, self.size = array, chunk, tile_size
        self.rows, self.cols = array.shape[1:]
        self.sums: dict[tuple[int, int], np.ndarray] = {}
        self.weights: dict[tuple[int, int], np.ndarray] = {}
        self.last_use: dict[tuple[int, int], int] = {}
        for i, (x, y) in enumerate(windows_xy):
            for key in self._chunks_of(int(x), int(y)):
                self.last_use[key] = i
        self.written: set[tuple[int, int]] = set()
        self.peak_chunks = 0

    def _chunks_of(self, x: int, y: int) -> list[tuple[int, int]]:
        c0, c1 = max(0, x) // self.chunk, (min(self.cols, x + self.size) - 1) // self.chunk
        r0, r1 = max(0, y) // self.chunk, (min(self.rows, y + self.size) - 1) // self.chunk
        return [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def add(self, x: int, y: int, probs: np.ndarray, weight: np.ndarray) -> None:
        """Add one window (top-left mask px ``(x, y)``) of probabilities with its weights."""
        n = self.chunk
        for r, c in self._chunks_of(x, y):
            key = (r, c)
            if key not in self.sums:
                h, w = min(n, self.rows - r * n), min(n, self.cols - c * n)
                self.sums[key] = np.zeros((h, w), np.float32)
                self.weights[key] = np.zeros((h, w), np.float32)
            # overlap of the window and the chunk, in chunk and in window coordinates
            gy0, gy1 = max(y, r * n), min(y + self.size, r * n + self.sums[key].shape[0])
            gx0, gx1 = max(x, c * n), min(x + self.size, c * n + self.sums[key].shape[1])
            chunk_part = (slice(gy0 - r * n, gy1 - r * n), slice(gx0 - c * n, gx1 - c * n))
            window_part = (slice(gy0 - y, gy1 - y), slice(gx0 - x, gx1 - x))
            self.sums[key][chunk_part] += probs[window_part] * weight[window_part]
            self.weights[key][chunk_part] += weight[window_part]
        self.peak_chunks = max(self.peak_chunks, len(self.sums))

    def flush(self, done: int) -> None:
        """Write every chunk no window after index ``done`` touches."""
        n = self.chunk
        for key in [k for k in self.sums if self.last_use[k] <= done]:
            total, weight = self.sums.pop(key), self.weights.pop(key)
            with np.errstate(invalid="ignore", divide="ignore"):
                prob = np.where(weight > 0, total / weight, 0.0)
            r, c = key
            self.array[0, r * n:r * n + prob.shape[0], c * n:c * n + prob.shape[1]] = \
                np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)
            self.written.add(key)


def _downsample_level(source: Any, target: Any, chunks: set[tuple[int, int]], n: int
                      ) -> set[tuple[int, int]]:
    """Write the 2x mean of ``source`` into ``target`` for the parents of ``chunks``."""
    parents = {(r // 2, c // 2) for r, c in chunks}
    rows, cols = target.shape[1:]
    for r, c in sorted(parents):
        block = source[0, 2 * r * n:2 * (r + 1) * n, 2 * c * n:2 * (c + 1) * n].astype(np.float32)
        h, w = min(n, rows - r * n), min(n, cols - c * n)
        padded = np.zeros((2 * h, 2 * w), np.float32)
        padded[:block.shape[0], :block.shape[1]] = block
        mean = padded.reshape(h, 2, w, 2).mean(axis=(1, 3))
        target[0, r * n:r * n + h, c * n:c * n + w] = np.rint(mean).astype(np.uint8)
    return parents


def run_pyramid(model: Any, card: dict[str, Any], prediction: SlidePrediction, slide: Any,
                path: Path, selected: np.ndarray, params: SegmentParams) -> dict[str, Any]:
    """Run the segmenter over the windows covering the ``selected`` tiles and write the mask
    pyramid at ``path`` (a zarr group); returns what was done."""
    import torch
    from monai.data.utils import compute_importance_map

    from wsi_mil.segment.nets import to_input

    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    seg_mpp, size = float(card["input"]["mpp"]), int(card["input"]["tile_size"])
    mask = MaskGeometry.for_slide(geometry, seg_mpp)
    step = max(1, round(size * (1 - params.overlap)))
    coords = np.asarray(prediction.coords, np.float64)[selected]
    side = geometry.tile_size_level0 / mask.downsample
    boxes = np.column_stack([coords / mask.downsample, coords / mask.downsample + side])
    lattice = window_lattice(boxes, size, step, mask.shape)
    windows_xy = lattice[:, ::-1] * step  # (x, y) top-left mask px, raster order

    n = params.zarr_chunk
    levels = [mask.shape]
    while max(levels[-1]) > n:
        levels.append(((levels[-1][0] + 1) // 2, (levels[-1][1] + 1) // 2))
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arrays = [group.create_array(str(k), shape=(1, *shape), dtype="uint8",
                                 chunks=(1, min(n, shape[0]), min(n, shape[1])), fill_value=0,
                                 chunk_key_encoding={"name": "v2", "separator": "/"},
                                 config={"write_empty_chunks": False})
              for k, shape in enumerate(levels)]
    stitcher = ChunkStitcher(arrays[0], n, windows_xy, size)
    device = next(model.parameters()).device
    weight = compute_importance_map((size, size), mode="gaussian", device="cpu").numpy()
    read_level = level_for_downsample(slide, mask.downsample)
    reader = TileReader(slide, {"read_level": read_level,
                                "read_downsample": slide.level_downsamples[read_level],
                                "tile_size": size, "tile_size_level0": size * mask.downsample})
    with torch.no_grad():
        for start in range(0, len(windows_xy), params.batch_size):
            batch = windows_xy[start:start + params.batch_size]
            tiles = np.stack([reader.read(round(x * mask.downsample), round(y * mask.downsample))
                              for x, y in batch])
            probs = torch.softmax(model(to_input(tiles, device)), dim=1)[:, 1].cpu().numpy()
            for (x, y), prob in zip(batch, probs):
                stitcher.add(int(x), int(y), prob, weight)
            stitcher.flush(start + len(batch) - 1)
    chunks = stitcher.written
    for k in range(1, len(arrays)):
        chunks = _downsample_level(arrays[k - 1], arrays[k], chunks, n)

    lattice_grid = TileGrid(origin=(0.0, 0.0), stride=mask.downsample, span=1, shape=mask.shape,
                            cells=np.zeros((0, 2), np.int64))
    multiscales = multiscales_metadata(prediction.slide_id, lattice_grid, geometry,
                                       len(levels), "0.4")
    multiscales["metadata"] = {"description": "lesion probability x 255 (uint8) of the pixel "
                               "segmenter at level 0; each next level is the 2x2 mean of the "
                               "one before; 0 where no window ran"}
    group.attrs.update({
        "multiscales": [multiscales],
        "omero": {"version": "0.4", "name": prediction.slide_id, "channels": [{
            "label": "lesion_probability", "color": "FF0000", "active": True,
            "coefficient": 1.0, "family": "linear", "inverted": False,
            "window": {"start": 0, "end": 255, "min": 0, "max": 255}}],
            "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0}},
        "wsi_mil": {**provenance(), "slide_id": prediction.slide_id, "mask_mpp": seg_mpp,
                    "slide_mpp": geometry.mpp, "downsample_level0": mask.downsample,
                    "shape": list(mask.shape), "chunk": n,
                    "checkpoint_sha256": card.get("checkpoint_sha256"),
                    "scale": "probability x 255"},
    })
    return {"windows": len(windows_xy), "mask_shape": list(mask.shape),
            "mask_mpp": seg_mpp, "written_chunks": sorted(stitcher.written),
            "peak_chunks_in_memory": stitcher.peak_chunks, "levels": len(levels)}


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first col, end col) of every horizontal run of True pixels."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    start_r, start_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    return start_r, start_c, end_c


def mask_polygons(array: Any, chunks: list[tuple[int, int]], chunk: int, downsample: float,
                  threshold: float, geometry: SlideGeometry, simplify_px: float,
                  min_area_um2: float) -> list[Any]:
    """Level-0 polygons of the mask pixels at or above ``threshold``, chunk by chunk.

    Each run of pixels becomes a box with pixel-edge corners, so boxes of neighbouring rows
    and chunks share edges and ``unary_union`` merges them exactly, holes included.
    """
    level = int(np.ceil(threshold * 255))
    pieces = []
    for r, c in chunks:
        block = array[0, r * chunk:(r + 1) * chunk, c * chunk:(c + 1) * chunk] >= level
        if not block.any():
            continue
        rows, c0, c1 = _runs(block)
        y0, x0 = r * chunk, c * chunk
        boxes = shapely.box((x0 + c0) * downsample, (y0 + rows) * downsample,
                            (x0 + c1) * downsample, (y0 + rows + 1) * downsample)
        pieces.append(shapely.union_all(boxes))
    if not pieces:
        return []
    merged = shapely.intersection(shapely.union_all(pieces),
                                  shapely.box(0, 0, geometry.width, geometry.height))
    if simplify_px > 0:
        merged = shapely.simplify(merged, simplify_px * downsample, preserve_topology=True)
    polygons = [orient(p) for p in getattr(merged, "geoms", [merged])
                if p.geom_type == "Polygon" and not p.is_empty]
    keep = [p for p in polygons if p.area * geometry.mpp ** 2 >= min_area_um2]
    return sorted(keep, key=lambda p: -p.area)


def write_lesions_geojson(path: Path, polygons: list[Any], prediction: SlidePrediction,
                          geometry: SlideGeometry, params: SegmentParams) -> None:
    """``lesions.geojson``: one classified QuPath annotation per lesion, area in µm²."""
    index = prediction.positive_index(params.positive_class)
    name = prediction.class_names[index]
    color = list(class_colors(prediction.class_names, index)[index])
    features = [{
        "type": "Feature",
        "geometry": mapping(polygon),
        "properties": {
            "objectType": "annotation",
            "name": f"{name} lesion {number}",
            "classification": {"name": name, "color": color},
            "measurements": {"area_um2": float(polygon.area * geometry.mpp ** 2),
                             "perimeter_um": float(polygon.length * geometry.mpp),
                             "mask_threshold": float(params.mask_threshold)},
        },
    } for number, polygon in enumerate(polygons, 1)]
    write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))


def _draw(image: np.ndarray, shapes: list[Any], downsample: float, rgb: tuple[int, int, int],
          thickness: int) -> None:
    for shape in shapes:
        for polygon in getattr(shape, "geoms", [shape]):
            for ring in (polygon.exterior, *polygon.interiors):
                points = np.rint(np.asarray(ring.coords)[:, :2] / downsample).astype(np.int32)
                cv2.polylines(image, [points], True, rgb, thickness, lineType=cv2.LINE_AA)


def write_outline_png(path: Path, slide: Any, prediction: SlidePrediction, grid: TileGrid,
                      polygons: list[Any], params: SegmentParams) -> None:
    """``outline.png``: the thumbnail with the segmenter's outlines (red) and the tile head's
    (cyan), the difference the segmenter makes at a glance."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    thumb = read_thumbnail(slide, max_side=params.png_max_side)
    image = np.ascontiguousarray(thumb.image)
    head = HeatmapParams(positive_class=params.positive_class, seg_threshold=params.threshold)
    tile_regions = [shape for shape, _ in segmentation_regions(
        positive_cells(prediction, grid, head), grid, geometry)]
    thickness = max(1, round(max(image.shape) / 700))
    _draw(image, tile_regions, thumb.downsample, TILE_RGB, thickness)
    _draw(image, polygons, thumb.downsample, REFINED_RGB, thickness)
    legend = [("tile head", TILE_RGB), ("pixel segmenter", REFINED_RGB)]
    unit = max(1.0, max(image.shape[:2]) / 1000)  # legend size follows the picture's
    for i, (text, rgb) in enumerate(legend):
        y = round(unit * (20 + 20 * i))
        cv2.rectangle(image, (round(6 * unit), y - round(11 * unit)),
                      (round(18 * unit), y + round(1 * unit)), rgb, -1)
        cv2.putText(image, text, (round(24 * unit), y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * unit,
                    (0, 0, 0), max(1, round(unit)), cv2.LINE_AA)
    with atomic_output(path) as tmp:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())


def segment_slide(prediction_path: str | os.PathLike, model: Any, card: dict[str, Any],
                  out_dir: str | os.PathLike, params: SegmentParams | None = None,
                  slide_path: str | os.PathLike | None = None) -> Path:
    """Write ``mask.zarr``, ``lesions.geojson``, ``outline.png`` and ``segment.json`` of one
    slide into ``out_dir`` (its own folder, written whole and atomically)."""
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
            polygons = mask_polygons(array, done.pop("written_chunks"), params.zarr_chunk,
                                     mask.downsample, params.mask_threshold, geometry,
                                     params.simplify_px, params.min_area_um2)
            write_lesions_geojson(tmp / LESIONS, polygons, prediction, geometry, params)
            write_outline_png(tmp / OUTLINE, slide, prediction, grid, polygons, params)
            summary = {
                **provenance(), "slide_id": prediction.slide_id,
                "predictions": str(prediction_path), "slide_path": str(slide_path),
                "tiles": len(flagged), "tiles_flagged": int(flagged.sum()),
                "tiles_segmented": int(selected.sum()),
                "share_segmented": float(selected.mean()) if len(selected) else 0.0,
                **done, "lesions": len(polygons),
                "lesion_area_um2": float(sum(p.area for p in polygons) * geometry.mpp ** 2),
                "net": card.get("net"), "checkpoint_sha256": card.get("checkpoint_sha256"),
                "params": dataclasses.asdict(params),
                "seconds": time.perf_counter() - started,
            }
            write_text_atomic(tmp / SUMMARY, json.dumps(summary, indent=2) + "\n")
    finally:
        slide.close()
    return out_dir


def is_segmented(folder: Path) -> bool:
    """Whether a slide's folder holds every output of ``segment``."""
    return folder.is_dir() and all((folder / name).exists() for name in OUTPUT_FILES)


def read_mask_level(folder: str | os.PathLike, max_mpp: float) -> tuple[np.ndarray, float]:
    """The coarsest pyramid level of ``folder/mask.zarr`` at or finer than ``max_mpp`` µm/px,
    as float32 probabilities in [0, 1], and its µm/px (for evaluation at a bounded size)."""
    group = zarr.open_group(str(Path(folder) / MASK), mode="r")
    base = float(group.attrs["wsi_mil"]["mask_mpp"])
    levels = len(group.attrs["multiscales"][0]["datasets"])
    k = 0
    while k + 1 < levels and base * 2 ** (k + 1) <= max_mpp * (1 + 1e-9):
        k += 1
    return group[str(k)][0].astype(np.float32) / 255.0, base * 2 ** k
