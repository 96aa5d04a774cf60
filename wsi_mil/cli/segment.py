"""``wsi-mil segment``: pixel lesion masks inside the tiles the MIL model flags.

The flags are the fields of :class:`~wsi_mil.segment.params.SegmentParams`; the work is
:func:`wsi_mil.pipeline.segment.segment_slides`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.segment.params import SegmentParams


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment", help="pixel lesion masks in the tiles the MIL model flags",
        description="For every predictions file, run the segmenter of segment-train on the "
        "tiles the segmentation head (or attention) flags, plus a margin, blend the windows "
        "into OUT/segment/<slide_id>/mask.zarr (an OME-Zarr pyramid), and write "
        "lesions.geojson (QuPath annotations with area in µm²), outline.png and segment.json.",
    )
    p.add_argument("--predictions", required=True, type=Path,
                   help="folder of predictions/<slide_id>.h5 (from predict)")
    p.add_argument("--model", required=True, type=Path, help="model folder of segment-train")
    p.add_argument("--out", required=True, type=Path, help="output folder (gets segment/)")
    p.add_argument("--slides", type=Path, nargs="+", default=None,
                   help="slide files or folders (default: the slide paths the predictions "
                   "record)")
    p.add_argument("--workers", type=int, default=1, help="parallel slide processes")
    p.add_argument("--overwrite", action="store_true", help="redo complete slides")
    add_options(p.add_argument_group("segmentation"), SegmentParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.segment import segment_slides

    params = options_from_args(SegmentParams, args)
    try:
        result = segment_slides(args.predictions, args.model, args.out, params,
                                slides=args.slides, workers=args.workers,
                                overwrite=args.overwrite)
    except (ValueError, OSError) as exc:  # no model, no predictions, unknown slide folder
        print(f"wsi-mil segment: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary("segment"))
    print(f"written to {args.out / 'segment'}/<slide_id>/: mask.zarr, lesions.geojson, "
          f"outline.png, segment.json")
    return result.exit_code
