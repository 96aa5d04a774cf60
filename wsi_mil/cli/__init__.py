"""The ``wsi-mil`` command: one verb per module, each a thin layer over a library function.

A verb module defines ``add_parser(subparsers)`` (which sets ``func`` on its parser); a stage's
flags are generated from its parameter dataclass (:mod:`wsi_mil.cli.options`). Building the
parser imports no numpy, torch, scipy or matplotlib: the verb imports what it needs inside the
function it runs, so ``wsi-mil --help`` answers at once and ``wsi-mil tile`` never loads torch.

Output: the library logs (:mod:`logging`); :func:`main` installs the handler that prints its
messages as plain lines (:mod:`wsi_mil.console`), the verbs print their own results.

Errors: a :class:`wsi_mil.errors.WsiMilError` is the user's input being wrong and prints as one
line (exit 2); anything else is a bug or a broken machine (a CUDA error, a full disk) and shows
its traceback. ``--traceback`` or ``WSI_MIL_TRACEBACK=1`` shows the traceback of a user error
too, for a bug report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings

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


#: Environment variable that shows the traceback of a user error, like ``--traceback``.
TRACEBACK_ENV = "WSI_MIL_TRACEBACK"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsi-mil",
        description="Whole-slide images to tiles, features, attention-MIL models, heatmaps "
        "and QuPath exports.",
    )
    from wsi_mil import __version__

    parser.add_argument("--version", action="version", version=f"wsi-mil {__version__}")
    traceback_help = (
        f"show the traceback of an error in the input too (or set "
        f"{TRACEBACK_ENV}=1); other errors always show theirs"
    )
    parser.add_argument("--traceback", action="store_true", help=traceback_help)
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(module).add_parser(subparsers)
    for verb_parser in subparsers.choices.values():  # also after the verb: VERB ... --traceback
        verb_parser.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=traceback_help
        )
    return parser


def _print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Warnings (a slide left out, an in-sample score) as one readable line, not a source
    location: they are messages to the user."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from wsi_mil import console
    from wsi_mil.errors import WsiMilError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _print_warning
    console.install()  # the library logs; the command shows it as before (wsi_mil.console)
    try:
        return int(args.func(args) or 0)
    except WsiMilError as exc:  # the input is wrong: one line naming it
        if args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"wsi-mil {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the batch cancelled its queued slides; outputs stay atomic
        print(
            f"wsi-mil {args.verb}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        console.uninstall()


if __name__ == "__main__":
    sys.exit(main())
