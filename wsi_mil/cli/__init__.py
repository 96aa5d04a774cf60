"""The ``wsi-mil`` command: one verb per module, each a thin layer over a library function.

A verb module defines ``add_parser(subparsers)`` (which sets ``func`` on its parser) and keeps
heavy imports (torch, timm) inside the function it runs, so ``wsi-mil info`` or ``wsi-mil tile``
start quickly and never load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tiling.storage import wsi_mil_version

#: verb -> module that defines it, in the order of the pipeline.
VERBS = {
    "info": "wsi_mil.cli.info",
    "tile": "wsi_mil.cli.tile",
    "extract": "wsi_mil.cli.extract",
    "encoders": "wsi_mil.cli.encoders",
    "train": "wsi_mil.cli.train",
    "predict": "wsi_mil.cli.predict",
    "evaluate": "wsi_mil.cli.evaluate",
    "heatmap": "wsi_mil.cli.heatmap",
    "run": "wsi_mil.cli.run",
    "demo": "wsi_mil.cli.demo",
    "doctor": "wsi_mil.cli.doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsi-mil",
        description="Whole-slide images to tiles, features, attention-MIL models, heatmaps "
        "and QuPath exports.",
    )
    parser.add_argument("--version", action="version", version=f"wsi-mil {wsi_mil_version()}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
