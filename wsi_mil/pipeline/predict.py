"""The prediction stage: every feature bag of a folder predicted by a trained run."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_mil.errors import InputError
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.pipeline.executor_params import ExecutorParams

if TYPE_CHECKING:
    from wsi_mil.mil.params import PredictParams

def predictions_csv_text(pred_dir: Path, slide_ids: list[str],
                         labels: dict[str, str] | None) -> str:
    """``slide_id, label, predicted_label, in_sample, threshold, prob_<class>...`` for the
    slides predicted (``in_sample``: a model that predicted the slide had trained on it;
    ``threshold``: the positive-class cut that decided it, its fold's own or the ensemble's).

    Reads only the files' attributes, so it stays quick for large slides.
    """
    import h5py

    from tiling.storage import read_attrs

    buffer = io.StringIO()
    writer = None
    for slide_id in slide_ids:
        path = pred_dir / f"{slide_id}.h5"
        if not path.is_file():
            continue
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
        if writer is None:
            header = ["slide_id", "label", "predicted_label", "in_sample", "threshold"]
            header += [f"prob_{c}" for c in attrs["class_names"]]
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
        label = (labels or {}).get(slide_id, "")
        in_sample = "true" if attrs.get("in_sample") else "false"
        writer.writerow([slide_id, label, attrs["predicted_label"], in_sample,
                         f"{float(attrs['threshold']):.6f}",
                         *(f"{float(p):.6f}" for p in attrs["probs"])])
    return buffer.getvalue()


def predict_slides(run_dir: str | os.PathLike, features_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, params: PredictParams | None = None, *,
                   labels_csv: str | os.PathLike | None = None, workers: int = 1,
                   overwrite: bool = False, split: str | None = None,
                   slide_ids: Collection[str] | None = None,
                   executor: ExecutorParams | None = None,
                   slides_dir: str | os.PathLike | None = None) -> BatchResult:
    """Predict every bag of ``features_dir``, or only the slides of ``split`` in the labels CSV
    (e.g. ``test``: the held-out slides), or only ``slide_ids``; skip those already predicted
    by this run. ``slides_dir`` (searched by slide id) gives bags that do not record their
    slide, as TRIDENT's do not, its path, size and µm/px, so heatmaps can be drawn."""
    from tiling.storage import write_text_atomic
    from wsi_mil.mil.bags import find_bags
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.mil.params import PredictParams
    from wsi_mil.mil.predict import cached_run, is_current_prediction, predict_slide

    params = params or PredictParams()
    out_dir = Path(out_dir)
    pred_dir = out_dir / "predictions"
    run = cached_run(run_dir, params.fold, params.device)
    labels = None
    if labels_csv is not None:
        labels = {r.slide_id: r.label for r in read_labels(labels_csv).rows}
    bags = find_bags(features_dir)
    if split is not None:
        slide_ids = split_slide_ids(labels_csv, split)
    if slide_ids is not None:
        bags = {slide_id: path for slide_id, path in bags.items() if slide_id in set(slide_ids)}
    slides = {}
    if slides_dir is not None:
        from tiling.discover import find_slides, slide_id_for

        slides = {slide_id_for(p): p for p in find_slides([slides_dir], recursive=True)}
    jobs = [SlideJob(slide_id, pred_dir / f"{slide_id}.h5",
                     partial(predict_slide, path, pred_dir / f"{slide_id}.h5", run_dir, params,
                             slides.get(slide_id)))
            for slide_id, path in bags.items()]
    result = run_batch(jobs, stage="predict", failures_csv=out_dir / "failures.csv",
                       is_complete=partial(is_current_prediction,
                                           checkpoint_sha256=run.checkpoint_sha256),
                       workers=workers, overwrite=overwrite, executor=executor)
    text = predictions_csv_text(pred_dir, list(bags), labels)
    if text:
        write_text_atomic(out_dir / "predictions.csv", text)
    return result


def split_slide_ids(labels_csv: str | os.PathLike | None, split: str) -> list[str]:
    """The slides of one ``split`` of a labels CSV; an error naming the splits present if none."""
    from wsi_mil.mil.labels import read_labels

    if labels_csv is None:
        raise InputError(f"predicting split {split!r} needs the labels CSV that holds the split")
    table = read_labels(labels_csv)
    ids = [row.slide_id for row in table.rows if row.split == split]
    if not ids:
        splits = sorted({str(row.split) for row in table.rows})
        raise InputError(f"{labels_csv}: no slide in split {split!r}; splits present: "
                         f"{', '.join(splits)}")
    return ids
