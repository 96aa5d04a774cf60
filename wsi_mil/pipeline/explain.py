"""The explain stage: every explanation method on every slide, scored against the lesions.

Per slide, ``OUT/<slide_id>/explanations.h5`` (:mod:`wsi_mil.explain.store`: one dataset per
method, in tile order, with attrs naming the model and method; ``coords``; ``lesion_fraction`` when annotated; the slide's
scores as JSON in the ``scores`` attribute) and ``comparison.png`` (the thumbnail, then one
heatmap per method with the lesion outline, titled with the method's tile AUC). Then, for the
cohort, ``cohort_table.csv`` / ``cohort_table.md`` (method x metric, mean over the annotated
positive slides with a bootstrap 95 % CI) and ``cohort_scores.png`` (a bar chart).

Every slide is explained for one model (``params.fold``), the class ``params.target`` (by
default the class that is not the negative one; for subtypes the predicted class). The
explained quantity follows the run's task: a class logit, a multilabel target's logit (by
default the most probable target's), the risk of a survival model, the value of a regression
(:func:`wsi_mil.mil.tasks.explained_model`). Scores need lesion annotations and are taken
on slides that have a lesion tile; the sanity check (Adebayo et al.) needs none.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.explain.params import METHOD_NAMES, ExplainParams
from wsi_mil.explain.store import EXPLANATIONS, read_explanations
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.pipeline.executor_params import ExecutorParams

STAGE = "explain"
FIGURE = "comparison.png"
#: the cohort table's metrics: (key in a slide's scores, column title), in table order.
METRICS = (
    ("lesion_mass", "lesion mass"),
    ("pointing", "pointing game"),
    ("energy_pointing", "energy pointing"),
    ("tile_auc", "tile AUC"),
    ("tile_ap", "tile AP"),
    ("deletion_auc", "deletion AUC"),
    ("deletion_random_auc", "deletion AUC (random order)"),
    ("insertion_auc", "insertion AUC"),
    ("insertion_random_auc", "insertion AUC (random order)"),
    ("sanity_spearman", "randomisation Spearman"),
)


def _target_index(class_names: list[str], negative_index: int | None,
                  target: str | None) -> int | None:
    if target is not None:
        if target not in class_names:
            raise ValueError(f"explain target {target!r} is not a class of the run "
                             f"({class_names})")
        return class_names.index(target)
    if len(class_names) == 2 and negative_index is not None:
        return 1 - negative_index
    return None


def slide_scores(scores: np.ndarray, lesion_fraction: np.ndarray | None,
                 score_fn: Any, params: ExplainParams) -> dict[str, float]:
    """One method's localisation scores on one slide (NaN where a score does not apply)."""
    from wsi_mil.metrics.explain import (
        energy_pointing_game,
        lesion_attention_mass,
        map_weights,
        perturbation_curve,
        pointing_game,
        tile_ranking,
    )

    out: dict[str, float] = {}
    if lesion_fraction is not None and (lesion_fraction >= params.min_fraction).any():
        weights = map_weights(scores)
        out["lesion_mass"] = (lesion_attention_mass(weights, lesion_fraction).mass
                              if weights.sum() > 0 else float("nan"))
        out["lesion_mass_uniform"] = float(np.mean(lesion_fraction))
        out["pointing"] = float(pointing_game(scores, lesion_fraction, params.pointing_k,
                                              params.min_fraction).hit)
        out["energy_pointing"] = energy_pointing_game(scores, lesion_fraction,
                                                      params.min_fraction)
        ranking = tile_ranking(scores, lesion_fraction, params.min_fraction)
        out["tile_auc"], out["tile_ap"] = ranking.auc, ranking.average_precision
        out["tile_prevalence"] = ranking.prevalence
        if params.perturbation_steps > 0:
            for kind in ("deletion", "insertion"):
                curve = perturbation_curve(scores, score_fn, kind, params.perturbation_steps,
                                           params.perturbation_random, params.seed)
                out[f"{kind}_auc"], out[f"{kind}_random_auc"] = curve.auc, curve.random_auc
    return out


