"""The Camelyon16 benchmark protocol, end to end, with wsi-mil's stages.

1. tile every slide at 0.5 µm/px (``wsi_mil.pipeline.tile.tile_slides``);
2. extract features with the chosen encoder (``wsi_mil.pipeline.extract.extract_slides``);
3. write tile labels (lesion area fraction per tile) into the bags
   (``wsi_mil.mil.lesion_labels.label_bags``), for the annotation-supervised segmentation
   head (the same model is also trained on slide labels alone: the weakly supervised head);
4. for each candidate model and seed, 5-fold cross-validation on the 270 official training
   slides (``wsi_mil.mil.train.train_folds``); the model with the best mean out-of-fold AUC is
   selected (model selection never sees a test slide);
5. for each seed, the selected model's 5-fold ensemble predicts the 129 official test slides
   (``wsi_mil.pipeline.predict.predict_slides``), scored at slide level
   (``wsi_mil.pipeline.evaluate.evaluate_predictions``: AUC with bootstrap CI, accuracy at the
   validation-chosen threshold) and lesion level (``wsi_mil.explain.lesions``: FROC, Dice,
   pointing game, deletion / insertion AUC, region report);
6. heatmaps of chosen test slides (``wsi_mil.pipeline.heatmap.heatmap_slides``);
7. ``results.json`` (with the time and disk each stage took) and ``report.md``
   (``report.py``).

Every stage skips work already done, so an interrupted run resumes.

    python scripts/camelyon16/prepare.py --data /data/CAMELYON16 --out work/c16
    python scripts/camelyon16/run.py --prepared work/c16 --seeds 0 1 2 --device cuda

``--dry-run`` runs the same protocol on a small synthetic Camelyon-shaped cohort
(``wsi_mil.synthetic.cohort``) generated into ``OUT/cohort``, on this machine, in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare import EXCLUDED, Entry, read_manifest, write_tile_labels

from features.params import bag_folder_name
from tiling.storage import write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProtocolParams:
    """Choices of the benchmark protocol."""

    encoder: str = "efficientnet_lite0"  # feature encoder (wsi-mil encoders lists them)
    target_mpp: float = 0.5  # tiling resolution, µm/px
    tile_size: int = 224  # tile side at target_mpp, px
    models: tuple[str, ...] = ("gated_abmil",)  # candidates for cross-validated selection
    seeds: tuple[int, ...] = (0, 1, 2)  # each seed: its own 5-fold CV and test prediction
    folds: int = 5  # cross-validation folds on the training slides
    val_fraction: float = 0.2  # share of each fold's training slides held out for validation
    epochs: int = 50  # maximum epochs per fold (early stopping on validation loss)
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 1  # slide-level worker processes for tiling
    extract_workers: int = 2  # tile-reading processes of feature extraction
    heatmaps: int = 4  # test slides with heatmaps (most confident tumours, top normal)
    perturbation_steps: int = 20  # points of the deletion / insertion curves
    perturbation_random: int = 5  # random orders averaged as their baseline
    perturbation_max_slides: int | None = None  # tumour slides with deletion curves (None: all)
    bootstrap: int = 1000  # bootstrap resamples of the test AUC interval
    segment_net: str = "attention_unet"  # pixel segmenter of the flagged tiles ("" : none)
    segment_epochs: int = 30  # its training epochs (validation-Dice early stopping)
    segment_mpp: float = 1.0  # µm/px of its tiles
    segment_tile_size: int = 256  # its tile side in px


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Stages:
    """Wall-clock time and output size of each stage, for the runtime table."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, float]] = {}

    def run(self, name: str, output: Path, func, *args, **kwargs):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        previous = self.records.get(name, {"seconds": 0.0})
        self.records[name] = {"seconds": previous["seconds"] + seconds, "bytes": dir_bytes(output)}
        print(f"[camelyon16] {name}: {seconds:.1f} s", file=sys.stderr)
        return result


def check(result, stage: str) -> None:
    """Stop when a batch stage failed for some slide (its failures.csv says which)."""
    print(result.summary(stage), file=sys.stderr)
    if result.exit_code:
        raise SystemExit(f"{stage} failed for {len(result.failed)} slide(s): {result.failed}")


