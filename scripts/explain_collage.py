"""Explanations scored on real tissue: the UCSB collage cohort through the whole pipeline.

Builds the collage cohort (:mod:`wsi_mil.synthetic.collage`: benign UCSB fields as background,
malignant regions pasted on the 128 px tile grid, benign-only negatives, train and test from
disjoint TMA batches) from ``../shared/data/ucsb_breast``, tiles it at 0.5 µm/px, encodes the
tiles with the default encoder (efficientnet_lite0, ImageNet weights), trains each model on the
training batches (the ``split`` column: one fold, validation from the training batches) and
runs ``wsi-mil explain`` on the held-out batches' slides with their lesion annotations. Prints
each model's slide AUC on the test batches and the method x metric table (mean, bootstrap 95 %
CI over the test slides with a lesion) that the README shows.

    .venv/bin/python scripts/explain_collage.py [--workdir /tmp/wsi_mil_collage]

Everything is cached in ``--workdir``; about 15 minutes on two busy CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO.parent / "shared" / "data"))
UCSB = DATA / "ucsb_breast"
MODELS = ("gated_abmil", "transformer_mil", "transmil")


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
            extract_slide(tiles.tiles, slide, bag, encoder,
                          ExtractParams(workers=0, threads=threads, progress=False))
        print(f"[{i + 1}/{len(slides)}] {slide.stem}: {time.time() - start:.0f} s",
              file=sys.stderr, flush=True)
    return features_dir


def test_bags(features_dir: Path, labels_csv: Path, out: Path) -> Path:
    """A folder of links to the test split's bags (explain runs on held-out slides only)."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    with labels_csv.open() as f:
        for row in csv.DictReader(f):
            link = out / f"{row['slide_id']}.h5"
            if row["split"] == "test" and not link.exists():
                link.symlink_to(features_dir / link.name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsi_mil_collage"))
    parser.add_argument("--per-batch", type=int, default=1,
                        help="positive and negative slides per TMA batch")
    parser.add_argument("--grid", type=int, nargs=2, default=(8, 8),
                        help="slide size in 128 px tiles (columns rows)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--figure-slide", help="slide whose comparison figure is copied to "
                        "--figure-out (default: the first test tumour slide)")
    parser.add_argument("--figure-out", type=Path, help="copy that figure here (README)")
    args = parser.parse_args()
    import torch

    from wsi_mil.explain.params import ExplainParams
    from wsi_mil.mil.params import TrainParams
    from wsi_mil.mil.train import train_run
    from wsi_mil.pipeline.explain import explain_slides
    from wsi_mil.synthetic.collage import CollageParams, write_collage_cohort

    torch.set_num_threads(args.threads)
    cohort = args.workdir / "cohort"
    start = time.time()
    slides = write_collage_cohort(UCSB, cohort, CollageParams(per_batch=args.per_batch,
                                                                 grid=tuple(args.grid),
                                                                 lesion_tiles=(2, 4)))
    test = [s for s in slides if s.split == "test"]
    print(f"collage cohort: {len(slides)} slides ({len(test)} test, from TMA batches "
          f"{sorted({s.batch for s in test})}), {time.time() - start:.0f} s")
    features_dir = tile_and_extract(cohort, args.workdir, args.threads)
    held_out = test_bags(features_dir, cohort / "labels.csv", args.workdir / "test_bags")
    print(f"tiled and encoded in {time.time() - start:.0f} s")
    for name in args.models:
        run_dir = args.workdir / "runs" / name
        params = TrainParams(model=name, hidden_dims=(256,), attention_dim=128, dropout=0.25,
                             epochs=args.epochs, patience=10, min_epochs=10, k_sample=4,
                             device="cpu", bootstrap=200, seed=0)
        t0 = time.time()
        summary = train_run(features_dir, cohort / "labels.csv", run_dir, params, resume=True)
        auc = summary.get("auc", {})
        auc = auc.get("mean") if isinstance(auc, dict) else auc
        print(f"\n## {name}: test-batch slide AUC {auc if auc is None else f'{auc:.3f}'} "
              f"(trained in {time.time() - t0:.0f} s)")
        out = args.workdir / "explain" / name
        t0 = time.time()
        # TransMIL re-scores each deletion/insertion subset bag by bag (minutes per slide on a
        # CPU): its curves are left out, as in the README's table
        slow = {"perturbation_steps": 0, "ig_steps": 16, "gradcam_topk": 0}
        result = explain_slides(run_dir, held_out, out,
                                ExplainParams(device="cpu", bootstrap=1000,
                                              **(slow if name == "transmil" else {})),
                                annotations_dir=cohort / "annotations",
                                slides_dir=cohort / "slides")
        print(f"{result.summary('explain')} in {time.time() - t0:.0f} s; tables in {out}")
        print((out / "cohort_table.md").read_text())
        seconds = {}
        import h5py
        for path in sorted(out.glob("*/explanations.h5")):
            with h5py.File(path, "r") as f:
                for method in json.loads(f.attrs["methods"]):
                    seconds.setdefault(method, []).append(float(f[method].attrs["seconds"]))
        print("seconds per slide: " + ", ".join(f"{m} {sum(v) / len(v):.2f}"
                                                  for m, v in seconds.items()))
        if args.figure_out is not None and name == args.models[0]:
            chosen = args.figure_slide or next(s.slide_id for s in test if s.label == "tumor")
            args.figure_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / chosen / "comparison.png", args.figure_out)
            print(f"figure of {chosen} copied to {args.figure_out}")
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
