"""The PNG pictures of a slide's prediction: overlay, segmentation outline, top-k tiles.

The slide picture itself is never passed through matplotlib: the thumbnail is blended with the
heat in NumPy at its own size (so a 4096-px overlay is exactly 4096 px, pixel for pixel), and
matplotlib draws only what it is good at, the title and colour-bar bands added above and below
it, and the small figure of top-k tiles.

Overlay and segmentation pictures are *streamed*: the thumbnail arrives in bands of rows (read
from the slide band by band, :class:`tiling.slide.ThumbnailStrips`), each band gets its heat,
tissue clip and outlines (:class:`wsi_mil.heatmaps.stitch.HeatSource`, computed with a margin
of rows so bands join seamlessly) and goes straight to a PNG encoder that takes rows one at a
time (pypng). Peak memory is one band plus the tile grid, whatever the size of the picture.
pyvips was tried for the encoding: it streams its own pipelines, but an image made in Python
reaches it only through a file it memory-maps whole (``rawload``/``vipsload``: 374 MB resident
for a 10 240-px square), which is the growth this module avoids.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import matplotlib
import numpy as np
import png
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colorbar import ColorbarBase
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tiling.lattice import SlideGeometry, TileGrid
from tiling.storage import atomic_output
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import (
    Canvas,
    CanvasSampler,
    Heatmap,
    HeatSource,
    normalise_scores,
    positive_cells,
    rasterise_polygons,
)
from wsi_mil.mil.predictions import PredictionFileError, SlidePrediction

T = TypeVar("T")
DPI = 100
#: outline colour of the segmentation head's positive region (RGB)
SEGMENTATION_COLOR = (230, 20, 60)
#: outline colour of the tissue detected at tiling (RGB)
TISSUE_COLOR = (20, 120, 40)
#: rows of a picture rendered at a time when it is given whole (bounds the temporaries)
BLEND_ROWS = 512
#: most slide-level pixels read per band when a picture is streamed from a slide (8 MB RGBA)
STREAM_STRIP_PIXELS = 2 * 1024 * 1024
#: zlib level of the streamed PNGs (1: fastest; the pictures are mostly smooth colour)
PNG_COMPRESSION = 1
#: smallest side (px) a tile is shown at in topk.png, so captions fit under it
TOPK_MIN_SIDE = 256


def colormap_lut(cmap: str) -> np.ndarray:
    """A 256-entry uint8 RGB lookup table of a matplotlib colour map (clear error if unknown)."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"unknown matplotlib colour map {cmap!r}") from exc
    return (colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _blend_rows(
    rows: np.ndarray, values: np.ndarray, table: np.ndarray, vmin: float, span: float, alpha: float
) -> np.ndarray:
    """``rows`` (modified in place and returned) with the heat's colours blended in at ``alpha``
    where ``values`` is defined: whole-band uint8 operations (a colour lookup,
    ``cv2.addWeighted``, a masked copy) rather than boolean indexing."""
    mask = ~np.isnan(values)
    if not mask.any():
        return rows
    scaled = (values - np.float32(vmin)) * np.float32(255.0 / span) + np.float32(0.5)
    scaled[~mask] = 0.0
    np.clip(scaled, 0.0, 255.0, out=scaled)
    colours = cv2.applyColorMap(scaled.astype(np.uint8), table)
    cv2.addWeighted(rows, 1.0 - alpha, colours, alpha, 0.0, dst=colours)
    cv2.copyTo(colours, mask.view(np.uint8), rows)
    return rows


def _lut_table(cmap: str) -> np.ndarray:
    return colormap_lut(cmap).reshape(256, 1, 3)  # applyColorMap returns the table's order


def _span(vmin: float, vmax: float) -> float:
    return vmax - vmin if vmax > vmin else 1.0


def blend_heat(thumbnail: np.ndarray, heat: Heatmap, cmap: str, alpha: float) -> np.ndarray:
    """The thumbnail with the heat's colours blended in at ``alpha`` where the heat is defined."""
    if thumbnail.shape[:2] != heat.values.shape:
        raise ValueError(
            f"thumbnail {thumbnail.shape[:2]} and heatmap {heat.values.shape} differ in size"
        )
    out = thumbnail.copy()
    table, span = _lut_table(cmap), _span(heat.vmin, heat.vmax)
    for y0 in range(0, out.shape[0], BLEND_ROWS):
        _blend_rows(
            out[y0 : y0 + BLEND_ROWS],
            heat.values[y0 : y0 + BLEND_ROWS],
            table,
            heat.vmin,
            span,
            alpha,
        )
    return out


def line_width(canvas_shape: Sequence[int]) -> int:
    """Outline thickness that stays visible on any thumbnail size."""
    return max(1, round(max(canvas_shape[:2]) / 700))


def draw_outline(
    image: np.ndarray, mask: np.ndarray, color: Sequence[int], thickness: int, offset: int = 0
) -> np.ndarray:
    """Draw the boundaries (outer and holes) of a boolean mask onto an RGB image in place.

    ``offset``: the mask starts that many rows above the image (a band's margin, see
    :func:`outline_margin`); the margin's own cut edges fall outside the image.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(
        image,
        contours,
        -1,
        tuple(int(c) for c in color),
        thickness,
        lineType=cv2.LINE_AA,
        offset=(0, -offset),
    )
    return image


def outline_margin(thickness: int) -> int:
    """Rows of mask beyond a band that outlines of ``thickness`` need to be drawn as in the
    whole picture (an anti-aliased line reaches half its width plus a pixel)."""
    return thickness + 2


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
    """A white band with a bold title and optional smaller lines beneath (``subtitle``, one
    line per ``\\n``), each wrapped at word boundaries to the band's width."""
    import textwrap

    font = _font_px(width)
    # average glyph widths of DejaVu Sans, bold title and regular 0.8x subtitle, in font px
    titles = textwrap.wrap(title, max(20, int(width / (0.62 * font)))) or [""]
    lines = [
        part
        for line in (subtitle.split("\n") if subtitle else [])
        for part in textwrap.wrap(line, max(20, int(width / (0.8 * 0.55 * font))))
    ]
    height = round(font * (0.55 + 1.25 * len(titles) + 1.1 * len(lines)))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = 1.0 - 0.25 * font / height
    for i, line in enumerate(titles):
        fig.text(
            0.5,
            top - 1.25 * i * font / height,
            line,
            ha="center",
            va="top",
            fontsize=font * 72 / DPI,
            fontweight="bold",
        )
    below = top - (1.25 * (len(titles) - 1) + 1.35) * font / height
    for i, line in enumerate(lines):
        fig.text(
            0.5,
            below - 1.1 * i * font / height,
            line,
            ha="center",
            va="top",
            fontsize=0.8 * font * 72 / DPI,
            color="#333333",
        )
    return _figure_pixels(fig, width, height)


def colorbar_band(width: int, cmap: str, vmin: float, vmax: float, label: str) -> np.ndarray:
    """A white band holding a horizontal colour bar with its ticks and ``label``."""
    font = _font_px(width)
    height = round(font * 4.6)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    bar_height = 0.9 * font / height
    ax = fig.add_axes((0.2, 1.0 - 0.35 * font / height - bar_height, 0.6, bar_height))
    colorbar = ColorbarBase(
        ax,
        cmap=matplotlib.colormaps[cmap],
        norm=Normalize(vmin=vmin, vmax=vmax),
        orientation="horizontal",
    )
    colorbar.ax.tick_params(
        labelsize=0.75 * font * 72 / DPI, length=0.3 * font, width=max(1.0, font / 20)
    )
    colorbar.set_label(label, fontsize=0.85 * font * 72 / DPI)
    colorbar.outline.set_linewidth(max(0.8, font / 25))
    return _figure_pixels(fig, width, height)


def legend_band(width: int, entries: Sequence[tuple[Sequence[int], str]]) -> np.ndarray:
    """A white band with coloured line samples and their meaning (for outline pictures)."""
    font = _font_px(width)
    height = round(font * 2.2)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    handles = [
        Line2D(
            [],
            [],
            color=(c[0] / 255.0, c[1] / 255.0, c[2] / 255.0),
            linewidth=max(2.0, font / 6),
            label=text,
        )
        for c, text in entries
    ]
    fig.legend(
        handles=handles,
        loc="center",
        ncol=len(handles),
        frameon=False,
        fontsize=0.8 * font * 72 / DPI,
    )
    return _figure_pixels(fig, width, height)


class Strips(Protocol):
    """A picture given band by band: ``width``, ``height``, and ``(y0, rows)`` top to bottom."""

    width: int
    height: int

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]: ...


