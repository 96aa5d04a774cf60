"""The pixel-segmentation stages: train a segmenter on annotated slides, and segment the tiles
the MIL model flags in every predicted slide (``wsi-mil segment-train`` / ``segment``).

Segmenting goes through :func:`~wsi_mil.pipeline.batch.run_batch` like every per-slide stage:
a slide whose folder ``segment/<slide_id>/`` is complete *for this checkpoint* is skipped,
a failing slide is recorded in ``failures.csv`` and the others carry on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import InputError, MissingInputError
from wsi_mil.extras import require_extra
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project
from wsi_mil.segment.params import SegmentParams, SegmentTrainParams


def segment_train(
    slides: list[str | os.PathLike],
    annotations_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: SegmentTrainParams | None = None,
    labels_csv: str | os.PathLike | None = None,
    split: str | None = None,
    negative_class: str | None = None,
) -> dict[str, Any]:
    """Train a segmenter on the annotated slides among ``slides`` (and, with a labels CSV, on
    its negative-class slides as lesion-free tissue); only ``split`` slides when given. The
    segmenter is written to the project ``out``'s ``segmenter/``."""
    require_extra("segment", "pixel segmentation")
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.segment.data import SegmentDataError, training_slides
    from wsi_mil.segment.train import train_segmenter

    labels = split_ids = negative = None
    if labels_csv is not None:
        table = read_labels(labels_csv)
        labels = {row.slide_id: row.label for row in table.rows}
        negative = table.class_names[table.negative_index(negative_class)]
        if split is not None:
            split_ids = {row.slide_id for row in table.rows if row.split == split}
            if not split_ids:
                raise SegmentDataError(f"{labels_csv}: no slide in split {split!r}")
    elif split is not None:
        raise SegmentDataError("a split needs a labels CSV to read it from (--labels)")
    chosen = training_slides(slides, annotations_dir, labels, negative, split_ids)
    if not chosen:
        raise SegmentDataError(
            f"{annotations_dir}: no slide of {', '.join(map(str, slides))} "
            f"has an annotation file <slide_id>.xml/.json/.geojson there"
        )
    return train_segmenter(chosen, Project.of(out).segmenter_dir, params or SegmentTrainParams())


@lru_cache(maxsize=2)
def _cached_segmenter(model_dir: str, device: str) -> tuple[Any, dict[str, Any]]:
    from wsi_mil.segment.train import load_segmenter

    return load_segmenter(model_dir, device)


def _segment_one(
    prediction_path: Path,
    model_dir: Path,
    folder: Path,
    params: SegmentParams,
    slide_path: Path | None,
    annotation_path: Path | None = None,
) -> Path:
    from wsi_mil.segment.infer import segment_slide

    model, card = _cached_segmenter(str(model_dir), params.device)
    return segment_slide(prediction_path, model, card, folder, params, slide_path, annotation_path)


def _is_current(
    folder: Path,
    checkpoint_sha256: str,
    explain: tuple[str, ...] = (),
    annotations: dict[Path, Path | None] | None = None,
) -> bool:
    from wsi_mil.segment.explain import is_explained
    from wsi_mil.segment.infer import SUMMARY, is_segmented

    if not is_segmented(folder):
        return False
    summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    if summary.get("checkpoint_sha256") != checkpoint_sha256:
        return False
    return not explain or is_explained(folder, explain, (annotations or {}).get(folder))


def explain_methods_note(model_dir: str | os.PathLike, params: SegmentParams) -> str | None:
    """What ``params.explain`` gives with this segmenter: None when every method applies, else a
    line naming the ones its network does not have. Raises when it has none of them."""
    from wsi_mil.segment.attribution import CAPTUM_METHODS, NETWORK_METHODS, available_methods
    from wsi_mil.segment.train import read_model_card

    if not params.explain:
        return None
    net = str(read_model_card(model_dir)["net"])
    kept = available_methods(net, params.explain)
    captum = [m for m in kept if m in CAPTUM_METHODS]
    if captum:
        require_extra("explain", f"the segmenter's {' and '.join(captum)}")
    missing = [m for m in params.explain if m not in kept]
    if not kept:
        raise InputError(
            f"{model_dir}: a {net} segmenter has none of the explanations "
            f"{list(params.explain)}; it has {list(NETWORK_METHODS[net])}"
        )
    if missing:
        return f"explain: a {net} segmenter has no {', '.join(missing)} (skipped)"
    return None


def segment_slides(
    predictions_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: SegmentParams | None = None,
    slides: list[str | os.PathLike] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    slide_ids: Collection[str] | None = None,
    executor: ExecutorParams | None = None,
    annotations_dir: str | os.PathLike | None = None,
) -> BatchResult:
    """Segment every predicted slide of ``predictions_dir`` into the project ``out``'s
    ``segment/<slide_id>/``.

    The slide is the one the predictions record (``slide_path``), or the one of that id among
    ``slides`` (files or folders) when given, for predictions made on another machine. With
    ``params.explain``, the segmenter's explanations too, scored against the lesions of
    ``annotations_dir`` (``<slide_id>.xml/.json/.geojson``) when given, and the cohort's
    ``segment/explain_table.md`` after the batch.
    """
    require_extra("segment", "pixel segmentation")
    from tiling.annotations import find_annotation
    from tiling.discover import check_unique_ids, find_slides
    from wsi_mil.segment.train import read_model_card

    params = params or SegmentParams()
    project = Project.of(out)
    card = read_model_card(model_dir)  # a missing model is one error, not one per slide
    explain_methods_note(model_dir, params)  # a segmenter without any asked method: one error
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise MissingInputError(f"{annotations_dir}: annotations folder not found")
    found = check_unique_ids(find_slides(slides)) if slides else {}
    paths = sorted(Path(predictions_dir).glob("*.h5"))
    if not paths:
        raise MissingInputError(f"{predictions_dir}: no predictions (<slide_id>.h5) to segment")
    jobs, annotations = [], {}
    for path in paths:
        if slide_ids is not None and path.stem not in slide_ids:
            continue
        folder = project.segment_dir / path.stem
        annotation = (
            find_annotation(annotations_dir, path.stem)
            if annotations_dir is not None and params.explain
            else None
        )
        annotations[folder] = annotation
        jobs.append(
            SlideJob(
                path.stem,
                folder,
                partial(
                    _segment_one,
                    path,
                    Path(model_dir),
                    folder,
                    params,
                    found.get(path.stem),
                    annotation,
                ),
            )
        )
    result = run_batch(
        jobs,
        stage="segment",
        failures_csv=project.failures_csv,
        is_complete=partial(
            _is_current,
            checkpoint_sha256=card["checkpoint_sha256"],
            explain=params.explain,
            annotations=annotations,
        ),
        workers=workers,
        overwrite=overwrite,
        executor=executor,
    )
    if params.explain:
        from wsi_mil.segment.explain import write_cohort_table

        write_cohort_table(project.segment_dir, seed=params.explain_seed)
    return result
