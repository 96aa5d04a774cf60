"""How much of the tissue of real H&E images tiling keeps, at default settings.

Every image is tiled with ``TilingParams()`` exactly as ``wsi-mil tile`` does it
(``tile_slide``), and compared with a reference tissue mask computed at full resolution by a
fixed per-pixel rule that needs no tuning per image: a pixel is tissue unless it is near-white
glass, i.e. it is tissue when its HSV saturation is at least ``REF_SATURATION`` (25 of 255:
the faintest eosin-stained stroma in these images is ~30-60, glass 0-10) or its luminance is
below ``REF_LUMINANCE`` (200: grey-blue nuclei and dark debris that carry little saturation),
after a 5 px median filter that removes JPEG and sensor noise. It is deliberately simple, so
that it can be checked by eye and does not share the detector's choices (low-resolution image,
Otsu, closing, size filters).

Per image it reports the share of reference tissue that lies inside the tissue mask
(``mask``), inside kept tiles (``tiles``) and inside the candidate grid at all (``grid``:
tiles must lie wholly inside the image, so a strip at the right and bottom edges narrower
than a tile can never be tiled), and the share of the tissue mask that the reference calls
glass (``glass``: the price of keeping faint tissue). Sets:

* ``ucsb``: the 58 UCSB breast TMA fields (896 x 768) at ``--mpp 0.5``;
* ``small``: 500 x 500 px crops of them (top-left and bottom-right corner of each, 116 fields)
  saved as TIFFs and tiled at 0.55 µm/px, the small-field case of issue 13;
* ``cmu1``: CMU-1-Small-Region.svs (a real H&E slide with glass; mpp from its metadata);
* ``tcga``: TCGA-CR-7395-01A-01-TS1.svs at ``--mpp 0.5``.

    .venv/bin/python scripts/bench_tissue.py [--workdir /tmp/wsi_mil_bench_tissue]
        [--csv per_image.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
REF_SATURATION = 25
REF_LUMINANCE = 200
SMALL_SIDE = 500
SMALL_MPP = 0.55
UCSB_MPP = 0.5


@dataclass(frozen=True)
class Case:
    set_name: str
    path: Path
    mpp: float | None


def reference_mask(rgb: np.ndarray) -> np.ndarray:
    """Not near-white glass, per pixel (see the module docstring)."""
    rgb = cv2.medianBlur(rgb, 5)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    luminance = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return (saturation >= REF_SATURATION) | (luminance < REF_LUMINANCE)


def full_resolution(case: Case) -> tuple[np.ndarray, float]:
    """Level 0 of a slide or image as RGB, and its µm/px."""
    from tiling.slide import open_slide, read_level_region, slide_mpp

    slide = open_slide(case.path)
    try:
        return read_level_region(slide, 0), slide_mpp(slide, case.path, case.mpp)[0]
    finally:
        slide.close()


def small_fields(workdir: Path) -> list[Case]:
    """500 x 500 crops of the UCSB images (two opposite corners each), written once."""
    folder = workdir / "small_fields"
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for image in sorted((DATA / "ucsb_breast" / "images").glob("*.tif")):
        rgb = cv2.imread(str(image))
        for corner, crop in (
            ("tl", rgb[:SMALL_SIDE, :SMALL_SIDE]),
            ("br", rgb[-SMALL_SIDE:, -SMALL_SIDE:]),
        ):
            path = folder / f"{image.stem}_{corner}.tif"
            if not path.is_file():
                cv2.imwrite(str(path), np.ascontiguousarray(crop))
            cases.append(Case("small", path, SMALL_MPP))
    return cases


def measure(case: Case, out: Path, overrides: dict[str, Any]) -> dict[str, float | int | str]:
    """Tile one image (defaults, or ``overrides``) and compare with the reference mask."""
    from tiling.grid import grid_positions
    from tiling.params import TilingParams
    from tiling.pipeline import TilingError, tile_slide, tiling_outputs
    from tiling.tiles_file import read_tiles_file
    from tiling.tissue_geojson import read_tissue_geojson

    params = replace(TilingParams(), **overrides)
    rgb, mpp = full_resolution(case)
    height, width = rgb.shape[:2]
    reference = reference_mask(rgb)
    error = ""
    try:
        tile_slide(case.path, out, params, mpp_override=case.mpp)
    except TilingError as exc:
        error = str(exc)
    outputs = tiling_outputs(out, case.path.stem)
    tissue = np.zeros((height, width), np.uint8)
    for polygon in read_tissue_geojson(outputs.tissue_geojson).geoms:
        rings = [np.round(np.asarray(polygon.exterior.coords)).astype(np.int32)]
        cv2.fillPoly(tissue, rings, 1)
        holes = [np.round(np.asarray(r.coords)).astype(np.int32) for r in polygon.interiors]
        if holes:
            cv2.fillPoly(tissue, holes, 0)
    tiles = np.zeros((height, width), bool)
    grid = np.zeros((height, width), bool)
    size = params.tile_size * params.target_mpp / mpp
    stride = size * (1 - params.overlap)
    n_tiles = 0
    if outputs.tiles.is_file():
        tiles_file = read_tiles_file(outputs.tiles)
        for x, y in tiles_file.coords:
            tiles[int(y) : int(np.ceil(y + size)), int(x) : int(np.ceil(x + size))] = True
        n_tiles = len(tiles_file)
    xs = grid_positions(width, size, stride, params.edge_tiles)
    ys = grid_positions(height, size, stride, params.edge_tiles)
    if xs.size and ys.size:
        grid[: int(np.ceil(ys[-1] + size)), : int(np.ceil(xs[-1] + size))] = True
    ref_px = max(1, int(reference.sum()))
    tissue = tissue.astype(bool)
    return {
        "set": case.set_name,
        "image": case.path.stem,
        "width": width,
        "height": height,
        "reference_share": round(float(reference.mean()), 4),
        "mask": round(float((reference & tissue).sum() / ref_px), 4),
        "tiles": round(float((reference & tiles).sum() / ref_px), 4),
        "grid": round(float((reference & grid).sum() / ref_px), 4),
        "glass": round(float((tissue & ~reference).sum() / max(1, int(tissue.sum()))), 4),
        "n_tiles": n_tiles,
        "error": error,
    }


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as TilingParams fields, each value parsed as its default's type."""
    from tiling.params import TilingParams

    defaults = {f.name: getattr(TilingParams(), f.name) for f in fields(TilingParams)}
    parsed = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in defaults:
            raise SystemExit(f"--param {pair}: TilingParams has no field {name!r}")
        kind = type(defaults[name])
        parsed[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return parsed


def cases(workdir: Path) -> list[Case]:
    slides = DATA / "slides"
    ucsb = [
        Case("ucsb", p, UCSB_MPP) for p in sorted((DATA / "ucsb_breast" / "images").glob("*.tif"))
    ]
    if not ucsb:
        raise SystemExit(f"{DATA / 'ucsb_breast' / 'images'}: no .tif images")
    found = ucsb + small_fields(workdir)
    for set_name, name, mpp in (
        ("cmu1", "CMU-1-Small-Region.svs", None),
        ("tcga", "TCGA-CR-7395-01A-01-TS1.svs", 0.5),
    ):
        if (slides / name).is_file():
            found.append(Case(set_name, slides / name, mpp))
    return found


def summarise(rows: list[dict]) -> str:
    lines = [
        (
            "| set | images | 0 tiles | tissue in mask: mean (min) | tissue in kept tiles: "
            "mean (min) | in the tile grid at all: mean | images with tiles >= 95 % | glass "
            "in mask: mean |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for set_name in dict.fromkeys(r["set"] for r in rows):
        group = [r for r in rows if r["set"] == set_name]
        mask = np.array([r["mask"] for r in group])
        tiles = np.array([r["tiles"] for r in group])
        grid = np.array([r["grid"] for r in group])
        glass = np.array([r["glass"] for r in group])
        empty = sum(r["n_tiles"] == 0 for r in group)
        lines.append(
            f"| {set_name} | {len(group)} | {empty} | {mask.mean():.1%} ({mask.min():.1%})"
            f" | {tiles.mean():.1%} ({tiles.min():.1%}) | {grid.mean():.1%} | "
            f"{int((tiles >= 0.95).sum())} | {glass.mean():.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_bench_tissue"))
    parser.add_argument("--csv", type=Path, help="write the per-image figures here")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TilingParams field to change from its default (repeatable)",
    )
    args = parser.parse_args()
    changed = overrides(args.param)
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    rows = [measure(case, out, changed) for case in cases(args.workdir)]
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(summarise(rows))


if __name__ == "__main__":
    main()
