"""``wsi-mil predict``: per-slide predictions of a trained run over a folder of feature bags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
from wsi_mil.pipeline.predict import predict_slides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="predict slides with a trained run",
        description="Write OUT/predictions/<slide_id>.h5 (attention, tile probabilities, slide "
        "probabilities) and OUT/predictions.csv for every bag in --features.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder written by train")
    p.add_argument("--features", required=True, type=Path,
                   help="folder of feature bags (same encoder as the run)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--fold", type=int, default=None,
                   help="use this fold's model (default: the ensemble of all folds)")
    p.add_argument("--labels", type=Path, default=None,
                   help="labels CSV, to add the true label to predictions.csv")
    p.add_argument("--chunk-size", type=int, default=16384, help="tiles per chunk")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--workers", type=int, default=1, help="parallel slide processes")
    p.add_argument("--overwrite", action="store_true", help="redo existing predictions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.mil.predict import PredictParams

    params = PredictParams(fold=args.fold, chunk_size=args.chunk_size, device=args.device)
    result = predict_slides(args.run, args.features, args.out, params,
                            labels_csv=args.labels, workers=args.workers,
                            overwrite=args.overwrite)
    print(result.summary("predict"))
    return result.exit_code
