"""Explaining the segmenter on one slide: maps stitched like the mask, scored against lesions.

``segment --explain METHODS`` runs, after the mask, the methods of
:mod:`wsi_mil.segment.attribution` in every window the mask was made from, and writes into the
slide's ``segment/<slide_id>/`` folder:

* ``explain.zarr``: one OME-Zarr pyramid per map (``explain.zarr/<method>/``, laid out as
  ``mask.zarr``), uint8 x 255. Each window's map is shown as its non-negative part over its
  maximum in that window (gradient maps have no common unit between windows; negative
  evidence is clipped, as Grad-CAM's ReLU does), and the windows are blended with the same
  Gaussian weights as the mask. A window the segmenter outlined nothing in is 0 for every
  target-dependent method: there was nothing to explain.
* ``explain.json``: what each method cost per window, and with a lesion annotation the scores
  of every map in every *scored* window (one whose annotated lesion covers a share of it in
  ``explain_lesion_share``: inside a lesion, or far from one, where a map points tells nothing)
  and their means. Scores: :func:`wsi_mil.metrics.pixel_explain.pixel_map_scores` (the plan's
  overlap, the mass share, pointing game, energy pointing game) in every scored window; in the
  ``explain_score_windows`` scored windows whose lesion share is nearest one half also pixel
  deletion and insertion (:func:`wsi_mil.metrics.explain.perturbation_curve` over square
  patches: the patches are removed, i.e. blurred or mean-filled, or added back to a filled
  window, in the map's order, and the mean lesion probability over the segmenter's original
  mask is read after each step; random orders are the baseline) and the randomisation check
  (:func:`wsi_mil.metrics.explain.randomisation_check` against the maps of the network with
  every weight re-initialised, explaining the same mask). The segmenter's own probability is
  scored beside the methods as ``prediction``: a map that only repeats the mask scores that.
* ``explain.png``: the windows nearest a half-lesion (or, without an annotation, the most
  outlined ones), one row each: the window, the segmenter's probability, one map per method,
  with their scores in the titles.

:func:`write_cohort_table` then writes the cohort's ``explain_table.csv`` / ``.md`` and
``explain_scores.png`` (method x metric, the mean over slides of each slide's mean over its
scored windows, bootstrap 95 % CI over slides).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tiling.annotations import geometry_mask
from tiling.storage import write_text_atomic
from wsi_mil.extras import require_extra
from wsi_mil.metrics.pixel_explain import pixel_map_scores
from wsi_mil.segment.params import SegmentParams
from wsi_mil.segment.windows import (
    ChunkStitcher,
    finish_pyramid,
    pyramid_arrays,
    pyramid_attrs,
    window_layout,
    window_reader,
)

EXPLAIN_ZARR = "explain.zarr"
EXPLAIN_JSON = "explain.json"
EXPLAIN_PNG = "explain.png"
#: The segmenter's own lesion probability, scored as a map beside the methods.
REFERENCE = "prediction"
#: The cost row of one forward pass of the network (the mask's), timed in the same pass as
#: the methods: the baseline of their cost.
FORWARD = "forward pass"
#: Scores in table order: (key, column title).
METRICS = (
    ("empty_share", "windows with an empty map"),
    ("overlap", "lesion overlap (plan)"),
    ("mass_share", "mass share in lesion"),
    ("lesion_share", "lesion share (uniform map)"),
    ("pointing", "pointing game"),
    ("energy_pointing", "energy pointing"),
    ("deletion_auc", "deletion AUC"),
    ("deletion_random_auc", "deletion AUC (random order)"),
    ("insertion_auc", "insertion AUC"),
    ("insertion_random_auc", "insertion AUC (random order)"),
    ("sanity_spearman", "randomisation Spearman"),
)
#: Scores in the titles of explain.png.
FIGURE_SCORES = (
    ("overlap", "overlap"),
    ("mass_share", "share"),
    ("pointing", "hit"),
    ("deletion_auc", "del"),
)


def _display(values: np.ndarray) -> np.ndarray:
    """A window's map as shown and stitched: the non-negative part over its maximum."""
    shown = np.clip(np.asarray(values, np.float32), 0, None)
    top = float(shown.max())
    return shown / top if top > 0 else shown


