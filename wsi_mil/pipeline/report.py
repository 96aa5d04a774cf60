"""The report stage (``wsi-mil report``): a region-label-text report for every predicted slide.

Per slide ``OUT/report/<slide_id>.json``, ``.md`` and ``.html`` (:mod:`wsi_mil.export.report`),
from its predictions, and when given its lesion annotation, the pixel segmenter's
``segment/<slide_id>/lesions.geojson`` and a free-text report ``<slide_id>.txt`` read with a
vocabulary; then ``OUT/report/index.md`` / ``index.html`` and ``alignment.csv`` for the cohort,
slides with text the model does not support first. Goes through
:func:`~wsi_mil.pipeline.batch.run_batch`: a slide whose report was made from the same inputs
and parameters is skipped, a failing slide is recorded in ``failures.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import InputError, MissingInputError
from wsi_mil.export.params import ReportParams
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

STAGE = "report"


def _sources(
    prediction: Path,
    annotation: Path | None,
    segment: Path | None,
    text: Path | None,
    vocabulary: Path | None,
) -> dict[str, str | None]:
    return {
        "predictions": str(prediction),
        "annotation": None if annotation is None else str(annotation),
        "segment": None if segment is None else str(segment),
        "text": None if text is None else str(text),
        "vocabulary": None if vocabulary is None else str(vocabulary),
    }


def report_one(
    prediction_path: Path,
    folder: Path,
    params: ReportParams,
    annotation: Path | None,
    segment: Path | None,
    text_path: Path | None,
    vocabulary_path: Path | None,
) -> Path:
    """Write one slide's report into ``folder``."""
    import shapely

    from tiling.annotations import read_annotations
    from wsi_mil.export.report import slide_report, write_report
    from wsi_mil.export.report_text import read_vocabulary
    from wsi_mil.mil.predictions import read_prediction

    prediction = read_prediction(prediction_path)
    annotations = read_annotations(annotation) if annotation is not None else None
    segmented = None
    if segment is not None:
        regions = read_annotations(segment).regions
        segmented = shapely.union_all(list(regions.values())) if regions else shapely.Polygon()
    vocabulary = (
        read_vocabulary(vocabulary_path, list(prediction.class_names))
        if vocabulary_path is not None
        else None
    )
    text = None
    if text_path is not None:
        try:
            text = text_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{text_path}: not UTF-8 text ({exc})") from exc
    report = slide_report(
        prediction,
        annotations,
        segmented,
        text,
        vocabulary,
        params,
        _sources(prediction_path, annotation, segment, text_path, vocabulary_path),
    )
    write_report(folder, report, params)
    return folder / f"{prediction.slide_id}.json"


def _is_current(path: Path, sources: dict[str, str | None], params: ReportParams) -> bool:
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return made.get("sources") == sources and made.get("params") == dataclasses.asdict(params)


def report_slides(
    predictions_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: ReportParams | None = None,
    annotations_dir: str | os.PathLike | None = None,
    segment_dir: str | os.PathLike | None = None,
    reports_dir: str | os.PathLike | None = None,
    vocabulary: str | os.PathLike | None = None,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
) -> BatchResult:
    """A report for every ``predictions_dir/<slide_id>.h5`` into the project ``out``'s
    ``report/``."""
    from tiling.annotations import find_annotation
    from wsi_mil.export.report_text import VocabularyError, read_vocabulary
    from wsi_mil.mil.predictions import read_prediction

    params = params or ReportParams()
    project = Project.of(out)
    out = project.report_dir
    paths = sorted(Path(predictions_dir).glob("*.h5"))
    if not paths:
        raise MissingInputError(f"{predictions_dir}: no predictions (<slide_id>.h5) to report on")
    for name, folder in (
        ("--annotations", annotations_dir),
        ("--segment", segment_dir),
        ("--reports", reports_dir),
    ):
        if folder is not None and not Path(folder).is_dir():
            raise MissingInputError(f"{folder}: {name} folder not found")
    if (reports_dir is None) != (vocabulary is None):
        raise VocabularyError(
            "report texts need a vocabulary and a vocabulary needs report "
            "texts: give --reports and --vocabulary together"
        )
    if vocabulary is not None:  # a bad vocabulary is one error, not one per slide
        read_vocabulary(vocabulary, list(read_prediction(paths[0]).class_names))
    texts = (
        {p.stem.lower(): p for p in Path(reports_dir).glob("*.txt")}
        if reports_dir is not None
        else {}
    )
    jobs, expected = [], {}
    for path in paths:
        annotation = (
            find_annotation(annotations_dir, path.stem) if annotations_dir is not None else None
        )
        segment = None
        if segment_dir is not None:
            candidate = Path(segment_dir) / path.stem / "lesions.geojson"
            segment = candidate if candidate.is_file() else None
        text = texts.get(path.stem.lower())
        vocab = Path(vocabulary) if vocabulary is not None else None
        output = out / f"{path.stem}.json"
        expected[output] = _sources(path, annotation, segment, text, vocab)
        jobs.append(
            SlideJob(
                path.stem,
                output,
                partial(report_one, path, out, params, annotation, segment, text, vocab),
            )
        )
    result = run_batch(
        jobs,
        stage=STAGE,
        failures_csv=project.failures_csv,
        is_complete=lambda output: _is_current(output, expected[output], params),
        workers=workers,
        overwrite=overwrite,
        executor=executor,
    )
    write_index(out, [p.stem for p in paths])
    return result


