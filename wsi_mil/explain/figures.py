"""Figures of the explain stage: one slide's methods side by side, and the cohort's bar chart.

Drawn with matplotlib's object API (``Figure``, no pyplot state, safe in worker processes) and
written atomically. Each heatmap is the method's scores as percentiles among the slide's tiles
(the heatmap renderer's default "rank" scale, so maps of different units compare), laid on the
tile grid over the thumbnail, with the lesion outline in black.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tiling.storage import atomic_output


def _thumbnail(slide_path: Path, side: int) -> tuple[np.ndarray | None, float]:
    """(RGB thumbnail, level-0 px per thumbnail px), or (None, 0) when the slide cannot be read."""
    from tiling.slide import open_slide, read_thumbnail

    try:
        slide = open_slide(slide_path)
    except Exception:  # noqa: BLE001 - a figure without its thumbnail is still a figure
        return None, 0.0
    try:
        thumb = read_thumbnail(slide, max_side=side)
    finally:
        slide.close()
    return thumb.image, thumb.downsample


def tile_stride(attrs: Mapping[str, Any]) -> float:
    """The tile grid's step in level-0 px: the tiles file's ``stride`` (already level-0 px;
    an earlier version scaled it again by level-0 px per tile px, drawing each cell twice too
    large on slides tiled at a coarser resolution than they were scanned), else the tile."""
    from tiling.lattice import stride_level0

    if attrs.get("stride") is not None:
        return stride_level0(attrs)
    return float(attrs["tile_size_level0"])


def score_grid(
    coords: np.ndarray, values: np.ndarray, stride: float, width: float, height: float
) -> np.ndarray:
    """Per-tile ``values`` on the tile grid (NaN where there is no tile)."""
    cols, rows = int(np.ceil(width / stride)), int(np.ceil(height / stride))
    grid = np.full((rows, cols), np.nan, dtype=np.float32)
    ij = np.floor(np.asarray(coords, dtype=np.float64) / stride).astype(int)
    grid[np.clip(ij[:, 1], 0, rows - 1), np.clip(ij[:, 0], 0, cols - 1)] = values
    return grid


def _outline(ax: Any, lesions: Any, scale: float) -> None:
    if lesions is None or lesions.is_empty:
        return
    for polygon in getattr(lesions, "geoms", [lesions]):
        x, y = polygon.exterior.xy
        ax.plot(np.asarray(x) / scale, np.asarray(y) / scale, color="black", linewidth=1.0)


def write_comparison_figure(
    path: str | os.PathLike,
    slide_path: Path,
    attrs: Mapping[str, Any],
    coords: np.ndarray,
    maps: Mapping[str, np.ndarray],
    scores: Mapping[str, Mapping[str, float]],
    lesions: Any,
    title: str,
    panel_side: int = 384,
) -> Path:
    """Thumbnail, then one heatmap per method, titled with its faithfulness (LeRF - MoRF AUPC),
    tile AUC, Spearman with the fully randomised model and mean |Spearman| over the cascade; a
    map that fails the sanity check says so in red."""
    from matplotlib.figure import Figure
    from scipy.stats import rankdata

    width, height = float(attrs["slide_width"]), float(attrs["slide_height"])
    stride = tile_stride(attrs)
    image, downsample = _thumbnail(slide_path, panel_side)
    scale = downsample if image is not None else max(width, height) / panel_side
    extent = (0, width / scale, height / scale, 0)
    panels = 1 + len(maps)
    cols = min(panels, 5)
    rows = int(np.ceil(panels / cols))
    aspect = height / width
    # room for each row's three-line titles; constrained layout keeps them off the row above
    fig = Figure(
        figsize=(3.0 * cols, (3.0 * aspect + 0.7) * rows + 0.4), dpi=110, layout="constrained"
    )
    fig.suptitle(title, fontsize=10)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    for ax in axes:
        ax.set_axis_off()
    if image is not None:
        axes[0].imshow(image, extent=extent)
    _outline(axes[0], lesions, scale)
    axes[0].set_title(
        "slide"
        if lesions is None
        else "slide (no lesion annotated)"
        if lesions.is_empty
        else "slide (lesion outlined)",
        fontsize=8,
    )
    for ax, (method, values) in zip(axes[1:], maps.items()):
        if image is not None:
            ax.imshow(image, extent=extent)
        ranks = rankdata(values) / max(len(values), 1)
        ax.imshow(
            score_grid(coords, ranks, stride, width, height),
            cmap="inferno",
            alpha=0.75,
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(
                0,
                np.ceil(width / stride) * stride / scale,
                np.ceil(height / stride) * stride / scale,
                0,
            ),
        )
        _outline(ax, lesions, scale)
        ax.set_xlim(0, width / scale)
        ax.set_ylim(height / scale, 0)
        s = scores.get(method, {})
        figures = []
        if np.isfinite(s.get("srg", np.nan)):
            figures.append(f"LeRF\u2212MoRF {s['srg']:.2f}")
        if np.isfinite(s.get("tile_auc", np.nan)):
            figures.append(f"tile AUC {s['tile_auc']:.2f}")
        if np.isfinite(s.get("sanity_spearman", np.nan)):
            sanity = f"rand. \u03c1 {s['sanity_spearman']:.2f}"
            if np.isfinite(s.get("mprt_mean", np.nan)):
                sanity += f", cascade |\u03c1| {s['mprt_mean']:.2f}"
            figures.append(sanity)
        fails = bool(s.get("sanity_flagged"))
        label = (
            method
            + (" FAILS SANITY" if fails else "")
            + "\n"
            + ", ".join(figures[:2])
            + ("\n" + figures[2] if len(figures) > 2 else "")
        )
        ax.set_title(label, fontsize=7, color="firebrick" if fails else "black")
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_cohort_chart(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    titles: Mapping[str, str],
) -> Path:
    """Grouped bars: one panel per metric, one bar per method, 95 % CI as error bars."""
    from matplotlib.figure import Figure

    metrics = [m for m in metrics if any(r["metric"] == m for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["metric"]): r for r in rows}
    cols = min(4, max(1, len(metrics)))
    n_rows = int(np.ceil(len(metrics) / cols))
    fig = Figure(figsize=(3.6 * cols, 2.8 * n_rows), dpi=110)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(n_rows, cols, i + 1)
        present = [m for m in methods if (m, metric) in cell]
        means = np.array([cell[(m, metric)]["mean"] for m in present])
        low = means - np.array([cell[(m, metric)]["low"] for m in present])
        high = np.array([cell[(m, metric)]["high"] for m in present]) - means
        ax.bar(
            range(len(present)),
            means,
            yerr=[low, high],
            capsize=2,
            color=[colors[m] for m in present],
        )
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels(present, rotation=60, ha="right", fontsize=7)
        ax.set_title(titles.get(metric, metric), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _mask_outline(ax: Any, mask: np.ndarray | None, color: str) -> None:
    """The boundary of a boolean pixel mask, drawn over an image of the same shape."""
    if mask is None or not mask.any() or mask.all():
        return
    ax.contour(mask.astype(np.float32), levels=[0.5], colors=color, linewidths=1.0)


def write_window_comparison_figure(
    path: str | os.PathLike,
    windows: Sequence[Mapping[str, Any]],
    title: str,
    score_keys: Sequence[tuple[str, str]],
    panel_inches: float = 2.2,
) -> Path:
    """One row per segmenter window: the window (lesion annotation outlined in black), the
    segmenter's lesion probability (its mask outlined in red), then one map per method over
    the window, titled with its scores; the layout of :func:`write_comparison_figure`.

    Each window is a mapping with ``tile`` (uint8 ``[T, T, 3]``), ``truth`` (bool ``[T, T]`` or
    None), ``probability`` (``[T, T]`` in [0, 1]), ``mask_threshold``, ``label`` (the row's
    name), ``maps`` (method -> ``[T, T]``) and ``scores`` (method -> {key: value}); a map is
    shown as its non-negative part over its maximum. ``score_keys`` are the (key, short name)
    pairs put in the titles.
    """
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(m for w in windows for m in w["maps"]))
    cols = 2 + len(methods)
    rows = max(1, len(windows))
    fig = Figure(
        figsize=(panel_inches * cols, (panel_inches + 0.7) * rows + 0.6),
        dpi=110,
        layout="constrained",
    )
    fig.suptitle(title + "\nblack: the annotated lesion; red: the segmenter's mask", fontsize=10)
    for r, window in enumerate(windows):
        axes = [fig.add_subplot(rows, cols, r * cols + i + 1) for i in range(cols)]
        for ax in axes:
            ax.set_axis_off()
        tile, truth = window["tile"], window.get("truth")
        axes[0].imshow(tile)
        _mask_outline(axes[0], truth, "black")
        axes[0].set_title(
            window["label"] if truth is not None else f"{window['label']}\n(no annotation)",
            fontsize=7,
        )
        probability = np.asarray(window["probability"], np.float32)
        axes[1].imshow(tile)
        axes[1].imshow(probability, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        _mask_outline(axes[1], probability >= window["mask_threshold"], "red")
        _mask_outline(axes[1], truth, "black")
        scores = window.get("scores", {})
        axes[1].set_title(
            _score_title("segmenter P(lesion)", scores.get("prediction", {}), score_keys),
            fontsize=7,
        )
        for ax, method in zip(axes[2:], methods):
            values = window["maps"].get(method)
            if values is None:
                continue
            shown = np.clip(np.asarray(values, np.float32), 0, None)
            top = float(shown.max())
            ax.imshow(tile)
            ax.imshow(shown / top if top > 0 else shown, cmap="inferno", alpha=0.75, vmin=0, vmax=1)
            _mask_outline(ax, truth, "black")
            name = method if top > 0 else f"{method} (empty map)"
            ax.set_title(_score_title(name, scores.get(method, {}), score_keys), fontsize=7)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _score_title(name: str, scores: Mapping[str, float], keys: Sequence[tuple[str, str]]) -> str:
    """The method, then its scores two to a line (and the sanity flag)."""
    parts = [
        f"{short} {scores[key]:.2f}" for key, short in keys if np.isfinite(scores.get(key, np.nan))
    ]
    if scores.get("sanity_flagged"):
        parts.append("fails sanity")
    lines = [", ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join([name, *lines])
