"""The prediction stage: every feature bag of a folder predicted by a trained run, into the
project's ``predictions/<slide_id>.h5`` and ``predictions.csv``.

``predictions.csv`` has one row per slide: ``slide_id, label, predicted_label, in_sample,
threshold`` and the task's outputs, ``prob_<class>`` (classification), ``prob_<target>``
(multilabel; ``threshold`` holds each target's, ``;``-separated), ``risk`` (survival; the
threshold is the risk-group cut), ``value`` (regression; no threshold); a run trained on
patient-level bags adds ``patient_id`` (every slide of a patient carries the patient's outputs).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import InputError
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

if TYPE_CHECKING:
    from wsi_mil.mil.params import PredictParams


def predictions_csv_text(
    pred_dir: Path, slide_ids: list[str], labels: dict[str, str] | None
) -> str:
    """``slide_id, label, predicted_label, in_sample, threshold, prob_<class>...`` for the
    slides predicted (``in_sample``: a model that predicted the slide had trained on it;
    ``threshold``: the positive-class cut that decided it, its fold's own or the ensemble's).

    Reads only the files' attributes, so it stays quick for large slides.
    """
    import numpy as np

    from wsi_mil.mil.predictions import read_prediction_attrs

    buffer = io.StringIO()
    writer = None
    for slide_id in slide_ids:
        path = pred_dir / f"{slide_id}.h5"
        if not path.is_file():
            continue
        attrs = read_prediction_attrs(path)
        task = attrs.get("task", "classification")
        patient = attrs.get("bag_level") == "patient"
        if writer is None:
            header = ["slide_id", "label", "predicted_label", "in_sample", "threshold"]
            if task in ("classification", "multilabel"):
                header += [f"prob_{c}" for c in attrs["class_names"]]
            else:
                header += ["risk" if task == "survival" else "value"]
            header += ["patient_id"] if patient else []
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
        label = (labels or {}).get(slide_id, "")
        in_sample = "true" if attrs.get("in_sample") else "false"
        threshold = attrs.get("threshold")
        if isinstance(threshold, (list, np.ndarray)):
            threshold = ";".join(f"{float(t):.6f}" for t in threshold)
        elif threshold is not None:
            threshold = f"{float(threshold):.6f}"
        writer.writerow(
            [
                slide_id,
                label,
                attrs["predicted_label"],
                in_sample,
                threshold or "",
                *(f"{float(p):.6f}" for p in np.atleast_1d(attrs["probs"])),
                *([attrs.get("patient_id", "")] if patient else []),
            ]
        )
    return buffer.getvalue()


def predict_slides(
    run_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: PredictParams | None = None,
    labels_csv: str | os.PathLike | None = None,
    workers: int = 1,
    overwrite: bool = False,
    split: str | None = None,
    slide_ids: Collection[str] | None = None,
    executor: ExecutorParams | None = None,
    slides_dir: str | os.PathLike | None = None,
) -> BatchResult:
    """Predict every bag of ``features_dir`` into the project ``out``, or only the slides of ``split`` in the labels CSV
    (e.g. ``test``: the held-out slides), or only ``slide_ids``; skip those already predicted
    by this run. ``slides_dir`` (searched by slide id) gives bags that do not record their
    slide, as TRIDENT's do not, its path, size and µm/px, so heatmaps can be drawn."""
    from tiling.storage import write_text_atomic
    from wsi_mil.mil.bags import find_bags
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.mil.params import PredictParams
    from wsi_mil.mil.predict import cached_run, is_current_prediction, predict_slide

    params = params or PredictParams()
    project = Project.of(out)
    pred_dir = project.predictions_dir
    run = cached_run(run_dir, params.fold, params.device)
    task = run.task
    labels = None
    table = None
    if labels_csv is not None:
        table = read_labels(labels_csv, task=task.kind, targets=run_targets(run))
        labels = {r.slide_id: r.label for r in table.rows}
    bags = find_bags(features_dir)
    if split is not None:
        slide_ids = split_slide_ids(labels_csv, split, task.kind, run_targets(run))
    if slide_ids is not None:
        bags = {slide_id: path for slide_id, path in bags.items() if slide_id in set(slide_ids)}
    slides = {}
    if slides_dir is not None:
        from tiling.discover import find_slides, slide_id_for

        slides = {slide_id_for(p): p for p in find_slides([slides_dir], recursive=True)}
    if run.bag_level == "patient":
        jobs, members = patient_jobs(run_dir, run, table, bags, slides, pred_dir, params)
        complete = partial(
            _patient_complete, members=members, checkpoint_sha256=run.checkpoint_sha256
        )
    else:
        jobs = [
            SlideJob(
                slide_id,
                pred_dir / f"{slide_id}.h5",
                partial(
                    predict_slide,
                    path,
                    pred_dir / f"{slide_id}.h5",
                    run_dir,
                    params,
                    slides.get(slide_id),
                ),
            )
            for slide_id, path in bags.items()
        ]
        complete = partial(is_current_prediction, checkpoint_sha256=run.checkpoint_sha256)
    result = run_batch(
        jobs,
        stage="predict",
        failures_csv=project.failures_csv,
        is_complete=complete,
        workers=workers,
        overwrite=overwrite,
        executor=executor,
        unit=run.bag_level,  # "slide", or "patient": one job per patient
    )
    text = predictions_csv_text(pred_dir, list(bags), labels)
    if text:
        write_text_atomic(project.predictions_csv, text)
    return result


