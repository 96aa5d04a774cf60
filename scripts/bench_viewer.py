"""Benchmark: latency of ``wsi-mil view``'s slide tiles and heat tiles on a Camelyon-sized slide.

The slide is a generated pyramidal JPEG TIFF of 100 000 x 200 000 px at 0.25 µm/px (the size
of a Camelyon16 slide): glass, a large elliptical tissue section and three "lesions". Tiles are
pre-encoded from a few textured patterns (chosen by where each tile lies), so writing the
2-GB-class file takes a minute, not the hour that rendering every pixel would. The project
beside it has ~46 000 tiles of 512 level-0 px (256 px at 0.5 µm/px) with generated attention,
its ``heatmap.zarr`` and its tissue outline, as ``wsi-mil run`` writes them.

The viewer runs as its own process (werkzeug's threaded server, as ``wsi-mil view`` starts
it) on loopback; clients are threads here, each request on a new connection. For slide tiles
(JPEG) and heat tiles (attention, tissue-clipped PNG) it times, at 1 and at 16 concurrent
clients: **cold** requests (tiles never asked for before, from the three finest Deep Zoom
levels, over tissue) and then **warm** ones (the same tiles again, now in the viewer's tile
cache). Each case is bounded by a request count and a time limit.

    python scripts/bench_viewer.py [--out DIR] [--requests 200] [--seconds 60]
                                   [--tile-size 256 --overlap 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MPP = 100_000, 200_000, 0.25
TILE_LEVEL0 = 512  # 256 px at 0.5 µm/px, no overlap
TISSUE = (WIDTH / 2, HEIGHT / 2, 0.45 * WIDTH, 0.45 * HEIGHT)  # ellipse cx, cy, rx, ry
LESIONS = [
    (38_000, 60_000, 6_000, 8_000),
    (62_000, 120_000, 9_000, 7_000),
    (45_000, 150_000, 3_000, 3_000),
]
SLIDE_ID = "camelyon_sized"


def inside(ellipse: tuple[float, float, float, float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cx, cy, rx, ry = ellipse
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def tile_class(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0 glass, 1 tissue, 2 lesion at level-0 points."""
    cls = inside(TISSUE, x, y).astype(np.int64)
    for lesion in LESIONS:
        cls[inside(lesion, x, y)] = 2
    return cls


