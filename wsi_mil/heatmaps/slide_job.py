"""One slide's heatmaps and exports: ``heatmaps/<slide_id>/`` from its predictions file.

The folder is written whole and atomically (as ``<slide_id>.tmp`` then renamed), so a folder at
its final name always holds every output that was asked for, and a killed run leaves nothing
that looks finished. ``heatmap.json`` inside records the parameters and sources, so the
pictures can be told apart and redone a year later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from tiling.lattice import SlideGeometry, TileGrid
from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.export.geojson import write_segmentation_geojson, write_tiles_geojson
from wsi_mil.export.ome_zarr import write_heatmap_zarr
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import positive_cells
from wsi_mil.mil.predictions import SlidePrediction, read_prediction

#: files each format puts in a slide's folder (what "complete" means for a re-run)
FORMAT_FILES = {
    "png": ("overlay.png", "segmentation.png"),
    "zarr": ("heatmap.zarr",),
    "geojson": ("tiles.geojson", "segmentation.geojson"),
}
SUMMARY = "heatmap.json"


def expected_files(params: HeatmapParams) -> list[str]:
    """Names a complete slide folder holds for these parameters."""
    names = [SUMMARY]
    for fmt in params.formats:
        names += FORMAT_FILES[fmt]
    if "png" in params.formats and params.topk > 0:
        names.append("topk.png")
        if params.rollout:
            names += ["topk_rollout.png", "topk_rollout.npz"]
    return names


def is_complete(folder: Path, params: HeatmapParams) -> bool:
    """Whether a slide's folder holds every output these parameters ask for."""
    return folder.is_dir() and all((folder / name).exists() for name in expected_files(params))


def tissue_path_for(prediction: SlidePrediction, tiles_dir: str | os.PathLike | None) -> Path | None:
    """The tiling step's ``<slide_id>.tissue.geojson``: in ``tiles_dir``, else beside the tiles
    file the bag came from (recorded as ``tiles_file``); None when there is none."""
    name = f"{prediction.slide_id}.tissue.geojson"
    candidates = []
    if tiles_dir is not None:
        candidates.append(Path(tiles_dir) / name)
    if prediction.attrs.get("tiles_file"):
        candidates.append(Path(str(prediction.attrs["tiles_file"])).with_name(name))
    return next((p for p in candidates if p.is_file()), None)


def load_tissue(path: Path | None) -> Any:
    """Level-0 tissue (Multi)Polygon from the tiling step, or None."""
    if path is None:
        return None
    from tiling.tissue_geojson import read_tissue_geojson

    return read_tissue_geojson(path)


