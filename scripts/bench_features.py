"""Benchmark feature extraction: is reading tiles hidden behind the encoder?

Measurements on the same tiles, in one run, for each encoder asked for:

(a) encoder only: tiles already in memory as uint8 (on a GPU: already in GPU memory), encoded
    batch by batch (normalise, forward pass, copy the features back): the most the pipeline
    could reach with this encoder. On a CPU it is measured at every torch thread count and the
    fastest is used. ``--a-tiles`` bounds how many tiles are held for it (default: all).
(b) full pipeline: :func:`features.extract.extract_slide` (OpenSlide reads in DataLoader
    workers, resize, normalise, encode, write the bag), timed from start to bag on disk, once
    per ``--workers`` count.
(c) naive baseline: one process reads a batch of tiles, then encodes it, then reads the next,
    then writes the bag: the same work without any overlap (at (a)'s best thread count).
    ``--no-naive`` leaves it out (on a GPU it only measures one core decoding).
(r) reading only (``--read-only``): the same DataLoader of reader processes (pinned memory on
    CUDA) with nothing consuming the batches: tiles/s, and tiles/s per reader process, i.e. the
    decode rate per core. (b) cannot beat (r) at the same reader count.

It prints tiles/s of each and the ratios (b)/(a) (goal >= 0.9 on a CPU, >= 0.8 on a GPU:
reading costs the encoder nothing) and (b)/(c). Each is the best of ``--repeat`` rounds (a, b,
c interleaved), since the machine may be shared; the load average is printed with the result.

Slide: the real Aperio slide ``CMU-1-Small-Region.svs`` from the shared data folder when
present (tiles of 256 px at 0.5 µm/px every 128 px, read at level 0), else (or with
``--synthetic SIZE`` or ``WIDTHxHEIGHT``) a generated pyramidal JPEG TIFF of textured tissue at
``--synthetic-mpp`` µm/px (default 0.25, read from level 1; 0.5 is read at level 0, the same
decoding work as a 0.25 µm/px scan's level 1 at a quarter of the pixels to generate). Use a
large slide on a GPU, where a few hundred tiles take well under a second.

``--random-weights`` builds each registry entry's architecture with random weights (speed does
not depend on the weights), so ``--encoder efficientnet_lite0 vit_small_dino uni`` measures
EfficientNet-Lite0, ViT-S/16 and ViT-L/16 with nothing to download. ``--workdir`` keeps the
generated slide and tiles files for the next run (``--prepare`` only makes them), and
``--json`` writes every figure.

    python scripts/bench_features.py [--encoder efficientnet_lite0 ...] [--batch-size 32]
        [--workers 1 ...] [--threads 1] [--device auto] [--max-tiles N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.bag import write_bag
from features.dataset import TileDataset, tile_loader
from features.extract import ExtractParams, extract_slide
from features.params import available_cpus
from features.registry import Encoder, create_encoder, get_spec
from tiling.reader import TileReader, resize_rgb
from tiling.slide import open_slide
from tiling.tiles_file import TilesFile, read_tiles_file, write_tiles_file

SHARED_SLIDE = (
    Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "slides"
    / "CMU-1-Small-Region.svs"
)
TARGET_MPP, TILE = 0.5, 256


def slide_size(text: str) -> tuple[int, int]:
    """``SIZE`` or ``WIDTHxHEIGHT`` (pixels) of ``--synthetic``."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected SIZE or WIDTHxHEIGHT in pixels")
    return int(parts[0]), int(parts[-1])


