"""The explain stage: every explanation method on every slide, scored for trust (the scoring
and the cohort outputs are :mod:`wsi_mil.explain.scoring`).

Per slide, ``OUT/<slide_id>/explanations.h5`` (:mod:`wsi_mil.explain.store`: one dataset per
method, in tile order, with attrs naming the model and method; ``coords``; ``lesion_fraction``
when annotated; the slide's scores as JSON in the ``scores`` attribute, the patch-flipping
curves in ``patch_flipping``, the cascading randomisation in ``mprt``; ``fold`` and
``in_sample``) and ``comparison.png`` (the thumbnail, then one heatmap per method with the
lesion outline, titled with its faithfulness, tile AUC and sanity verdict). Then, for the
cohort, ``cohort_table.csv`` / ``cohort_table.md`` (the trust report: the methods ranked by
sanity and faithfulness with localisation beside, the recommended method; then method x metric,
mean over the out-of-sample slides with a bootstrap 95 % CI), ``trust.json`` (the ranking, read
by ``wsi-mil heatmap`` and ``wsi-mil view``) and ``cohort_scores.png`` (a bar chart).

**Out of fold**: an explanation is of one model, so each slide of a cross-validated run is
explained by the fold model that held it out, the fold :func:`wsi_mil.mil.predict.choose_folds`
gives its out-of-fold prediction (``params.fold`` forces one fold for every slide); a slide no
fold held out is explained by ``params.fallback_fold``. A slide that the explaining fold trained
or validated on is *in sample*: it is explained and kept, but left out of the cohort tables,
whose header says how many were. The class explained is ``params.target`` (by default the class
that is not the negative one; for subtypes the predicted class). The explained quantity follows
the run's task: a class logit, a multilabel target's logit (by default the most probable
target's), the risk of a survival model, the value of a regression
(:func:`wsi_mil.mil.tasks.explained_model`); patch flipping re-scores the bag by the same
quantity read as the task reads it (a class probability, a target probability, the risk, the
standardised value: :func:`wsi_mil.mil.tasks.explained_output`). Faithfulness (patch flipping)
and the sanity checks need no annotation and are taken on every slide; localisation scores need
lesion annotations and are taken on slides with a lesion tile.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tiling.storage import atomic_output
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import InputError, MissingInputError
from wsi_mil.explain.params import METHOD_NAMES, ExplainParams
from wsi_mil.explain.scoring import slide_scores, write_cohort_outputs
from wsi_mil.explain.store import (
    EXPLANATIONS,
    Explanations,
    read_explanations,
    write_explanations,
)
from wsi_mil.extras import require_extra
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

if TYPE_CHECKING:
    from wsi_mil.mil.models import MILModel

STAGE = "explain"
FIGURE = "comparison.png"


def _target_index(
    class_names: list[str], negative_index: int | None, target: str | None
) -> int | None:
    if target is not None:
        if target not in class_names:
            raise InputError(f"explain target {target!r} is not a class of the run ({class_names})")
        return class_names.index(target)
    if len(class_names) == 2 and negative_index is not None:
        return 1 - negative_index
    return None


def explaining_fold(run: Any, slide_id: str, params: ExplainParams) -> tuple[Any, bool, str]:
    """(the fold model that explains ``slide_id``, whether it trained on the slide, why it).

    Out of fold unless ``params.fold`` is set: the fold prediction uses for the slide's
    out-of-fold prediction (:func:`wsi_mil.mil.predict.choose_folds`), one fold when several
    held it out (``params.fallback_fold`` if among them); ``params.fallback_fold`` when none did.
    """
    from wsi_mil.mil.predict import RunError, choose_folds

    by_fold = {fm.fold: fm for fm in run.folds}
    roles = run.roles.get(slide_id, {})
    wanted = params.fold if params.fold is not None else params.fallback_fold
    if wanted not in by_fold:
        name = "fold" if params.fold is not None else "fallback_fold"
        raise RunError(
            f"{run.run_dir}: no fold_{wanted} (explain {name}); the run has folds {sorted(by_fold)}"
        )
    if params.fold is not None:
        fm, why = by_fold[params.fold], f"fold {params.fold}, as asked"
    else:
        chosen, _ = choose_folds(run, slide_id, None)
        held = [f for f in chosen if roles.get(f.fold) == "test"]
        if held:
            fm = by_fold[wanted] if by_fold[wanted] in held else held[0]
            why = f"out of fold: fold {fm.fold} held it out"
        else:
            fm = by_fold[wanted]
            why = f"fallback fold {fm.fold}: no fold held it out"
    in_sample = roles.get(fm.fold) in ("train", "val")
    return fm, in_sample, why + (" (in sample: it trained on it)" if in_sample else "")


def explain_slide(
    bag_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: ExplainParams,
    annotation_path: str | os.PathLike | None = None,
    slide_path: str | os.PathLike | None = None,
) -> Path:
    """Explain one bag: ``out_dir/explanations.h5`` and (``params.figure``) ``comparison.png``."""
    import torch

    from features.bag import read_bag_attrs, read_bag_coords, read_bag_features
    from tiling.annotations import read_annotations, tile_fractions
    from wsi_mil.explain.methods import available_methods, explain
    from wsi_mil.explain.perturbation import bag_scorer
    from wsi_mil.explain.randomisation import cascading_randomisations
    from wsi_mil.metrics.explain import mprt, patch_flipping, random_flip_curve
    from wsi_mil.mil.bags import bag_grid_coords
    from wsi_mil.mil.predict import cached_run
    from wsi_mil.mil.tasks import explained_model, explained_output

    bag_path, out_dir = Path(bag_path), Path(out_dir)
    run = cached_run(run_dir, None, params.device)
    fold_model, in_sample, fold_choice = explaining_fold(run, bag_path.stem, params)
    task = fold_model.task
    model = explained_model(fold_model.model, task)
    attrs = read_bag_attrs(bag_path, slide_path)  # the slide completes a TRIDENT bag's
    features = read_bag_features(bag_path).astype(np.float32)
    coords = read_bag_coords(bag_path)
    if features.shape[1] != run.in_dim:
        raise InputError(
            f"{bag_path}: {features.shape[1]} features per tile, the run was trained "
            f"on {run.in_dim}"
        )
    lesions, fractions = None, None
    if annotation_path is not None:
        lesions = read_annotations(annotation_path).lesions
        fractions = tile_fractions(lesions, coords, float(attrs["tile_size_level0"]))
    # the tiles' grid positions, for a model that uses them (transformer_mil, sincos2d)
    grid = bag_grid_coords(bag_path, coords, attrs) if model.uses_coords else None
    x = torch.from_numpy(features).to(run.device)
    grid_t = None if grid is None else torch.from_numpy(grid).to(run.device)
    with torch.no_grad():
        probs = torch.from_numpy(
            task.decode(fold_model.model(x, coords=grid_t).logits.float().cpu().numpy())[0]
        )
        # the explained quantity's raw output (of a discrete-time model: the risk)
        logits = model(x, coords=grid_t).logits.float()[0]
    target = _target_index(run.class_names, run.negative_index, params.target)
    if target is None:
        target = int(probs.argmax())
    methods = [m for m in (params.methods or METHOD_NAMES) if m in available_methods(model)]
    # each slide its own random map (one seed for all would give every slide the same map)
    seed = params.seed + zlib.crc32(bag_path.stem.encode())

    def explain_bag(explained: MILModel, method: str) -> np.ndarray:
        return explain(
            explained,
            features,
            method,
            target=target,
            seed=seed,
            ig_steps=params.ig_steps,
            max_quadratic_tiles=params.max_quadratic_tiles,
            max_perturbation_tiles=params.max_perturbation_tiles,
            coords=grid,
        )

    flips: dict[str, Any] = {}
    scorer = random_curve = None
    if params.flip_steps > 0:
        scorer = bag_scorer(model, x, grid_t, target, output=explained_output(task))
        random_curve = random_flip_curve(
            len(features), scorer, params.flip_steps, params.flip_random, params.seed
        )
        flips = {
            "fractions": np.linspace(0, 1, params.flip_steps + 1).tolist(),
            "random": random_curve.tolist(),
        }
    stages = []
    if params.sanity:
        stages = list(cascading_randomisations(model, params.seed))
        if not params.sanity_cascade:
            stages = stages[-1:]
    maps, scores, seconds, cascade = {}, {}, {}, {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads.*")
        warnings.filterwarnings("ignore", message=".*requires_grad.*")
        for method in methods:
            start = time.perf_counter()
            maps[method] = explain_bag(model, method)
            seconds[method] = time.perf_counter() - start
            scores[method] = slide_scores(maps[method], fractions, params)
            if scorer is not None:
                curves = patch_flipping(
                    maps[method],
                    scorer,
                    params.flip_steps,
                    params.flip_random,
                    params.seed,
                    random_curve,
                )
                scores[method].update(
                    morf_aupc=curves.morf_aupc,
                    lerf_aupc=curves.lerf_aupc,
                    random_aupc=curves.random_aupc,
                    srg=curves.srg,
                )
                flips[method] = {"morf": curves.morf.tolist(), "lerf": curves.lerf.tolist()}
            if stages:
                rhos = mprt(maps[method], [explain_bag(m, method) for _, m in stages])
                cascade[method] = rhos
                # flagged when the fully randomised model's map still correlates, or the maps
                # along the cascade do on average: the map barely depends on the weights
                mean = float(np.mean(np.abs(rhos)))
                scores[method].update(
                    sanity_spearman=rhos[-1],
                    mprt_mean=mean,
                    sanity_flagged=float(max(abs(rhos[-1]), mean) >= params.sanity_threshold),
                )
    gradcam_note = "not asked for"
    if params.gradcam_topk > 0 and "attention" in maps:
        gradcam_note = _gradcam(
            out_dir,
            bag_path,
            slide_path,
            attrs,
            coords,
            model,
            features,
            maps["attention"],
            target,
            params.gradcam_topk,
            grid,
        )
    meta = {
        "model": model.name,
        "gradcam": gradcam_note,
        "fold": fold_model.fold,
        "in_sample": in_sample,
        "fold_choice": fold_choice,
        "run_path": str(run.run_dir),
        "checkpoint_sha256": fold_model.sha256,
        "target_class": run.class_names[target],
        "probs": [float(p) for p in probs.cpu()],
        "class_names": run.class_names,
        "features_path": str(bag_path),
        "slide_id": bag_path.stem,
        "annotation_path": str(annotation_path) if annotation_path else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if params.figure:
        from wsi_mil.explain.figures import write_comparison_figure

        path = Path(slide_path or attrs.get("slide_path", ""))
        sample = "in sample" if in_sample else "out of sample"
        write_comparison_figure(
            out_dir / FIGURE,
            path,
            attrs,
            coords,
            maps,
            scores,
            lesions,
            title=f"{bag_path.stem}: {model.name} fold {fold_model.fold} "
            f"({sample}), explaining {run.class_names[target]} "
            f"({'P' if task.kind in ('classification', 'multilabel') else '='}"
            f" {float(probs[target]):.2f})",
            panel_side=params.figure_side,
        )
    map_attrs = {
        method: {
            "model": model.name,
            "method": method,
            "seconds": seconds[method],
            "target_class": run.class_names[target],
        }
        for method in maps
    }
    if "lrp" in maps:  # conservation: relevance + bias share = the logit
        map_attrs["lrp"].update(
            logit=float(logits[target]), bias_share=float(logits[target]) - float(maps["lrp"].sum())
        )
    write_explanations(
        out_dir / EXPLANATIONS,
        Explanations(
            coords=coords,
            maps=maps,
            map_attrs=map_attrs,
            lesion_fraction=fractions,
            attrs={
                **meta,
                "scores": scores,
                "patch_flipping": flips,
                "mprt": {"stages": [s.name for s, _ in stages], **cascade},
                "params": {
                    k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(params).items()
                },
            },
        ),
    )
    return out_dir


@functools.lru_cache(maxsize=2)
def _encoder(name: str, weights: str | None, device: str) -> Any:
    """The bag's encoder on the MIL model's device (Grad-CAM runs the two as one graph), loaded
    once per worker process for every slide of a batch."""
    from features.registry import create_encoder

    return create_encoder(name, weights=weights, device=device)


def _gradcam(
    out_dir: Path,
    bag_path: Path,
    slide_path: Any,
    attrs: dict[str, Any],
    coords: np.ndarray,
    model: Any,
    features: np.ndarray,
    attention: np.ndarray,
    target: int,
    k: int,
    grid: np.ndarray | None = None,
) -> str:
    """``gradcam.png`` (+ ``gradcam.npz``) of the k most attended tiles; returns what was done
    or why not (an encoder that is no CNN, weights or slide not available)."""
    from tiling.reader import TileReader, resize_rgb
    from tiling.slide import open_slide
    from wsi_mil.explain.gradcam import GradCamError, tile_gradcam
    from wsi_mil.heatmaps.render import tile_grid_figure

    try:
        weights = attrs.get("weights")
        encoder = _encoder(
            str(attrs.get("encoder")),
            str(weights) if weights and Path(str(weights)).is_file() else None,
            str(next(model.parameters()).device),
        )
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
    png = tile_grid_figure(
        shown,
        [f"tile {i} (attention rank {r + 1})" for r, i in enumerate(order)],
        f"{bag_path.stem}: Grad-CAM of {encoder.name} for the slide logit",
        overlays=list(maps),
    )
    with atomic_output(out_dir / "gradcam.png") as tmp:
        tmp.write_bytes(png)
    with atomic_output(out_dir / "gradcam.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, tiles=order, maps=maps.astype(np.float16))
    return f"{len(order)} tiles, {encoder.name}"


def is_complete(folder: Path, figure: bool) -> bool:
    """A slide's folder holds a complete explanations file of this release (with its fold and
    in-sample flag; an older file is redone) and, if asked for, its figure."""
    path = folder / EXPLANATIONS
    if not path.is_file() or (figure and not (folder / FIGURE).is_file()):
        return False
    try:
        return "in_sample" in read_explanations(path).attrs
    except (OSError, ValueError, KeyError):
        return False


def explain_slides(
    run_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    params: ExplainParams | None = None,
    annotations_dir: str | os.PathLike | None = None,
    slides_dir: str | os.PathLike | None = None,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
) -> BatchResult:
    """Explain every bag of ``features_dir`` with the run into the project ``out``'s
    ``explain/<slide_id>/``, then write the cohort outputs there."""
    require_extra("explain", "explaining a run")
    from tiling.annotations import find_annotation

    params = params or ExplainParams()
    project = Project.of(out)
    features_dir, out_dir = Path(features_dir), project.explanations_dir
    if not features_dir.is_dir():
        raise MissingInputError(f"{features_dir}: features folder not found")
    if not Path(run_dir).is_dir():
        raise MissingInputError(f"{run_dir}: run folder not found")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise MissingInputError(f"{annotations_dir}: annotations folder not found")
    slides: dict[str, Path] = {}
    if slides_dir is not None:
        from tiling.discover import find_slides, slide_id_for

        slides = {slide_id_for(p): p for p in find_slides([slides_dir], recursive=True)}
    jobs = []
    for bag in sorted(features_dir.glob("*.h5")):
        annotation = find_annotation(annotations_dir, bag.stem) if annotations_dir else None
        job = functools.partial(
            explain_slide,
            bag,
            out_dir / bag.stem,
            run_dir,
            params,
            annotation,
            slides.get(bag.stem),
        )
        jobs.append(SlideJob(slide=bag.stem, output=out_dir / bag.stem, run=job))
    if not jobs:
        raise MissingInputError(f"{features_dir}: no feature bags (*.h5)")
    result = run_batch(
        jobs,
        stage=STAGE,
        failures_csv=project.failures_csv,
        is_complete=functools.partial(is_complete, figure=params.figure),
        workers=workers,
        overwrite=overwrite,
        executor=executor,
    )
    write_cohort_outputs(out_dir, params)
    return result
