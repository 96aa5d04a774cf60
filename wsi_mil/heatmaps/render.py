"""The PNG pictures of a slide's prediction: overlay, segmentation outline, top-k tiles.

The slide picture itself is never passed through matplotlib: the thumbnail is blended with the
heat in NumPy at its own size (so a 4096-px overlay is exactly 4096 px, pixel for pixel), and
matplotlib draws only what it is good at, the title and colour-bar bands added above and below
it, and the small figure of top-k tiles. Memory stays at a few copies of the output picture.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colorbar import ColorbarBase
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tiling.storage import atomic_output
from wsi_mil.heatmaps.stitch import (
    Canvas,
    Heatmap,
    HeatmapParams,
    SlideGeometry,
    TileGrid,
    compute_heatmap,
    grid_to_canvas,
    normalise_scores,
    positive_cells,
    positive_class_index,
    rasterise_polygons,
)
from wsi_mil.mil.predictions import SlidePrediction

DPI = 100
#: outline colour of the segmentation head's positive region (RGB)
SEGMENTATION_COLOR = (230, 20, 60)
#: outline colour of the tissue detected at tiling (RGB)
TISSUE_COLOR = (20, 120, 40)
#: rows of the canvas blended at a time (bounds the temporaries of blending)
BLEND_ROWS = 512
#: smallest side (px) a tile is shown at in topk.png, so captions fit under it
TOPK_MIN_SIDE = 256


def colormap_lut(cmap: str) -> np.ndarray:
    """A 256-entry uint8 RGB lookup table of a matplotlib colour map (clear error if unknown)."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"unknown matplotlib colour map {cmap!r}") from exc
    return (colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def blend_heat(thumbnail: np.ndarray, heat: Heatmap, cmap: str, alpha: float) -> np.ndarray:
    """The thumbnail with the heat's colours blended in at ``alpha`` where the heat is defined.

    Whole-strip uint8 operations (a colour lookup, ``cv2.addWeighted``, a masked copy) rather
    than boolean indexing, strip by strip: fast, and the temporaries stay a fraction of the
    picture.
    """
    if thumbnail.shape[:2] != heat.values.shape:
        raise ValueError(f"thumbnail {thumbnail.shape[:2]} and heatmap {heat.values.shape} "
                         f"differ in size")
    out = thumbnail.copy()
    table = colormap_lut(cmap).reshape(256, 1, 3)  # applyColorMap returns the table's order
    span = heat.vmax - heat.vmin if heat.vmax > heat.vmin else 1.0
    for y0 in range(0, out.shape[0], BLEND_ROWS):
        values = heat.values[y0:y0 + BLEND_ROWS]
        mask = ~np.isnan(values)
        if not mask.any():
            continue
        scaled = (values - np.float32(heat.vmin)) * np.float32(255.0 / span) + np.float32(0.5)
        scaled[~mask] = 0.0
        np.clip(scaled, 0.0, 255.0, out=scaled)
        colours = cv2.applyColorMap(scaled.astype(np.uint8), table)
        strip = out[y0:y0 + BLEND_ROWS]
        cv2.addWeighted(strip, 1.0 - alpha, colours, alpha, 0.0, dst=colours)
        cv2.copyTo(colours, mask.view(np.uint8), strip)
    return out


def line_width(canvas_shape: Sequence[int]) -> int:
    """Outline thickness that stays visible on any thumbnail size."""
    return max(1, round(max(canvas_shape[:2]) / 700))


def draw_outline(image: np.ndarray, mask: np.ndarray, color: Sequence[int],
                 thickness: int) -> np.ndarray:
    """Draw the boundaries (outer and holes) of a boolean mask onto an RGB image in place."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, tuple(int(c) for c in color), thickness,
                     lineType=cv2.LINE_AA)
    return image


def _font_px(width: int) -> float:
    """Band font size in pixels, proportional to the picture width within legible bounds."""
    return float(np.clip(width / 55.0, 11.0, 36.0))


def _figure_pixels(fig: Figure, width: int, height: int) -> np.ndarray:
    """Render a figure to uint8 RGB of exactly ``height`` x ``width`` px."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def text_band(width: int, title: str, subtitle: str = "") -> np.ndarray:
    """A white band with a bold title line and an optional smaller line beneath."""
    font = _font_px(width)
    height = round(font * (2.9 if subtitle else 1.8))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = 1.0 - 0.25 * font / height
    fig.text(0.5, top, title, ha="center", va="top", fontsize=font * 72 / DPI,
             fontweight="bold")
    if subtitle:
        fig.text(0.5, top - 1.35 * font / height, subtitle, ha="center", va="top",
                 fontsize=0.8 * font * 72 / DPI, color="#333333")
    return _figure_pixels(fig, width, height)


def colorbar_band(width: int, cmap: str, vmin: float, vmax: float, label: str) -> np.ndarray:
    """A white band holding a horizontal colour bar with its ticks and ``label``."""
    font = _font_px(width)
    height = round(font * 4.6)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    bar_height = 0.9 * font / height
    ax = fig.add_axes((0.2, 1.0 - 0.35 * font / height - bar_height, 0.6, bar_height))
    colorbar = ColorbarBase(ax, cmap=matplotlib.colormaps[cmap],
                            norm=Normalize(vmin=vmin, vmax=vmax), orientation="horizontal")
    colorbar.ax.tick_params(labelsize=0.75 * font * 72 / DPI, length=0.3 * font,
                            width=max(1.0, font / 20))
    colorbar.set_label(label, fontsize=0.85 * font * 72 / DPI)
    colorbar.outline.set_linewidth(max(0.8, font / 25))
    return _figure_pixels(fig, width, height)


def legend_band(width: int, entries: Sequence[tuple[Sequence[int], str]]) -> np.ndarray:
    """A white band with coloured line samples and their meaning (for outline pictures)."""
    font = _font_px(width)
    height = round(font * 2.2)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    handles = [Line2D([], [], color=np.asarray(c) / 255.0,
                                       linewidth=max(2.0, font / 6), label=text)
               for c, text in entries]
    fig.legend(handles=handles, loc="center", ncol=len(handles), frameon=False,
               fontsize=0.8 * font * 72 / DPI)
    return _figure_pixels(fig, width, height)


def write_png(path: str | os.PathLike, parts: np.ndarray | Sequence[np.ndarray]) -> Path:
    """Write an RGB uint8 image, or RGB parts of equal width stacked top to bottom, as PNG.

    The parts are converted straight into one BGR buffer for the encoder, so stacking bands
    around a large picture costs one copy of it, not three. Written atomically.
    """
    parts = [parts] if isinstance(parts, np.ndarray) else list(parts)
    widths = {part.shape[1] for part in parts}
    if len(widths) != 1:
        raise ValueError(f"{path}: parts of different widths {sorted(widths)}")
    bgr = np.empty((sum(p.shape[0] for p in parts), widths.pop(), 3), np.uint8)
    row = 0
    for part in parts:
        cv2.cvtColor(np.ascontiguousarray(part), cv2.COLOR_RGB2BGR,
                     dst=bgr[row:row + part.shape[0]])
        row += part.shape[0]
    ok, data = cv2.imencode(".png", bgr)
    del bgr
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path


def overlay_picture(thumbnail: np.ndarray, heat: Heatmap, cmap: str, alpha: float,
                    title: str, subtitle: str = "", tissue: Any = None,
                    canvas: Canvas | None = None) -> list[np.ndarray]:
    """Title band, thumbnail with blended heat (and tissue outline), colour-bar band (RGB parts
    for :func:`write_png`)."""
    width = thumbnail.shape[1]
    picture = blend_heat(thumbnail, heat, cmap, alpha)
    if tissue is not None and canvas is not None:
        draw_outline(picture, rasterise_polygons(tissue, canvas), TISSUE_COLOR,
                     line_width(picture.shape))
    return [text_band(width, title, subtitle), picture,
            colorbar_band(width, cmap, heat.vmin, heat.vmax, heat.label)]


def segmentation_picture(thumbnail: np.ndarray, positive: np.ndarray, class_name: str,
                         threshold: float, title: str, tissue: Any = None,
                         canvas: Canvas | None = None) -> list[np.ndarray]:
    """Title band, thumbnail with the positive region outlined (lightly filled), legend band
    (RGB parts for :func:`write_png`)."""
    width = thumbnail.shape[1]
    picture = thumbnail.copy()
    if positive.any():
        tint = cv2.addWeighted(thumbnail, 0.8, np.full_like(thumbnail, SEGMENTATION_COLOR), 0.2,
                               0.0)
        np.copyto(picture, tint, where=positive[..., None])
    entries: list[tuple[Sequence[int], str]] = []
    if tissue is not None and canvas is not None:
        draw_outline(picture, rasterise_polygons(tissue, canvas), TISSUE_COLOR,
                     line_width(picture.shape))
        entries.append((TISSUE_COLOR, "tissue"))
    draw_outline(picture, positive, SEGMENTATION_COLOR, 2 * line_width(picture.shape))
    entries.append((SEGMENTATION_COLOR, f"P({class_name}) \u2265 {threshold:g}"))
    return [text_band(width, title, f"segmentation head: {class_name}"), picture,
            legend_band(width, entries)]


def tile_grid_figure(tiles: Sequence[np.ndarray], captions: Sequence[str],
                     title: str, overlays: Sequence[np.ndarray] | None = None,
                     cmap: str = "jet") -> bytes:
    """PNG bytes of tiles in a grid at their own resolution, each with a caption.

    With ``overlays`` (maps in [0, 1], any size), each map is drawn over its tile at 50 %.
    """
    n = len(tiles)
    if n == 0:
        raise ValueError("no tiles to show")
    cols = min(n, 4)
    rows = -(-n // cols)
    side = max(TOPK_MIN_SIDE, *(t.shape[0] for t in tiles))  # small tiles are shown enlarged
    gap, caption_px, header_px = 10, 44, 40
    width = cols * (side + gap) + gap
    height = header_px + rows * (side + caption_px)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1.0 - 10 / height, title, ha="center", va="top", fontsize=11)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        r, c = divmod(i, cols)
        left = gap + c * (side + gap)
        top = header_px + r * (side + caption_px)
        ax = fig.add_axes((left / width, 1.0 - (top + side) / height, side / width,
                           side / height))
        ax.imshow(tile, interpolation="nearest")
        if overlays is not None:
            ax.imshow(overlays[i], cmap=cmap, alpha=0.5, vmin=0.0, vmax=1.0,
                      extent=(-0.5, tile.shape[1] - 0.5, tile.shape[0] - 0.5, -0.5),
                      interpolation="bilinear")
        ax.set_axis_off()
        fig.text((left + side / 2) / width, 1.0 - (top + side + 4) / height, caption,
                 ha="center", va="top", fontsize=8, linespacing=1.3)
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def slide_title(prediction: SlidePrediction) -> str:
    """"<slide id> · predicted <label> (p = 0.97)" for picture titles."""
    label = prediction.predicted_label
    if label in prediction.class_names and len(prediction.probs) == len(prediction.class_names):
        p = float(prediction.probs[prediction.class_names.index(label)])
        return f"{prediction.slide_id}  \u00b7  predicted {label} (p = {p:.3f})"
    return f"{prediction.slide_id}  \u00b7  predicted {label}"


def write_overlay_png(path: str | os.PathLike, prediction: SlidePrediction,
                      thumbnail: np.ndarray, params: HeatmapParams, tissue: Any = None,
                      grid: TileGrid | None = None) -> Path:
    """``overlay.png``: the thumbnail (any size; the heat is computed at its size) with heat."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    canvas = Canvas.of_size(geometry, thumbnail.shape[1], thumbnail.shape[0])
    heat = compute_heatmap(prediction, canvas, params, tissue, grid)
    details = [f"{canvas.mpp(geometry):.3g} \u00b5m/px"]
    if params.smooth_um > 0:
        details.append(f"Gaussian \u03c3 = {params.smooth_um:g} \u00b5m")
    if params.tissue_clip and tissue is not None:
        details.append("clipped to tissue")
    picture = overlay_picture(thumbnail, heat, params.cmap, params.alpha,
                              slide_title(prediction), "  \u00b7  ".join(details),
                              tissue=tissue, canvas=canvas)
    return write_png(path, picture)


def write_segmentation_png(path: str | os.PathLike, prediction: SlidePrediction,
                           thumbnail: np.ndarray, params: HeatmapParams, tissue: Any = None,
                           grid: TileGrid | None = None) -> Path:
    """``segmentation.png``: the segmentation head's positive cells outlined on the thumbnail."""
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    grid = grid or TileGrid.from_coords(prediction.coords, geometry)
    canvas = Canvas.of_size(geometry, thumbnail.shape[1], thumbnail.shape[0])
    cells = positive_cells(prediction, grid, params).astype(np.float32)
    positive = np.nan_to_num(grid_to_canvas(cells, grid, canvas), nan=0.0) >= 0.5
    name = prediction.class_names[positive_class_index(prediction.class_names,
                                                       params.positive_class)]
    picture = segmentation_picture(thumbnail, positive, name, params.seg_threshold,
                                   slide_title(prediction), tissue=tissue, canvas=canvas)
    return write_png(path, picture)


def top_tiles(prediction: SlidePrediction, k: int) -> np.ndarray:
    """Indices of the ``k`` most attended tiles, most attended first."""
    return np.argsort(-np.asarray(prediction.attention), kind="stable")[:k]


def write_topk_png(path: str | os.PathLike, prediction: SlidePrediction,
                   read_tile: Callable[[int, int], np.ndarray], params: HeatmapParams,
                   encoder: Any = None) -> list[Path]:
    """``topk.png``: the k most attended tiles at the resolution the encoder saw them.

    With ``encoder`` (a ViT ``features.registry.Encoder``), also ``topk_rollout.png`` (each
    tile with its attention-rollout map) and ``topk_rollout.npz`` (the maps themselves).
    """
    path = Path(path)
    order = top_tiles(prediction, params.topk)
    if len(order) == 0:
        return []
    percentile, *_ = normalise_scores(prediction.attention, "rank", probability=False)
    index = positive_class_index(prediction.class_names, params.positive_class)
    name = prediction.class_names[index]
    tiles = [read_tile(int(prediction.coords[i, 0]), int(prediction.coords[i, 1])) for i in order]
    captions = [f"#{rank} at ({prediction.coords[i, 0]}, {prediction.coords[i, 1]})\n"
                f"attention {prediction.attention[i]:.3g} (pct {percentile[i]:.2f}), "
                f"P({name}) {prediction.tile_probs[i, index]:.2f}"
                for rank, i in enumerate(order, 1)]
    title = f"{prediction.slide_id}: top {len(order)} tiles by attention"
    with atomic_output(path) as tmp:
        tmp.write_bytes(tile_grid_figure(tiles, captions, title))
    written = [path]
    if encoder is not None:
        from wsi_mil.explain.encoder_rollout import encoder_rollout

        maps = encoder_rollout(encoder, tiles, params.rollout_head_fusion)
        low = maps.min(axis=(1, 2), keepdims=True)
        span = np.maximum(maps.max(axis=(1, 2), keepdims=True) - low, 1e-12)
        rollout_png = path.with_name(path.stem + "_rollout.png")
        with atomic_output(rollout_png) as tmp:
            tmp.write_bytes(tile_grid_figure(
                tiles, captions,
                f"{title}  \u00b7  attention rollout ({encoder.name}, min-max per tile)",
                overlays=list((maps - low) / span)))
        rollout_npz = path.with_name(path.stem + "_rollout.npz")
        with atomic_output(rollout_npz) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, maps=maps.astype(np.float32),
                                coords=prediction.coords[order],
                                attention=prediction.attention[order],
                                encoder=np.array(encoder.name))
        written += [rollout_png, rollout_npz]
    return written
