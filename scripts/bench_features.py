"""Benchmark feature extraction: is reading tiles hidden behind the encoder?

Three measurements on the same tiles, in one run:

(a) encoder only: the tiles already in memory as uint8, encoded batch by batch (normalise,
    forward pass, copy back): the most the pipeline could reach with this encoder. On a CPU
    it is measured at every torch thread count and the fastest is used.
(b) full pipeline: :func:`features.extract.extract_slide` (OpenSlide reads in DataLoader
    workers, resize, normalise, encode, write the bag), timed from start to bag on disk.
(c) naive baseline: one process reads a batch of tiles, then encodes it, then reads the next,
    then writes the bag: the same work without any overlap (at (a)'s best thread count).

It prints tiles/s of each and the ratios (b)/(a) (goal >= 0.9: reading costs the encoder
nothing) and (b)/(c). Each is the best of ``--repeat`` rounds (a, b, c interleaved), since the
machine may be shared; the load average is printed with the result.

Slide: the real Aperio slide ``CMU-1-Small-Region.svs`` from the shared data folder when
present (tiles of 256 px at 0.5 µm/px every 128 px, read at level 0), else (or with
``--synthetic SIZE``) a generated pyramidal JPEG TIFF at 0.25 µm/px read from level 1. Use a
large ``--synthetic`` (e.g. 16384) on a GPU, where a few hundred tiles take well under a second.

    python scripts/bench_features.py [--encoder efficientnet_lite0] [--batch-size 32]
        [--workers 1] [--threads 1] [--device auto] [--max-tiles N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.bag import write_bag
from features.dataset import TileDataset
from features.extract import ExtractParams, extract_slide
from features.params import available_cpus
from features.registry import Encoder, create_encoder
from tiling.reader import TileReader, resize_rgb
from tiling.slide import open_slide
from tiling.tiles_file import TilesFile, read_tiles_file, write_tiles_file

SHARED_SLIDE = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data")
                    ) / "slides" / "CMU-1-Small-Region.svs"
TARGET_MPP, TILE = 0.5, 256


def synthetic_slide(folder: Path, size: int) -> tuple[Path, float]:
    """A textured tissue-covered slide of ``size``² px at 0.25 µm/px (JPEG, pyramidal)."""
    from wsi_mil.synthetic.pyramid_tiff import Rect, shapes_render, write_pyramidal_tiff

    path = folder / f"synthetic_{size}.tiff"
    render = shapes_render([Rect(0, 0, size, size)], texture=48)
    return write_pyramidal_tiff(path, size, size, 0.25, render), 0.25


def grid_tiles_file(slide_path: Path, mpp: float, out: Path, max_tiles: int | None) -> TilesFile:
    """Every tile position of a 50 %-overlap grid (no tissue filter: every tile is read)."""
    slide = open_slide(slide_path)
    width, height = slide.dimensions
    downsample = TARGET_MPP / mpp
    level = max(i for i, d in enumerate(slide.level_downsamples) if d <= downsample * 1.000001)
    read_downsample = float(slide.level_downsamples[level])
    slide.close()
    size0 = TILE * downsample
    step = size0 / 2
    coords = [(x, y) for y in np.arange(0, height - size0 + 1, step)
              for x in np.arange(0, width - size0 + 1, step)][:max_tiles]
    attrs = {"slide_path": str(slide_path), "slide_id": slide_path.stem, "slide_width": width,
             "slide_height": height, "slide_mpp": mpp, "mpp_source": "metadata",
             "target_mpp": TARGET_MPP, "tile_size": TILE, "tile_size_level0": size0,
             "read_level": level, "read_downsample": read_downsample, "stride": step,
             "min_tissue": 0.0, "tissue_method": "none (benchmark grid)", "tissue_params": {}}
    path = write_tiles_file(out, np.asarray(coords), np.ones(len(coords)), attrs)
    return read_tiles_file(path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_only(encoder: Encoder, images: torch.Tensor, batch_size: int) -> float:
    """(a): seconds to encode tiles already in memory (features copied back, as in (b))."""
    encoder.encode(images[:batch_size]).cpu()  # warm-up: kernels, allocator, autotuning
    synchronize(encoder.device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        encoder.encode(images[i:i + batch_size]).cpu().numpy()
    synchronize(encoder.device)
    return time.perf_counter() - start


def full_pipeline(encoder: Encoder, tiles: TilesFile, slide: Path, out: Path,
                  params: ExtractParams) -> float:
    """(b): seconds from tiles file to bag on disk through :func:`extract_slide`."""
    start = time.perf_counter()
    extract_slide(tiles.path, slide, out, encoder, params)
    return time.perf_counter() - start


def naive_loop(encoder: Encoder, tiles: TilesFile, slide_path: Path, out: Path,
               batch_size: int, dtype: str) -> float:
    """(c): one process, read a batch, encode it, repeat; then write. No overlap at all."""
    start = time.perf_counter()
    slide = open_slide(slide_path)
    reader = TileReader(slide, tiles.attrs)
    features = np.empty((len(tiles), encoder.dim), dtype)
    for i in range(0, len(tiles), batch_size):
        batch = np.stack([resize_rgb(reader.read(x, y), encoder.input_size)
                          for x, y in tiles.coords[i:i + batch_size]])
        features[i:i + len(batch)] = encoder.encode(torch.from_numpy(batch)).cpu().numpy()
    slide.close()
    write_bag(out, features, tiles, encoder.bag_attrs(dtype))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--slide", type=Path, default=None,
                        help="slide to read (default: CMU-1-Small-Region.svs, else synthetic)")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px of --slide")
    parser.add_argument("--synthetic", type=int, default=None, metavar="SIZE",
                        help="generate a SIZE x SIZE px slide instead")
    parser.add_argument("--max-tiles", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None,
                        help="reader processes (default: ExtractParams' choice for the device)")
    parser.add_argument("--prefetch", type=int, default=ExtractParams.prefetch)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the encoder (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp_dir:
        tmp = Path(tmp_dir)
        if args.synthetic is not None:
            slide, mpp = synthetic_slide(tmp, args.synthetic)
        elif args.slide is not None:
            slide = args.slide
            mpp = args.mpp or float(open_slide(slide).properties["openslide.mpp-x"])
        elif SHARED_SLIDE.exists():
            slide, mpp = SHARED_SLIDE, 0.499
        else:
            slide, mpp = synthetic_slide(tmp, 4096)
        tiles = grid_tiles_file(slide, mpp, tmp / "tiles" / f"{slide.stem}.h5", args.max_tiles)
        encoder = create_encoder(args.encoder, args.weights, device=args.device)
        params = ExtractParams(batch_size=args.batch_size, workers=args.workers,
                               device=str(encoder.device), dtype=args.dtype,
                               prefetch=args.prefetch, threads=args.threads, progress=False)
        dataset = TileDataset(tiles, slide, encoder.input_size)
        images = torch.from_numpy(np.stack([dataset.read(i) for i in range(len(dataset))]))
        if encoder.device.type == "cuda":
            images = images.pin_memory()
        n = len(tiles)
        load_before = os.getloadavg()
        workers = params.reader_workers(encoder.device.type)
        print(f"slide {slide.name}: {n} tiles of {TILE} px at {TARGET_MPP} µm/px (read level "
              f"{tiles.attrs['read_level']}) -> {encoder.input_size} px; encoder {encoder.name} "
              f"({encoder.dim}-d) on {encoder.device}; batch {args.batch_size}, workers "
              f"{workers}, prefetch {args.prefetch}, encoder threads "
              f"{params.encoder_threads(encoder.device.type) or torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs")
        # warm-up, untimed: starts the fork server that launches reader workers (once per
        # process, like loading the encoder) and warms the OS file cache for every mode
        warm = grid_tiles_file(slide, mpp, tmp / "warm" / f"{slide.stem}.h5", args.batch_size)
        full_pipeline(encoder, warm, slide, tmp / "warm.h5", params)
        # (a) is measured at every CPU thread count and its best is used, so the pipeline is
        # compared with the fastest the encoder alone can go here, not with its own setting
        thread_counts = (list(range(1, available_cpus() + 1)) if encoder.device.type == "cpu"
                         else [torch.get_num_threads()])
        pipeline_threads = torch.get_num_threads()  # as extract_slide set it in the warm-up
        times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        a_by_threads: dict[int, list[float]] = {t: [] for t in thread_counts}
        for round_ in range(args.repeat):
            for t in thread_counts:
                torch.set_num_threads(t)
                a_by_threads[t].append(encoder_only(encoder, images, args.batch_size))
            a_threads = min(thread_counts, key=lambda t: a_by_threads[t][-1])
            times["a"].append(a_by_threads[a_threads][-1])
            times["b"].append(full_pipeline(encoder, tiles, slide, tmp / "b.h5", params))
            torch.set_num_threads(a_threads)  # the naive loop gets the encoder's best setting
            times["c"].append(naive_loop(encoder, tiles, slide, tmp / "c.h5", args.batch_size,
                                         args.dtype))
            print(f"  round {round_ + 1}: (a) " + ", ".join(
                f"{n / v[-1]:.1f}" for v in a_by_threads.values())
                + f" tiles/s at {thread_counts} threads; (b) {n / times['b'][-1]:.1f} tiles/s "
                f"at {pipeline_threads} threads; (c) {n / times['c'][-1]:.1f} tiles/s at "
                f"{a_threads} threads")
        best = {k: n / min(v) for k, v in times.items()}
        median = {k: n / statistics.median(v) for k, v in times.items()}
        load_after = os.getloadavg()
    names = {"a": "encoder only (in memory)", "b": "full pipeline", "c": "naive read-then-encode"}
    for key in "abc":
        print(f"({key}) {names[key]:<26} {best[key]:8.1f} tiles/s best, "
              f"{median[key]:8.1f} median of {args.repeat}")
    print(f"(b)/(a) = {best['b'] / best['a']:.2f}   (b)/(c) = {best['b'] / best['c']:.2f}   "
          f"(best of {args.repeat}; medians: {median['b'] / median['a']:.2f}, "
          f"{median['b'] / median['c']:.2f})")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
