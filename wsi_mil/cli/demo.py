"""``wsi-mil demo [--out DIR] [--quick]``: the whole pipeline on data the package makes itself.

A thin layer over :mod:`wsi_mil.pipeline.demo` (which is ``wsi-mil run`` of an embedded config): runs
it, prints the headline numbers read back from the run's own metric files, and says where
every output is. Re-running resumes (a finished demo re-prints its table in seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.demo import DEMO_CONFIG, output_locations, results_table, run_demo

    if args.print_config:
        print(DEMO_CONFIG, end="")
        return 0
    started = time.perf_counter()
    out = args.out or Path("demo_out_quick" if args.quick else "demo_out")
    result = run_demo(out, quick=args.quick, overwrite=args.overwrite, segment=args.segment)
    minutes, seconds = divmod(time.perf_counter() - started, 60)
    print(
        f"\nwsi-mil demo{' --quick' if args.quick else ''}: finished in "
        f"{int(minutes)} min {seconds:.0f} s\n"
    )
    print(results_table(result))
    print(
        "\nseconds per stage: "
        + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.seconds.items())
    )
    print("\noutputs:")
    for what, path in output_locations(result.out):
        print(f"  {what:<40} {path}")
    print(
        "\nopen the overlay PNGs in any viewer, drag tiles.geojson onto the slide in QuPath, "
        "or open heatmap.zarr in napari (docs/tutorial.md: 'Opening the exports')."
    )
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline on a synthetic cohort it generates (no download)",
        description="Generate a Camelyon-shaped synthetic cohort (24 slides, half with tumour "
        "lesions), tile it, extract features with the bundled EfficientNet-Lite0, train gated "
        "attention-MIL with its segmentation head on slide labels, predict the held-out test "
        "slides, render heatmaps and QuPath/zarr exports, and score them against the planted "
        "lesions. The config is configs/demo.yaml (also: wsi-mil demo --print-config).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: ./demo_out, or ./demo_out_quick with --quick)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller cohort and shorter training (the CI variant)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo every stage from scratch")
    p.add_argument(
        "--segment",
        action="store_true",
        help="also train the pixel segmenter (Attention U-Net) on the planted "
        "lesions and outline the flagged tiles' lesions pixel by pixel",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the demo's YAML config and exit"
    )
    p.set_defaults(func=run)
