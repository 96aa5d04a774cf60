"""Explanations scored on real tissue: the UCSB collage cohort through the whole pipeline.

Builds the collage cohort (:mod:`wsi_mil.synthetic.collage`: benign UCSB fields as background,
malignant regions pasted on the 128 px tile grid, benign-only negatives) from
``../shared/data/ucsb_breast``, tiles it at 0.5 µm/px, encodes the tiles with the default
encoder (efficientnet_lite0, ImageNet weights), trains each model by ``--folds``-fold
cross-validation grouped by TMA batch (a batch's slides are never split between training and
testing: validation is carved from the training batches), and runs ``wsi-mil explain`` out of
fold on every slide, each by the fold model that held its batch out, with the lesion
annotations. Prints each model's pooled out-of-fold slide AUC, the trust report (methods ranked
by sanity and faithfulness, the recommended one) and the method x metric table (mean, bootstrap
95 % CI over the out-of-sample slides; localisation over the tumour slides) that
``docs/explanations.md`` shows; for ``transmil`` also how much its PPEG mixes the tile tokens.

    .venv/bin/python scripts/explain_collage.py [--workdir /tmp/wsi_mil_collage]

Everything is cached in ``--workdir`` (a finished run is not retrained); about 40 minutes on
two busy CPU cores for the two default models.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from wsi_mil.project import Project

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
UCSB = DATA / "ucsb_breast"
MODELS = ("gated_abmil", "transformer_mil")


def tile_and_extract(cohort: Path, workdir: Path, threads: int) -> Path:
    from features.extract import ExtractParams, extract_slide
    from features.params import DEFAULT_ENCODER
    from features.registry import create_encoder
    from tiling.params import TilingParams
    from tiling.pipeline import tile_slide, tiling_outputs

    features_dir = workdir / "features" / DEFAULT_ENCODER
    encoder, start = None, time.time()
    slides = sorted((cohort / "slides").glob("*.tif"))
    for i, slide in enumerate(slides):
        tiles = tiling_outputs(workdir, slide.stem)
        if not tiles.complete():
            tile_slide(slide, workdir, TilingParams(target_mpp=0.5, tile_size=128))
        bag = features_dir / f"{slide.stem}.h5"
        if not bag.is_file():
            encoder = encoder or create_encoder(DEFAULT_ENCODER)
            extract_slide(
                tiles.tiles,
                slide,
                bag,
                encoder,
                ExtractParams(tile_readers=0, threads=threads, progress=False),
            )
        print(
            f"[{i + 1}/{len(slides)}] {slide.stem}: {time.time() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return features_dir


def labels_without_split(labels_csv: Path, out: Path) -> Path:
    """The cohort's labels without the ``split`` column, so that training cross-validates
    grouped by ``patient_id`` (the TMA batch) and every slide is some fold's test slide."""
    import csv

    with labels_csv.open(newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "split"} for row in csv.DictReader(f)]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def ppeg_share(run_dir: Path, features_dir: Path) -> tuple[float, float]:
    """(mean, max) over the slides of :func:`wsi_mil.explain.methods.ppeg_mixing_share` for the
    fold model that explained each slide (out of fold)."""
    from features.bag import read_bag_features
    from wsi_mil.explain.methods import ppeg_mixing_share
    from wsi_mil.explain.params import ExplainParams
    from wsi_mil.mil.predict import cached_run
    from wsi_mil.pipeline.explain import explaining_fold

    run, shares = cached_run(run_dir, None, "cpu"), []
    for bag in sorted(features_dir.glob("*.h5")):
        fold_model, _, _ = explaining_fold(run, bag.stem, ExplainParams())
        shares.append(ppeg_mixing_share(fold_model.model, read_bag_features(bag)))
    return float(np.mean(shares)), float(np.max(shares))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_collage"))
    parser.add_argument(
        "--per-batch", type=int, default=1, help="positive and negative slides per TMA batch"
    )
    parser.add_argument(
        "--grid",
        type=int,
        nargs=2,
        default=(8, 8),
        help="slide size in 128 px tiles (columns rows)",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help="also: transmil (its explanations take minutes per slide)",
    )
    parser.add_argument(
        "--folds", type=int, default=3, help="cross-validation folds, grouped by TMA batch"
    )
    parser.add_argument(
        "--ppeg-only",
        action="store_true",
        help="for transmil: train (or resume) and measure how much its PPEG "
        "mixes the tile tokens, without the explanations (hours on a CPU)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--figure-slide",
        help="slide whose comparison figure is copied to "
        "--figure-out (default: the first test tumour slide)",
    )
    parser.add_argument("--figure-out", type=Path, help="copy that figure here (README)")
    args = parser.parse_args()
    import torch

    from wsi_mil.explain.params import ExplainParams
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import train_folds
    from wsi_mil.pipeline.explain import explain_slides
    from wsi_mil.synthetic.collage import CollageParams, write_collage_cohort

    torch.set_num_threads(args.threads)
    cohort = args.workdir / "cohort"
    start = time.time()
    slides = write_collage_cohort(
        UCSB,
        cohort,
        CollageParams(per_batch=args.per_batch, grid=tuple(args.grid), lesion_tiles=(2, 4)),
    )
    tumours = [s for s in slides if s.label == "tumor"]
    print(
        f"collage cohort: {len(slides)} slides ({len(tumours)} with a lesion) from "
        f"{len({s.batch for s in slides})} TMA batches, {time.time() - start:.0f} s"
    )
    features_dir = tile_and_extract(cohort, args.workdir, args.threads)
    labels = labels_without_split(cohort / "labels.csv", args.workdir / "labels_cv.csv")
    print(f"tiled and encoded in {time.time() - start:.0f} s")
    for name in args.models:
        run_dir = args.workdir / "runs_cv" / name
        params = TrainParams(
            model=name,
            hidden_dims=(256,),
            attention_dim=128,
            dropout=0.25,
            epochs=args.epochs,
            patience=10,
            min_epochs=10,
            k_sample=4,
            folds=args.folds,
            device="cpu",
            bootstrap=200,
            seed=0,
        )
        t0 = time.time()
        summary = train_folds(features_dir, labels, run_dir, params, resume=True)
        pooled = summary.get("pooled_out_of_fold", {}).get("auc")
        print(
            f"\n## {name}: pooled out-of-fold slide AUC "
            f"{'n/a' if pooled is None else f'{pooled:.3f}'} over {len(slides)} slides, "
            f"{args.folds} folds grouped by TMA batch (trained in {time.time() - t0:.0f} s)"
        )
        if name == "transmil" and args.ppeg_only:
            mean, top = ppeg_share(run_dir, features_dir)
            print(
                f"PPEG mixing share (|convolutions| / |PPEG output| per tile token): mean "
                f"{mean:.3f}, max {top:.3f} over the {len(slides)} slides, each by the fold "
                "that held it out"
            )
            continue
        out = args.workdir / "explain_oof" / name
        t0 = time.time()
        # TransMIL runs the model for every subset and left-out bag (seconds each on a CPU)
        slow = {"flip_steps": 10, "ig_steps": 16, "gradcam_topk": 0, "sanity_cascade": False}
        result = explain_slides(
            run_dir,
            features_dir,
            out=Project(out, explanations=out),
            params=ExplainParams(
                device="cpu", bootstrap=1000, **(slow if name == "transmil" else {})
            ),
            annotations_dir=cohort / "annotations",
            slides_dir=cohort / "slides",
        )
        print(f"{result.summary('explain')} in {time.time() - t0:.0f} s; tables in {out}")
        print((out / "cohort_table.md").read_text())
        seconds = {}
        from wsi_mil.explain.store import read_explanations

        for path in sorted(out.glob("*/explanations.h5")):
            for method, attrs in read_explanations(path).map_attrs.items():
                seconds.setdefault(method, []).append(float(attrs["seconds"]))
        print(
            "seconds per slide: "
            + ", ".join(f"{m} {sum(v) / len(v):.2f}" for m, v in seconds.items())
        )
        if name == "transmil":
            mean, top = ppeg_share(run_dir, features_dir)
            print(
                f"PPEG mixing share (|convolutions| / |PPEG output| per tile token): mean "
                f"{mean:.3f}, max {top:.3f} over the slides"
            )
        if args.figure_out is not None and name == args.models[0]:
            chosen = args.figure_slide or tumours[0].slide_id
            args.figure_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / chosen / "comparison.png", args.figure_out)
            print(f"figure of {chosen} copied to {args.figure_out}")
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