def write_index(folder: Path, slide_ids: list[str]) -> list[dict[str, Any]]:
    """``index.md``, ``index.html`` and ``alignment.csv`` of the slides reported in ``folder``:
    one line per slide, in the order of their most pressing status (unsupported mentions
    first, then classes the text rules out and the model finds)."""
    from jinja2 import Environment

    from tiling.storage import csv_text, write_text_atomic
    from wsi_mil.export.report import STATUSES

    rows, alignment = [], []
    for slide_id in slide_ids:
        try:
            report = json.loads((folder / f"{slide_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        text = report.get("text") or {}
        lines = text.get("alignment", [])
        unsupported = [r["label"] for r in lines if r["status"] == "unsupported"]
        worst = min((STATUSES.index(r["status"]) for r in lines), default=len(STATUSES))
        rows.append(
            {
                "slide_id": slide_id,
                "predicted_label": report["predicted_label"],
                "unsupported": ", ".join(unsupported),
                "worst": worst,
                "statuses": "; ".join(f"{r['label']}: {r['status']}" for r in lines)
                if text
                else "no report text",
            }
        )
        alignment += [
            {
                "slide_id": slide_id,
                **{
                    k: r[k]
                    for k in (
                        "label",
                        "status",
                        "mentions",
                        "negated_mentions",
                        "segmented_area_um2",
                        "attention_mass",
                        "attended_tiles",
                    )
                },
            }
            for r in lines
        ]
    rows.sort(key=lambda r: (r["worst"], r["slide_id"]))
    flagged = sum(1 for r in rows if r["unsupported"])
    head = (
        f"{len(rows)} slides; {flagged} with a class the text affirms and the model does "
        f"not support (listed first)."
    )
    md = [
        "# Region-label-text reports",
        "",
        head,
        "",
        "| slide | predicted | unsupported by the model | text and model |",
        "|---|---|---|---|",
    ]
    md += [
        f"| [{r['slide_id']}]({r['slide_id']}.md) | {r['predicted_label']} | "
        f"{r['unsupported']} | {r['statuses']} |"
        for r in rows
    ]
    write_text_atomic(folder / "index.md", "\n".join(md) + "\n")
    page = (
        Environment(autoescape=True)
        .from_string(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Reports</title>"
            "<style>body{font-family:sans-serif;margin:1em}td,th{border:1px solid #ccc;"
            "padding:2px 6px}table{border-collapse:collapse}tr.flag td{background:#fde2e2}</style>"
            "</head><body><h1>Region-label-text reports</h1><p>{{ head }}</p><table><tr>"
            "<th>slide</th><th>predicted</th><th>unsupported by the model</th>"
            "<th>text and model</th></tr>{% for r in rows %}<tr class='{{ 'flag' if r.unsupported "
            "else '' }}'><td><a href='{{ r.slide_id }}.html'>{{ r.slide_id }}</a></td>"
            "<td>{{ r.predicted_label }}</td><td>{{ r.unsupported }}</td><td>{{ r.statuses }}</td>"
            "</tr>{% endfor %}</table></body></html>"
        )
        .render(head=head, rows=rows)
    )
    write_text_atomic(folder / "index.html", page)
    columns = [
        "slide_id",
        "label",
        "status",
        "mentions",
        "negated_mentions",
        "segmented_area_um2",
        "attention_mass",
        "attended_tiles",
    ]
    write_text_atomic(folder / "alignment.csv", csv_text(alignment, columns))
    return rows
