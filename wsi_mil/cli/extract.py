"""``wsi-mil extract``: tiles files -> feature bags ``FEATURES/<slide_id>.h5``.

The flags are the fields of the ``extract`` config section; the work is
:func:`wsi_mil.pipeline.extract.extract_slides`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from features.params import bag_folder_name
from wsi_mil.cli.executor_options import add_executor_options, executor_from_args
from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.config.pipeline import ExtractSection
from wsi_mil.project import Project


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.extract import STAGE, extract_slides

    section = options_from_args(ExtractSection, args)
    executor = executor_from_args(args)
    if args.out is not None:  # the former spelling: the folder of the encoders' folders
        print(
            f"wsi-mil extract: --out is deprecated and goes in the next release: use --features "
            f"{args.out / bag_folder_name(section.encoder)}",
            file=sys.stderr,
        )
        project = Project(args.out, features=args.out / bag_folder_name(section.encoder))
    else:
        project = Project(args.features.parent, features=args.features)
    result = extract_slides(
        args.tiles,
        out=project,
        encoder=section.encoder,
        weights=section.weights,
        params=section.params(),
        slides_dir=args.slides,
        overwrite=args.overwrite,
        executor=executor,
    )
    print(result.summary(STAGE))
    return result.exit_code


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "extract",
        help="encode tiles into feature bags (timm encoders)",
        description="Read every tile of every tiles file through OpenSlide, encode it and write "
        "FEATURES/<slide_id>.h5 (a project's features/<encoder>/). Slides whose bag is complete "
        "are skipped.",
    )
    p.add_argument(
        "--tiles",
        required=True,
        type=Path,
        help="folder of tiles files (<slide_id>.h5 from `wsi-mil tile`) or one file",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--features",
        type=Path,
        help="folder of this encoder's bags to write (PROJECT/features/<encoder>; "
        "failures.csv goes beside it)",
    )
    group.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # until 0.1.0: OUT/<encoder>
    p.add_argument(
        "--slides",
        type=Path,
        default=None,
        help="folder to find slides by slide id when they moved since tiling",
    )
    p.add_argument("--overwrite", action="store_true", help="redo bags that are complete")
    add_options(p.add_argument_group("encoder and extraction"), ExtractSection)
    add_executor_options(p, workers_flag=None)  # --workers counts tile readers here
    p.set_defaults(func=run)
