"""``wsi-mil cohort --cohort DIR``: generate a synthetic Camelyon-shaped cohort (slides with planted
lesions, ASAP XML outlines, labels.csv) to try the pipeline or test a change on.

The flags are the fields of the ``cohort`` config section; the work is
:func:`wsi_mil.pipeline.cohort.generate_cohort`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.synthetic.params import CohortParams


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.cohort import generate_cohort

    cohort = generate_cohort(
        args.cohort, options_from_args(CohortParams, args), overwrite=args.overwrite
    )
    n_tumor = sum(s.label == "tumor" for s in cohort.slides)
    print(
        f"{len(cohort.slides)} slides ({n_tumor} with tumour) in {cohort.root / 'slides'}; "
        f"labels {cohort.labels_csv}; lesion outlines in {cohort.root / 'annotations'}"
    )
    print(
        f"survival and regression labels from each slide's lesion burden (docs/tasks.md): "
        f"{cohort.root / 'labels_survival.csv'}, {cohort.root / 'labels_regression.csv'}"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cohort",
        help="generate a synthetic cohort with planted lesions (no download)",
        description="Write DIR/slides/*.tif (pyramidal TIFF, H&E-like), DIR/annotations/*.xml "
        "(ASAP lesion outlines) and DIR/labels.csv with a Camelyon16-style train/test split, "
        "and DIR/labels_survival.csv, DIR/labels_regression.csv (times and targets from each "
        "slide's lesion burden).",
    )
    add_renamed(
        p,
        "--cohort",
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder to write the cohort to",
    )
    p.add_argument("--overwrite", action="store_true", help="rewrite slides already there")
    add_options(p.add_argument_group("cohort"), CohortParams)
    p.set_defaults(func=run)
