"""Lesion-level evaluation of a predicted cohort against its lesion annotations.

Given the predictions of a set of slides, their labels and the lesion annotations of the
tumour slides, this computes in one pass what :mod:`~wsi_mil.metrics.froc`,
:mod:`~wsi_mil.metrics.segmentation`, :mod:`~wsi_mil.metrics.explain` and
:mod:`~wsi_mil.metrics.regions` define per slide, and pools it over the cohort:

* the Camelyon16 FROC from the segmentation head's tile-probability maps (all slides);
* Dice, IoU, sensitivity, specificity and Hausdorff distance of the tile segmentation
  (tumour slides; normal slides contribute their tile specificity);
* lesion attention mass, the pointing game and, when the run and the feature bags are given,
  deletion and insertion curves re-scored by the model (tumour slides);
* the region–label report (annotated slides).

Outputs in ``out_dir``: ``lesion_metrics.json`` (the cohort summary), ``lesion_per_slide.csv``,
``regions.csv``, ``froc_curve.csv`` and ``perturbation_curves.json`` (mean curves, for plots).
A tumour slide without an annotation file is scored for nothing lesion-level (it would count
its detections as false positives) and listed under ``unannotated``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tiling.annotations import find_annotation, read_annotations, tile_fractions
from tiling.lattice import stride_level0
from tiling.storage import csv_text, write_text_atomic
from wsi_mil.explain.params import LesionEvalParams
from wsi_mil.metrics.explain import (
    attention_weights,
    lesion_attention_mass,
    perturbation_curve,
    pointing_game,
    run_score_fn,
)
from wsi_mil.metrics.froc import froc, slide_hits, tile_detections
from wsi_mil.metrics.regions import region_report, rows_to_csv, summarise_regions
from wsi_mil.metrics.segmentation import tile_segmentation
from wsi_mil.mil.predictions import read_prediction

#: Why a slide's value is missing from a cohort mean, per metric.
EXCLUDED_BECAUSE = {
    "hausdorff_um": "no tile predicted tumour, or no tile truly tumour (the distance is undefined)",
    "hd95_um": "no tile predicted tumour, or no tile truly tumour (the distance is undefined)",
    "dice": "neither predicted nor true tumour tiles",
    "iou": "neither predicted nor true tumour tiles",
    "sensitivity": "no tile truly tumour (min_fraction)",
    "specificity": "no tile truly normal",
    "pointing_hit": "no tile truly tumour (min_fraction)",
    "deletion_auc": "no perturbation curve (perturbation_max_slides, or no run/features given)",
    "insertion_auc": "no perturbation curve (perturbation_max_slides, or no run/features given)",
}


class PixelEvaluation(Protocol):
    """Pixel masks scored beside the tile head (:class:`wsi_mil.segment.evaluate.SegmentedSlides`:
    the segment stage sits above this one, so it comes in as an argument, not an import)."""

    def slide(
        self,
        slide_id: str,
        prediction: Any,
        positive_index: int,
        lesions: Any,
        head_threshold: float,
    ) -> tuple[dict[str, float], Any] | None:
        """(the slide's ``pixel_*`` columns, its mask detections), or None: not segmented."""

    def summary(self, rows: list[dict[str, Any]], hits: list[Any]) -> dict[str, Any] | None:
        """The cohort's ``pixel_segmentation`` summary from the rows and the mask detections."""


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_lesions(
    predictions_dir: str | os.PathLike,
    labels: dict[str, str],
    annotations_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: LesionEvalParams = LesionEvalParams(),
    run_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    pixels: PixelEvaluation | None = None,
) -> dict[str, Any]:
    """Evaluate every prediction in ``predictions_dir`` whose slide is in ``labels``
    (slide id -> class name); see the module docstring. Returns the summary.

    ``pixels`` (``SegmentedSlides(OUT/segment)`` of :mod:`wsi_mil.segment.evaluate`): the pixel
    masks of ``wsi-mil segment`` are scored beside the tile head, as ``pixel_*`` columns and
    the summary's ``pixel_segmentation``."""
    from wsi_mil.mil.bags import read_features, read_grid_coords
    from wsi_mil.mil.predict import cached_run

    predictions_dir, out_dir = Path(predictions_dir), Path(out_dir)
    run = cached_run(run_dir) if run_dir is not None and features_dir is not None else None
    hits, rows, region_rows, unannotated = [], [], [], []
    pixel_hits: list[Any] = []
    curves: dict[str, list[Any]] = {"deletion": [], "insertion": []}
    for path in sorted(predictions_dir.glob("*.h5")):
        slide_id = path.stem
        if slide_id not in labels or slide_id in params.exclude:
            continue
        pred = read_prediction(path)
        pos = pred.positive_index(params.positive_class)
        negative = pred.negative_class
        tile = float(pred.attrs["tile_size_level0"])
        width, height = int(pred.attrs["slide_width"]), int(pred.attrs["slide_height"])
        mpp = float(pred.attrs["slide_mpp"])
        tumour_prob = np.asarray(pred.tile_probs[:, pos], dtype=np.float64)
        row: dict[str, Any] = {
            "slide_id": slide_id,
            "label": labels[slide_id],
            "slide_prob": float(pred.probs[pos]),
            "n_tiles": len(pred.coords),
        }
        annotation = None
        if labels[slide_id] != negative:
            annotation = find_annotation(annotations_dir, slide_id)
            if annotation is None:
                unannotated.append(slide_id)
                continue
        detections = tile_detections(
            pred.coords, tumour_prob, tile, params.froc, stride_level0=stride_level0(pred.attrs)
        )
        annotations = (
            read_annotations(annotation, params.annotations) if annotation is not None else None
        )
        lesions = annotations.lesions if annotations is not None else None
        slide = slide_hits(detections, width, height, mpp, lesions, params.froc)
        hits.append(slide)
        row.update(
            n_detections=len(detections.probs),
            false_positives=len(slide.fp_probs),
            lesions=len(slide.lesion_probs),
            itc_lesions=slide.n_itc,
        )
        scored = (
            pixels.slide(slide_id, pred, pos, lesions, params.seg_threshold)
            if pixels is not None
            else None
        )
        if scored is not None:
            row.update(scored[0])
            pixel_hits.append(slide_hits(scored[1], width, height, mpp, lesions, params.froc))
        if lesions is None:
            predicted = tumour_prob >= params.seg_threshold
            row["tile_specificity"] = float(1.0 - predicted.mean()) if predicted.size else None
            rows.append(row)
            continue
        assert annotations is not None  # the lesions were read from them
        fractions = tile_fractions(lesions, pred.coords, tile)
        seg = tile_segmentation(
            tumour_prob,
            fractions,
            pred.coords,
            tile,
            mpp,
            params.seg_threshold,
            params.min_fraction,
            stride_level0=stride_level0(pred.attrs),
        )
        row.update(seg.as_dict())
        row["tile_specificity"] = seg.specificity
        mass = lesion_attention_mass(attention_weights(pred.attention), fractions)
        row.update(attention_mass=mass.mass, attention_mass_uniform=mass.uniform)
        if (fractions >= params.min_fraction).any():
            game = pointing_game(pred.attention, fractions, params.pointing_k, params.min_fraction)
            row.update(
                pointing_hit=game.hit,
                pointing_hit_at_k=game.hit_at_k,
                pointing_precision_at_k=game.precision_at_k,
                pointing_chance=game.chance,
            )
        limit = params.perturbation_max_slides
        if run is not None and (limit is None or len(curves["deletion"]) < limit):
            assert features_dir is not None  # a run is loaded only with its features
            bag = Path(features_dir) / f"{slide_id}.h5"
            grid = read_grid_coords(bag) if any(fm.model.uses_coords for fm in run.folds) else None
            score = run_score_fn(run, read_features(bag, np.dtype(np.float32)), pos, coords=grid)
            for kind in ("deletion", "insertion"):
                curve = perturbation_curve(
                    pred.attention,
                    score,
                    kind,
                    params.perturbation_steps,
                    params.perturbation_random,
                    params.seed,
                )
                curves[kind].append(curve)
                row.update({f"{kind}_auc": curve.auc, f"{kind}_auc_random": curve.random_auc})
        region_rows += region_report(
            annotations,
            slide_id,
            pred.coords,
            pred.attention_norm,
            pred.tile_probs[:, pos],
            tile,
            params.attention_threshold,
            params.seg_threshold,
        )
        rows.append(row)
    if unannotated:
        warnings.warn(
            f"{annotations_dir}: no annotation for tumour slide(s) "
            f"{', '.join(unannotated)}: left out of the lesion-level evaluation",
            stacklevel=2,
        )
    summary = _summarise(rows, hits, curves, unannotated, params)
    summary["regions"] = summarise_regions(region_rows)
    if pixels is not None:
        summary["pixel_segmentation"] = pixels.summary(rows, pixel_hits)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "lesion_per_slide.csv", csv_text(rows) if rows else "")
    write_text_atomic(out_dir / "regions.csv", rows_to_csv(region_rows))
    if summary.get("froc") is not None:
        curve = summary.pop("_froc_curve")
        write_text_atomic(
            out_dir / "froc_curve.csv",
            "fps_per_slide,sensitivity\n" + "".join(f"{f:.6g},{s:.6g}\n" for f, s in zip(*curve)),
        )
    write_text_atomic(
        out_dir / "perturbation_curves.json",
        json.dumps(
            {
                kind: {
                    "fractions": items[0].fractions.tolist(),
                    "scores": np.mean([c.scores for c in items], axis=0).tolist(),
                    "random_scores": np.mean([c.random_scores for c in items], axis=0).tolist(),
                    "slides": len(items),
                }
                for kind, items in curves.items()
                if items
            },
            indent=2,
        )
        + "\n",
    )
    write_text_atomic(out_dir / "lesion_metrics.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _summarise(
    rows: list[dict[str, Any]],
    hits: list,
    curves: dict[str, list],
    unannotated: list[str],
    params: LesionEvalParams,
) -> dict[str, Any]:
    tumour = [r for r in rows if "dice" in r]
    normal = [r for r in rows if "dice" not in r]

    counts: dict[str, dict[str, Any]] = {}

    def mean(key: str, chosen: list[dict[str, Any]]) -> float | None:
        """The mean over ``chosen`` slides where ``key`` is defined; how many slides it left
        out, and why, goes to ``summary["counts"]`` (a mean without its n misleads)."""
        values = [float(r[key]) for r in chosen if r.get(key) is not None]
        kept = [v for v in values if not math.isnan(v)]
        counts[key] = {
            "n": len(kept),
            "n_excluded": len(chosen) - len(kept),
            "excluded_because": EXCLUDED_BECAUSE.get(key, "undefined on the slide"),
        }
        return _nanmean(kept)

    summary: dict[str, Any] = {
        "params": asdict(params),
        "n_slides": len(rows),
        "n_tumour_annotated": len(tumour),
        "n_normal": len(normal),
        "unannotated": unannotated,
        "froc": None,
        "froc_sensitivities": None,
        "n_lesions": None,
        "n_itc": None,
    }
    if any(h.lesion_probs.size for h in hits):
        result = froc(hits)
        summary.update(
            froc=result.score,
            froc_sensitivities=dict(
                zip([str(r) for r in result.fp_rates], result.sensitivities.tolist())
            ),
            n_lesions=result.n_lesions,
            n_itc=result.n_itc,
            _froc_curve=(result.fps_per_slide.tolist(), result.sensitivity.tolist()),
        )
    summary["segmentation"] = {
        key: mean(key, tumour)
        for key in ("dice", "iou", "sensitivity", "specificity", "hausdorff_um", "hd95_um")
    }
    summary["segmentation"]["normal_tile_specificity"] = mean("tile_specificity", normal)
    pointed = [r for r in tumour if "pointing_hit" in r]
    summary["explain"] = {
        "attention_mass": mean("attention_mass", tumour),
        "attention_mass_uniform": mean("attention_mass_uniform", tumour),
        "pointing_game": mean("pointing_hit", pointed),
        "pointing_game_chance": mean("pointing_chance", pointed),
        "pointing_hit_at_k": mean("pointing_hit_at_k", pointed),
        "pointing_precision_at_k": mean("pointing_precision_at_k", pointed),
        "pointing_k": params.pointing_k,
        "pointing_slides": len(pointed),
    }
    for kind in ("deletion", "insertion"):
        chosen = [r for r in tumour if f"{kind}_auc" in r]
        summary["explain"][f"{kind}_auc"] = mean(f"{kind}_auc", chosen)
        summary["explain"][f"{kind}_auc_random"] = mean(f"{kind}_auc_random", chosen)
        summary["explain"][f"{kind}_slides"] = len(chosen)
    summary["counts"] = counts
    return summary
