"""``wsi-mil predict``: per-slide predictions of a trained run over a folder of feature bags.

The flags are the fields of the ``predict`` config section; the work is
:func:`wsi_mil.pipeline.predict.predict_slides`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.executor_options import add_executor_options, executor_from_args
from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.config.pipeline import PredictSection
from wsi_mil.project import Project


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict slides with a trained run",
        description="Write OUT/predictions/<slide_id>.h5 (attention, tile probabilities, slide "
        "probabilities) and OUT/predictions.csv for every bag in --features.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder written by train")
    p.add_argument(
        "--features",
        required=True,
        type=Path,
        help="folder of feature bags (same encoder as the run; ours or TRIDENT's "
        "features_<encoder>/)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV, to add the true label to predictions.csv (and to choose "
        "slides with --split)",
    )
    p.add_argument(
        "--slides",
        type=Path,
        default=None,
        help="folder of slides, found by slide id: completes bags that do not "
        "record their slide (TRIDENT feature files) with its size and µm/px",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel slide processes")
    p.add_argument("--overwrite", action="store_true", help="redo existing predictions")
    add_options(p.add_argument_group("prediction"), PredictSection)
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.predict import predict_slides

    section = options_from_args(PredictSection, args)
    result = predict_slides(
        args.run,
        args.features,
        out=args.out,
        params=section.params(),
        labels_csv=args.labels,
        workers=args.workers,
        overwrite=args.overwrite,
        split=section.split,
        executor=executor_from_args(args, workers=args.workers),
        slides_dir=args.slides,
    )
    print(result.summary("predict"))
    csv_path = Project(args.out).predictions_csv
    if csv_path.is_file():
        import csv

        with csv_path.open(newline="", encoding="utf-8") as f:
            in_sample = sum(row.get("in_sample") == "true" for row in csv.DictReader(f))
        if in_sample:
            print(
                f"{in_sample} slide(s) predicted by a model that trained on them (in_sample "
                f"in {csv_path}): do not score them as held out"
            )
    return result.exit_code
