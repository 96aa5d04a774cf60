"""The cohort stage: write a synthetic cohort's slides in parallel, then its labels CSVs:
``labels.csv`` (normal/tumor), and ``labels_survival.csv`` and ``labels_regression.csv`` whose
times and targets depend on each slide's lesion burden (docs/tasks.md)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from tiling.storage import write_text_atomic
from wsi_mil.pipeline.batch import SlideJob, run_batch
from wsi_mil.project import Project
from wsi_mil.synthetic.cohort import (
    Cohort,
    labels_csv_text,
    plan_cohort,
    task_labels_csv_text,
    write_slide,
)
from wsi_mil.synthetic.params import CohortParams


def generate_cohort(
    out_dir: str | os.PathLike, params: CohortParams = CohortParams(), overwrite: bool = False
) -> Cohort:
    """Write a synthetic cohort under ``out_dir``; slides already there are kept (they are
    written atomically and deterministically, so an existing file is the same slide)."""
    root = Path(out_dir)
    planned = plan_cohort(root, params)
    slides = [slide for slide, _ in planned]
    jobs = [
        SlideJob(slide.slide_id, slide.path, partial(write_slide, slide, seed, params))
        for slide, seed in planned
    ]
    by_path = {slide.path: slide for slide in slides}

    def complete(path: Path) -> bool:
        annotation = by_path[path].annotation
        return path.exists() and (annotation is None or annotation.exists())

    result = run_batch(
        jobs,
        stage="cohort",
        failures_csv=Project(root).failures_csv,
        is_complete=complete,
        workers=params.workers,
        overwrite=overwrite,
    )
    if result.failed:
        raise RuntimeError(
            f"{root}: generating {len(result.failed)} slide(s) failed: {result.failed}"
        )
    labels_csv = root / "labels.csv"
    write_text_atomic(labels_csv, labels_csv_text(slides))
    for task in ("survival", "regression"):
        write_text_atomic(root / f"labels_{task}.csv", task_labels_csv_text(planned, params, task))
    return Cohort(root=root, slides=tuple(slides), labels_csv=labels_csv)
