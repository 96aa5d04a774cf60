"""``wsi-mil segment``: pixel lesion masks inside the tiles the MIL model flags.

The flags are the fields of :class:`~wsi_mil.segment.params.SegmentParams`; the work is
:func:`wsi_mil.pipeline.segment.segment_slides`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.project import Project
from wsi_mil.segment.params import SegmentParams


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="pixel lesion masks in the tiles the MIL model flags",
        description="For every predictions file, run the segmenter of segment-train on the "
        "tiles the segmentation head (or attention) flags, plus a margin, blend the windows "
        "into OUT/segment/<slide_id>/mask.zarr (an OME-Zarr pyramid), and write "
        "lesions.geojson (QuPath annotations with area in µm²), outline.png and segment.json. "
        "With --explain METHODS, explanations of the segmenter's lesion output in the same "
        "windows: explain.zarr (one pyramid per map), explain.png and explain.json, scored "
        "against --annotations, and OUT/segment/explain_table.md for the cohort.",
    )
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="folder of predictions/<slide_id>.h5 (from predict)",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder of segment-train")
    p.add_argument("--out", required=True, type=Path, help="output folder (gets segment/)")
    p.add_argument(
        "--slides",
        type=Path,
        nargs="+",
        default=None,
        help="slide files or folders (default: the slide paths the predictions record)",
    )
    p.add_argument(
        "--annotations",
        type=Path,
        default=None,
        help="folder of lesion annotations <slide_id>.xml/.json/.geojson the "
        "explanations are scored against (with --explain)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel slide processes")
    p.add_argument("--overwrite", action="store_true", help="redo complete slides")
    add_options(p.add_argument_group("segmentation"), SegmentParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.segment import explain_methods_note, segment_slides

    params = options_from_args(SegmentParams, args)
    note = explain_methods_note(args.model, params)
    if note:
        print(note)
    result = segment_slides(
        args.predictions,
        args.model,
        out=args.out,
        params=params,
        slides=args.slides,
        workers=args.workers,
        overwrite=args.overwrite,
        annotations_dir=args.annotations,
    )
    print(result.summary("segment"))
    print(
        f"written to {Project(args.out).segment_dir}/<slide_id>/: mask.zarr, lesions.geojson, "
        f"outline.png, segment.json"
        + (", explain.zarr, explain.png, explain.json" if params.explain else "")
    )
    if params.explain:
        table = Project(args.out).segment_dir / "explain_table.md"
        print(
            f"explanations: {table}"
            if table.is_file()
            else "explanations: no slide was explained, so no cohort table"
        )
        if args.annotations is None:
            print(
                "explanations are not scored: give --annotations to score them against the lesions"
            )
    return result.exit_code
