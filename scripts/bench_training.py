"""Speed and memory of MIL training and prediction at Camelyon scale, on this machine.

1. One training epoch of ``gated_abmil`` (default settings) over 400 generated bags of
   10 000 tiles x 1024 float16 features (8.2 GB of bags, as a Camelyon16 training set with a
   1024-wide encoder): seconds per epoch and peak resident memory. With the default 8 GB
   budget these bags are streamed from HDF5; ``--memory-gb 16`` holds them in memory instead.
2. ``predict`` on one 200 000-tile bag (a large slide at 20x): wall time and peak memory,
   which must stay under 2 GB.

Each part runs in its own process so each peak is its own (``ru_maxrss``; on CUDA also the
GPU's, ``torch.cuda.max_memory_allocated``). ``--device cuda`` trains (bf16 autocast) and
predicts on the GPU; ``--epochs N`` times N epochs (the first on a GPU includes its warm-up);
``--part make`` only generates the bags (e.g. in the background while something else runs);
``--json`` writes every figure.

    .venv/bin/python scripts/bench_training.py [--workdir /tmp/wsi_mil_bench] [--bags 400]
        [--device cpu] [--epochs 1] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def peak_gpu_gb(device: str) -> float | None:
    """The most GPU memory torch held at once in this process (None off CUDA)."""
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 3)


def make_cohort(workdir: Path, n_bags: int, n_tiles: int, dim: int) -> tuple[Path, Path]:
    from wsi_mil.synthetic.bags import iter_planted_bags, write_planted_bags

    root = workdir / f"cohort_{n_bags}x{n_tiles}x{dim}"
    features_dir, labels_csv = root / "features" / "planted", root / "labels.csv"
    if labels_csv.is_file():
        return features_dir, labels_csv
    start = time.time()
    write_planted_bags(root, iter_planted_bags(n_bags, n_tiles, dim, seed=0))
    print(f"generated {n_bags} bags in {time.time() - start:.0f} s", file=sys.stderr)
    return features_dir, labels_csv


def epoch(
    features_dir: Path, labels_csv: Path, memory_gb: float, device: str = "cpu", epochs: int = 1
) -> dict:
    import torch

    from wsi_mil.mil.bags import BagDataset, match_bags
    from wsi_mil.mil.labels import read_labels
    from wsi_mil.mil.models import create_model
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import make_optimizer, run_epoch

    params = TrainParams(memory_gb=memory_gb, device=device)
    labels = read_labels(labels_csv)
    bag_set = match_bags(features_dir, labels)
    start = time.time()
    data = BagDataset(bag_set.records, bag_set.dim, memory_gb=params.memory_gb)
    load_s = time.time() - start
    torch.manual_seed(0)
    model = create_model(params.model, bag_set.dim, 2, **params.model_kwargs()).to(device)
    optimizer = make_optimizer(model.parameters(), params)
    generator = torch.Generator().manual_seed(0)
    seconds, loss = [], float("nan")
    for _ in range(epochs):
        start = time.time()
        loss = run_epoch(
            model, data, params, 0, torch.device(device), None, optimizer, generator
        ).loss
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(round(time.time() - start, 2))
    return {
        "bags": len(data),
        "in_memory": data.in_memory,
        "load_or_scan_s": round(load_s, 1),
        "epoch_s": seconds[-1],
        "epochs_s": seconds,
        "train_loss": round(loss, 4),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_gpu_gb": peak_gpu_gb(device),
    }


def make_large(workdir: Path, n_tiles: int, dim: int) -> Path:
    """One ``n_tiles`` bag (made in its own process: generating it takes memory)."""
    from wsi_mil.synthetic.bags import iter_planted_bags, write_planted_bags

    root = workdir / f"large_{n_tiles}x{dim}"
    if not (root / "labels.csv").is_file():
        write_planted_bags(root, iter_planted_bags(1, n_tiles, dim, seed=1, prefix="large"))
    return root


def predict(workdir: Path, n_tiles: int, dim: int, device: str = "cpu") -> dict:
    import torch

    from wsi_mil.mil.models import create_model
    from wsi_mil.mil.params import PredictParams, TrainParams
    from wsi_mil.mil.predict import predict_slide
    from wsi_mil.mil.train import save_model

    root = workdir / f"large_{n_tiles}x{dim}"
    features_dir = root / "features" / "planted"
    params = TrainParams(device="cpu")
    torch.manual_seed(0)
    model = create_model(params.model, dim, 2, **params.model_kwargs())
    run = root / "run"
    save_model(
        run / "fold_0",
        model,
        {
            "class_names": ["neg", "pos"],
            "negative_class": "neg",
            "threshold": 0.5,
            "encoder": "planted",
            "fold": 0,
        },
    )
    before = peak_rss_gb()
    start = time.time()
    predict_slide(
        features_dir / "large_0000.h5",
        root / "predictions" / "large_0000.h5",
        run,
        PredictParams(device=device),
    )
    return {
        "tiles": n_tiles,
        "predict_s": round(time.time() - start, 1),
        "device": device,
        "peak_rss_gb_before_predict": round(before, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "peak_gpu_gb": peak_gpu_gb(device),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_bench"))
    parser.add_argument("--bags", type=int, default=400)
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--memory-gb", type=float, default=8.0)
    parser.add_argument("--predict-tiles", type=int, default=200_000)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed (each reported)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--part", choices=["all", "make", "epoch", "predict"], default="all")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.part == "make":
        make_cohort(args.workdir, args.bags, args.tiles, args.dim)
        make_large(args.workdir, args.predict_tiles, args.dim)
        print(json.dumps({}))
        return 0
    if args.part == "epoch":
        features_dir, labels_csv = make_cohort(args.workdir, args.bags, args.tiles, args.dim)
        print(json.dumps(epoch(features_dir, labels_csv, args.memory_gb, args.device, args.epochs)))
        return 0
    if args.part == "predict":
        print(json.dumps(predict(args.workdir, args.predict_tiles, args.dim, args.device)))
        return 0
    results = {}
    for part in ("make", "epoch", "predict"):
        cmd = [sys.executable, __file__, "--part", part] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("part", "json")
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[part] = json.loads(out.strip().splitlines()[-1])
        if results[part]:
            print(part, results[part], flush=True)
    e, p = results["epoch"], results["predict"]

    def gpu(r: dict) -> str:
        return f", GPU peak {r['peak_gpu_gb']} GB" if r["peak_gpu_gb"] is not None else ""

    print(
        f"\ntraining on {args.device}: {e['bags']} bags x {args.tiles} tiles x {args.dim}: "
        f"{e['epoch_s']} s/epoch (epochs: {e['epochs_s']} s; "
        f"{'in memory' if e['in_memory'] else 'streamed from HDF5'}, {e['torch_threads']} "
        f"threads), peak memory {e['peak_rss_gb']} GB{gpu(e)}"
    )
    print(
        f"predict on {args.device}: {p['tiles']} tiles in {p['predict_s']} s, peak memory "
        f"{p['peak_rss_gb']} GB ({'under' if p['peak_rss_gb'] < 2 else 'OVER'} 2 GB){gpu(p)}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"tiles_per_bag": args.tiles, "dim": args.dim, **results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
