"""``wsi-mil doctor``: print the preflight checks of :mod:`wsi_mil.pipeline.doctor`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.doctor import exit_code, format_table, run_checks

    checks = run_checks(Path(args.out).expanduser().resolve(), args.min_free_gb, args.device)
    print(format_table(checks))
    code = exit_code(checks)
    print(
        "\nall essential checks passed"
        if code == 0
        else "\nan essential check FAILED: fix it before running a batch",
        file=sys.stderr,
    )
    return code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="preflight check: OpenSlide reads, torch device, encoder weights, disk",
        description="A preflight check before a long batch: OpenSlide reads known pixels back at every level (catches the pixman 0.38 bug), the torch device, which encoders have weights offline, and free disk space.",
    )
    parser.add_argument(
        "--out",
        default=os.getcwd(),
        help="output folder whose free disk space is checked (default: here)",
    )
    parser.add_argument(
        "--min-free-gb",
        type=float,
        default=5.0,
        help="fail when less free space than this (default 5 GB)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="device to check (cuda, cuda:1, mps, cpu; default: as the stages choose it)",
    )
    parser.set_defaults(func=_run)