def explain_slide(bag_path: str | os.PathLike, out_dir: str | os.PathLike,
                  run_dir: str | os.PathLike, params: ExplainParams,
                  annotation_path: str | os.PathLike | None = None,
                  slide_path: str | os.PathLike | None = None) -> Path:
    """Explain one bag: ``out_dir/explanations.h5`` and (``params.figure``) ``comparison.png``."""
    import h5py
    import torch

    from features.bag import read_bag_attrs, read_bag_coords, read_bag_features
    from tiling.annotations import read_annotations, tile_fractions
    from wsi_mil.explain.methods import available_methods, explain, randomised_copy
    from wsi_mil.metrics.explain import randomisation_check, run_score_fn
    from wsi_mil.mil.bags import bag_grid_coords
    from wsi_mil.mil.predict import LoadedRun, cached_run
    from wsi_mil.mil.tasks import explained_model

    bag_path, out_dir = Path(bag_path), Path(out_dir)
    run = cached_run(run_dir, params.fold, params.device)
    task = run.folds[0].task
    model = explained_model(run.folds[0].model, task)
    attrs = read_bag_attrs(bag_path, slide_path)  # the slide completes a TRIDENT bag's
    features = read_bag_features(bag_path).astype(np.float32)
    coords = read_bag_coords(bag_path)
    if features.shape[1] != run.in_dim:
        raise ValueError(f"{bag_path}: {features.shape[1]} features per tile, the run was trained "
                         f"on {run.in_dim}")
    lesions, fractions = None, None
    if annotation_path is not None:
        lesions = read_annotations(annotation_path).lesions
        fractions = tile_fractions(lesions, coords, float(attrs["tile_size_level0"]))
    # the tiles' grid positions, for a model that uses them (transformer_mil, sincos2d)
    grid = bag_grid_coords(bag_path, coords, attrs) if model.uses_coords else None
    with torch.no_grad():
        logits = run.folds[0].model(
            torch.from_numpy(features).to(run.device),
            coords=None if grid is None else torch.from_numpy(grid).to(run.device)).logits
        probs = torch.from_numpy(task.decode(logits.float().cpu().numpy())[0])
    target = _target_index(run.class_names, run.negative_index, params.target)
    if target is None:
        target = int(probs.argmax())
    methods = [m for m in (params.methods or METHOD_NAMES) if m in available_methods(model)
               and not (model is not run.folds[0].model and m == "attention_x_gradient"
                        and hasattr(run.folds[0].model, "records"))]  # a wrapped transformer
    # each slide its own random map (one seed for all would give every slide the same map)
    kwargs = {"target": target, "seed": params.seed + zlib.crc32(bag_path.stem.encode()),
              "ig_steps": params.ig_steps,
              "max_quadratic_tiles": params.max_quadratic_tiles}
    if grid is not None:
        kwargs["coords"] = grid
    single = LoadedRun(run.run_dir, run.folds[:1], run.class_names, run.negative_index,
                       run.threshold, run.encoder, run.in_dim, run.device)
    score_fn = run_score_fn(single, features, target, coords=grid)
    randomised = randomised_copy(model, params.seed) if params.sanity else None
    maps, scores, seconds = {}, {}, {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads.*")
        warnings.filterwarnings("ignore", message=".*requires_grad.*")
        for method in methods:
            start = time.perf_counter()
            maps[method] = explain(model, features, method, **kwargs)
            seconds[method] = time.perf_counter() - start
            scores[method] = slide_scores(maps[method], fractions, score_fn, params)
            if randomised is not None:
                check = randomisation_check(maps[method],
                                            explain(randomised, features, method, **kwargs),
                                            params.sanity_threshold)
                scores[method].update(sanity_spearman=check.spearman,
                                      sanity_flagged=float(check.flagged))
    gradcam_note = "not asked for"
    if params.gradcam_topk > 0 and "attention" in maps:
        gradcam_note = _gradcam(out_dir, bag_path, slide_path, attrs, coords, model, features,
                                maps["attention"], target, params.gradcam_topk, grid)
    meta = {"model": model.name, "gradcam": gradcam_note, "fold": run.folds[0].fold, "run_path": str(run.run_dir),
            "checkpoint_sha256": run.folds[0].sha256, "target_class": run.class_names[target],
            "probs": [float(p) for p in probs.cpu()], "class_names": run.class_names,
            "features_path": str(bag_path), "slide_id": bag_path.stem,
            "annotation_path": str(annotation_path) if annotation_path else None}
    out_dir.mkdir(parents=True, exist_ok=True)
    if params.figure:
        from wsi_mil.explain.figures import write_comparison_figure

        path = Path(slide_path or attrs.get("slide_path", ""))
        write_comparison_figure(out_dir / FIGURE, path, attrs, coords, maps, scores, lesions,
                                title=f"{bag_path.stem}: {model.name}, explaining "
                                f"{run.class_names[target]} ("
                                f"{'P' if task.kind in ('classification', 'multilabel') else '='}"
                                f" {float(probs[target]):.2f})",
                                panel_side=params.figure_side)
    with atomic_output(out_dir / EXPLANATIONS) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=coords)
        if fractions is not None:
            f.create_dataset("lesion_fraction", data=fractions)
        for method, values in maps.items():
            ds = f.create_dataset(method, data=values.astype(np.float32))
            ds.attrs.update(model=model.name, method=method, seconds=seconds[method],
                            target_class=run.class_names[target])
        for key, value in {**meta, **provenance()}.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (list, dict)) or value is None \
                else value
        f.attrs["methods"] = json.dumps(list(maps))
        f.attrs["scores"] = json.dumps(scores)
        f.attrs["params"] = json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in vars(params).items()})
        f.attrs["complete"] = True
    return out_dir


