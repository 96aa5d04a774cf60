"""``wsi-mil run CONFIG.yaml``: parse, validate and print; :func:`run_pipeline` does the work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.out is not None:
        values["out"] = str(args.out)
    if args.stages is not None:
        values["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    return values


def run(args: argparse.Namespace) -> int:
    from wsi_mil.config.pipeline import (
        default_config_text,
        load_config,
        resolved_config_text,
    )

    if args.print_defaults:
        print(default_config_text(), end="")
        return 0
    if args.config is None:
        print(
            "wsi-mil run: error: give a CONFIG file (start from configs/default.yaml or "
            "wsi-mil run --print-defaults)",
            file=sys.stderr,
        )
        return 2
    config = load_config(args.config, _overrides(args))
    if args.check:
        print(resolved_config_text(config), end="")
        print(f"{args.config}: valid", file=sys.stderr)
        return 0
    from wsi_mil.pipeline.run import run_pipeline

    result = run_pipeline(config, overwrite=args.overwrite)
    print(f"outputs in {config.out} (resolved config: {config.project.config_file})")
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run every stage from one YAML config (resumable)",
        description="Validate CONFIG (an unknown or misspelt key is an error naming it), write "
        "the resolved config to OUT/config.yaml and run the stages in order: cohort (if "
        "configured), tile, extract, train, predict, heatmap, evaluate. Re-running resumes: "
        "complete outputs are skipped, and a stage whose parameters changed is redone with "
        "the stages after it. configs/default.yaml documents every key.",
    )
    p.add_argument("config", type=Path, nargs="?", help="YAML config file")
    p.add_argument("--out", type=Path, default=None, help="override the config's out folder")
    p.add_argument(
        "--stages",
        default=None,
        help="comma-separated subset of stages to run (default: the config's)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo every output of every stage")
    p.add_argument(
        "--check",
        action="store_true",
        help="only validate the config and print it resolved (every key)",
    )
    p.add_argument(
        "--print-defaults",
        action="store_true",
        help="print a config with every key, its default and its documentation "
        "(configs/default.yaml) and exit",
    )
    p.set_defaults(func=run)
