"""``wsi-mil agreement``: how well the experts' heatmap ratings agree, question by question.

Reads every ``<rater>.csv`` of a ratings folder (written by ``wsi-mil view --rater``), prints
Cohen's quadratic-weighted kappa (two raters) or Fleiss' kappa (more) per question with the
number of slides each rater scored, and writes the table as CSV.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_renamed


def run(args: argparse.Namespace) -> int:
    from wsi_mil.viewer.ratings import QUESTIONS, read_ratings_dir, write_agreement

    ratings = read_ratings_dir(args.ratings)
    out = Path(args.table) if args.table else Path(args.ratings).resolve().parent / "agreement.csv"
    rows = write_agreement(out, ratings)
    questions = dict(QUESTIONS)
    print("slides scored: " + ", ".join(f"{r} {len(s)}" for r, s in sorted(ratings.items())))
    print(f"{'question':<11} {'method':<16} {'kappa':>7} {'slides':>7}")
    for row in rows:
        kappa = "n/a" if row.kappa != row.kappa else f"{row.kappa:.3f}"
        print(
            f"{row.question:<11} {row.method:<16} {kappa:>7} {row.n_common:>7}   "
            f"{questions[row.question]}"
        )
    print(f"written to {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agreement",
        help="inter-rater agreement (kappa) of the heatmap ratings",
        description="Per-question agreement of ratings/<rater>.csv files: Cohen's kappa with "
        "quadratic weights for two raters, Fleiss' kappa for three or more, over the slides "
        "every rater scored.",
    )
    p.add_argument("ratings", help="ratings folder (PROJECT/ratings)")
    add_renamed(
        p,
        "--table",
        "--out",
        default=None,
        help="CSV to write (default: agreement.csv beside the ratings folder)",
    )
    p.set_defaults(func=run)
