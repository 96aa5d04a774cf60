"""The whole pipeline on real H&E: UCSB Breast Cancer Cell images -> tiles -> features -> MIL.

58 tissue-microarray images (896 x 768, 32 benign, 26 malignant, 10 TMA batches) from
``../shared/data/ucsb_breast``, compared with Ilse et al. 2018 (attention / gated attention
MIL on 32 x 32 px patches with their own CNN: accuracy 0.745 / 0.755, AUC 0.798 / 0.799).

Resolution: the TIFFs carry no µm/px, so it is set with an override of 0.5 µm/px ("20x").
Why: at full resolution lymphocyte nuclei (5-7 µm across in tissue) span about 11-13 px and
malignant epithelial nuclei (about 12-15 µm) about 25-30 px, both of which put the images
between 0.4 and 0.55 µm/px; 0.5 is the standard 20x the default tiling targets, so tiles are
read at the image's own resolution without resampling. Tiles are 128 px (64 µm, a few cells:
the images are only 448 x 384 µm, so the default 256 px tiles would leave ~12 per image),
encoded by the default encoder (efficientnet_lite0, ImageNet weights; resized to 224 px).

Evaluation: ``gated_abmil`` with the library's training defaults and 5-fold stratified group
cross-validation on ``patient_id`` (the TMA batch: cores of one batch never straddle train and
test, which is stricter than an image-level split), repeated over seeds; accuracy at the run's
one decision threshold, which :func:`wsi_mil.mil.train.train_folds` chooses on the pooled
validation predictions of all folds (0.5 when a class has too few of them). Tiles and features
are cached in ``--workdir``.

    .venv/bin/python scripts/bench_ucsb_breast.py [--workdir /tmp/wsi_mil_ucsb] [--seeds 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from wsi_mil.project import Project

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
UCSB = DATA / "ucsb_breast"
MPP_OVERRIDE = 0.5
PUBLISHED = {"attention": (0.745, 0.798), "gated attention": (0.755, 0.799)}


def tile_and_extract(workdir: Path, threads: int) -> Path:
    """Tile every image and encode its tiles; returns the features folder (cached)."""
    from features.bag import read_bag_attrs
    from features.extract import ExtractParams, extract_slide
    from features.params import DEFAULT_ENCODER
    from features.registry import create_encoder
    from tiling.params import TilingParams
    from tiling.pipeline import tile_slide, tiling_outputs

    images = sorted((UCSB / "images").glob("*.tif"))
    if not images:
        raise FileNotFoundError(f"{UCSB / 'images'}: no .tif images")
    tiling = TilingParams(target_mpp=MPP_OVERRIDE, tile_size=128)
    features_dir = workdir / "features" / DEFAULT_ENCODER
    encoder = None
    start = time.time()
    n_tiles = 0
    for i, image in enumerate(images):
        tiles = tiling_outputs(workdir, image.stem)
        if not tiles.complete():
            tile_slide(image, workdir, tiling, mpp_override=MPP_OVERRIDE)
        bag = features_dir / f"{image.stem}.h5"
        if not bag.is_file():
            encoder = encoder or create_encoder(DEFAULT_ENCODER)
            extract_slide(
                tiles.tiles,
                image,
                bag,
                encoder,
                ExtractParams(tile_readers=0, threads=threads, progress=False),
            )
        n_tiles += int(read_bag_attrs(bag)["num_tiles"])
        print(
            f"[{i + 1}/{len(images)}] {image.stem}: {time.time() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"{len(images)} images, {n_tiles} tiles ({n_tiles / len(images):.1f} per image), "
        f"tiled and encoded in {time.time() - start:.0f} s"
    )
    return features_dir


def heatmaps(workdir: Path, features_dir: Path, run_dir: Path, count: int = 4) -> Path:
    """Attention heatmaps of a few held-out images of fold 0 (predicted by fold 0 only)."""
    from wsi_mil.heatmaps.params import HeatmapParams
    from wsi_mil.mil.params import PredictParams
    from wsi_mil.pipeline.heatmap import heatmap_slides
    from wsi_mil.pipeline.predict import predict_slides

    with (run_dir / "fold_0" / "test_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: (r["label"] != "malignant", r["slide_id"]))
    chosen = rows[: count - 1] + [r for r in rows if r["label"] == "benign"][:1]
    held_out = workdir / "heldout_fold0"
    held_out.mkdir(parents=True, exist_ok=True)
    for row in chosen:
        link = held_out / f"{row['slide_id']}.h5"
        if not link.exists():
            link.symlink_to(features_dir / link.name)
    out = workdir / "predict_fold0"
    predict_slides(run_dir, held_out, out=out, params=PredictParams(fold=0, device="cpu"))
    heat = workdir / "heatmaps"
    heatmap_slides(
        out / "predictions",
        out=Project(heat, heatmaps=heat),
        params=HeatmapParams(formats=("png",), topk=4),
        tiles_dir=workdir / "tiles",
    )
    for row in chosen:
        print(
            f"  heatmap {heat / row['slide_id']} (true {row['label']}, "
            f"predicted {row['predicted_label']}, p(malignant) {row['prob_malignant']})"
        )
    return heat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_ucsb"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    import torch

    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import train_folds

    torch.set_num_threads(args.threads)
    features_dir = tile_and_extract(args.workdir, args.threads)
    per_seed = []
    start = time.time()
    for seed in range(args.seeds):
        params = TrainParams(
            model="gated_abmil", folds=args.folds, seed=seed, device="cpu", bootstrap=200
        )  # everything else: the library's defaults
        summary = train_folds(
            features_dir,
            UCSB / "labels.csv",
            args.workdir / "runs" / f"gated_abmil_seed{seed}",
            params,
        )
        pooled = summary["pooled_out_of_fold"]
        per_seed.append(
            {
                "accuracy": summary["accuracy"]["mean"],
                "auc": summary["auc"]["mean"],
                "pooled_auc": pooled["auc"],
                "pooled_accuracy": pooled["accuracy"],
            }
        )
        print(
            f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_seed[-1].items()),
            file=sys.stderr,
            flush=True,
        )
    print(
        f"\ngated_abmil, {args.folds}-fold grouped CV (patient_id = TMA batch) x "
        f"{args.seeds} seeds, {time.time() - start:.0f} s of training"
    )
    for key in ("accuracy", "auc", "pooled_accuracy", "pooled_auc"):
        values = np.array([s[key] for s in per_seed], dtype=float)
        print(
            f"  {key:16s} {values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
            f"  (per seed: {' '.join(f'{v:.3f}' for v in values)})"
        )
    for name, (acc, auc) in PUBLISHED.items():
        print(f"  Ilse et al. 2018, {name}: accuracy {acc:.3f}, AUC {auc:.3f}")
    (args.workdir / "results.json").write_text(json.dumps(per_seed, indent=2))
    heatmaps(args.workdir, features_dir, args.workdir / "runs" / "gated_abmil_seed0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
