"""``wsi-mil audit``: could a model learn the site instead of the disease?

The flags are the fields of :class:`~wsi_mil.metrics.params.AuditParams`; the work is
:func:`wsi_mil.pipeline.audit.audit_cohort`. docs/audit.md says how to read the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.metrics.params import AuditParams


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="shortcut audit: site probe on features and on a run, attention on artefacts",
        description="Probe whether the site (a labels-CSV column: hospital, scanner, batch) "
        "can be predicted from slide-level mean features and from a trained run's "
        "attention-pooled embedding (cross-validated logistic regression, permutation test "
        "against chance), whether the site goes with the label, and how much of the run's "
        "attention falls on background, pen or blurred tiles. Writes AUDIT/audit.json and "
        "AUDIT/audit.md and prints a verdict line.",
    )
    p.add_argument(
        "--features", required=True, type=Path, help="folder of feature bags (ours or TRIDENT's)"
    )
    p.add_argument(
        "--labels",
        required=True,
        type=Path,
        help="labels CSV with slide_id, label and the site column",
    )
    add_renamed(
        p, "--audit", "--out", required=True, type=Path, help="folder for audit.json / audit.md"
    )
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a trained run (wsi-mil train): also probe its embedding and attention",
    )
    p.add_argument("--device", default="cpu", help="device for the run's model")
    add_options(p.add_argument_group("audit"), AuditParams)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.audit import audit_cohort

    params = options_from_args(AuditParams, args)
    audit_cohort(args.features, args.labels, args.audit, params, args.run, args.device)
    print((Path(args.audit) / "audit.md").read_text(encoding="utf-8").rstrip())
    print(f"\nwritten: {Path(args.audit) / 'audit.json'}")
    return 0