def choose_heatmap_slides(predictions_csv: Path, n: int, annotated: set[str]) -> list[str]:
    """The most confident annotated tumour slides and the most suspicious normal slide."""
    import csv

    with predictions_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tumour = sorted(
        (r for r in rows if r["label"] == "tumor" and r["slide_id"] in annotated),
        key=lambda r: -float(r["prob_tumor"]),
    )
    normal = sorted(
        (r for r in rows if r["label"] == "normal"), key=lambda r: -float(r["prob_tumor"])
    )
    chosen = [r["slide_id"] for r in tumour[: max(n - 1, 0)]] + [r["slide_id"] for r in normal[:1]]
    return chosen[:n]


def run_protocol(
    manifest: list[Entry], out: Path, annotations_dir: Path, params: ProtocolParams
) -> dict[str, Any]:
    """Run every stage; return (and write) ``results.json``."""
    from features.extract import ExtractParams
    from tiling.params import TilingParams
    from wsi_mil.explain.lesions import evaluate_lesions
    from wsi_mil.explain.params import LesionEvalParams
    from wsi_mil.heatmaps.params import HeatmapParams
    from wsi_mil.mil.params import PredictParams, TrainParams
    from wsi_mil.mil.train import train_folds
    from wsi_mil.pipeline.evaluate import evaluate_predictions
    from wsi_mil.pipeline.extract import extract_slides
    from wsi_mil.pipeline.heatmap import heatmap_slides
    from wsi_mil.pipeline.predict import predict_slides
    from wsi_mil.pipeline.tile import tile_slides
    from wsi_mil.project import Project

    stages = Stages()
    train = [e for e in manifest if e.split == "train"]
    test = [e for e in manifest if e.split == "test" and e.slide_id not in EXCLUDED]
    tiling = TilingParams(target_mpp=params.target_mpp, tile_size=params.tile_size)
    check(
        stages.run(
            "tile",
            out / "tiles",
            tile_slides,
            [e.slide_path for e in manifest],
            out=out,
            params=tiling,
            workers=params.workers,
        ),
        "tile",
    )
    extract = ExtractParams(
        device=params.device, tile_readers=params.extract_workers, progress=False
    )
    check(
        stages.run(
            "extract",
            out / "features",
            extract_slides,
            out / "tiles",
            out=out,
            encoder=params.encoder,
            params=extract,
        ),
        "extract",
    )
    features = out / "features" / bag_folder_name(params.encoder)
    stages.run("tile_labels", features, write_tile_labels, features, manifest, annotations_dir)

    train_csv = out / "labels_train.csv"  # no split column: train_folds cross-validates on it
    write_text_atomic(
        train_csv, "slide_id,label\n" + "".join(f"{e.slide_id},{e.label}\n" for e in train)
    )
    cv: dict[str, dict[str, float | None]] = {}
    for model in params.models:
        for seed in params.seeds:
            run_dir = out / "runs" / f"{model}_seed{seed}"
            summary_path = run_dir / "summary.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
            else:
                summary = stages.run(
                    "train",
                    out / "runs",
                    train_folds,
                    features,
                    train_csv,
                    run_dir,
                    TrainParams(
                        model=model,
                        seed=seed,
                        folds=params.folds,
                        val_fraction=params.val_fraction,
                        epochs=params.epochs,
                        device=params.device,
                        bootstrap=0,
                    ),
                )
            cv.setdefault(model, {})[str(seed)] = summary["pooled_out_of_fold"]["auc"]

    def mean_cv(model: str) -> float:
        values = [v for v in cv[model].values() if v is not None]
        return sum(values) / len(values) if values else float("-inf")

    selected = max(params.models, key=mean_cv)
    test_csv = out / "labels_test.csv"
    write_text_atomic(
        test_csv, "slide_id,label\n" + "".join(f"{e.slide_id},{e.label}\n" for e in test)
    )
    test_labels = {e.slide_id: e.label for e in test}
    annotated = {e.slide_id for e in test if e.annotation_path is not None}

    def test_run(run_dir: Path, seed: int) -> dict[str, Any]:
        test_dir = out / "test" / run_dir.name
        check(
            stages.run(
                "predict",
                out / "test",
                predict_slides,
                run_dir,
                features,
                out=test_dir,
                params=PredictParams(device=params.device),
                labels_csv=test_csv,
                slide_ids=list(test_labels),
            ),
            "predict",
        )
        slide = stages.run(
            "evaluate",
            out / "test",
            evaluate_predictions,
            test_dir / "predictions",
            test_csv,
            out=Project(test_dir, evaluation=test_dir),
            n_boot=params.bootstrap,
        )
        lesion = stages.run(
            "lesion_metrics",
            out / "test",
            evaluate_lesions,
            test_dir / "predictions",
            test_labels,
            annotations_dir,
            test_dir / "lesions",
            LesionEvalParams(
                exclude=EXCLUDED,
                seed=seed,
                perturbation_steps=params.perturbation_steps,
                perturbation_random=params.perturbation_random,
                perturbation_max_slides=params.perturbation_max_slides,
            ),
            run_dir=run_dir,
            features_dir=features,
        )
        return {"run": str(run_dir), "test_dir": str(test_dir), "slide": slide, "lesion": lesion}

    # The selected runs train the segmentation head on the annotations' tile labels; the same
    # model trained on slide labels alone (the weakly supervised head the toolkit is for) is
    # run beside it, so the report says what each kind of supervision gives.
    per_seed: dict[str, Any] = {}
    for seed in params.seeds:
        per_seed[str(seed)] = test_run(out / "runs" / f"{selected}_seed{seed}", seed)
        weak_dir = out / "runs" / f"{selected}_seed{seed}_weak"
        if not (weak_dir / "summary.json").is_file():
            stages.run(
                "train_weak",
                out / "runs",
                train_folds,
                features,
                train_csv,
                weak_dir,
                TrainParams(
                    model=selected,
                    seed=seed,
                    folds=params.folds,
                    val_fraction=params.val_fraction,
                    epochs=params.epochs,
                    device=params.device,
                    bootstrap=0,
                    use_tile_labels=False,
                ),
            )
        per_seed[str(seed)]["weak"] = test_run(weak_dir, seed)

    # Pixel outlines: one segmenter trained on the training slides' annotations, run on the
    # tiles each seed's model flags, scored beside that model's tile head.
    if params.segment_net:
        from wsi_mil.pipeline.segment import segment_slides, segment_train
        from wsi_mil.segment.evaluate import SegmentedSlides
        from wsi_mil.segment.params import SegmentParams, SegmentTrainParams

        segmenter = out / "segmenter"
        if not (segmenter / "model_card.json").is_file():
            stages.run(
                "segment_train",
                segmenter,
                segment_train,
                [e.slide_path for e in train],
                annotations_dir,
                out=Project(out, segmenter=segmenter),
                params=SegmentTrainParams(
                    net=params.segment_net,
                    epochs=params.segment_epochs,
                    mpp=params.segment_mpp,
                    tile_size=params.segment_tile_size,
                    device=params.device,
                ),
                labels_csv=train_csv,
            )
        for seed, result in per_seed.items():
            test_dir = Path(result["test_dir"])
            check(
                stages.run(
                    "segment",
                    test_dir / "segment",
                    segment_slides,
                    test_dir / "predictions",
                    segmenter,
                    out=test_dir,
                    params=SegmentParams(),
                    slide_ids=list(test_labels),
                ),
                "segment",
            )
            result["pixel"] = stages.run(
                "lesion_metrics_pixel",
                out / "test",
                evaluate_lesions,
                test_dir / "predictions",
                test_labels,
                annotations_dir,
                test_dir / "lesions_pixel",
                LesionEvalParams(exclude=EXCLUDED, seed=int(seed)),
                pixels=SegmentedSlides(test_dir / "segment"),
            )["pixel_segmentation"]

    first = out / "test" / f"{selected}_seed{params.seeds[0]}"
    chosen = choose_heatmap_slides(first / "predictions.csv", params.heatmaps, annotated)
    chosen_dir = out / "heatmaps" / "chosen_predictions"
    chosen_dir.mkdir(parents=True, exist_ok=True)
    for slide_id in chosen:
        shutil.copy2(first / "predictions" / f"{slide_id}.h5", chosen_dir / f"{slide_id}.h5")
    check(
        stages.run(
            "heatmap",
            out / "heatmaps",
            heatmap_slides,
            chosen_dir,
            out=out,
            params=HeatmapParams(formats=("png",)),
            tiles_dir=out / "tiles",
        ),
        "heatmap",
    )

    results = {
        "protocol": {**asdict(params), "models": list(params.models), "seeds": list(params.seeds)},
        "n_train": len(train),
        "n_test": len(test),
        "cv_auc": cv,
        "selected_model": selected,
        "seeds": per_seed,
        "heatmaps": chosen,
        "stages": stages.records,
        "cpu_count": os.cpu_count(),
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return results


def dry_run_cohort(
    out: Path, size_px: int, train: int, test: int, workers: int
) -> tuple[list[Entry], Path]:
    """Generate the synthetic cohort (``train`` / ``test`` slides per class) and its manifest,
    with real Camelyon16 lesion outlines when the shared data is there."""
    from wsi_mil.pipeline.cohort import generate_cohort
    from wsi_mil.synthetic.params import CohortParams

    shared = Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    outlines = shared / "annotations" / "camelyon16_json"
    cohort = generate_cohort(
        out / "cohort",
        CohortParams(
            train_normal=train,
            train_tumor=train,
            test_normal=test,
            test_tumor=test,
            size_px=size_px,
            outlines=outlines if outlines.is_dir() else None,
            workers=workers,
        ),
    )
    shutil.copyfile(cohort.labels_csv, out / "labels.csv")
    manifest = [Entry(s.slide_id, s.label, s.split, s.path, s.annotation) for s in cohort.slides]
    return manifest, cohort.annotations_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--prepared", type=Path, help="output folder of prepare.py (outputs go there too)"
    )
    where.add_argument(
        "--dry-run",
        type=Path,
        metavar="OUT",
        help="generate a small synthetic cohort in OUT and run the protocol",
    )
    defaults = ProtocolParams()
    parser.add_argument("--encoder", default=defaults.encoder)
    parser.add_argument("--models", nargs="+", default=list(defaults.models))
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (dry run: 0 1)"
    )
    parser.add_argument("--folds", type=int, default=defaults.folds)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--epochs", type=int, default=None, help="default: 50 (dry run: 20)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--extract-workers",
        type=int,
        default=defaults.extract_workers,
        help="tile-reading processes of extraction (0: in the main process)",
    )
    parser.add_argument("--heatmaps", type=int, default=None, help="default: 4 (dry run: 3)")
    parser.add_argument(
        "--perturbation-steps", type=int, default=None, help="default: 20 (dry run: 10)"
    )
    parser.add_argument(
        "--perturbation-random", type=int, default=None, help="default: 5 (dry run: 3)"
    )
    parser.add_argument("--perturbation-max-slides", type=int, default=None)
    parser.add_argument(
        "--segment-net",
        default=None,
        help="pixel segmenter: attention_unet | swin_unetr | unet, or none "
        "(default: attention_unet; dry run: unet)",
    )
    parser.add_argument("--segment-epochs", type=int, default=None, help="default: 30 (dry run: 4)")
    parser.add_argument(
        "--size-px",
        type=int,
        default=2048,
        help="dry run: side of the synthetic slides in px at 0.5 µm/px",
    )
    parser.add_argument(
        "--cohort-train", type=int, default=8, help="dry run: training slides per class"
    )
    parser.add_argument("--cohort-test", type=int, default=4, help="dry run: test slides per class")
    args = parser.parse_args(argv)
    dry = args.dry_run is not None
    params = replace(
        defaults,
        encoder=args.encoder,
        models=tuple(args.models),
        seeds=tuple(args.seeds) if args.seeds else ((0, 1) if dry else defaults.seeds),
        folds=args.folds,
        val_fraction=args.val_fraction,
        epochs=args.epochs or (20 if dry else defaults.epochs),
        device=args.device,
        workers=args.workers,
        extract_workers=args.extract_workers,
        heatmaps=args.heatmaps if args.heatmaps is not None else (3 if dry else 4),
        perturbation_steps=args.perturbation_steps or (10 if dry else defaults.perturbation_steps),
        perturbation_random=args.perturbation_random
        or (3 if dry else defaults.perturbation_random),
        perturbation_max_slides=args.perturbation_max_slides,
        segment_net=""
        if args.segment_net == "none"
        else (args.segment_net or ("unet" if dry else defaults.segment_net)),
        segment_epochs=args.segment_epochs or (4 if dry else defaults.segment_epochs),
        segment_mpp=2.0 if dry else defaults.segment_mpp,
        segment_tile_size=64 if dry else defaults.segment_tile_size,
    )
    if dry:
        out = args.dry_run
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        manifest, annotations_dir = dry_run_cohort(
            out, args.size_px, args.cohort_train, args.cohort_test, args.workers
        )
        cohort_seconds = time.perf_counter() - start
    else:
        out = args.prepared
        manifest = read_manifest(out / "manifest.csv")
        annotations_dir = out / "annotations"
    results = run_protocol(manifest, out, annotations_dir, params)
    if dry:
        results["stages"] = {
            "cohort": {"seconds": cohort_seconds, "bytes": dir_bytes(out / "cohort")},
            **results["stages"],
        }
        results["dry_run"] = {"size_px": args.size_px, "mpp": 0.5}
        write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    from report import write_report

    print(f"report: {write_report(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