def run_targets(run: Any) -> tuple[str, ...]:
    """The labels CSV columns a run's task reads (multilabel targets, the regression column)."""
    if run.task.kind in ("multilabel", "regression"):
        return tuple(run.class_names)
    return ()


def patient_jobs(
    run_dir: str | os.PathLike,
    run: Any,
    table: Any,
    bags: dict[str, Path],
    slides: dict[str, Path],
    pred_dir: Path,
    params: PredictParams,
) -> tuple[list[SlideJob], dict[Path, list[Path]]]:
    """(one job per patient of a patient-level run, job output -> the files it writes): a job
    predicts the patient's slides with a bag, in the labels CSV's order (as training pooled
    them); its output is the patient's first slide's file."""
    from wsi_mil.mil.predict import predict_patient_slides

    if table is None or not table.has_patient_id:
        raise InputError(
            f"{run_dir} was trained on patient-level bags: predict needs --labels "
            f"with a patient_id column to pool each patient's slides"
        )
    members: dict[str, list[str]] = {}
    for row in table.rows:
        if row.slide_id in bags:
            members.setdefault(row.patient_id, []).append(row.slide_id)
    unlisted = sorted(set(bags) - {s for ids in members.values() for s in ids})
    if unlisted:
        raise InputError(
            f"{len(unlisted)} bag(s) have no patient in {table.path} (e.g. "
            f"{unlisted[:3]}): a patient-level run pools slides by patient_id"
        )
    jobs, files = [], {}
    for patient, ids in members.items():
        parts = [(s, bags[s], slides.get(s)) for s in ids]
        jobs.append(
            SlideJob(
                patient,
                pred_dir / f"{ids[0]}.h5",
                partial(predict_patient_slides, parts, patient, pred_dir, run_dir, params),
            )
        )
        files[pred_dir / f"{ids[0]}.h5"] = [pred_dir / f"{s}.h5" for s in ids]
    return jobs, files


def _patient_complete(
    output: Path, members: dict[Path, list[Path]], checkpoint_sha256: str
) -> bool:
    """Whether every slide file of a patient's job was written by these checkpoints."""
    from wsi_mil.mil.predict import is_current_prediction

    return all(
        is_current_prediction(path, checkpoint_sha256) for path in members.get(output, [output])
    )


def split_slide_ids(
    labels_csv: str | os.PathLike | None,
    split: str,
    task: str = "classification",
    targets: tuple[str, ...] = (),
) -> list[str]:
    """The slides of one ``split`` of a labels CSV; an error naming the splits present if none."""
    from wsi_mil.mil.labels import read_labels

    if labels_csv is None:
        raise InputError(f"predicting split {split!r} needs the labels CSV that holds the split")
    table = read_labels(labels_csv, task=task, targets=targets)
    ids = [row.slide_id for row in table.rows if row.split == split]
    if not ids:
        splits = sorted({str(row.split) for row in table.rows})
        raise InputError(
            f"{labels_csv}: no slide in split {split!r}; splits present: {', '.join(splits)}"
        )
    return ids
