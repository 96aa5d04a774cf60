"""``wsi-mil info SLIDE...``: what OpenSlide sees in a slide, before anything is tiled.

Shows vendor, size, pyramid levels and downsamples, the level-0 µm/px and where it came from
(or why there is none and how to supply it), objective power and associated images: the facts
that decide whether and how a slide tiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for one slide."""
    lines = [
        info["path"],
        f"  vendor:            {info['vendor']}",
        f"  size:              {info['width']} x {info['height']} px",
    ]
    if info["mpp"] is not None:
        lines.append(f"  mpp (level 0):     {info['mpp']} µm/px ({info['mpp_source']})")
        lines.append(
            f"  physical size:     {info['width'] * info['mpp'] / 1000:.2f} x "
            f"{info['height'] * info['mpp'] / 1000:.2f} mm"
        )
    else:
        lines.append(f"  mpp (level 0):     unknown: {info['mpp_problem']}")
    lines.append(f"  objective power:   {info['objective_power'] or 'not recorded'}")
    lines.append(f"  levels:            {len(info['levels'])}")
    for level in info["levels"]:
        lines.append(
            f"    {level['level']}: {level['width']} x {level['height']} px, "
            f"downsample {level['downsample']:.4g}"
        )
    images = info["associated_images"]
    lines.append(
        "  associated images: "
        + (", ".join(f"{name} ({w} x {h})" for name, (w, h) in images.items()) or "none")
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tiling.slide import SlideOpenError, slide_info

    failed = 0
    infos = []
    for path in args.slides:
        try:
            info = slide_info(path)
        except SlideOpenError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        infos.append(info)
        if not args.json:
            print(format_info(info))
    if args.json:
        print(json.dumps(infos, indent=2))
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a slide's vendor, size, levels, resolution and associated images",
        description="Show what OpenSlide reads from each slide: vendor, size, levels and "
        "downsamples, level-0 µm/px and its source, objective power, associated images.",
    )
    parser.add_argument(
        "slides", nargs="+", metavar="SLIDE", help="slide file(s) or DICOM folder(s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)
