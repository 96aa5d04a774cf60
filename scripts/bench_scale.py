"""How the per-slide stages scale on Dask: measured on this machine, then projected (labelled).

Measures, for ``--slides`` generated slides (default 24):

* the per-slide cost of tiling and of extraction (efficientnet_lite0 on the CPU), locally and
  on warm Dask workers, and the start-up cost (cluster, imports, encoder per worker);
* the scheduler's overhead per task: the wall time of ``--noop`` empty tasks through a
  2-worker LocalCluster, per task;
* the speed-up of tiling + extraction from 1 to 2 Dask workers (at most 2x on 2 cores) and
  its efficiency (speed-up / workers).

Then a PROJECTION (not a measurement) of the wall time of 10 000 slides on 10, 100 and 1000
workers from those numbers, under stated assumptions: slides independent, each worker as fast
as one worker here, a central scheduler that handles one task at a time at the measured
overhead, and a shared file system whose bandwidth is ``--fs-gbps`` (the slide bytes read per
slide are measured here from the tiles read).

    python scripts/bench_scale.py [--slides 24] [--size 2048] [--fs-gbps 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def make_cohort(folder: Path, n: int, size: int) -> Path:
    import numpy as np

    from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        cx, cy = rng.integers(size // 3, 2 * size // 3, size=2)
        radius = int(size * rng.uniform(0.25, 0.35))

        def render(x: int, y: int, w: int, h: int, cx=cx, cy=cy, radius=radius, i=i):
            yy, xx = np.mgrid[y : y + h, x : x + w]
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            texture = ((xx // 7 + yy // 5 + i) % 3 * 25).astype(np.uint8)
            image = np.full((h, w, 3), 245, np.uint8)
            image[inside] = np.stack([200 - texture, 90 + texture, 170 - texture], -1)[inside]
            return image

        write_pyramidal_tiff(folder / f"s{i:03d}.tif", size, size, 0.5, render)
    return folder


def _noop(_: int) -> None:
    return None


def _pass(slides: list[Path], out: Path, executor) -> tuple[float, float]:
    from features.params import ExtractParams
    from tiling.params import TilingParams
    from wsi_mil.pipeline.extract import extract_slides
    from wsi_mil.pipeline.tile import tile_slides

    start = time.perf_counter()
    assert not tile_slides(slides, out=out, params=TilingParams(), executor=executor).failed
    tiled = time.perf_counter()
    assert not extract_slides(
        out / "tiles", out=out, params=ExtractParams(progress=False), executor=executor
    ).failed
    return tiled - start, time.perf_counter() - tiled


def run_stages(slides: Path, out: Path, executor, warm: int) -> tuple[float, float, int, float]:
    """(tiling s, extraction s, tiles, start-up s) of one pass over the slides.

    The start-up (cluster and worker processes, imports, each worker loading its encoder) is
    a warm-up pass over ``warm`` slides before the timed pass, so the per-slide costs are
    those of warm workers, as on a long run.
    """
    from tiling.tiles_file import read_tiles_file
    from wsi_mil.executors import executor_session

    start = time.perf_counter()
    with executor_session(executor):
        _pass(sorted(slides.glob("*.tif"))[:warm], out.with_name(out.name + "_warm"), executor)
        startup = time.perf_counter() - start
        tile_s, extract_s = _pass([slides], out, executor)
    tiles = 0
    for path in (out / "tiles").glob("*.h5"):
        tiles += len(read_tiles_file(path))
    return tile_s, extract_s, tiles, startup


def scheduler_overhead(n_tasks: int) -> float:
    """Seconds of wall time per empty task through a running 2-worker LocalCluster."""
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        wait(client.map(_noop, range(50), pure=False))  # warm up
        start = time.perf_counter()
        wait(client.map(_noop, range(n_tasks), pure=False))
        return (time.perf_counter() - start) / n_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=24)
    parser.add_argument("--size", type=int, default=2048, help="slide side in px (0.5 µm/px)")
    parser.add_argument("--noop", type=int, default=2000, help="empty tasks for the overhead")
    parser.add_argument(
        "--fs-gbps",
        type=float,
        default=5.0,
        help="assumed shared file system bandwidth, GB/s (projection only)",
    )
    args = parser.parse_args()

    from wsi_mil.config.executor import ClusterParams, ExecutorParams

    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        slides = make_cohort(work / "slides", args.slides, args.size)
        local = run_stages(slides, work / "local", None, warm=1)
        runs = {"local (1 process)": local}
        for n in (1, 2):
            executor = ExecutorParams(kind="dask", cluster=ClusterParams(n_workers=n))
            runs[f"dask, {n} worker(s)"] = run_stages(
                slides, work / f"dask{n}", executor, warm=2 * n
            )
        overhead = scheduler_overhead(args.noop)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n, tiles = args.slides, local[2]
    print(
        f"\nMEASURED on this machine: {n} slides of {args.size}x{args.size} px, "
        f"{tiles} tiles in all ({tiles / n:.0f} per slide)\n"
    )
    print("| run | start-up s | tile s/slide | extract s/slide | wall (tile+extract) s |")
    print("|---|---:|---:|---:|---:|")
    for name, (tile_s, extract_s, _, startup) in runs.items():
        print(
            f"| {name} | {startup:.1f} | {tile_s / n:.3f} | {extract_s / n:.3f} | "
            f"{tile_s + extract_s:.1f} |"
        )
    one = sum(runs["dask, 1 worker(s)"][:2])
    two = sum(runs["dask, 2 worker(s)"][:2])
    speedup = one / two
    print(f"\nspeed-up 1 -> 2 Dask workers: {speedup:.2f}x (efficiency {speedup / 2:.0%})")
    print(
        f"scheduler overhead: {overhead * 1e3:.2f} ms per task ({args.noop} empty tasks, 2 workers)"
    )

    per_slide = (local[0] + local[1]) / n  # one worker's seconds per slide, both stages
    tasks_per_slide = 2  # one tiling task and one extraction task
    # bytes a slide's extraction reads: its tiles at 256 px RGB, JPEG ~ 1/10 of raw
    slide_bytes = tiles / n * 256 * 256 * 3 / 10
    print(
        f"\nPROJECTION (not measured) for 10 000 slides like these: {per_slide:.2f} s of "
        f"one worker per slide; scheduler {overhead * 1e3:.2f} ms per task, "
        f"{tasks_per_slide} tasks per slide, handled one at a time; shared file system "
        f"{args.fs_gbps:g} GB/s for ~{slide_bytes / 1e6:.2f} MB read per slide\n"
    )
    print(
        "| workers | compute-bound h | scheduler-bound h | file-system-bound h | "
        "projected h | limit |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    total = 10_000
    for workers in (10, 100, 1000):
        compute = total * per_slide / workers
        scheduler = total * tasks_per_slide * overhead
        filesystem = total * slide_bytes / (args.fs_gbps * 1e9)
        bound = max(compute, scheduler, filesystem)
        limit = {compute: "workers", scheduler: "scheduler", filesystem: "file system"}[bound]
        print(
            f"| {workers} | {compute / 3600:.2f} | {scheduler / 3600:.3f} | "
            f"{filesystem / 3600:.3f} | {bound / 3600:.2f} | {limit} |"
        )
    stop = per_slide / (tasks_per_slide * overhead)
    print(
        f"\nscaling stops (scheduler) near {stop:.0f} workers for this per-slide cost: "
        f"beyond it the scheduler hands out tasks more slowly than workers finish them"
    )


if __name__ == "__main__":
    main()
