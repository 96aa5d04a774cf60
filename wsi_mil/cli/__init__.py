"""The ``wsi-mil`` command: one verb per module, each a thin layer over a library function.

A verb module defines ``add_parser(subparsers)`` (which sets ``func`` on its parser); a stage's
flags are generated from its parameter dataclass (:mod:`wsi_mil.cli.options`). Building the
parser imports no numpy, torch, scipy or matplotlib: the verb imports what it needs inside the
function it runs, so ``wsi-mil --help`` answers at once and ``wsi-mil tile`` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

#: verb -> module that defines it, in the order of the pipeline.
VERBS = {
    "info": "wsi_mil.cli.info",
    "tile": "wsi_mil.cli.tile",
    "extract": "wsi_mil.cli.extract",
    "encoders": "wsi_mil.cli.encoders",
    "train": "wsi_mil.cli.train",
    "predict": "wsi_mil.cli.predict",
    "evaluate": "wsi_mil.cli.evaluate",
    "compare": "wsi_mil.cli.compare",
    "heatmap": "wsi_mil.cli.heatmap",
    "explain": "wsi_mil.cli.explain",
    "segment-train": "wsi_mil.cli.segment_train",
    "segment": "wsi_mil.cli.segment",
    "cohort": "wsi_mil.cli.cohort",
    "run": "wsi_mil.cli.run",
    "demo": "wsi_mil.cli.demo",
    "doctor": "wsi_mil.cli.doctor",
    "view": "wsi_mil.cli.view",
    "agreement": "wsi_mil.cli.agreement",
    "audit": "wsi_mil.cli.audit",
    "report": "wsi_mil.cli.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsi-mil",
        description="Whole-slide images to tiles, features, attention-MIL models, heatmaps "
        "and QuPath exports.",
    )
    try:
        installed = version("wsi-mil")
    except PackageNotFoundError:  # running from a source tree that is not installed
        installed = "unknown"
    parser.add_argument("--version", action="version", version=f"wsi-mil {installed}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: object = None, line: str | None = None) -> None:
    """Warnings (a slide left out, an in-sample score) as one readable line, not a source
    location: they are messages to the user."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from wsi_mil.cli.options import OptionError
    from wsi_mil.pipeline.executors import ExecutorError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _print_warning
    try:
        return int(args.func(args) or 0)
    except (OptionError, ExecutorError) as exc:  # bad flags, unreachable cluster: one line
        print(f"wsi-mil {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the batch cancelled its queued slides; outputs stay atomic
        print(f"wsi-mil {args.verb}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
