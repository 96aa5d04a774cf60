"""Benchmark tiling: seconds, tiles, peak memory, and the ratio to the floor, per slide.

The floor is the time to merely read the low-resolution pyramid level that tissue detection
uses: no tiler can be faster than reading its input. Tiling (open, read, tissue detection,
grid, GeoJSON, preview, tiles file) should cost at most twice that, and stay under 1 GB of
memory on a Camelyon-sized slide.

Slides: a generated Camelyon-sized pyramidal JPEG TIFF (default 50 000 x 50 000 px at
0.25 µm/px, written once and cached in a temp folder) and the real slides in the shared data
folder when present. Each measurement runs in its own subprocess, which reports its peak
resident memory (``ru_maxrss``: C allocations included, unlike tracemalloc). Times are the best
of ``--repeat`` runs after one warm-up read, so the OS file cache is equally warm for both.

    python scripts/bench_tiling.py [--size 50000] [--cache DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (file under shared/data/slides, mpp override or None)
REAL_SLIDES = [
    ("CMU-1-Small-Region.svs", None),
    ("test3-DAPI-2-387.ndpi", None),
    ("test3-TRITC-2-560.ndpi", None),
    ("TCGA-CR-7395-01A-01-TS1.svs", 0.5),
]


def camelyon_like_shapes(size: int) -> list:
    """Lymph-node-like sections (~25 % of the slide), scaled to ``size``: pieces and holes."""
    from wsi_mil.synthetic.pyramid_tiff import Ellipse, Rect

    s = size / 50_000
    return [
        Ellipse(15_000 * s, 20_000 * s, 9_000 * s, 13_000 * s),
        Ellipse(13_000 * s, 17_000 * s, 2_000 * s, 3_000 * s, hole=True),
        Ellipse(36_000 * s, 26_000 * s, 7_000 * s, 15_000 * s),
        Ellipse(36_000 * s, 30_000 * s, 1_500 * s, 1_500 * s, hole=True),
        Rect(4_000 * s, 40_000 * s, 22_000 * s, 46_000 * s),
        Ellipse(44_000 * s, 5_000 * s, 1_500 * s, 1_500 * s),
    ]


def generated_slide(cache: Path, size: int) -> Path:
    """The Camelyon-sized slide, written once per size into ``cache``."""
    from wsi_mil.synthetic.pyramid_tiff import shapes_render, write_pyramidal_tiff

    path = cache / f"camelyon_like_{size}px_0.25mpp.tif"
    if not path.exists():
        start = time.perf_counter()
        write_pyramidal_tiff(
            path,
            size,
            size,
            0.25,
            shapes_render(camelyon_like_shapes(size)),
            tile=256,
            compression="jpeg",
            quality=90,
        )
        print(
            f"generated {path.name}: {path.stat().st_size / 1e6:.0f} MB in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return path


def child(mode: str, slide: str, out: str, mpp: float | None, repeat: int) -> None:
    """Run in a subprocess: time ``floor`` or ``tile`` on one slide, print JSON."""
    from tiling.params import TilingParams
    from tiling.pipeline import tile_slide
    from tiling.slide import level_for_downsample, open_slide, read_level_region, slide_mpp

    params = TilingParams()
    times = []
    result: dict = {}
    if mode == "floor":
        handle = open_slide(slide)
        level0_mpp, _ = slide_mpp(handle, slide, mpp)
        level = level_for_downsample(handle, max(1.0, params.tissue_mpp / level0_mpp))
        handle.close()
        for _ in range(repeat + 1):  # the first read warms the file cache
            handle = open_slide(slide)
            start = time.perf_counter()
            read_level_region(handle, level)
            times.append(time.perf_counter() - start)
            handle.close()
        times = times[1:]
        result["level"] = level
    else:
        from tiling.tiles_file import read_tiles_file

        for _ in range(repeat):
            start = time.perf_counter()
            path = tile_slide(slide, out, params, mpp_override=mpp)
            times.append(time.perf_counter() - start)
        result["tiles"] = len(read_tiles_file(path))
    result["seconds"] = min(times)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(mode: str, slide: Path, out: Path, mpp: float | None, repeat: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        str(slide),
        str(out),
        str(mpp or ""),
        "--repeat",
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} {slide} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000, help="generated slide side in px")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsi-mil-bench-tiling"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--child", nargs=4, metavar=("MODE", "SLIDE", "OUT", "MPP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, slide, out, mpp = args.child
        child(mode, slide, out, float(mpp) if mpp else None, args.repeat)
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    slides: list[tuple[Path, float | None]] = [(generated_slide(args.cache, args.size), None)]
    data = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
    for name, mpp in REAL_SLIDES:
        if (data / "slides" / name).exists():
            slides.append((data / "slides" / name, mpp))
        else:
            print(f"(skipping {name}: not found under {data / 'slides'})")
    header = (
        f"{'slide':40} {'tile s':>8} {'tiles':>7} {'peak MB':>8} {'floor s':>8} "
        f"{'lvl':>3} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as out:
        for slide, mpp in slides:
            floor = measure("floor", slide, Path(out), mpp, args.repeat)
            tiled = measure("tile", slide, Path(out), mpp, args.repeat)
            print(
                f"{slide.name[:40]:40} {tiled['seconds']:8.3f} {tiled['tiles']:7d} "
                f"{tiled['peak_rss_mb']:8.0f} {floor['seconds']:8.3f} {floor['level']:3d} "
                f"{tiled['seconds'] / floor['seconds']:6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
