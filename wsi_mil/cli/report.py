"""``wsi-mil report``: per slide, the regions (annotated, segmented, background) with the model's
attention and segmentation inside each, and what a free-text report says about them.

The flags are the fields of :class:`~wsi_mil.export.params.ReportParams`; the work is
:func:`wsi_mil.pipeline.report.report_slides`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.export.params import ReportParams
from wsi_mil.project import Project


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="region-label-text report per slide (JSON, Markdown, HTML)",
        description="For every predictions file: the annotated regions, the model's region "
        "of each class (the pixel segmenter's lesions with --segment, else the tile head) "
        "and the tissue outside them, each with its area in µm², mean and max attention, "
        "attention mass and the share attended and segmented; with --reports and "
        "--vocabulary, every class the report text names (negations read with a NegEx-style "
        "rule, no language model) against the model, classes the model does not support "
        "listed first. Writes OUT/report/<slide_id>.json/.md/.html, index.md/.html and "
        "alignment.csv.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="folder of predictions/<slide_id>.h5 (from predict)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (gets report/)")
    p.add_argument(
        "--annotations",
        type=Path,
        default=None,
        help="folder of annotations <slide_id>.xml/.json/.geojson (any classes)",
    )
    p.add_argument(
        "--segment",
        type=Path,
        default=None,
        help="folder of the segmenter's <slide_id>/lesions.geojson (from segment)",
    )
    p.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="folder of free-text reports <slide_id>.txt (UTF-8)",
    )
    p.add_argument(
        "--vocabulary",
        type=Path,
        default=None,
        help="YAML mapping the run's classes to words and phrases (see "
        "configs/report_vocabulary.yaml)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel slide processes")
    p.add_argument("--overwrite", action="store_true", help="redo complete slides")
    add_options(p.add_argument_group("report"), ReportParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.report import report_slides

    params = options_from_args(ReportParams, args)
    result = report_slides(
        args.predictions,
        out=args.out,
        params=params,
        annotations_dir=args.annotations,
        segment_dir=args.segment,
        reports_dir=args.reports,
        vocabulary=args.vocabulary,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(result.summary("report"))
    print(
        f"written to {Project(args.out).report_dir}/: <slide_id>.json/.md/.html, index.md, "
        f"index.html, alignment.csv"
    )
    return result.exit_code