def write_slide(path: Path) -> Path:
    """The pyramidal TIFF, every level written from pre-encoded JPEG tiles."""
    import imagecodecs
    import tifffile

    from wsi_mil.synthetic.pyramid_tiff import (
        JPEG_SUBSAMPLING,
        mpp_to_resolution,
        pyramid_shapes,
    )

    rng = np.random.default_rng(0)
    colours = [(243, 243, 243), (228, 150, 195), (120, 60, 160)]
    amplitude = [2, 18, 30]
    patterns = [
        [
            imagecodecs.jpeg8_encode(
                np.clip(
                    np.asarray(c, np.int16) + rng.integers(-a, a + 1, (256, 256, 1)), 0, 255
                ).astype(np.uint8),
                level=85,
                subsampling=JPEG_SUBSAMPLING,
                colorspace="RGB",
                outcolorspace="YCBCR",
            )
            for _ in range(4)
        ]
        for c, a in zip(colours, amplitude)
    ]
    resolution = mpp_to_resolution(MPP)
    args = {
        "dtype": np.uint8,
        "tile": (256, 256),
        "photometric": "rgb",
        "planarconfig": "contig",
        "compression": "jpeg",
        "subsampling": JPEG_SUBSAMPLING,
        "metadata": None,
    }

    def tiles(k: int, w: int, h: int):
        scale = 2**k
        cols = -(-w // 256)
        xs = (np.arange(cols) + 0.5) * 256 * scale
        for row in range(-(-h // 256)):
            y = np.full(cols, (row + 0.5) * 256 * scale)
            for col, cls in enumerate(tile_class(xs, y)):
                yield patterns[cls][(col * 7 + row * 3) % 4]

    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, (w, h) in enumerate(pyramid_shapes(WIDTH, HEIGHT, 256, None)):
            res = (resolution[0], resolution[1] * 2**k)
            tif.write(
                tiles(k, w, h),
                shape=(h, w, 3),
                subfiletype=1 if k else 0,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                **args,
            )
    os.replace(tmp, path)
    return path


def write_project(root: Path, slide: Path) -> None:
    """predictions/, heatmaps/<id>/heatmap.zarr and tiles/<id>.tissue.geojson."""
    from shapely.affinity import scale
    from shapely.geometry import MultiPolygon, Point

    from tiling.tissue_geojson import write_tissue_geojson
    from wsi_mil.export.ome_zarr import write_heatmap_zarr
    from wsi_mil.heatmaps.params import HeatmapParams
    from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

    xs, ys = np.meshgrid(
        np.arange(0, WIDTH - TILE_LEVEL0 + 1, TILE_LEVEL0),
        np.arange(0, HEIGHT - TILE_LEVEL0 + 1, TILE_LEVEL0),
    )
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    centres = coords + TILE_LEVEL0 / 2
    coords = coords[inside(TISSUE, centres[:, 0], centres[:, 1])]
    centres = coords + TILE_LEVEL0 / 2
    lesion = (tile_class(centres[:, 0], centres[:, 1]) == 2).astype(np.float32)
    rng = np.random.default_rng(1)
    attention = (
        3 * lesion + np.sin(centres[:, 0] / 9000) + rng.normal(0, 0.3, len(coords))
    ).astype(np.float32)
    tumour = np.clip(0.1 + 0.8 * lesion + rng.normal(0, 0.05, len(coords)), 0, 1).astype(np.float32)
    attrs = {
        "slide_path": str(slide),
        "slide_id": SLIDE_ID,
        "slide_width": WIDTH,
        "slide_height": HEIGHT,
        "slide_mpp": MPP,
        "mpp_source": "metadata",
        "target_mpp": 0.5,
        "tile_size": 256,
        "tile_size_level0": float(TILE_LEVEL0),
        "read_level": 1,
        "read_downsample": 2.0,
        "stride": float(TILE_LEVEL0),
        "min_tissue": 0.5,
    }
    prediction = SlidePrediction(
        slide_id=SLIDE_ID,
        coords=coords,
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.stack([1 - tumour, tumour], axis=1),
        probs=np.array([0.1, 0.9], np.float32),
        class_names=["normal", "tumor"],
        predicted_label="tumor",
        attrs=attrs,
    )
    write_prediction(root / "predictions" / f"{SLIDE_ID}.h5", prediction)
    (root / "heatmaps" / SLIDE_ID).mkdir(parents=True, exist_ok=True)
    write_heatmap_zarr(root / "heatmaps" / SLIDE_ID / "heatmap.zarr", prediction, HeatmapParams())
    cx, cy, rx, ry = TISSUE
    tissue = scale(Point(cx, cy).buffer(1, quad_segs=256), rx, ry)
    write_tissue_geojson(
        root / "tiles" / f"{SLIDE_ID}.tissue.geojson", MultiPolygon([tissue]), SLIDE_ID
    )
    print(f"project: {len(coords)} tiles on tissue")


def serve(project: Path, port_file: Path, tile_size: int, overlap: int) -> None:
    """The viewer process: ``wsi-mil view``'s server on a free loopback port."""
    import logging

    from wsi_mil.viewer.app import make_server
    from wsi_mil.viewer.params import ViewerParams
    from wsi_mil.viewer.project import ProjectIndex
    from wsi_mil.viewer.service import ViewerService

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    params = ViewerParams(port=0, tile_size=tile_size, overlap=overlap)
    server = make_server(ViewerService(ProjectIndex.build(project), params), params)
    port_file.write_text(str(server.server_port))
    server.serve_forever()


def get(port: int, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", url)
    response = connection.getresponse()
    response.read()
    connection.close()
    return time.perf_counter() - started, response.status


def run_case(port: int, urls: list[str], clients: int, seconds: float) -> list[float]:
    """Latencies (s) of ``urls`` fetched by ``clients`` threads, stopping after ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(reversed(urls))
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                if not queue:
                    return
                url = queue.pop()
            latency, status = get(port, url)
            if status != 200:
                raise RuntimeError(f"{url}: HTTP {status}")
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def tissue_tiles(
    n: int, rng: np.random.Generator, taken: set, size: int
) -> list[tuple[int, int, int]]:
    """``n`` distinct (level, col, row) Deep Zoom tiles over tissue, from the 3 finest levels."""
    top = int(np.ceil(np.log2(max(WIDTH, HEIGHT))))
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        level = top - int(rng.integers(0, 3))
        scale = 2 ** (top - level)
        col = int(rng.integers(0, -(-WIDTH // scale) // size))
        row = int(rng.integers(0, -(-HEIGHT // scale) // size))
        x, y = (col + 0.5) * size * scale, (row + 0.5) * size * scale
        key = (level, col, row)
        if key not in taken and inside(TISSUE, np.array([x]), np.array([y]))[0]:
            taken.add(key)
            out.append(key)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for the slide and project (kept; default: a temporary folder)",
    )
    parser.add_argument("--requests", type=int, default=200, help="tiles per case")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per case")
    parser.add_argument("--tile-size", type=int, default=254, help="viewer's Deep Zoom tile size")
    parser.add_argument("--overlap", type=int, default=1, help="viewer's Deep Zoom overlap")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port_file, args.tile_size, args.overlap)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    out.mkdir(parents=True, exist_ok=True)
    slide = out / f"{SLIDE_ID}.tiff"
    project = out / "project"
    if not slide.is_file():
        started = time.perf_counter()
        write_slide(slide)
        print(
            f"slide: {slide} ({slide.stat().st_size / 1e9:.2f} GB) in "
            f"{time.perf_counter() - started:.0f} s"
        )
    if not (project / "predictions" / f"{SLIDE_ID}.h5").is_file():
        write_project(project, slide)
    port_file = out / "port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(project),
            "--port-file",
            str(port_file),
            "--tile-size",
            str(args.tile_size),
            "--overlap",
            str(args.overlap),
        ]
    )
    try:
        while not port_file.is_file() or not port_file.read_text():
            if server.poll() is not None:
                raise RuntimeError("the viewer process exited")
            time.sleep(0.1)
        port = int(port_file.read_text())
        opened, status = get(port, f"/api/slides/{SLIDE_ID}")
        assert status == 200
        print(
            f"first open of the slide (OpenSlide, predictions, heatmap.zarr, tissue): "
            f"{opened * 1000:.0f} ms"
        )
        rng = np.random.default_rng(0)
        taken: set = set()
        rows = []
        for clients in (1, 16):
            for kind, url in (
                ("slide (JPEG)", "/slides/{id}_files/{l}/{c}_{r}.jpeg"),
                ("heat (PNG)", "/layers/{id}/attention_files/{l}/{c}_{r}.png"),
            ):
                urls = [
                    url.format(id=SLIDE_ID, l=lv, c=c, r=r)
                    for lv, c, r in tissue_tiles(args.requests, rng, taken, args.tile_size)
                ]
                cold = run_case(port, urls, clients, args.seconds)
                warm = run_case(port, urls[: len(cold)], clients, args.seconds)
                rows.append((kind, clients, cold, warm))
    finally:
        server.terminate()
        server.wait()

    def ms(values: list[float], q: float) -> str:
        return f"{np.percentile(values, q) * 1000:.1f}"

    print(
        f"\ntile size {args.tile_size}, overlap {args.overlap}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "| tiles | clients | cold p50 (ms) | cold p95 (ms) | warm p50 (ms) | warm p95 (ms) "
        "| requests cold / warm |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, clients, cold, warm in rows:
        print(
            f"| {kind} | {clients} | {ms(cold, 50)} | {ms(cold, 95)} | {ms(warm, 50)} | "
            f"{ms(warm, 95)} | {len(cold)} / {len(warm)} |"
        )
    (out / "bench_viewer.json").write_text(
        json.dumps(
            [
                {
                    "tiles": k,
                    "clients": c,
                    "cold_ms": [v * 1000 for v in cold],
                    "warm_ms": [v * 1000 for v in warm],
                }
                for k, c, cold, warm in rows
            ]
        )
    )


if __name__ == "__main__":
    main()
