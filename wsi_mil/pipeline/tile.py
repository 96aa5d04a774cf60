"""The tiling stage over a folder of slides: one tiles file per slide in the project's
``tiles/``, failures recorded in its ``failures.csv``."""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

from tiling.discover import SlideDiscoveryError, check_unique_ids, find_slides
from tiling.params import TilingParams
from tiling.pipeline import is_tiled, summary_line, tile_slide, tiling_outputs
from tiling.slide import read_mpp_csv
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

STAGE = "tile"
logger = logging.getLogger(__name__)


def tile_and_report(
    slide_path: Path, out_dir: Path, params: TilingParams, mpp: float | None
) -> Path:
    """Tile one slide and print its line (tissue area, tiles kept), so a slide that lost its
    tissue shows in the log as it happens, not only at ``extract``."""
    path = tile_slide(slide_path, out_dir, params, mpp)
    logger.info(summary_line(path))
    return path


def no_slides_message(slides: list[str | os.PathLike], recursive: bool) -> str:
    """Why nothing was found, and the remedy when the slides lie in subfolders: an empty batch
    is a mistake in the inputs, never "0 done"."""
    names = ", ".join(str(s) for s in slides) or "(no input)"
    message = f"{names}: no slides found"
    if not recursive:
        below = find_slides(slides, recursive=True)
        if below:
            message += (
                f"; {len(below)} in subfolders (e.g. {below[0]}): add --recursive "
                "(slides.recursive: true, or recursive=True)"
            )
    return message


def tile_slides(
    slides: list[str | os.PathLike],
    *,
    out: str | os.PathLike | Project,
    params: TilingParams | None = None,
    recursive: bool = False,
    mpp: float | None = None,
    mpp_csv: str | os.PathLike | None = None,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
) -> BatchResult:
    """Tile every slide found in ``slides`` (files or folders) into the project ``out``'s
    ``tiles/``; see the module docstring.

    The mpp override of a slide is its row in ``mpp_csv`` if any, else ``mpp`` if given, else
    the slide's own metadata. Raises SlideDiscoveryError / SlideMppError for bad inputs (before
    any slide is tiled); errors of single slides go to ``failures.csv``.
    """
    params = params or TilingParams()
    project = Project.of(out)
    out_dir = project.root  # tile_slide writes its tiles/ (the project's: tiling knows the name)
    previews = project.tiles_dir.resolve()  # only our own previews, not slides kept in out
    found = [
        s for s in find_slides(slides, recursive=recursive) if previews not in s.resolve().parents
    ]  # never tile our own previews
    if not found:
        raise SlideDiscoveryError(no_slides_message(slides, recursive))
    by_id = check_unique_ids(found)
    overrides = read_mpp_csv(mpp_csv) if mpp_csv is not None else {}
    unknown = sorted(set(overrides) - set(by_id))
    if unknown:
        logger.warning(
            "warning: %s lists slides not among the inputs: %s%s",
            mpp_csv,
            ", ".join(unknown[:10]),
            " ..." if len(unknown) > 10 else "",
        )
    jobs = [
        SlideJob(
            slide=str(path),
            output=tiling_outputs(out_dir, slide_id).tiles,
            run=partial(tile_and_report, path, out_dir, params, overrides.get(slide_id, mpp)),
        )
        for slide_id, path in by_id.items()
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_batch(
        jobs,
        stage=STAGE,
        failures_csv=project.failures_csv,
        is_complete=is_tiled,
        workers=workers,
        overwrite=overwrite,
        executor=executor,
    )