@functools.lru_cache(maxsize=2)
def _encoder(name: str, weights: str | None) -> Any:
    """The bag's encoder, loaded once per worker process for every slide of a batch."""
    from features.registry import create_encoder

    return create_encoder(name, weights=weights)


def _gradcam(out_dir: Path, bag_path: Path, slide_path: Any, attrs: dict[str, Any],
             coords: np.ndarray, model: Any, features: np.ndarray, attention: np.ndarray,
             target: int, k: int, grid: np.ndarray | None = None) -> str:
    """``gradcam.png`` (+ ``gradcam.npz``) of the k most attended tiles; returns what was done
    or why not (an encoder that is no CNN, weights or slide not available)."""
    from tiling.reader import TileReader, resize_rgb
    from tiling.slide import open_slide
    from wsi_mil.explain.gradcam import GradCamError, tile_gradcam
    from wsi_mil.heatmaps.render import tile_grid_figure

    try:
        weights = attrs.get("weights")
        encoder = _encoder(str(attrs.get("encoder")),
                           str(weights) if weights and Path(str(weights)).is_file() else None)
        slide = open_slide(Path(slide_path or attrs.get("slide_path", "")))
    except Exception as exc:  # noqa: BLE001 - Grad-CAM is an extra: say why it is missing
        return f"not run: {type(exc).__name__}: {exc}"
    try:
        order = np.argsort(-attention, kind="stable")[:k]
        reader = TileReader(slide, attrs)
        tiles = [reader.read(int(coords[i, 0]), int(coords[i, 1])) for i in order]
        maps = tile_gradcam(encoder, model, features, order, tiles, target, coords=grid)
    except GradCamError as exc:
        return f"not run: {exc}"
    finally:
        slide.close()
    shown = [resize_rgb(np.ascontiguousarray(t), encoder.input_size) for t in tiles]
    png = tile_grid_figure(shown, [f"tile {i} (attention rank {r + 1})"
                                   for r, i in enumerate(order)],
                           f"{bag_path.stem}: Grad-CAM of {encoder.name} for the slide logit",
                           overlays=list(maps))
    with atomic_output(out_dir / "gradcam.png") as tmp:
        tmp.write_bytes(png)
    with atomic_output(out_dir / "gradcam.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, tiles=order, maps=maps.astype(np.float16))
    return f"{len(order)} tiles, {encoder.name}"


def is_complete(folder: Path, figure: bool) -> bool:
    path = folder / EXPLANATIONS
    if not path.is_file() or (figure and not (folder / FIGURE).is_file()):
        return False
    try:
        read_explanations(path)
    except (OSError, ValueError, KeyError):
        return False
    return True


def cohort_table(slide_scores_list: list[dict[str, dict[str, float]]], n_boot: int,
                 seed: int) -> list[dict[str, Any]]:
    """Rows ``method, metric, mean, low, high, n`` over slides (bootstrap 95 % CI)."""
    from wsi_mil.metrics.explain import bootstrap_mean

    methods = [m for m in METHOD_NAMES if any(m in s for s in slide_scores_list)]
    rows = []
    for method in methods:
        for key, _ in METRICS + (("sanity_flagged", "flagged"),):
            values = np.array([s[method].get(key, np.nan) for s in slide_scores_list
                               if method in s], dtype=np.float64)
            ci = bootstrap_mean(values, n_boot, seed)
            if ci.n:
                rows.append({"method": method, "metric": key, "mean": ci.mean, "low": ci.low,
                             "high": ci.high, "n": ci.n})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """Method x metric as a Markdown table: ``mean [low, high]``."""
    keys = [k for k, _ in METRICS if any(r["metric"] == k for r in rows)]
    titles = dict(METRICS)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["metric"]): r for r in rows}
    lines = ["| method | " + " | ".join(titles[k] for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for method in methods:
        cells = []
        for key in keys:
            r = cell.get((method, key))
            cells.append("" if r is None else f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
        flagged = cell.get((method, "sanity_flagged"))
        name = method + (" (flagged)" if flagged and flagged["mean"] >= 0.5 else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["method", "metric", "mean", "low", "high", "n"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_cohort_outputs(out_dir: Path, params: ExplainParams) -> list[dict[str, Any]]:
    """``cohort_table.csv``, ``cohort_table.md`` and ``cohort_scores.png`` from every slide's
    explanations in ``out_dir``; the localisation scores use annotated slides only."""
    per_slide = []
    for path in sorted(out_dir.glob(f"*/{EXPLANATIONS}")):
        try:
            per_slide.append(read_explanations(path)[1]["scores"])
        except (OSError, ValueError, KeyError):
            continue
    rows = cohort_table(per_slide, params.bootstrap, params.seed)
    write_text_atomic(out_dir / "cohort_table.csv", _csv_text(rows))
    write_text_atomic(out_dir / "cohort_table.md", table_markdown(rows))
    if rows:
        from wsi_mil.explain.figures import write_cohort_chart

        write_cohort_chart(out_dir / "cohort_scores.png", rows,
                           [k for k, _ in METRICS if "random_auc" not in k], dict(METRICS))
    return rows


def explain_slides(run_dir: str | os.PathLike, features_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, params: ExplainParams | None = None,
                   annotations_dir: str | os.PathLike | None = None,
                   slides_dir: str | os.PathLike | None = None, workers: int = 1,
                   overwrite: bool = False,
                   executor: ExecutorParams | None = None) -> BatchResult:
    """Explain every bag of ``features_dir`` with the run, then write the cohort outputs."""
    from tiling.annotations import find_annotation

    params = params or ExplainParams()
    features_dir, out_dir = Path(features_dir), Path(out_dir)
    if not features_dir.is_dir():
        raise FileNotFoundError(f"{features_dir}: features folder not found")
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise FileNotFoundError(f"{annotations_dir}: annotations folder not found")
    slides: dict[str, Path] = {}
    if slides_dir is not None:
        from tiling.discover import find_slides, slide_id_for

        slides = {slide_id_for(p): p for p in find_slides([slides_dir], recursive=True)}
    jobs = []
    for bag in sorted(features_dir.glob("*.h5")):
        annotation = find_annotation(annotations_dir, bag.stem) if annotations_dir else None
        job = functools.partial(explain_slide, bag, out_dir / bag.stem, run_dir, params,
                                annotation, slides.get(bag.stem))
        jobs.append(SlideJob(slide=bag.stem, output=out_dir / bag.stem, run=job))
    if not jobs:
        raise FileNotFoundError(f"{features_dir}: no feature bags (*.h5)")
    result = run_batch(jobs, stage=STAGE, failures_csv=out_dir / "failures.csv",
                       is_complete=functools.partial(is_complete, figure=params.figure),
                       workers=workers, overwrite=overwrite, executor=executor)
    write_cohort_outputs(out_dir, params)
    return result
