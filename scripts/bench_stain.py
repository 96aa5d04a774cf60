"""Benchmark stain handling: what does normalisation or tile QC cost per tile, against plain reading?

Measured in one run, on the same tiles, in one process (one thread), best of ``--repeat``:

(a) plain: read a tile through OpenSlide and resize it to the encoder input (224 px): what the
    reader processes do for every tile today;
(b) + tile QC (focus, background, pen: :func:`features.stain.tile_qc`);
(c) + Macenko normalisation (features.stain, fitted to a montage of the tiles);
(d) + Reinhard normalisation;
(e) + one HED-jittered view (the reading of one ``--stain-views`` view).

It prints ms per tile and the ratio of each to (a). The encoder's own cost per tile, measured
here too, says how much of it the readers can hide: on a CPU the encoder is the bottleneck and
a reader costing less than the encoder is free; on a GPU, where an encoder takes ~1 ms a tile,
the extra reader time is what ``--workers`` has to cover.

Slide: ``CMU-1-Small-Region.svs`` from the shared data (256 px tiles at 0.5 µm/px), else a
generated slide.

    OMP_NUM_THREADS=1 python scripts/bench_stain.py [--max-tiles 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.dataset import TileDataset
from features.registry import create_encoder
from features.stain import StainNormaliser, cohort_montage, hed_jitter, tile_qc
from scripts.bench_features import SHARED_SLIDE, grid_tiles_file, synthetic_slide


def per_tile_ms(step, indices: list[int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for i in indices:
            step(i)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(indices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tiles", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_stain_") as tmp_dir:
        tmp = Path(tmp_dir)
        if SHARED_SLIDE.exists():
            slide, mpp = SHARED_SLIDE, 0.499
        else:
            slide, mpp = synthetic_slide(tmp, 4096)
        tiles = grid_tiles_file(slide, mpp, tmp / "tiles" / f"{slide.stem}.h5", args.max_tiles)
        dataset = TileDataset(tiles, slide, 224)
        indices = list(range(len(dataset)))
        raw = [dataset.read_raw(i) for i in indices]  # warms the file cache for every mode
        montage = cohort_montage(raw[:: max(1, len(raw) // 64)])
        macenko = StainNormaliser.fit("macenko", montage, "bench montage")
        reinhard = StainNormaliser.fit("reinhard", montage, "bench montage")
        rng = np.random.default_rng(0)
        steps = {
            "(a) read + resize": lambda i: dataset.read_raw(i),
            "(b) + tile QC": lambda i: tile_qc(dataset.read_raw(i)),
            "(c) + Macenko": lambda i: macenko(dataset.read_raw(i)),
            "(d) + Reinhard": lambda i: reinhard(dataset.read_raw(i)),
            "(e) + HED jitter": lambda i: hed_jitter(dataset.read_raw(i), rng, 0.05),
        }
        results = {name: per_tile_ms(step, indices, args.repeat) for name, step in steps.items()}
        encoder = create_encoder("efficientnet_lite0", device="cpu")
        batch = torch.from_numpy(np.stack(raw[:32]))
        encoder.encode(batch)
        start = time.perf_counter()
        for _ in range(args.repeat):
            encoder.encode(batch)
        encoder_ms = 1000 * (time.perf_counter() - start) / (args.repeat * len(batch))
    print(
        f"slide {slide.name}: {len(indices)} tiles of 256 px at 0.5 µm/px -> 224 px, one "
        f"process, 1 thread, best of {args.repeat}; load average {os.getloadavg()[0]:.2f}"
    )
    base = results["(a) read + resize"]
    for name, ms in results.items():
        print(f"{name:<20} {ms:7.2f} ms/tile   x{ms / base:5.2f} of (a)")
    print(f"encoder efficientnet_lite0 on the CPU, batch 32: {encoder_ms:.2f} ms/tile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
