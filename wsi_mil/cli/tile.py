"""``wsi-mil tile INPUT... --out DIR``: tile every slide at a physical resolution.

Writes ``DIR/tiles/<slide_id>.h5`` (+ ``.tissue.geojson`` and ``.preview.png``) per slide, skips
slides already tiled, records failures in ``DIR/failures.csv`` and exits non-zero if any slide
failed. The flags are the fields of the ``slides`` and ``tiling`` config sections.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiling.params import TilingParams
from wsi_mil.cli.executor_options import add_executor_options, executor_from_args
from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.config.pipeline import SlidesSection
from wsi_mil.project import Project


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.tile import STAGE, tile_slides

    slides = options_from_args(SlidesSection, args)
    params = options_from_args(TilingParams, args)
    executor = executor_from_args(args, workers=args.workers)
    result = tile_slides(
        list(slides.inputs),
        out=args.out,
        params=params,
        recursive=slides.recursive,
        mpp=slides.mpp,
        mpp_csv=slides.mpp_csv,
        workers=args.workers,
        overwrite=args.overwrite,
        executor=executor,
    )
    print(result.summary(STAGE))
    if result.failed:
        print(f"failures recorded in {Project(args.out).failures_csv}", file=sys.stderr)
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tile",
        help="find tissue and lay tiles at a physical resolution (µm/px)",
        description="Tile slides at target_mpp: detect tissue on a low-resolution level, lay a "
        "grid of tile_size px tiles, and write OUT/tiles/<slide_id>.h5 with a tissue GeoJSON "
        "(QuPath) and a preview PNG. Complete slides are skipped; failures go to "
        "OUT/failures.csv.",
    )
    add_options(parser, SlidesSection, positional=("inputs",))
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--workers", type=int, default=1, help="slides tiled in parallel")
    parser.add_argument("--overwrite", action="store_true", help="redo slides already tiled")
    add_options(parser.add_argument_group("tiling and tissue detection"), TilingParams)
    add_executor_options(parser)
    parser.set_defaults(func=run)