def synthetic_slide(folder: Path, size: tuple[int, int], mpp: float = 0.25) -> tuple[Path, float]:
    """A textured tissue-covered JPEG pyramidal slide of ``size`` px at ``mpp`` µm/px (kept in
    ``folder`` and reused: the writer is atomic, so a file there is complete)."""
    from wsi_mil.synthetic.pyramid_tiff import Rect, shapes_render, write_pyramidal_tiff

    width, height = size
    path = folder / f"synthetic_{width}x{height}_{mpp}.tiff"
    if path.is_file():
        return path, mpp
    render = shapes_render([Rect(0, 0, width, height)], texture=48)
    return write_pyramidal_tiff(path, width, height, mpp, render), mpp


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
    coords = [
        (x, y)
        for y in np.arange(0, height - size0 + 1, step)
        for x in np.arange(0, width - size0 + 1, step)
    ][:max_tiles]
    attrs = {
        "slide_path": str(slide_path),
        "slide_id": slide_path.stem,
        "slide_width": width,
        "slide_height": height,
        "slide_mpp": mpp,
        "mpp_source": "metadata",
        "target_mpp": TARGET_MPP,
        "tile_size": TILE,
        "tile_size_level0": size0,
        "read_level": level,
        "read_downsample": read_downsample,
        "stride": step,
        "min_tissue": 0.0,
        "tissue_method": "none (benchmark grid)",
        "tissue_params": {},
    }
    path = write_tiles_file(out, np.asarray(coords), np.ones(len(coords)), attrs)
    return read_tiles_file(path)