class ArrayStrips:
    """A picture held in memory, handed out in bands of :data:`BLEND_ROWS` rows."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.height, self.width = image.shape[:2]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for y0 in range(0, self.height, BLEND_ROWS):
            yield y0, self.image[y0 : y0 + BLEND_ROWS].copy()


def as_strips(thumbnail: np.ndarray | Strips) -> Strips:
    """A thumbnail given whole (an array) or in bands, as bands."""
    return ArrayStrips(thumbnail) if isinstance(thumbnail, np.ndarray) else thumbnail


def prefetched(items: Iterable[T]) -> Iterator[T]:
    """The items of ``items``, each next one made in a worker thread meanwhile.

    Used twice per picture: reading a band of the slide (OpenSlide decodes outside the GIL)
    overlaps rendering the band before, which overlaps compressing the one before that (zlib
    also runs outside the GIL). Memory grows by one band per stage.
    """
    with ThreadPoolExecutor(1) as pool:
        source = iter(items)
        pending = pool.submit(next, source, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, source, None)
            yield item


def write_png_rows(
    path: str | os.PathLike, width: int, height: int, bands: Iterable[np.ndarray]
) -> Path:
    """Write RGB uint8 bands of ``width`` px, ``height`` rows in all, top to bottom, as a PNG.

    pypng's writer takes the rows from an iterator and compresses them as they come, so only
    the band being made is ever in memory. Written atomically.
    """
    path = Path(path)
    writer = png.Writer(width, height, greyscale=False, bitdepth=8, compression=PNG_COMPRESSION)

    def rows() -> Iterator[np.ndarray]:
        for band in bands:
            if band.ndim != 3 or band.shape[1:] != (width, 3):
                raise ValueError(
                    f"{path}: a band of shape {band.shape} in a {width}-px wide RGB picture"
                )
            yield from np.ascontiguousarray(band, dtype=np.uint8).reshape(len(band), -1)

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        try:
            writer.write(f, rows())
        except png.ProtocolError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return path


def write_png(path: str | os.PathLike, parts: np.ndarray | Sequence[np.ndarray]) -> Path:
    """Write an RGB uint8 image, or RGB parts of equal width stacked top to bottom, as PNG."""
    parts = [parts] if isinstance(parts, np.ndarray) else list(parts)
    widths = {part.shape[1] for part in parts}
    if len(widths) != 1:
        raise ValueError(f"{path}: parts of different widths {sorted(widths)}")
    return write_png_rows(path, widths.pop(), sum(p.shape[0] for p in parts), parts)


def overlay_bands(
    thumbnail: Strips, heat: HeatSource, cmap: str, alpha: float, tissue: Any = None
) -> Iterator[np.ndarray]:
    """The thumbnail's bands with blended heat and the tissue outline, one band at a time."""
    table, span = _lut_table(cmap), _span(heat.vmin, heat.vmax)
    canvas = heat.canvas
    thickness = line_width((canvas.height, canvas.width))
    margin = outline_margin(thickness)
    for y0, rows in prefetched(thumbnail):
        y1 = y0 + len(rows)
        picture = _blend_rows(rows, heat.rows(y0, y1), table, heat.vmin, span, alpha)
        if tissue is not None:
            draw_outline(
                picture,
                rasterise_polygons(tissue, canvas, (y0 - margin, y1 + margin)),
                TISSUE_COLOR,
                thickness,
                offset=margin,
            )
        yield picture


