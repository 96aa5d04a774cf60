"""``wsi-mil tile INPUT... --out DIR``: tile every slide at a physical resolution.

Writes ``DIR/tiles/<slide_id>.h5`` (+ ``.tissue.geojson`` and ``.preview.png``) per slide, skips
slides already tiled, records failures in ``DIR/failures.csv`` and exits non-zero if any slide
failed. :func:`tile_slides` is the batch function the command and the YAML runner share.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tiling.discover import SlideDiscoveryError
from tiling.pipeline import TilingParams
from tiling.slide import SlideMppError
from wsi_mil.pipeline.tile import STAGE, tile_slides


def params_from_args(args: argparse.Namespace) -> TilingParams:
    """TilingParams from the command line: every option left unset keeps its default."""
    names = {f for f in TilingParams.__dataclass_fields__}
    given = {name: value for name, value in vars(args).items()
             if name in names and value is not None}
    if "pen_hue_deg" in given:
        given["pen_hue_deg"] = tuple(given["pen_hue_deg"])
    return replace(TilingParams(), **given)


def run(args: argparse.Namespace) -> int:
    try:
        params = params_from_args(args)
        result = tile_slides(args.inputs, args.out, params, recursive=args.recursive,
                             mpp=args.mpp, mpp_csv=args.mpp_csv, workers=args.workers,
                             overwrite=args.overwrite)
    except (SlideDiscoveryError, SlideMppError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary(STAGE))
    if result.failed:
        print(f"failures recorded in {Path(args.out) / 'failures.csv'}", file=sys.stderr)
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = TilingParams()
    parser = subparsers.add_parser(
        "tile", help="find tissue and lay tiles at a physical resolution (µm/px)",
        description="Tile slides at target_mpp: detect tissue on a low-resolution level, lay a "
        "grid of tile_size px tiles, and write OUT/tiles/<slide_id>.h5 with a tissue GeoJSON "
        "(QuPath) and a preview PNG. Complete slides are skipped; failures go to "
        "OUT/failures.csv.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="slide files or folders")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    parser.add_argument("--mpp", type=float, help="level-0 µm/px for every slide (overrides "
                        "metadata)")
    parser.add_argument("--mpp-csv", type=Path, help="CSV slide_id,mpp of per-slide overrides")
    parser.add_argument("--target-mpp", type=float, help=f"µm/px of tiles (default {d.target_mpp})")
    parser.add_argument("--tile-size", type=int, help=f"tile side in px at target mpp "
                        f"(default {d.tile_size})")
    parser.add_argument("--min-tissue", type=float, help=f"least tissue fraction of a kept tile "
                        f"(default {d.min_tissue})")
    parser.add_argument("--overlap", type=float, help=f"fraction of a tile shared with its "
                        f"neighbour, 0 <= overlap < 1 (default {d.overlap})")
    parser.add_argument("--max-upsample", type=float, help=f"largest enlargement allowed when "
                        f"target mpp is finer than the slide (default {d.max_upsample})")
    parser.add_argument("--workers", type=int, default=1, help="slides tiled in parallel")
    parser.add_argument("--overwrite", action="store_true", help="redo slides already tiled")
    tissue = parser.add_argument_group(
        "tissue detection", "faint tissue: --tissue-method fixed --saturation-threshold 10; "
        "pen marks: --pen-filter (and --pen-hue)")
    tissue.add_argument("--tissue-mpp", type=float, help=f"µm/px of the image tissue is detected "
                        f"on (default {d.tissue_mpp})")
    tissue.add_argument("--tissue-method", choices=["otsu", "fixed"],
                        help=f"saturation threshold: per-slide Otsu or fixed (default "
                        f"{d.tissue_method})")
    tissue.add_argument("--saturation-threshold", type=int, help=f"fixed threshold, 0-255 "
                        f"(default {d.saturation_threshold})")
    tissue.add_argument("--min-saturation", type=int, help=f"floor of the Otsu threshold "
                        f"(default {d.min_saturation})")
    tissue.add_argument("--median-blur-um", type=float, help=f"median blur diameter in µm "
                        f"(default {d.median_blur_um})")
    tissue.add_argument("--closing-um", type=float, help=f"closing diameter in µm "
                        f"(default {d.closing_um})")
    tissue.add_argument("--min-region-um2", type=float, help=f"drop tissue pieces smaller than "
                        f"this, µm² (default {d.min_region_um2:g})")
    tissue.add_argument("--max-hole-um2", type=float, help=f"fill holes smaller than this, µm² "
                        f"(default {d.max_hole_um2:g})")
    tissue.add_argument("--black-level", type=int, help=f"pixels darker than this are not tissue "
                        f"(default {d.black_level})")
    tissue.add_argument("--pen-filter", action="store_true", default=None,
                        help="remove pen-ink hues from the tissue")
    tissue.add_argument("--pen-hue-deg", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help=f"hue range of pen ink in degrees (default {d.pen_hue_deg})")
    tissue.add_argument("--max-white-fraction", type=float, help=f"drop tiles more near-white "
                        f"than this (default {d.max_white_fraction})")
    tissue.add_argument("--max-black-fraction", type=float, help=f"drop tiles more near-black "
                        f"than this (default {d.max_black_fraction})")
    tissue.add_argument("--white-level", type=int, help=f"near-white when all channels are at "
                        f"least this (default {d.white_level})")
    parser.set_defaults(func=run)