def random_encoder(name: str, device: str) -> Encoder:
    """Registry entry ``name``'s architecture (and its timm settings) with random weights."""
    import timm

    spec = get_spec(name)
    torch.manual_seed(0)
    model = timm.create_model(
        spec.architecture, pretrained=False, num_classes=0, **spec.model_kwargs
    )
    if spec.adapt is not None:
        model = spec.adapt(model)
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    encoder = Encoder(
        name=spec.name,
        model=model.eval(),
        dim=dim,
        input_size=spec.input_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        weights=f"random init of {spec.architecture}",
        weights_sha256="",
    )
    return encoder.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_only(encoder: Encoder, images: torch.Tensor, batch_size: int) -> float:
    """(a): seconds to encode tiles already in memory (features copied back, as in (b))."""
    for _ in range(2):  # warm-up: kernels, allocator, autotuning
        encoder.encode(images[:batch_size]).cpu()
    synchronize(encoder.device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        encoder.encode(images[i : i + batch_size]).cpu().numpy()
    synchronize(encoder.device)
    return time.perf_counter() - start


def full_pipeline(
    encoder: Encoder, tiles: TilesFile, slide: Path, out: Path, params: ExtractParams
) -> float:
    """(b): seconds from tiles file to bag on disk through :func:`extract_slide`."""
    start = time.perf_counter()
    extract_slide(tiles.path, slide, out, encoder, params)
    return time.perf_counter() - start


def naive_loop(
    encoder: Encoder, tiles: TilesFile, slide_path: Path, out: Path, batch_size: int, dtype: str
) -> float:
    """(c): one process, read a batch, encode it, repeat; then write. No overlap at all."""
    start = time.perf_counter()
    slide = open_slide(slide_path)
    reader = TileReader(slide, tiles.attrs)
    features = np.empty((len(tiles), encoder.dim), dtype)
    for i in range(0, len(tiles), batch_size):
        batch = np.stack(
            [
                resize_rgb(reader.read(x, y), encoder.input_size)
                for x, y in tiles.coords[i : i + batch_size]
            ]
        )
        features[i : i + len(batch)] = encoder.encode(torch.from_numpy(batch)).cpu().numpy()
    slide.close()
    write_bag(out, features, tiles, encoder.bag_attrs(dtype))
    return time.perf_counter() - start


def reading_only(
    dataset: TileDataset, batch_size: int, workers: int, device: torch.device, prefetch: int
) -> float:
    """(r): seconds for the reader processes to deliver every batch, with nothing encoding."""
    start = time.perf_counter()
    for _ in tile_loader(dataset, batch_size, workers, device, prefetch):
        pass
    return time.perf_counter() - start


def in_memory_tiles(
    dataset: TileDataset, count: int, batch_size: int, workers: int, device: torch.device
) -> torch.Tensor:
    """The first ``count`` tiles as one uint8 tensor on ``device`` (read by ``workers``)."""
    batches, have = [], 0
    for batch in tile_loader(dataset, batch_size, workers, torch.device("cpu")):
        batches.append(batch)
        have += len(batch)
        if have >= count:
            break
    return torch.cat(batches)[:count].to(device)


def measure_encoder(
    name: str,
    args: argparse.Namespace,
    tiles: TilesFile,
    slide: Path,
    tmp: Path,
    worker_counts: list[int | None],
    held: dict[int, torch.Tensor],
) -> dict[str, Any]:
    """(a), (b) for each reader count and (c) of one encoder; prints and returns its figures.
    ``held``: the tiles for (a) by input size, read once for every encoder."""
    encoder = (
        random_encoder(name, args.device)
        if args.random_weights
        else create_encoder(name, args.weights, device=args.device)
    )
    device = encoder.device
    params = {
        w: ExtractParams(
            batch_size=args.batch_size,
            tile_readers=w,
            device=str(device),
            dtype=args.dtype,
            prefetch=args.prefetch,
            threads=args.threads,
            progress=False,
        )
        for w in worker_counts
    }
    first = params[worker_counts[0]]
    n = len(tiles)
    dataset = TileDataset(tiles, slide, encoder.input_size)
    a_count = min(n, args.a_tiles or n)
    if encoder.input_size not in held:
        held[encoder.input_size] = in_memory_tiles(
            dataset,
            a_count,
            args.batch_size,
            first.reader_workers(device.type),
            torch.device("cpu"),
        )
    images = held[encoder.input_size].to(device)
    readers = [p.reader_workers(device.type) for p in params.values()]
    print(
        f"encoder {encoder.name} ({encoder.dim}-d, {encoder.weights}) on {device}; "
        f"(a) on {a_count} tiles in {'GPU' if device.type == 'cuda' else 'host'} memory; "
        f"(b) on {n} tiles with readers {readers}",
        flush=True,
    )
    # warm-up, untimed: starts the fork server that launches reader workers (once per
    # process, like loading the encoder) and warms the OS file cache for every mode
    warm = grid_tiles_file(
        slide, float(tiles.attrs["slide_mpp"]), tmp / "warm" / "warm.h5", args.batch_size
    )
    full_pipeline(encoder, warm, slide, tmp / "warm.h5", first)
    # (a) is measured at every CPU thread count and its best is used, so the pipeline is
    # compared with the fastest the encoder alone can go here, not with its own setting
    thread_counts = (
        list(range(1, available_cpus() + 1)) if device.type == "cpu" else [torch.get_num_threads()]
    )
    pipeline_threads = torch.get_num_threads()  # as extract_slide set it in the warm-up
    a_times: list[float] = []
    b_times: dict[int | None, list[float]] = {w: [] for w in worker_counts}
    c_times: list[float] = []
    a_by_threads: dict[int, list[float]] = {t: [] for t in thread_counts}
    for round_ in range(args.repeat):
        for t in thread_counts:
            torch.set_num_threads(t)
            a_by_threads[t].append(encoder_only(encoder, images, args.batch_size))
        a_threads = min(thread_counts, key=lambda t: a_by_threads[t][-1])
        a_times.append(a_by_threads[a_threads][-1])
        torch.set_num_threads(pipeline_threads)
        for w in worker_counts:
            b_times[w].append(full_pipeline(encoder, tiles, slide, tmp / "b.h5", params[w]))
        line = (
            f"  round {round_ + 1}: (a) "
            + ", ".join(f"{a_count / v[-1]:.1f}" for v in a_by_threads.values())
            + f" tiles/s at {thread_counts} threads; (b) "
            + ", ".join(f"{n / v[-1]:.1f}" for v in b_times.values())
            + f" tiles/s at readers {readers}"
            f" and {pipeline_threads} threads"
        )
        if not args.no_naive:
            torch.set_num_threads(a_threads)  # the naive loop gets the encoder's best setting
            c_times.append(
                naive_loop(encoder, tiles, slide, tmp / "c.h5", args.batch_size, args.dtype)
            )
            torch.set_num_threads(pipeline_threads)
            line += f"; (c) {n / c_times[-1]:.1f} tiles/s at {a_threads} threads"
        print(line, flush=True)
    best_a = a_count / min(a_times)
    torch.set_num_threads(min(thread_counts, key=lambda t: min(a_by_threads[t])))
    a_at = {b: round(a_count / encoder_only(encoder, images, b), 1) for b in args.a_batch_sizes}
    torch.set_num_threads(pipeline_threads)
    result: dict[str, Any] = {
        "encoder": encoder.name,
        "weights": encoder.weights,
        "dim": encoder.dim,
        "device": str(device),
        "batch_size": args.batch_size,
        "a_tiles": a_count,
        "a_tiles_per_s": round(best_a, 1),
        "a_tiles_per_s_median": round(a_count / statistics.median(a_times), 1),
        "a_tiles_per_s_by_batch_size": a_at,
        "b_tiles": n,
        "b": [],
        "repeat": args.repeat,
    }
    print(
        f"(a) encoder only (in {'GPU' if device.type == 'cuda' else 'host'} memory) "
        f"{best_a:10.1f} tiles/s best of {args.repeat}"
        + "".join(f"; {v:.1f} at batch {b}" for b, v in a_at.items())
    )
    for w in worker_counts:
        readers = params[w].reader_workers(device.type)
        best_b = n / min(b_times[w])
        result["b"].append(
            {
                "readers": readers,
                "tiles_per_s": round(best_b, 1),
                "tiles_per_s_median": round(n / statistics.median(b_times[w]), 1),
                "b_over_a": round(best_b / best_a, 3),
            }
        )
        print(
            f"(b) full pipeline, {readers:2d} readers {best_b:10.1f} tiles/s   "
            f"(b)/(a) = {best_b / best_a:.2f}"
        )
    if c_times:
        best_c = n / min(c_times)
        result["c_tiles_per_s"] = round(best_c, 1)
        ratios = ", ".join(f"{r['tiles_per_s'] / best_c:.2f}" for r in result["b"])
        print(f"(c) naive read-then-encode   {best_c:10.1f} tiles/s   (b)/(c) = {ratios}")
    del images, encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--encoder",
        nargs="+",
        default=["efficientnet_lite0"],
        help="one or more encoders, measured in turn",
    )
    parser.add_argument("--weights", default=None)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="each encoder's architecture with random weights",
    )
    parser.add_argument(
        "--slide",
        type=Path,
        default=None,
        help="slide to read (default: CMU-1-Small-Region.svs, else synthetic)",
    )
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px of --slide")
    parser.add_argument(
        "--synthetic",
        type=slide_size,
        default=None,
        metavar="SIZE|WxH",
        help="generate a slide of this size instead",
    )
    parser.add_argument(
        "--synthetic-mpp", type=float, default=0.25, help="level-0 µm/px of the generated slide"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the generated slide and tiles files here (default: a temp)",
    )
    parser.add_argument(
        "--prepare", action="store_true", help="only generate the slide and tiles file in --workdir"
    )
    parser.add_argument("--max-tiles", type=int, default=None)
    parser.add_argument(
        "--a-tiles", type=int, default=None, help="tiles held in memory for (a) (default: all)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--a-batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also measure (a) once at each of these batch sizes",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="reader processes of (b), one run each (default: ExtractParams' "
        "choice for the device)",
    )
    parser.add_argument("--prefetch", type=int, default=ExtractParams.prefetch)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for the encoder (default: torch's)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true", help="leave out (c)")
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="also measure (r), the readers alone, at each --workers count",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    if args.prepare and args.workdir is None:
        parser.error("--prepare needs --workdir")
    if args.weights is not None and (args.random_weights or len(args.encoder) > 1):
        parser.error("--weights applies to one --encoder, without --random-weights")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp_dir:
        tmp = Path(tmp_dir)
        keep = args.workdir or tmp
        keep.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.synthetic is not None:
            slide, mpp = synthetic_slide(keep, args.synthetic, args.synthetic_mpp)
        elif args.slide is not None:
            slide = args.slide
            mpp = args.mpp or float(open_slide(slide).properties["openslide.mpp-x"])
        elif SHARED_SLIDE.exists():
            slide, mpp = SHARED_SLIDE, 0.499
        else:
            slide, mpp = synthetic_slide(keep, (4096, 4096))
        tiles_path = keep / "tiles" / f"{slide.stem}_{args.max_tiles or 'all'}.h5"
        tiles = (
            read_tiles_file(tiles_path)
            if tiles_path.is_file()
            else grid_tiles_file(slide, mpp, tiles_path, args.max_tiles)
        )
        prepare_s = time.perf_counter() - started
        handle = open_slide(slide)
        width, height = handle.dimensions
        handle.close()
        print(
            f"slide {slide.name}: {width} x {height} px at {mpp} µm/px ({prepare_s:.0f} s to "
            f"make or find); {len(tiles)} tiles of {TILE} px at {TARGET_MPP} µm/px (read "
            f"level {tiles.attrs['read_level']}); batch {args.batch_size}, prefetch "
            f"{args.prefetch}; {os.cpu_count()} CPUs",
            flush=True,
        )
        if args.prepare:
            return 0
        device = torch.device(
            args.device
            if args.device != "auto"
            else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        worker_counts = args.workers or [None]
        load_before = os.getloadavg()
        results: dict[str, Any] = {
            "slide": {
                "name": slide.name,
                "width": width,
                "height": height,
                "mpp": mpp,
                "tiles": len(tiles),
                "tile_px": TILE,
                "tile_mpp": TARGET_MPP,
                "read_level": int(tiles.attrs["read_level"]),
            },
            "device": str(device),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "read_only": [],
            "encoders": [],
        }
        if args.read_only:
            dataset = TileDataset(tiles, slide, 224)
            counts = [
                ExtractParams(tile_readers=w).reader_workers(device.type) for w in worker_counts
            ]
            # warm-up, untimed: starts the fork server of the reader processes
            in_memory_tiles(
                dataset, args.batch_size * max(counts), args.batch_size, max(counts), device
            )
            for readers in counts:
                seconds = min(
                    reading_only(dataset, args.batch_size, readers, device, args.prefetch)
                    for _ in range(args.repeat)
                )
                rate = len(tiles) / seconds
                per_reader = rate / max(1, readers)
                results["read_only"].append(
                    {
                        "readers": readers,
                        "tiles_per_s": round(rate, 1),
                        "tiles_per_s_per_reader": round(per_reader, 1),
                    }
                )
                print(
                    f"(r) reading only, {readers:2d} readers  {rate:10.1f} tiles/s  "
                    f"({per_reader:.1f} per reader)",
                    flush=True,
                )
        write_results(results, args.json)
        held: dict[int, torch.Tensor] = {}
        for name in args.encoder:
            results["encoders"].append(
                measure_encoder(name, args, tiles, slide, tmp, worker_counts, held)
            )
            write_results(results, args.json)  # each encoder's figures as soon as they exist
        load_after = os.getloadavg()
    results["load_average"] = [round(load_before[0], 2), round(load_after[0], 2)]
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_results(results, args.json)
    return 0


def write_results(results: dict[str, Any], path: Path | None) -> None:
    """The figures so far, atomically: a step killed by its timeout leaves the last whole file."""
    from tiling.storage import write_text_atomic

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