def segmentation_bands(
    thumbnail: Strips, positive: CanvasSampler, tissue: Any = None
) -> Iterator[np.ndarray]:
    """The thumbnail's bands with the positive cells tinted and outlined (and the tissue)."""
    canvas = positive.canvas
    thickness = line_width((canvas.height, canvas.width))
    margin = outline_margin(2 * thickness)
    colour = np.array(SEGMENTATION_COLOR, np.uint8)
    for y0, rows in prefetched(thumbnail):
        y1 = y0 + len(rows)
        cells = np.nan_to_num(positive.rows(y0 - margin, y1 + margin), nan=0.0) >= 0.5
        inside = cells[margin : margin + len(rows)]
        if inside.any():
            tint = cv2.addWeighted(rows, 0.8, np.broadcast_to(colour, rows.shape).copy(), 0.2, 0.0)
            np.copyto(rows, tint, where=inside[..., None])
        if tissue is not None:
            tissue_margin = outline_margin(thickness)
            draw_outline(
                rows,
                rasterise_polygons(tissue, canvas, (y0 - tissue_margin, y1 + tissue_margin)),
                TISSUE_COLOR,
                thickness,
                offset=tissue_margin,
            )
        draw_outline(rows, cells, SEGMENTATION_COLOR, 2 * thickness, offset=margin)
        yield rows


def write_picture(
    path: str | os.PathLike,
    top: np.ndarray,
    bands: Iterator[np.ndarray],
    height: int,
    bottom: np.ndarray,
) -> Path:
    """A PNG of a title band, the streamed picture (``height`` rows) and a bottom band."""

    def all_bands() -> Iterator[np.ndarray]:
        yield top
        yield from prefetched(bands)
        yield bottom

    return write_png_rows(path, top.shape[1], top.shape[0] + height + bottom.shape[0], all_bands())


