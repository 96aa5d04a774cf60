"""The heatmap stage: overlays, outlines, top-k tiles, zarr and QuPath GeoJSON per slide.

One folder per slide, ``PROJECT/heatmaps/<slide_id>/``, from ``PREDICTIONS/<slide_id>.h5``; the
batch skips slides whose folder already holds every requested output and records failures in
``PROJECT/failures.csv``.

Every task gets the same pictures where they apply: ``overlay.png`` (attention), ``topk.png``,
the exports, and ``segmentation.png`` / ``segmentation.geojson`` where the run has a segmentation
head (classification and multilabel; survival and regression have none). Besides, one overlay
per output, ``overlay_<name>.png``: each class's or target's own attention branch (models with
one per output), else, for subtypes and multilabel targets, that output's one-vs-rest tile
probability, and for survival and regression the tile risk or value (the output of a bag of the
tile alone). A patient-level run's files are per slide already, so are its pictures.

One slide's folder is written whole and atomically (as ``<slide_id>.tmp`` then renamed), so a
folder at its final name always holds every output that was asked for, and a killed run leaves
nothing that looks finished. ``heatmap.json`` inside records the parameters and sources, so the
pictures can be told apart and redone a year later. The job lives here, above both the
pictures (:mod:`wsi_mil.heatmaps`) and the exports (:mod:`wsi_mil.export`) it combines.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiling.lattice import SlideGeometry, TileGrid
from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import InputError, MissingInputError
from wsi_mil.export.geojson import write_segmentation_geojson, write_tiles_geojson
from wsi_mil.export.ome_zarr import write_heatmap_zarr
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import load_tissue, positive_cells, tissue_path_for
from wsi_mil.mil.predictions import SlidePrediction, read_prediction
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

STAGE = "heatmap"
#: files each format puts in a slide's folder (what "complete" means for a re-run)
FORMAT_FILES = {
    "png": ("overlay.png", "segmentation.png"),
    "zarr": ("heatmap.zarr",),
    "geojson": ("tiles.geojson", "segmentation.geojson"),
}
SUMMARY = "heatmap.json"


def _slides_by_id(slides_dir: str | os.PathLike | None) -> dict[str, Path]:
    if slides_dir is None:
        return {}
    from tiling.discover import find_slides, slide_id_for

    return {slide_id_for(path): path for path in find_slides([slides_dir], recursive=True)}


def heatmap_slides(
    predictions_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: HeatmapParams | None = None,
    slides_dir: str | os.PathLike | None = None,
    tiles_dir: str | os.PathLike | None = None,
    encoder: str | None = None,
    weights: str | None = None,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
    explanations_dir: str | os.PathLike | None = None,
) -> BatchResult:
    """Heatmaps and exports for every ``<slide_id>.h5`` in ``predictions_dir``, into the project
    ``out``'s ``heatmaps/<slide_id>/``.

    ``explanations_dir`` (the explain stage's output) lets ``params.score`` name a stored
    explanation method.

    Slides are found in ``slides_dir`` by slide id (searched recursively), else at the
    ``slide_path`` each predictions file records. A slide missing from ``slides_dir`` fails
    (only when PNGs are asked for, the only outputs that read pixels).
    """
    params = params or HeatmapParams()
    project = Project.of(out)
    predictions_dir, out_dir = Path(predictions_dir), project.heatmaps_dir
    if not predictions_dir.is_dir():
        raise MissingInputError(f"{predictions_dir}: predictions folder not found")
    slides = _slides_by_id(slides_dir)
    jobs = []
    for path in sorted(predictions_dir.glob("*.h5")):
        slide_id = path.stem
        slide_path = slides.get(slide_id)
        job: Callable[[], object]
        if slides_dir is not None and slide_path is None and "png" in params.formats:
            job = functools.partial(_missing_slide, path, str(slides_dir))
        else:
            job = functools.partial(
                heatmap_slide,
                path,
                out_dir / slide_id,
                params,
                slide_path=slide_path,
                tiles_dir=tiles_dir,
                encoder_name=encoder,
                encoder_weights=weights,
                explanations_dir=explanations_dir,
            )
        jobs.append(SlideJob(slide=slide_id, output=out_dir / slide_id, run=job))
    return run_batch(
        jobs,
        stage=STAGE,
        failures_csv=project.failures_csv,
        is_complete=functools.partial(is_complete, params=params),
        workers=workers,
        overwrite=overwrite,
        executor=executor,
    )


def _missing_slide(prediction_path: Path, slides_dir: str) -> None:
    """The job of a slide absent from ``--slides``: report a bad predictions file first."""
    from wsi_mil.mil.predictions import read_prediction

    slide_id = read_prediction(prediction_path).slide_id
    raise MissingInputError(f"{slides_dir}: no slide with id {slide_id!r} (the PNGs need it)")


# --------------------------------------------------------------------------- one slide


def expected_files(params: HeatmapParams, task: str = "classification") -> list[str]:
    """Names a complete slide folder holds for these parameters (a survival or regression run
    has no segmentation files)."""
    names = [SUMMARY]
    for fmt in params.formats:
        names += [
            n
            for n in FORMAT_FILES[fmt]
            if task in ("classification", "multilabel") or "segmentation" not in n
        ]
    if "png" in params.formats and params.topk > 0:
        names.append("topk.png")
        if params.rollout:
            names += ["topk_rollout.png", "topk_rollout.npz"]
    return names


def is_complete(folder: Path, params: HeatmapParams) -> bool:
    """Whether a slide's folder holds every output these parameters ask for (for the task its
    ``heatmap.json`` records)."""
    if not (folder / SUMMARY).is_file():
        return False
    try:
        task = json.loads((folder / SUMMARY).read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError):
        return False
    return all(
        (folder / name).exists() for name in expected_files(params, task or "classification")
    )


def output_maps(prediction: SlidePrediction) -> dict[str, str]:
    """file name -> score of the per-output overlays (see the module docstring)."""
    import re

    branches = prediction.branch_scores()
    prediction.extra_scores.update(branches)
    one_per_output = (
        prediction.task in ("survival", "regression")
        or prediction.attrs.get("segmentation") == "one_vs_rest"
    )
    if not branches and not one_per_output:
        return {}
    out = {}
    for name in prediction.class_names:
        score = f"attention:{name}" if branches else name
        out[f"overlay_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"] = score
    return out


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
    from features.bag import with_slide_attrs

    out_dir = Path(out_dir)
    prediction = read_prediction(prediction_path)
    prediction.attrs = with_slide_attrs(prediction.attrs, slide_path)  # from a TRIDENT bag
    explanation = None
    if explanations_dir is not None:
        from wsi_mil.explain.store import EXPLANATIONS, read_explanations

        stored = read_explanations(Path(explanations_dir) / prediction.slide_id / EXPLANATIONS)
        maps, attrs = stored.maps, stored.attrs
        if any(len(v) != len(prediction.coords) for v in maps.values()):
            raise InputError(
                f"{explanations_dir}: the explanations of {prediction.slide_id} "
                f"do not have its {len(prediction.coords)} tiles"
            )
        prediction.extra_scores.update(maps)
        explanation = explanation_trust(
            params.score, maps, attrs, prediction, Path(explanations_dir)
        )
    geometry = SlideGeometry.from_attrs(prediction.attrs, str(prediction_path))
    grid = TileGrid.from_coords(prediction.coords, geometry)
    tissue_path = tissue_path_for(prediction, tiles_dir)
    tissue = load_tissue(tissue_path)
    slide_path = Path(slide_path or prediction.attrs.get("slide_path", ""))

    overlays = output_maps(prediction)
    with atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if "png" in params.formats:
            _write_pngs(
                tmp,
                prediction,
                params,
                slide_path,
                geometry,
                grid,
                tissue,
                encoder_name,
                encoder_weights,
                overlays,
                None
                if explanation is None
                else (explanation["caption"], explanation["fails_sanity"]),
            )
        if "zarr" in params.formats:
            write_heatmap_zarr(
                tmp / "heatmap.zarr",
                prediction,
                params,
                grid,
                extra_attrs={"predictions": str(prediction_path)},
            )
        if "geojson" in params.formats:
            write_tiles_geojson(tmp / "tiles.geojson", prediction, params)
            if prediction.has_segmentation:
                write_segmentation_geojson(
                    tmp / "segmentation.geojson",
                    prediction,
                    grid,
                    positive_cells(prediction, grid, params),
                    params,
                )
        summary = {
            **provenance(),
            "slide_id": prediction.slide_id,
            "predictions": str(prediction_path),
            "slide_path": str(slide_path) if "png" in params.formats else None,
            "tissue": str(tissue_path) if tissue_path else None,
            "predicted_label": prediction.predicted_label,
            "task": prediction.task,
            "probs": dict(zip(prediction.class_names, map(float, prediction.probs))),
            "per_output": overlays if "png" in params.formats else {},
            "tiles": len(prediction.coords),
            "params": dataclasses.asdict(params),
            "explanation": explanation,
        }
        write_text_atomic(tmp / SUMMARY, json.dumps(summary, indent=2))
    return out_dir


def explanation_trust(
    score: str,
    maps: dict[str, Any],
    attrs: dict[str, Any],
    prediction: SlidePrediction,
    explanations_dir: Path,
) -> dict[str, Any] | None:
    """What the heatmap says beside an explanation map: the method, its faithfulness and
    sanity figures on this slide, the fold that explained it and the run's recommended method
    (``trust.json`` of the explain stage); None when the map shown is not one the explain stage
    scored (the predictions' attention of an ensemble, or of another fold, is not)."""
    from wsi_mil.explain.trust import fails_sanity, slide_trust, trust_parts

    if score not in maps:
        return None
    fold = int(attrs.get("fold", -1))
    same_model = list(prediction.attrs.get("folds", [])) == [fold] and str(
        prediction.attrs.get("run_path")
    ) == str(attrs.get("run_path"))
    if score == "attention" and not same_model:
        return None  # the overlay shows the predictions' attention, not this fold's
    scores = attrs["scores"].get(score, {})
    sample = "in sample" if bool(attrs.get("in_sample", False)) else "out of sample"
    recommended = None
    trust_path = explanations_dir / "trust.json"
    if trust_path.is_file():
        try:
            recommended = json.loads(trust_path.read_text(encoding="utf-8")).get("recommended")
        except (OSError, ValueError):
            recommended = None
    caption = trust_parts(score, scores)
    caption[-1] += f"  \u00b7  fold {fold}, {sample}" + (
        f"  \u00b7  recommended for this run: {recommended}" if recommended else ""
    )
    return {
        "method": score,
        "caption": caption,
        "fails_sanity": fails_sanity(scores),
        "figures": slide_trust(scores),
        "fold": fold,
        "in_sample": sample == "in sample",
        "recommended": recommended,
    }


def _write_pngs(
    folder: Path,
    prediction: SlidePrediction,
    params: HeatmapParams,
    slide_path: Path,
    geometry: SlideGeometry,
    grid: TileGrid,
    tissue: Any,
    encoder_name: str | None,
    encoder_weights: str | None,
    maps: dict[str, str] | None = None,
    trust: tuple[list[str], bool] | None = None,
) -> None:
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
            raise InputError(
                f"{slide_path}: slide is {slide.dimensions[0]}x{slide.dimensions[1]} "
                f"px but the predictions of {prediction.slide_id} were made on a "
                f"{geometry.width}x{geometry.height} px slide (wrong --slides?)"
            )
        # each picture is streamed from the slide band by band, never held whole
        if params.mpp is not None:
            thumbnail = ThumbnailStrips(
                slide,
                target_mpp=params.mpp,
                slide_mpp=geometry.mpp,
                strip_pixels=STREAM_STRIP_PIXELS,
            )
        else:
            thumbnail = ThumbnailStrips(
                slide, max_side=params.max_side, strip_pixels=STREAM_STRIP_PIXELS
            )
        write_overlay_png(
            folder / "overlay.png", prediction, thumbnail, params, tissue, grid, trust
        )
        if prediction.has_segmentation:
            write_segmentation_png(
                folder / "segmentation.png", prediction, thumbnail, params, tissue, grid
            )
        for name, score in (maps or {}).items():  # attention or outputs: no trust caption
            write_overlay_png(
                folder / name,
                prediction,
                thumbnail,
                dataclasses.replace(params, score=score),
                tissue,
                grid,
            )
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
        raise InputError(
            f"{prediction.slide_id}: rollout needs an encoder; the predictions do "
            f"not record one, pass --encoder (and --weights)"
        )
    if weights is None and name == prediction.attrs.get("encoder"):
        recorded = prediction.attrs.get("weights")
        weights = str(recorded) if recorded and Path(str(recorded)).is_file() else None
    return create_encoder(name, weights=weights)