def _window_seeds(slide_id: str, seed: int, indices: np.ndarray) -> list[int]:
    """Each window its own random map, the same in both passes over it."""
    base = seed + zlib.crc32(slide_id.encode())
    return [int(base + i) for i in indices]


class _PatchScorer:
    """The :data:`~wsi_mil.metrics.explain.ScoreFn` of pixel deletion/insertion in one window.

    A subset of patch indices keeps those patches of the window and fills the others; the
    score is the mean lesion probability over the segmenter's original mask. Results are
    remembered by subset, so the random-order baselines, the same for every method, are run
    once.
    """

    def __init__(
        self,
        model: Any,
        tile: np.ndarray,
        region: np.ndarray,
        patch: int,
        fill: str,
        batch_size: int,
    ) -> None:
        import cv2
        import torch

        from wsi_mil.segment.nets import to_input

        self.model, self.batch_size = model, batch_size
        self.device = next(model.parameters()).device
        size = tile.shape[0]
        if fill == "blur":
            filled = cv2.GaussianBlur(tile, (0, 0), sigmaX=float(patch))
        else:
            filled = np.broadcast_to(
                tile.reshape(-1, 3).mean(0).round().astype(np.uint8), tile.shape
            )
        both = to_input(np.stack([tile, np.ascontiguousarray(filled)]), self.device)
        self.original, self.filled = both[0], both[1]
        self.grid = -(-size // patch)
        rows = np.minimum(np.arange(size) // patch, self.grid - 1)
        cells = rows[:, None] * self.grid + rows[None, :]  # patch index of every pixel
        self.cell_index = cells.ravel()
        self.cell = torch.as_tensor(cells, device=self.device)
        self.region = torch.as_tensor(region, device=self.device)
        self.memo: dict[bytes, float] = {}

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    def patch_means(self, values: np.ndarray) -> np.ndarray:
        """A pixel map's mean in each patch, in patch-index order."""
        sums = np.bincount(
            self.cell_index,
            weights=np.asarray(values, np.float64).ravel(),
            minlength=self.n_patches,
        )
        counts = np.bincount(self.cell_index, minlength=self.n_patches)
        return sums / np.maximum(counts, 1)

    def __call__(self, subsets: list[np.ndarray]) -> np.ndarray:
        import torch

        keys = [np.asarray(s, np.int64).tobytes() for s in subsets]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            keep = torch.zeros((len(chunk), self.n_patches), dtype=torch.bool, device=self.device)
            for i, key in enumerate(chunk):
                kept = np.frombuffer(key, np.int64).copy()
                keep[i, torch.as_tensor(kept, device=self.device)] = True
            pixels = keep[:, self.cell].unsqueeze(1)  # [n, 1, T, T]
            x = torch.where(pixels, self.original, self.filled)
            with torch.no_grad():
                prob = torch.softmax(self.model(x), dim=1)[:, 1]
            inside = (prob * self.region).flatten(1).sum(1) / self.region.sum()
            self.memo.update(zip(chunk, inside.cpu().numpy().tolist()))
        return np.array([self.memo[k] for k in keys])


def _costly_scores(
    model: Any,
    randomised: Any,
    net: str,
    tile: np.ndarray,
    x: Any,
    region: Any,
    maps: dict[str, np.ndarray],
    seeds: list[int],
    gradcam_layer: str | None,
    params: SegmentParams,
    methods: list[str],
) -> dict[str, dict[str, float]]:
    """Deletion/insertion and the randomisation check of every map of one window (an empty
    map, which orders nothing, gets neither)."""
    from wsi_mil.metrics.explain import perturbation_curve, randomisation_check
    from wsi_mil.segment.attribution import explain_windows

    out: dict[str, dict[str, float]] = defaultdict(dict)
    maps = {name: values for name, values in maps.items() if (values[0] > 0).any()}
    mask = region[0].cpu().numpy()
    if params.explain_perturbation_steps > 0 and mask.any():
        scorer = _PatchScorer(
            model, tile, mask, params.explain_patch_px, params.explain_fill, params.batch_size
        )
        for name, values in maps.items():
            order = scorer.patch_means(values[0])
            for kind in ("deletion", "insertion"):
                curve = perturbation_curve(
                    order,
                    scorer,
                    kind,
                    params.explain_perturbation_steps,
                    params.explain_perturbation_random,
                    params.explain_seed,
                )
                out[name][f"{kind}_auc"] = curve.auc
                out[name][f"{kind}_random_auc"] = curve.random_auc
    if randomised is not None:
        other = explain_windows(
            randomised,
            net,
            x,
            region,
            methods,
            ig_steps=params.explain_ig_steps,
            gradcam_layer=gradcam_layer,
            seeds=seeds,
        )
        for name, values in maps.items():
            check = randomisation_check(values[0].ravel(), other[name][0].ravel())
            out[name]["sanity_spearman"] = check.spearman
            out[name]["sanity_flagged"] = float(check.flagged)
    return out


def explain_pyramid(
    model: Any,
    card: dict[str, Any],
    prediction: Any,
    slide: Any,
    path: Path,
    selected: np.ndarray,
    params: SegmentParams,
    lesions: Any | None,
    figure_path: Path | None = None,
) -> dict[str, Any]:
    """Run ``params.explain`` in the windows over the ``selected`` tiles, write the maps'
    pyramids into the zarr group at ``path`` and (``figure_path``) the comparison figure;
    ``lesions`` (level-0 polygons, None without annotation) are what the maps are scored
    against. Returns the content of ``explain.json``."""
    import torch

    require_extra("segment", "explaining a segmenter")
    from monai.data.utils import compute_importance_map

    from wsi_mil.segment.attribution import (
        available_methods,
        explain_windows,
        gradcam_layer_name,
        randomised_copy,
    )
    from wsi_mil.segment.nets import to_input

    net = str(card["net"])
    methods = available_methods(net, params.explain)
    layout = window_layout(card, prediction, selected, params)
    windows_xy, size, n = layout.windows_xy, layout.size, params.zarr_chunk
    device = next(model.parameters()).device
    gradcam_layer = (
        gradcam_layer_name(model, net, size, params.explain_gradcam_layer)
        if "gradcam" in methods
        else None
    )
    weight = compute_importance_map((size, size), mode="gaussian", device="cpu").numpy()
    read = window_reader(slide, layout)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    pyramids: dict[str, tuple[list[Any], ChunkStitcher]] = {}
    seconds: dict[str, float] = defaultdict(float)
    scored: list[dict[str, Any]] = []
    outlined = np.zeros(len(windows_xy))
    slide_id = prediction.slide_id
    forward = 0.0

    def timer(method: str, spent: float) -> None:
        seconds[method] += spent

    def truth_of(xy: np.ndarray) -> np.ndarray:
        down = layout.mask.downsample
        return geometry_mask(
            lesions,
            (size, size),
            1.0 / down,
            origin=(float(round(xy[0] * down)), float(round(xy[1] * down))),
        )

    for start in range(0, len(windows_xy), params.batch_size):
        index = np.arange(start, min(start + params.batch_size, len(windows_xy)))
        batch = windows_xy[index]
        x = to_input(read(batch), device)
        started = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[:, 1]
        if probs.is_cuda:
            torch.cuda.synchronize()
        forward += time.perf_counter() - started  # the baseline of the methods' costs
        region = probs >= params.mask_threshold
        maps = explain_windows(
            model,
            net,
            x,
            region,
            methods,
            ig_steps=params.explain_ig_steps,
            gradcam_layer=gradcam_layer,
            seeds=_window_seeds(slide_id, params.explain_seed, index),
            timer=timer,
        )
        for name, values in maps.items():
            if name not in pyramids:
                arrays = pyramid_arrays(group.create_group(name), layout.mask.shape, n)
                pyramids[name] = (arrays, ChunkStitcher(arrays[0], n, windows_xy, size))
            stitcher = pyramids[name][1]
            for (wx, wy), value in zip(batch, values):
                stitcher.add(int(wx), int(wy), _display(value), weight)
            stitcher.flush(int(index[-1]))
        probs_np = probs.cpu().numpy()
        outlined[index] = region.flatten(1).float().mean(1).cpu().numpy()
        if lesions is None:
            continue
        low, high = params.explain_lesion_share
        for i, k in enumerate(index):
            truth = truth_of(windows_xy[k])
            share = float(truth.mean())
            if not low <= share <= high:
                continue
            scores = {name: pixel_map_scores(values[i], truth) for name, values in maps.items()}
            scores[REFERENCE] = pixel_map_scores(probs_np[i], truth)
            scored.append(
                {
                    "window": int(k),
                    "x": int(windows_xy[k][0]),
                    "y": int(windows_xy[k][1]),
                    "lesion_share": share,
                    "outlined_share": float(outlined[k]),
                    "scores": scores,
                }
            )
    for name, (arrays, stitcher) in pyramids.items():
        finish_pyramid(arrays, stitcher.written, n)
        group[name].attrs.update(
            pyramid_attrs(
                prediction,
                layout,
                len(arrays),
                n,
                name,
                f"{name} explanation of the segmenter's lesion output x 255 (uint8): each "
                "window's non-negative map over its maximum, windows blended with Gaussian "
                "weights; 0 where no window ran",
                "FFA500",
                card,
                "map / window maximum x 255",
            )
        )

    # the costly scores and the figure, in the windows nearest a half-lesion
    if lesions is not None:
        ranked = [w["window"] for w in sorted(scored, key=lambda w: abs(w["lesion_share"] - 0.5))]
    else:
        ranked = [int(k) for k in np.argsort(-outlined, kind="stable") if outlined[k] > 0]
    costly = set(ranked[: params.explain_score_windows]) if lesions is not None else set()
    shown = ranked[: params.explain_figure_windows] if figure_path is not None else []
    randomised = (
        randomised_copy(model, params.explain_seed) if params.explain_sanity and costly else None
    )
    by_window = {w["window"]: w for w in scored}
    figure_rows = []
    for k in sorted(costly | set(shown)):
        tile = read(windows_xy[[k]])
        x = to_input(tile, device)
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[:, 1]
        region = probs >= params.mask_threshold
        seeds = _window_seeds(slide_id, params.explain_seed, np.array([k]))
        maps = explain_windows(
            model,
            net,
            x,
            region,
            methods,
            ig_steps=params.explain_ig_steps,
            gradcam_layer=gradcam_layer,
            seeds=seeds,
        )
        if k in costly:
            extra = _costly_scores(
                model,
                randomised,
                net,
                tile[0],
                x,
                region,
                maps,
                seeds,
                gradcam_layer,
                params,
                methods,
            )
            for name, window_scores in extra.items():
                by_window[k]["scores"][name].update(window_scores)
            by_window[k]["costly"] = True
        if k in shown:
            down, mpp = layout.mask.downsample, layout.mask.mpp
            figure_rows.append(
                {
                    "window": k,
                    "tile": tile[0],
                    "truth": None if lesions is None else truth_of(windows_xy[k]),
                    "probability": probs[0].cpu().numpy(),
                    "mask_threshold": params.mask_threshold,
                    "maps": {name: values[0] for name, values in maps.items()},
                    "scores": by_window.get(k, {}).get("scores", {}),
                    "label": f"window at ({windows_xy[k][0] * down:.0f}, "
                    f"{windows_xy[k][1] * down:.0f}) px\n{size * mpp:.0f} µm side",
                }
            )
    if figure_rows and figure_path is not None:  # rows are only gathered for a figure
        from wsi_mil.explain.figures import write_window_comparison_figure

        figure_rows.sort(key=lambda row: shown.index(row["window"]))
        write_window_comparison_figure(
            figure_path,
            figure_rows,
            f"{slide_id}: explaining {net}'s lesion log-odds summed over its mask "
            f"(P >= {params.mask_threshold})\n"
            + (
                f"scored against the annotation in the {len(shown)} windows nearest a "
                "half-lesion (del: deletion AUC, lower is better)"
                if lesions is not None
                else "no annotation: no scores; the most outlined windows"
            ),
            FIGURE_SCORES,
        )
    names = list(pyramids)
    return {
        "net": net,
        "methods": names,
        "gradcam_layer": gradcam_layer,
        "target": "lesion log-odds summed over the segmenter's mask "
        f"(P(lesion) >= {params.mask_threshold}) in each window",
        "windows": len(windows_xy),
        "annotated": lesions is not None,
        "seconds_per_window": {m: seconds[m] / max(len(windows_xy), 1) for m in seconds},
        "forward_seconds_per_window": forward / max(len(windows_xy), 1),
        "scored_windows": len(scored),
        "costly_windows": len(costly),
        "summary": summarise_windows(scored, names + [REFERENCE]),
        "scored": scored,
    }


def summarise_windows(
    scored: list[dict[str, Any]], names: list[str]
) -> dict[str, dict[str, float]]:
    """Per map, the mean of each score over the scored windows that have it, ``windows`` (how
    many have a map with positive mass) and ``empty_share`` (the share that do not: a map
    that is empty in half the windows is scored on the other half only)."""
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        values: dict[str, list[float]] = defaultdict(list)
        mapped = 0
        for window in scored:
            scores = window["scores"].get(name, {})
            mapped += bool(np.isfinite(scores.get("mass_share", np.nan)))
            for key, value in scores.items():
                if value is not None and np.isfinite(value):
                    values[key].append(float(value))
        summary[name] = {key: float(np.mean(v)) for key, v in values.items()}
        summary[name]["windows"] = float(mapped)
        if scored:
            summary[name]["empty_share"] = 1.0 - mapped / len(scored)
    return summary


def is_explained(folder: Path, methods: tuple[str, ...], annotation: Path | None) -> bool:
    """Whether ``folder`` holds explanations made for ``methods`` and scored against
    ``annotation`` (so adding annotations later scores the slides)."""
    summary = read_explain_summary(folder)
    return (
        summary is not None
        and (folder / EXPLAIN_ZARR).is_dir()
        and summary.get("params", {}).get("explain") == list(methods)
        and summary.get("annotation_path") == (None if annotation is None else str(annotation))
    )


def read_explain_summary(folder: Path) -> dict[str, Any] | None:
    """A slide's ``explain.json``, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((folder / EXPLAIN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cohort_rows(
    summaries: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows ``net, method, metric, mean, low, high, n`` over the annotated slides (bootstrap
    95 % CI over slides), plus each method's ``seconds_per_window``."""
    from wsi_mil.metrics.explain import bootstrap_mean

    rows = []
    nets = list(dict.fromkeys(s["net"] for s in summaries))
    for net in nets:
        chosen = [s for s in summaries if s["net"] == net]
        names = list(dict.fromkeys(m for s in chosen for m in s["methods"])) + [REFERENCE]
        for name in names:
            for key in [k for k, _ in METRICS] + ["sanity_flagged"]:
                values = np.array(
                    [
                        s["summary"].get(name, {}).get(key, np.nan)
                        for s in chosen
                        if s.get("annotated")
                    ],
                    np.float64,
                )
                ci = bootstrap_mean(values, n_boot, seed)
                if ci.n:
                    rows.append(
                        {
                            "net": net,
                            "method": name,
                            "metric": key,
                            "mean": ci.mean,
                            "low": ci.low,
                            "high": ci.high,
                            "n": ci.n,
                        }
                    )
            rows += _cost_row(
                net,
                name,
                [
                    s["seconds_per_window"][name]
                    for s in chosen
                    if name in s.get("seconds_per_window", {})
                ],
            )
        rows += _cost_row(
            net, FORWARD, [s["forward_seconds_per_window"] for s in chosen if s.get("windows")]
        )
    return rows


def _cost_row(net: str, method: str, cost: list[float]) -> list[dict[str, Any]]:
    """The seconds per window of a method (mean, min and max over slides)."""
    if not cost:
        return []
    return [
        {
            "net": net,
            "method": method,
            "metric": "seconds_per_window",
            "mean": float(np.mean(cost)),
            "low": float(np.min(cost)),
            "high": float(np.max(cost)),
            "n": len(cost),
        }
    ]


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """Network and method x metric: ``mean [low, high]``; the cost in ms per window and in
    forward passes of the network (timed in the same pass)."""
    keys = [k for k, _ in METRICS if any(r["metric"] == k for r in rows)]
    titles = dict(METRICS)
    cell = {(r["net"], r["method"], r["metric"]): r for r in rows}
    pairs = list(dict.fromkeys((r["net"], r["method"]) for r in rows))
    columns = ["network", "method", *(titles[k] for k in keys), "ms per window", "forward passes"]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for net, method in pairs:
        cells = []
        for key in keys:
            r = cell.get((net, method, key))
            cells.append("" if r is None else f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
        cost = cell.get((net, method, "seconds_per_window"))
        flagged = cell.get((net, method, "sanity_flagged"))
        name = method + (" (flagged)" if flagged and flagged["mean"] >= 0.5 else "")
        base = cell.get((net, FORWARD, "seconds_per_window"))
        cells.append("" if cost is None else f"{1000 * cost['mean']:.1f}")
        cells.append(
            ""
            if cost is None or base is None or base["mean"] <= 0
            else f"{cost['mean'] / base['mean']:.1f}"
        )
        lines.append("| " + " | ".join([net, name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=["net", "method", "metric", "mean", "low", "high", "n"],
        lineterminator="\n",
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_cohort_table(
    segment_dir: Path, n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """``explain_table.csv`` / ``.md`` and ``explain_scores.png`` in ``segment_dir`` from every
    slide's ``explain.json``; returns the rows (none when no slide was explained)."""
    summaries = [
        s
        for s in (read_explain_summary(f) for f in sorted(segment_dir.iterdir()) if f.is_dir())
        if s is not None
    ]
    if not summaries:
        return []
    rows = cohort_rows(summaries, n_boot, seed)
    n_slides = sum(1 for s in summaries if s.get("annotated"))
    n_windows = sum(int(s.get("scored_windows", 0)) for s in summaries)
    header = (
        f"Explanations of the segmenter's lesion output: mean over {n_slides} annotated "
        f"slides of each slide's mean over its scored windows ({n_windows} in all), "
        f"bootstrap 95 % CI over slides; ms per window over all "
        f"{len(summaries)} explained slides, and as forward passes of the network timed "
        f"in the same pass (one CPU or GPU, as the run had).\n\n"
    )
    write_text_atomic(segment_dir / "explain_table.csv", _csv_text(rows))
    write_text_atomic(segment_dir / "explain_table.md", header + table_markdown(rows))
    scored = [
        dict(r, method=f"{r['net']}/{r['method']}")
        for r in rows
        if r["metric"] != "seconds_per_window"
    ]
    if scored:
        from wsi_mil.explain.figures import write_cohort_chart

        write_cohort_chart(
            segment_dir / "explain_scores.png",
            scored,
            [k for k, _ in METRICS if "random_auc" not in k],
            dict(METRICS),
        )
    return rows
