"""Benchmark: the pixel segmenters (MONAI UNet, Attention U-Net, Swin-UNETR, UNETR) on a
generated cohort, against the tile head they refine, and the explanations of their lesion
output.

1. **Throughput**: windows per second of each network's forward pass (batch 16, RGB, at the
   benchmark's window size and at 256 px), on the CPU with the threads given (and on CUDA
   when available).
2. **Quality**: each network is trained with ``wsi-mil segment-train``'s defaults except the
   sizes below (2 µm/px, 64-px windows, a few epochs) on the training slides of a generated
   Camelyon-shaped cohort (``wsi_mil.pipeline.cohort.generate_cohort``), then segments the
   held-out test slides through ``segment_slide``. Their tile head is the annotation itself
   (``wsi_mil.synthetic.predictions.annotation_prediction``: each 128-µm tile's probability is
   its exact lesion fraction), the best any tile-level head can do, so the comparison is
   against the strictest tile outline. Pixel Dice (tumour slides), pixel specificity (normal
   slides) and the Hausdorff distance are computed on the mask's own 2 µm/px lattice.
3. **Share**: the share of a slide's tiles sent to the segmenter (flagged at probability
   >= 0.5, plus one ring of neighbours), per tumour slide.
4. **Explanations** (``--explain-slides``, default 2 held-out tumour slides): ``segment
   --explain`` with every method the network has, scored against the planted lesions in the
   lesion-border windows (``wsi_mil.segment.explain``): the cost per window of each method, as
   seconds and as forward passes of the network (the baseline: the mask's forward pass,
   timed in the same pass over the same windows), and the overlap table per network (the plan's overlap, target > 0.70,
   the mass share against the lesion's share of the window, pointing game, deletion/insertion,
   the randomisation check), written to ``explain_<net>.md``. With ``--gradcam-stages``, Grad-CAM
   again at every encoder stage of the network (``explain_gradcam_<stage>.md``), to choose
   ``--explain-gradcam-layer``.

    python scripts/bench_segment.py [--out DIR] [--threads 1] [--epochs 15] [--nets ...]

Writes ``bench_segment.json`` in ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tiling.annotations import read_annotations
from tiling.params import TilingParams
from tiling.pipeline import tile_slide
from wsi_mil.mil.predictions import read_prediction
from wsi_mil.pipeline.cohort import generate_cohort
from wsi_mil.segment.attribution import gradcam_stages
from wsi_mil.segment.data import training_slides
from wsi_mil.segment.evaluate import pixel_scores
from wsi_mil.segment.explain import EXPLAIN_JSON, table_markdown, write_cohort_table
from wsi_mil.segment.infer import segment_slide
from wsi_mil.segment.nets import build_network, to_input
from wsi_mil.segment.params import EXPLAIN_METHODS, NETWORKS, SegmentParams, SegmentTrainParams
from wsi_mil.segment.train import load_segmenter, train_segmenter
from wsi_mil.synthetic.params import CohortParams
from wsi_mil.synthetic.predictions import annotation_prediction


def net_params(net: str, tile_size: int, epochs: int) -> SegmentTrainParams:
    return SegmentTrainParams(
        net=net,
        mpp=2.0,
        tile_size=tile_size,
        channels=(8, 16, 32),
        swin_feature_size=12,
        unetr_feature_size=8,
        tiles_per_slide=48,
        epochs=epochs,
        lr=3e-3,
    )


@torch.no_grad()
def windows_per_second(net: str, size: int, device: str, seconds: float = 3.0) -> float:
    """Forward passes of batches of 16 windows for about ``seconds``, after one warm-up."""
    model = build_network(net_params(net, size, 1)).to(device).eval()
    tiles = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    x = to_input(tiles, device)
    model(x)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        done += len(tiles)
    return done / (time.perf_counter() - started)


def explain_network(
    net: str,
    model: torch.nn.Module,
    card: dict,
    root: Path,
    slides: list,
    ig_steps: int,
    methods: tuple[str, ...] = EXPLAIN_METHODS,
    stage: str | None = None,
) -> dict:
    """``segment --explain methods`` on ``slides`` (Grad-CAM at ``stage``, default: its
    default); the cost and the overlap table."""
    params = SegmentParams(explain=methods, explain_ig_steps=ig_steps, explain_gradcam_layer=stage)
    name = net if stage is None else f"{net}_gradcam_{stage}"
    folder = root / f"explain_{name}"
    started = time.perf_counter()
    for slide in slides:
        segment_slide(
            root / "predictions" / f"{slide.slide_id}.h5",
            model,
            card,
            folder / slide.slide_id,
            params,
            annotation_path=slide.annotation,
        )
    seconds = time.perf_counter() - started
    rows = write_cohort_table(folder, seed=0)
    table = table_markdown(rows)
    (root / f"explain_{name}.md").write_text(table)
    summaries = [json.loads((folder / s.slide_id / EXPLAIN_JSON).read_text()) for s in slides]
    forward = float(np.mean([s["forward_seconds_per_window"] for s in summaries]))
    cost = {
        m: float(np.mean([s["seconds_per_window"][m] for s in summaries]))
        for m in summaries[0]["seconds_per_window"]
    }
    print(
        f"{name}: explained {len(slides)} slides ({sum(s['windows'] for s in summaries)} "
        f"windows, {sum(s['scored_windows'] for s in summaries)} scored) in {seconds:.0f} s; "
        f"gradcam at {summaries[0]['gradcam_layer']}",
        flush=True,
    )
    for method, spent in cost.items():
        print(
            f"  {method:22s} {1000 * spent:8.1f} ms per window = {spent / forward:6.1f} "
            f"forward passes",
            flush=True,
        )
    print(table, flush=True)
    return {
        "seconds": seconds,
        "seconds_per_window": cost,
        "forward_seconds": forward,
        "gradcam_layer": summaries[0]["gradcam_layer"],
        "table": rows,
        "slides": [s.slide_id for s in slides],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs per network")
    parser.add_argument("--nets", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument(
        "--explain-slides",
        type=int,
        default=2,
        help="held-out tumour slides explained per network (0: none)",
    )
    parser.add_argument("--ig-steps", type=int, default=16, help="integrated gradients steps")
    parser.add_argument(
        "--gradcam-stages",
        action="store_true",
        help="also Grad-CAM at every encoder stage of each network",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_segment_"))
    report: dict = {
        "threads": args.threads,
        "epochs": args.epochs,
        "throughput": {},
        "quality": {},
        "explain": {},
    }

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for net in args.nets:
        for device in devices:
            for size in (64, 256):
                rate = windows_per_second(net, size, device)
                report["throughput"][f"{net}/{device}/{size}px"] = rate
                print(f"{net:15s} {device:4s} {size:4d} px: {rate:8.1f} windows/s", flush=True)

    cohort = generate_cohort(
        root / "cohort",
        CohortParams(
            train_normal=2,
            train_tumor=6,
            test_normal=2,
            test_tumor=4,
            size_px=3072,
            seed=7,
            workers=1,
        ),
    )
    labels = {s.slide_id: s.label for s in cohort.slides}
    train_ids = {s.slide_id for s in cohort.slides if s.split == "train"}
    slides = training_slides(
        [cohort.slides_dir], cohort.annotations_dir, labels, "normal", train_ids
    )
    test = [s for s in cohort.slides if s.split == "test"]
    for slide in test:
        tiles = tile_slide(slide.path, root / "tiled", TilingParams(target_mpp=1.0, tile_size=128))
        annotation_prediction(
            tiles, slide.annotation, root / "predictions" / f"{slide.slide_id}.h5"
        )

    for net in args.nets:
        started = time.perf_counter()
        card = train_segmenter(slides, root / f"model_{net}", net_params(net, 64, args.epochs))
        train_seconds = time.perf_counter() - started
        model, card = load_segmenter(root / f"model_{net}", "cpu")
        rows = []
        for slide in test:
            prediction_path = root / "predictions" / f"{slide.slide_id}.h5"
            folder = root / f"segment_{net}" / slide.slide_id
            started = time.perf_counter()
            segment_slide(prediction_path, model, card, folder, SegmentParams())
            seconds = time.perf_counter() - started
            done = json.loads((folder / "segment.json").read_text())
            lesions = (
                read_annotations(slide.annotation).lesions if slide.annotation is not None else None
            )
            scores = pixel_scores(
                folder,
                read_prediction(prediction_path),
                1,
                lesions,
                0.5,
                0.5,
                eval_mpp=2.0,
                min_area_um2=200.0,
            )
            rows.append(
                {
                    "slide_id": slide.slide_id,
                    "label": slide.label,
                    "pixel_dice": scores.mask.dice,
                    "tile_head_dice": scores.tile_head.dice,
                    "pixel_specificity": scores.mask.specificity,
                    "pixel_hausdorff_um": scores.mask.hausdorff_um,
                    "tile_head_hausdorff_um": scores.tile_head.hausdorff_um,
                    "share_segmented": done["share_segmented"],
                    "windows": done["windows"],
                    "segment_seconds": seconds,
                }
            )
        tumour = [r for r in rows if r["label"] == "tumor"]
        normal = [r for r in rows if r["label"] != "tumor"]
        summary = {
            "train_seconds": train_seconds,
            "best_val_dice": card["best_val_dice"],
            "best_epoch": card["best_epoch"],
            "pixel_dice": float(np.mean([r["pixel_dice"] for r in tumour])),
            "tile_head_dice": float(np.mean([r["tile_head_dice"] for r in tumour])),
            "pixel_hausdorff_um": float(np.nanmean([r["pixel_hausdorff_um"] for r in tumour])),
            "tile_head_hausdorff_um": float(
                np.nanmean([r["tile_head_hausdorff_um"] for r in tumour])
            ),
            "normal_pixel_specificity": float(np.mean([r["pixel_specificity"] for r in normal])),
            "share_segmented_tumour": float(np.mean([r["share_segmented"] for r in tumour])),
            "slides": rows,
        }
        report["quality"][net] = summary
        print(
            f"{net:15s} trained in {train_seconds:.0f} s (best epoch {card['best_epoch']}): "
            f"pixel Dice {summary['pixel_dice']:.3f} vs tile head "
            f"{summary['tile_head_dice']:.3f}; Hausdorff {summary['pixel_hausdorff_um']:.0f} "
            f"vs {summary['tile_head_hausdorff_um']:.0f} µm; normal-slide specificity "
            f"{summary['normal_pixel_specificity']:.4f}; tiles segmented on tumour slides "
            f"{100 * summary['share_segmented_tumour']:.1f} %",
            flush=True,
        )
        explained = [t for t in test if t.label == "tumor"][: args.explain_slides]
        if explained:
            report["explain"][net] = explain_network(
                net, model, card, root, explained, args.ig_steps
            )
        if explained and args.gradcam_stages:
            report["explain"][net]["gradcam_stages"] = {
                stage: explain_network(
                    net, model, card, root, explained, args.ig_steps, ("gradcam",), stage
                )["table"]
                for stage in gradcam_stages(model, net)
            }
    (root / "bench_segment.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {root / 'bench_segment.json'}")


if __name__ == "__main__":
    main()