def tile_grid_figure(
    tiles: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str,
    overlays: Sequence[np.ndarray] | None = None,
    cmap: str = "jet",
) -> bytes:
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
        ax = fig.add_axes((left / width, 1.0 - (top + side) / height, side / width, side / height))
        ax.imshow(tile, interpolation="nearest")
        if overlays is not None:
            ax.imshow(
                overlays[i],
                cmap=cmap,
                alpha=0.5,
                vmin=0.0,
                vmax=1.0,
                extent=(-0.5, tile.shape[1] - 0.5, tile.shape[0] - 0.5, -0.5),
                interpolation="bilinear",
            )
        ax.set_axis_off()
        fig.text(
            (left + side / 2) / width,
            1.0 - (top + side + 4) / height,
            caption,
            ha="center",
            va="top",
            fontsize=8,
            linespacing=1.3,
        )
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def prediction_provenance(attrs: dict) -> str | None:
    """Which model predicted the slide, as a figure must say: "out of fold (fold 2)" (the fold
    that held it out), "ensemble of 5 folds, none trained on it", or IN-SAMPLE. None for files
    written before ``in_sample`` was recorded."""
    if "in_sample" not in attrs:
        return None
    folds = [int(f) for f in np.atleast_1d(attrs.get("folds", []))]
    if bool(attrs["in_sample"]):
        return "IN-SAMPLE: predicted by a model that trained on this slide"
    if bool(attrs.get("out_of_fold")) and len(folds) == 1:
        return f"out of fold (fold {folds[0]})"
    if len(folds) == 1:
        return f"fold {folds[0]}'s model, not trained on this slide"
    return f"ensemble of {len(folds)} folds, none trained on this slide"


def slide_title(prediction: SlidePrediction) -> str:
    """ "<slide id> · predicted <label> (<positive class> score 0.730, threshold 0.410)".

    For two classes the label was decided by the run's validation threshold (``threshold`` in
    the predictions' attributes) on the positive class's score, so the title shows exactly that
    pair and never a "probability" below 0.5 beside a positive label. The positive class is the
    recorded ``positive_class``, else the one that is not the negative class
    (:meth:`SlidePrediction.positive_index`). Without a threshold or with several classes: the
    predicted class's score only.
    """
    names, probs, attrs = prediction.class_names, prediction.probs, prediction.attrs
    label = prediction.predicted_label
    head = f"{prediction.slide_id}  \u00b7  predicted {label}"
    if len(probs) != len(names):
        return head
    task = prediction.task
    if task == "multilabel":
        return f"{head} ({', '.join(f'{n} {_fmt(float(p))}' for n, p in zip(names, probs))})"
    if task == "survival":
        cut = attrs.get("threshold")
        cut_text = "" if cut is None else f", cut {_fmt(float(cut))}"
        return f"{head} (risk {_fmt(float(probs[0]))}{cut_text})"
    if task == "regression":
        return f"{prediction.slide_id}  \u00b7  predicted {names[0]} {float(probs[0]):.4g}"
    threshold = attrs.get("threshold")
    if len(names) == 2 and threshold is not None and math.isfinite(float(threshold)):
        recorded = attrs.get("positive_class")
        try:
            index = prediction.positive_index(recorded if recorded in names else None)
        except PredictionFileError:
            index = None
        if "task" in attrs and prediction.negative_class is None:
            index = 1  # subtypes: the threshold is on the second class's score
        if index is not None:
            return (
                f"{head} ({names[index]} score {_fmt(float(probs[index]))}, "
                f"threshold {_fmt(float(threshold))})"
            )
    if label in names:
        return f"{head} (score {_fmt(float(probs[names.index(label)]))})"
    return head


def _canvas_of(prediction: SlidePrediction, thumbnail: Strips) -> tuple[SlideGeometry, Canvas]:
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    return geometry, Canvas.of_size(geometry, thumbnail.width, thumbnail.height)


