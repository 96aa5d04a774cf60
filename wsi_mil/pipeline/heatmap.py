"""The heatmap stage: overlays, outlines, top-k tiles, zarr and QuPath GeoJSON per slide.

One folder per slide, ``OUT/<slide_id>/``, from ``PREDICTIONS/<slide_id>.h5``; the batch skips
slides whose folder already holds every requested output and records failures in
``OUT/failures.csv``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.pipeline.executor_params import ExecutorParams

STAGE = "heatmap"



def _slides_by_id(slides_dir: str | os.PathLike | None) -> dict[str, Path]:
    if slides_dir is None:
        return {}
    from tiling.discover import find_slides, slide_id_for

    return {slide_id_for(path): path for path in find_slides([slides_dir], recursive=True)}



def heatmap_slides(
    predictions_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: HeatmapParams,
    slides_dir: str | os.PathLike | None = None,
    tiles_dir: str | os.PathLike | None = None,
    encoder: str | None = None,
    weights: str | None = None,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
    explanations_dir: str | os.PathLike | None = None,
) -> BatchResult:
    """Heatmaps and exports for every ``<slide_id>.h5`` in ``predictions_dir``.

    ``explanations_dir`` (the explain stage's output) lets ``params.score`` name a stored
    explanation method.

    Slides are found in ``slides_dir`` by slide id (searched recursively), else at the
    ``slide_path`` each predictions file records. A slide missing from ``slides_dir`` fails
    (only when PNGs are asked for, the only outputs that read pixels).
    """
    from wsi_mil.heatmaps.slide_job import heatmap_slide, is_complete

    predictions_dir, out_dir = Path(predictions_dir), Path(out_dir)
    if not predictions_dir.is_dir():
        raise FileNotFoundError(f"{predictions_dir}: predictions folder not found")
    slides = _slides_by_id(slides_dir)
    jobs = []
    for path in sorted(predictions_dir.glob("*.h5")):
        slide_id = path.stem
        slide_path = slides.get(slide_id)
        if slides_dir is not None and slide_path is None and "png" in params.formats:
            job = functools.partial(_missing_slide, path, str(slides_dir))
        else:
            job = functools.partial(heatmap_slide, path, out_dir / slide_id, params,
                                    slide_path=slide_path, tiles_dir=tiles_dir,
                                    encoder_name=encoder, encoder_weights=weights,
                                    explanations_dir=explanations_dir)
        jobs.append(SlideJob(slide=slide_id, output=out_dir / slide_id, run=job))
    return run_batch(jobs, stage=STAGE, failures_csv=out_dir / "failures.csv",
                     is_complete=functools.partial(is_complete, params=params),
                     workers=workers, overwrite=overwrite, executor=executor)



def _missing_slide(prediction_path: Path, slides_dir: str) -> None:
    """The job of a slide absent from ``--slides``: report a bad predictions file first."""
    from wsi_mil.mil.predictions import read_prediction

    slide_id = read_prediction(prediction_path).slide_id
    raise FileNotFoundError(f"{slides_dir}: no slide with id {slide_id!r} (the PNGs need it)")

