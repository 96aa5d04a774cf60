"""``wsi-mil compare``: is one model's AUC higher than another's on the same slides?

DeLong's paired test of the AUC difference between two ``wsi-mil predict`` output folders; the
work is :func:`wsi_mil.pipeline.evaluate.compare_predictions`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_renamed


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="DeLong's test of the AUC difference between two prediction sets",
        description="Compare the AUCs of two predict output folders (each holding "
        "predictions.csv) on the labelled slides both predicted, with DeLong's paired test: "
        "the difference, its 95 % confidence interval and the two-sided p-value.",
    )
    p.add_argument("a", type=Path, help="predict output folder of model A")
    p.add_argument("b", type=Path, help="predict output folder of model B")
    p.add_argument("--labels", required=True, type=Path, help="labels CSV slide_id,label,...")
    add_renamed(
        p,
        "--comparison",
        "--out",
        type=Path,
        default=None,
        help="folder to write compare.json to",
    )
    p.add_argument(
        "--negative-class", default=None, help="negative class (default: the one the runs recorded)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.evaluate import compare_predictions

    result = compare_predictions(args.a, args.b, args.labels, args.comparison, args.negative_class)
    low, high = result["ci95"]
    print(
        f"{result['n_slides']} slides ({result['n_positive']} {result['positive_class']}, "
        f"{result['n_negative']} other): AUC A {result['auc_a']:.3f}, B {result['auc_b']:.3f}"
    )
    print(
        f"A - B = {result['difference']:+.3f} (95% CI {low:+.3f} to {high:+.3f}), DeLong "
        f"z = {result['z']:.2f}, two-sided p = {result['p_value']:.3g}"
    )
    if args.comparison is not None:
        print(f"written to {args.comparison / 'compare.json'}")
    return 0