def write_overlay_png(
    path: str | os.PathLike,
    prediction: SlidePrediction,
    thumbnail: np.ndarray | Strips,
    params: HeatmapParams,
    tissue: Any = None,
    grid: TileGrid | None = None,
    trust: tuple[list[str], bool] | None = None,
) -> Path:
    """``overlay.png``: the thumbnail (any size; the heat is computed at its size) with heat.

    ``thumbnail`` is an RGB array or bands of one (:class:`Strips`); given as bands, the
    picture is streamed and never held whole. ``trust``: (caption lines, fails the sanity
    check) of an explanation map (:func:`wsi_mil.explain.trust.trust_parts`), written under
    the title; a map that fails says so in the title.
    """
    thumbnail = as_strips(thumbnail)
    geometry, canvas = _canvas_of(prediction, thumbnail)
    heat = HeatSource(prediction, canvas, params, tissue, grid)
    details = [f"{canvas.mpp(geometry):.3g} \u00b5m/px"]
    provenance = prediction_provenance(prediction.attrs)
    if provenance is not None:
        details.insert(0, provenance)
    if params.smooth_um > 0:
        details.append(f"Gaussian \u03c3 = {params.smooth_um:g} \u00b5m")
    if params.tissue_clip and tissue is not None:
        details.append("clipped to tissue")
    width = canvas.width
    title, lines = slide_title(prediction), ["  \u00b7  ".join(details)]
    if trust is not None:
        lines += trust[0]
        if trust[1]:
            title += f"  \u00b7  {params.score} map FAILS THE SANITY CHECK"
    return write_picture(
        path,
        text_band(width, title, "\n".join(lines)),
        overlay_bands(thumbnail, heat, params.cmap, params.alpha, tissue),
        canvas.height,
        colorbar_band(width, params.cmap, heat.vmin, heat.vmax, heat.label),
    )


def write_segmentation_png(
    path: str | os.PathLike,
    prediction: SlidePrediction,
    thumbnail: np.ndarray | Strips,
    params: HeatmapParams,
    tissue: Any = None,
    grid: TileGrid | None = None,
) -> Path:
    """``segmentation.png``: the segmentation head's positive cells outlined on the thumbnail."""
    thumbnail = as_strips(thumbnail)
    geometry, canvas = _canvas_of(prediction, thumbnail)
    grid = grid or TileGrid.from_coords(prediction.coords, geometry)
    cells = positive_cells(prediction, grid, params).astype(np.float32)
    name = prediction.class_names[prediction.positive_index(params.positive_class)]
    entries: list[tuple[Sequence[int], str]] = []
    if tissue is not None:
        entries.append((TISSUE_COLOR, "tissue"))
    entries.append((SEGMENTATION_COLOR, f"P({name}) \u2265 {params.seg_threshold:g}"))
    width = canvas.width
    details = [f"segmentation head: {name}"]
    provenance = prediction_provenance(prediction.attrs)
    if provenance is not None:
        details.insert(0, provenance)
    return write_picture(
        path,
        text_band(width, slide_title(prediction), "  \u00b7  ".join(details)),
        segmentation_bands(thumbnail, CanvasSampler(cells, grid, canvas), tissue),
        canvas.height,
        legend_band(width, entries),
    )


def top_tiles(prediction: SlidePrediction, k: int) -> np.ndarray:
    """Indices of the ``k`` most attended tiles, most attended first."""
    return np.argsort(-np.asarray(prediction.attention), kind="stable")[:k]


def write_topk_png(
    path: str | os.PathLike,
    prediction: SlidePrediction,
    read_tile: Callable[[int, int], np.ndarray],
    params: HeatmapParams,
    encoder: Any = None,
) -> list[Path]:
    """``topk.png``: the k most attended tiles at the resolution the encoder saw them.

    With ``encoder`` (a ViT ``features.registry.Encoder``), also ``topk_rollout.png`` (each
    tile with its attention-rollout map) and ``topk_rollout.npz`` (the maps themselves).
    """
    path = Path(path)
    order = top_tiles(prediction, params.topk)
    if len(order) == 0:
        return []
    percentile, *_ = normalise_scores(prediction.attention, "rank", probability=False)
    index = prediction.positive_index(params.positive_class)
    name = prediction.class_names[index]
    tiles = [read_tile(int(prediction.coords[i, 0]), int(prediction.coords[i, 1])) for i in order]
    captions = [
        f"#{rank} at ({prediction.coords[i, 0]}, {prediction.coords[i, 1]})\n"
        f"attention {prediction.attention[i]:.3g} (pct {percentile[i]:.2f}), "
        f"P({name}) {prediction.tile_probs[i, index]:.2f}"
        for rank, i in enumerate(order, 1)
    ]
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
            tmp.write_bytes(
                tile_grid_figure(
                    tiles,
                    captions,
                    f"{title}  \u00b7  attention rollout ({encoder.name}, min-max per tile)",
                    overlays=list((maps - low) / span),
                )
            )
        rollout_npz = path.with_name(path.stem + "_rollout.npz")
        with atomic_output(rollout_npz) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                maps=maps.astype(np.float32),
                coords=prediction.coords[order],
                attention=prediction.attention[order],
                encoder=np.array(encoder.name),
            )
        written += [rollout_png, rollout_npz]
    return written