def heatmap_slide(
    prediction_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: HeatmapParams,
    slide_path: str | os.PathLike | None = None,
    tiles_dir: str | os.PathLike | None = None,
    encoder_name: str | None = None,
    encoder_weights: str | None = None,
    explanations_dir: str | os.PathLike | None = None,
) -> Path:
    """Write every output ``params`` asks for into ``out_dir`` (the slide's own folder).

    With ``explanations_dir`` (the explain stage's output), the slide's stored explanation maps
    can be shown too: ``params.score`` may name a method (``integrated_gradients``, ...).

    ``slide_path`` defaults to the ``slide_path`` recorded in the predictions; it is needed
    only for the PNGs. With ``params.rollout`` the encoder named (default: the one recorded in
    the predictions, with its recorded weights) is loaded for the top-k rollout maps.
    """
    out_dir = Path(out_dir)
    prediction = read_prediction(prediction_path)
    if explanations_dir is not None:
        from wsi_mil.explain.store import EXPLANATIONS, read_explanations

        maps, _ = read_explanations(Path(explanations_dir) / prediction.slide_id / EXPLANATIONS)
        if any(len(v) != len(prediction.coords) for v in maps.values()):
            raise ValueError(f"{explanations_dir}: the explanations of {prediction.slide_id} "
                             f"do not have its {len(prediction.coords)} tiles")
        prediction.extra_scores.update(maps)
    geometry = SlideGeometry.from_attrs(prediction.attrs, str(prediction_path))
    grid = TileGrid.from_coords(prediction.coords, geometry)
    tissue_path = tissue_path_for(prediction, tiles_dir)
    tissue = load_tissue(tissue_path)
    slide_path = Path(slide_path or prediction.attrs.get("slide_path", ""))

    with atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if "png" in params.formats:
            _write_pngs(tmp, prediction, params, slide_path, geometry, grid, tissue,
                        encoder_name, encoder_weights)
        if "zarr" in params.formats:
            write_heatmap_zarr(tmp / "heatmap.zarr", prediction, params, grid,
                               extra_attrs={"predictions": str(prediction_path)})
        if "geojson" in params.formats:
            write_tiles_geojson(tmp / "tiles.geojson", prediction, params)
            write_segmentation_geojson(tmp / "segmentation.geojson", prediction, grid,
                                       positive_cells(prediction, grid, params), params)
        summary = {
            **provenance(),
            "slide_id": prediction.slide_id,
            "predictions": str(prediction_path),
            "slide_path": str(slide_path) if "png" in params.formats else None,
            "tissue": str(tissue_path) if tissue_path else None,
            "predicted_label": prediction.predicted_label,
            "probs": dict(zip(prediction.class_names, map(float, prediction.probs))),
            "tiles": len(prediction.coords),
            "params": dataclasses.asdict(params),
        }
        write_text_atomic(tmp / SUMMARY, json.dumps(summary, indent=2))
    return out_dir


def _write_pngs(folder: Path, prediction: SlidePrediction, params: HeatmapParams,
                slide_path: Path, geometry: SlideGeometry, grid: TileGrid, tissue: Any,
                encoder_name: str | None, encoder_weights: str | None) -> None:
    from tiling.reader import TileReader
    from tiling.slide import ThumbnailStrips, open_slide
    from wsi_mil.heatmaps.render import (
        STREAM_STRIP_PIXELS,
        write_overlay_png,
        write_segmentation_png,
        write_topk_png,
    )

    slide = open_slide(slide_path)
    try:
        if tuple(slide.dimensions) != (geometry.width, geometry.height):
            raise ValueError(f"{slide_path}: slide is {slide.dimensions[0]}x{slide.dimensions[1]} "
                             f"px but the predictions of {prediction.slide_id} were made on a "
                             f"{geometry.width}x{geometry.height} px slide (wrong --slides?)")
        # each picture is streamed from the slide band by band, never held whole
        if params.mpp is not None:
            thumbnail = ThumbnailStrips(slide, target_mpp=params.mpp, slide_mpp=geometry.mpp,
                                        strip_pixels=STREAM_STRIP_PIXELS)
        else:
            thumbnail = ThumbnailStrips(slide, max_side=params.max_side,
                                        strip_pixels=STREAM_STRIP_PIXELS)
        write_overlay_png(folder / "overlay.png", prediction, thumbnail, params, tissue, grid)
        write_segmentation_png(folder / "segmentation.png", prediction, thumbnail, params,
                               tissue, grid)
        if params.topk > 0:
            encoder = None
            if params.rollout:
                encoder = _load_encoder(prediction, encoder_name, encoder_weights)
            reader = TileReader(slide, prediction.attrs)
            write_topk_png(folder / "topk.png", prediction, reader.read, params, encoder)
    finally:
        slide.close()


def _load_encoder(prediction: SlidePrediction, name: str | None, weights: str | None) -> Any:
    from features.registry import create_encoder

    name = name or prediction.attrs.get("encoder")
    if not name:
        raise ValueError(f"{prediction.slide_id}: rollout needs an encoder; the predictions do "
                         f"not record one, pass --encoder (and --weights)")
    if weights is None and name == prediction.attrs.get("encoder"):
        recorded = prediction.attrs.get("weights")
        weights = str(recorded) if recorded and Path(str(recorded)).is_file() else None
    return create_encoder(name, weights=weights)
