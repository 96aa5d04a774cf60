"""``wsi-mil segment-train``: train a pixel lesion segmenter (MONAI Attention U-Net, Swin-UNETR
or U-Net) on tiles cut around annotated lesions.

The flags are the fields of :class:`~wsi_mil.segment.params.SegmentTrainParams`; the work is
:func:`wsi_mil.pipeline.segment.segment_train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.project import Project
from wsi_mil.segment.params import SegmentTrainParams


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment-train",
        help="train a pixel lesion segmenter on annotated slides",
        description="Cut tiles (lesion, lesion border, normal tissue) from slides with lesion "
        "annotations (ASAP XML, Camelyon16 JSON, QuPath GeoJSON named <slide_id>.*), rasterise "
        "their masks with exclusion regions cut out, and train a MONAI network with Dice + "
        "cross-entropy, AdamW and a warm-up + cosine schedule, stopping on the validation "
        "Dice. Writes MODEL/segmenter.pt (state dict) and MODEL/model_card.json.",
    )
    p.add_argument("--slides", required=True, type=Path, nargs="+", help="slide files or folders")
    p.add_argument(
        "--annotations",
        required=True,
        type=Path,
        help="folder of lesion annotations <slide_id>.xml/.json/.geojson",
    )
    add_renamed(
        p,
        "--model",
        "--out",
        required=True,
        type=Path,
        help="segmenter folder to write (PROJECT/segmenter; segment's --model)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV: its negative-class slides (without annotation) are used "
        "as lesion-free tissue, and --split picks the slides",
    )
    p.add_argument(
        "--split", default=None, help="train only on this split of the labels CSV (e.g. train)"
    )
    p.add_argument(
        "--negative-class",
        default=None,
        help="label of lesion-free slides (default: the first class, e.g. normal)",
    )
    add_options(p.add_argument_group("training"), SegmentTrainParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.segment import segment_train

    params = options_from_args(SegmentTrainParams, args)
    card = segment_train(
        args.slides,
        args.annotations,  # --out: the segmenter's own folder
        out=Project(args.model, segmenter=args.model),
        params=params,
        labels_csv=args.labels,
        split=args.split,
        negative_class=args.negative_class,
    )
    print(
        f"{card['net']}: best validation Dice {card['best_val_dice']:.3f} at epoch "
        f"{card['best_epoch']} ({len(card['train_slides'])} training, "
        f"{len(card['val_slides'])} validation slides)"
    )
    print(f"written to {args.model}: segmenter.pt, model_card.json")
    return 0
