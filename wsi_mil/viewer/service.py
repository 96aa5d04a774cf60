"""What the viewer's web routes do, free of any web framework: slides, tiles, layers, ratings.

One :class:`ViewerService` holds the project index and, per slide, opened lazily on first
use: the OpenSlide handle and its ``DeepZoomGenerator``, the overlay layers and the per-tile
measurements. Rendered tiles are kept in a bounded LRU cache. A slide that cannot be opened
records its error and is reported as such; the other slides keep working.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_mil.errors import InputError, WsiMilError
from wsi_mil.viewer.layers import (
    HeatLayer,
    OutlineLayer,
    TileWindow,
    ZarrHeatLayer,
    encode_indexed_png,
    encode_png,
    palette_index,
    palette_of,
    tissue_mask,
)
from wsi_mil.viewer.params import ViewerParams
from wsi_mil.viewer.project import ProjectIndex, SlideEntry
from wsi_mil.viewer.ratings import QUESTIONS, Rating, RatingsStore

if TYPE_CHECKING:
    import zarr
    from zarr.core.common import JSON  # what a zarr group's attributes hold


class ViewerNotFound(WsiMilError, LookupError):
    """A request for something the project does not have (answered with 404)."""


class ViewerBadRequest(WsiMilError, ValueError):
    """A malformed request (answered with 400)."""


@dataclass
class SlideState:
    """Everything opened for one slide, built once under its lock."""

    entry: SlideEntry
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False
    error: str | None = None  # why the slide itself cannot be shown
    layer_error: str | None = None  # why its overlays cannot be shown
    slide: Any = None
    deepzoom: Any = None
    serial: bool = False  # image fallback (PIL): reads must not overlap
    mpp: float | None = None
    heat: dict[str, HeatLayer | ZarrHeatLayer] = field(default_factory=dict)
    outlines: dict[str, OutlineLayer] = field(default_factory=dict)
    tissue: Any = None
    tiles: dict[str, Any] = field(default_factory=dict)  # per-tile measurements
    #: heat layer id -> what the page shows beside an explanation map (method, caption with
    #: its faithfulness and sanity figures on this slide, whether it fails the sanity check)
    trust: dict[str, dict[str, Any]] = field(default_factory=dict)


class ViewerService:
    """The viewer over one project."""

    def __init__(self, index: ProjectIndex, params: ViewerParams | None = None) -> None:
        from wsi_mil.heatmaps.render import colormap_lut

        params = params or ViewerParams()
        self.index = index
        self.params = params
        self.cmap = params.cmap or str(index.heatmap_settings.get("cmap") or "coolwarm")
        self.lut = colormap_lut(self.cmap)
        self.palette = palette_of(self.lut)
        self.normalize = str(index.heatmap_settings.get("normalize") or "rank")
        self.ratings = RatingsStore(index.ratings_dir, params.rater) if params.rater else None
        self._states = {sid: SlideState(entry) for sid, entry in index.slides.items()}
        self.slide_tile = functools.lru_cache(maxsize=params.cache_tiles)(self._slide_tile)
        self.layer_tile = functools.lru_cache(maxsize=params.cache_tiles)(self._layer_tile)

    # -- lookup -------------------------------------------------------------------------
    def state(self, slide_id: str) -> SlideState:
        """The opened slide, or :class:`ViewerNotFound` for an id the project does not have."""
        state = self._states.get(slide_id)
        if state is None:
            raise ViewerNotFound(f"no slide {slide_id!r} in this project")
        if not state.ready:
            with state.lock:
                if not state.ready:
                    self._open(state)
                    state.ready = True
        return state

    def _open(self, state: SlideState) -> None:
        from openslide import ImageSlide
        from openslide.deepzoom import DeepZoomGenerator

        from tiling.slide import open_slide

        entry = state.entry
        if entry.slide_path is None:
            state.error = "no slide file known for this slide (give --slides)"
        else:
            try:
                slide = open_slide(entry.slide_path)
                state.slide = slide
                state.serial = isinstance(slide, ImageSlide)
                state.deepzoom = DeepZoomGenerator(
                    slide, self.params.tile_size, self.params.overlap
                )
            except Exception as exc:  # noqa: BLE001 - any unreadable slide: shown in the page
                state.error = str(exc)
        if entry.prediction_path is not None:
            try:
                self._build_layers(state, entry.prediction_path)
            except Exception as exc:  # noqa: BLE001 - a broken predictions/zarr file: shown
                state.layer_error = f"overlays unavailable: {exc}"
                state.heat, state.outlines, state.tiles = {}, {}, {}

    def _build_layers(self, state: SlideState, prediction_path: Path) -> None:
        from features.bag import with_slide_attrs
        from tiling.lattice import SlideGeometry, TileGrid
        from wsi_mil.heatmaps.stitch import load_tissue, normalise_scores, tile_scores
        from wsi_mil.mil.predictions import read_prediction

        entry = state.entry
        prediction = read_prediction(prediction_path)
        prediction.attrs = with_slide_attrs(prediction.attrs, entry.slide_path)  # TRIDENT bag
        geometry = SlideGeometry.from_attrs(prediction.attrs, str(prediction_path))
        state.mpp = geometry.mpp
        if state.slide is not None and tuple(state.slide.dimensions) != (
            geometry.width,
            geometry.height,
        ):
            raise ValueError(
                f"the slide is {state.slide.dimensions[0]}x"
                f"{state.slide.dimensions[1]} px but its predictions were made on "
                f"a {geometry.width}x{geometry.height} px slide"
            )
        grid = TileGrid.from_coords(prediction.coords, geometry)
        names = prediction.class_names
        if entry.zarr_path is not None:
            state.heat.update(_zarr_layers(entry.zarr_path, geometry.mpp))
        else:
            values, vmin, vmax, scale = normalise_scores(
                tile_scores(prediction, "attention"), self.normalize, probability=False
            )
            columns = {"attention": (values, vmin, vmax, f"attention ({scale})")}
            for i, name in enumerate(names):
                if prediction.has_segmentation:
                    columns[f"prob_{name}"] = (
                        prediction.tile_probs[:, i],
                        0.0,
                        1.0,
                        f"P({name}) (tile probability)",
                    )
                else:  # survival, regression: the tile's own risk or value
                    columns[f"tile_{name}"] = (
                        *normalise_scores(prediction.tile_probs[:, i], "rank", probability=False)[
                            :3
                        ],
                        f"tile {name} (percentile)",
                    )
            state.heat.update(_grid_layers(grid, columns))
        explanations, scores, meta = _read_explanations(
            entry.explanations_path, len(prediction.coords)
        )
        state.trust = _trust(explanations, scores, meta, entry.trust_path)
        state.heat.update(
            _grid_layers(
                grid,
                {
                    f"explain_{method}": (
                        *normalise_scores(v, "rank", probability=False)[:3],
                        f"{method} (explanation, percentile)"
                        + (
                            " \u2014 FAILS THE SANITY CHECK"
                            if state.trust[f"explain_{method}"]["fails_sanity"]
                            else ""
                        ),
                    )
                    for method, v in explanations.items()
                },
            )
        )
        if entry.segment_dir is not None:
            state.heat.update(_segment_layers(entry.segment_dir))

        from scipy.stats import rankdata

        attention = np.asarray(prediction.attention, np.float64)
        state.tiles = {
            "coords": np.asarray(prediction.coords, np.float64),
            "size": geometry.tile_size_level0,
            "attention": attention,
            "percentile": rankdata(attention) / max(len(attention), 1),
            "probs": np.asarray(prediction.tile_probs, np.float64),
            "class_names": names,
            "explanations": explanations,
        }
        if entry.tissue_path is not None:
            import shapely

            state.tissue = load_tissue(entry.tissue_path)
            shapely.prepare(state.tissue)  # many point-in-tissue tests per tile request
            state.outlines["tissue"] = OutlineLayer.from_geometry("tissue", state.tissue)
        if entry.segmentation_path is not None:
            from tiling.tissue_geojson import read_tissue_geojson

            state.outlines["segmentation"] = OutlineLayer.from_geometry(
                "segmentation", read_tissue_geojson(entry.segmentation_path)
            )
        if entry.annotation_path is not None:
            from tiling.annotations import read_annotations

            state.outlines["lesions"] = OutlineLayer.from_geometry(
                "lesions", read_annotations(entry.annotation_path).lesions
            )

    # -- page data ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        stops = [f"rgb({r},{g},{b})" for r, g, b in self.lut[np.linspace(0, 255, 11).astype(int)]]
        return {
            "rater": self.params.rater,
            "questions": [list(q) for q in QUESTIONS],
            "cmap": self.cmap,
            "colorbar": stops,
            "interpolation": self.params.interpolation,
            "project": str(self.index.root),
            "rated": self.rated_ids(),
        }

    def rated_ids(self) -> list[str]:
        if self.ratings is None:
            return []
        return [sid for sid in self.index.slides if self.ratings.get(sid) is not None]

    def slide_list(self) -> list[dict[str, Any]]:
        return [entry.summary() for entry in self.index.slides.values()]

    def slide_detail(self, slide_id: str) -> dict[str, Any]:
        state = self.state(slide_id)
        layers = [
            {
                "id": k,
                "kind": "heat",
                "label": v.label,
                "vmin": v.vmin,
                "vmax": v.vmax,
                "trust": state.trust.get(k),
            }
            for k, v in state.heat.items()
        ]
        layers += [
            {
                "id": k,
                "kind": "outline",
                "label": v.label,
                "color": "#{:02x}{:02x}{:02x}".format(*v.color),
            }
            for k, v in state.outlines.items()
        ]
        width, height = state.slide.dimensions if state.slide is not None else (None, None)
        return {
            **state.entry.summary(),
            "error": state.error,
            "layer_error": state.layer_error,
            "width": width,
            "height": height,
            "mpp": state.mpp,
            "layers": layers,
        }

    # -- Deep Zoom ----------------------------------------------------------------------
    def _deepzoom(self, slide_id: str) -> SlideState:
        state = self.state(slide_id)
        if state.deepzoom is None:
            raise ViewerNotFound(f"slide {slide_id!r} cannot be shown: {state.error}")
        return state

    def slide_dzi(self, slide_id: str) -> str:
        return self._deepzoom(slide_id).deepzoom.get_dzi("jpeg")

    def _check_address(self, state: SlideState, level: int, col: int, row: int) -> None:
        dz = state.deepzoom
        if not 0 <= level < dz.level_count:
            raise ViewerNotFound(f"level {level} out of range 0..{dz.level_count - 1}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ViewerNotFound(
                f"tile {col}_{row} out of range at level {level} ({cols}x{rows} tiles)"
            )

    def _slide_tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        state = self._deepzoom(slide_id)
        self._check_address(state, level, col, row)
        if state.serial:
            with state.lock:
                tile = state.deepzoom.get_tile(level, (col, row))
        else:
            tile = state.deepzoom.get_tile(level, (col, row))
        buffer = io.BytesIO()
        tile.convert("RGB").save(buffer, "jpeg", quality=self.params.jpeg_quality)
        return buffer.getvalue()

    def layer_dzi(self, slide_id: str, layer: str) -> str:
        state = self._layer_state(slide_id, layer)
        return state.deepzoom.get_dzi("png")

    def _layer_state(self, slide_id: str, layer: str) -> SlideState:
        state = self._deepzoom(slide_id)
        if layer not in state.heat and layer not in state.outlines:
            raise ViewerNotFound(f"slide {slide_id!r} has no layer {layer!r}")
        return state

    def window(self, state: SlideState, level: int, col: int, row: int) -> TileWindow:
        """Where Deep Zoom tile (level, col, row) lies, as ``DeepZoomGenerator`` cuts it."""
        dz = state.deepzoom
        width, height = dz.get_tile_dimensions(level, (col, row))
        size, overlap = self.params.tile_size, self.params.overlap
        x = col * size - (overlap if col else 0)
        y = row * size - (overlap if row else 0)
        return TileWindow(x, y, width, height, float(2 ** (dz.level_count - 1 - level)))

    def _layer_tile(self, slide_id: str, layer: str, level: int, col: int, row: int) -> bytes:
        state = self._layer_state(slide_id, layer)
        self._check_address(state, level, col, row)
        window = self.window(state, level, col, row)
        if layer in state.outlines:
            return encode_png(state.outlines[layer].render(window))
        heat = state.heat[layer]
        values = heat.sample(window, self.params.interpolation)
        mask = None
        if self.params.tissue_clip and state.tissue is not None and not np.isnan(values).all():
            mask = tissue_mask(state.tissue, window)
        return encode_indexed_png(palette_index(values, heat.vmin, heat.vmax, mask), self.palette)

    # -- measurements -------------------------------------------------------------------
    def measure(self, slide_id: str, x: float, y: float) -> dict[str, Any]:
        """The tile under level-0 point (x, y): attention, percentile, class probabilities."""
        state = self.state(slide_id)
        tiles = state.tiles
        if not tiles:
            return {"tile": None}
        coords, size = tiles["coords"], tiles["size"]
        inside = np.flatnonzero(
            (coords[:, 0] <= x)
            & (x < coords[:, 0] + size)
            & (coords[:, 1] <= y)
            & (y < coords[:, 1] + size)
        )
        if inside.size == 0:
            return {"tile": None}
        centres = coords[inside] + size / 2
        i = int(inside[np.argmin(((centres - (x, y)) ** 2).sum(axis=1))])
        return {
            "tile": i,
            "x": int(coords[i, 0]),
            "y": int(coords[i, 1]),
            "size": size,
            "attention": float(tiles["attention"][i]),
            "percentile": float(tiles["percentile"][i]),
            "probs": {c: float(tiles["probs"][i, k]) for k, c in enumerate(tiles["class_names"])},
            "explanations": {m: float(v[i]) for m, v in tiles["explanations"].items()},
            "layers": {k: v.value_at(x, y) for k, v in state.heat.items()},
        }

    # -- ratings ------------------------------------------------------------------------
    def rating(self, slide_id: str) -> dict[str, Any] | None:
        self._entry(slide_id)
        if self.ratings is None:
            return None
        rating = self.ratings.get(slide_id)
        return (
            None
            if rating is None
            else {**rating.scores, "comment": rating.comment, "submitted": rating.submitted}
        )

    def submit_rating(self, slide_id: str, data: Any) -> Path:
        from wsi_mil.viewer.ratings import RatingError

        self._entry(slide_id)
        if self.ratings is None:
            raise PermissionError("ratings are read-only: start wsi-mil view with --rater NAME")
        if not isinstance(data, dict):
            raise ViewerBadRequest("a rating is a JSON object")
        try:
            rating = Rating.from_form(slide_id, self.ratings.rater, data)
        except RatingError as exc:
            raise ViewerBadRequest(str(exc)) from exc
        self.ratings.submit(rating)
        return self.ratings.path

    def _entry(self, slide_id: str) -> SlideEntry:
        entry = self.index.slides.get(slide_id)
        if entry is None:
            raise ViewerNotFound(f"no slide {slide_id!r} in this project")
        return entry


def _grid_layers(grid: Any, columns: dict[str, tuple]) -> dict[str, HeatLayer]:
    """Heat pyramids of per-tile columns, built as ``heatmap.zarr`` builds its levels."""
    from wsi_mil.export.ome_zarr import pyramid

    if not columns:
        return {}
    level0 = np.stack([grid.stitch(values) for values, *_ in columns.values()]).astype(np.float32)
    levels = pyramid(level0, 256)
    return {
        name: HeatLayer(
            name,
            label,
            tuple(level[i] for level in levels),
            grid.origin,
            grid.stride,
            float(vmin),
            float(vmax),
        )
        for i, (name, (_, vmin, vmax, label)) in enumerate(columns.items())
    }


def _zarr_layers(path: Path, mpp: float) -> dict[str, HeatLayer]:
    """The attention and class-probability channels of ``heatmap.zarr`` (either OME version).

    Each level's position comes from its OME-Zarr scale and translation (µm), which put a
    pixel's centre at the centre of the area it covers.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs: dict[str, JSON] = dict(group.attrs)
    ome = ("ome",) if "ome" in attrs else ()  # OME-Zarr 0.5 nests its metadata, 0.4 does not
    omero_channels = _json_list(attrs, path, *ome, "omero", "channels", default=[])
    channels = [
        _json_text(attrs, path, "wsi_mil", "channels", i)
        for i in range(len(_json_list(attrs, path, "wsi_mil", "channels", default=[])))
    ] or [
        _json_text(attrs, path, *ome, "omero", "channels", i, "label")
        for i in range(len(omero_channels))
    ]
    normalisation = _json_text(attrs, path, "wsi_mil", "attention_normalisation", default="rank")
    datasets = (*ome, "multiscales", 0, "datasets")
    n_levels = len(_json_list(attrs, path, *datasets, min_len=1))
    level0 = (*datasets, 0, "coordinateTransformations")
    kinds = [
        _json_at(attrs, (*level0, i, "type")) for i in range(len(_json_list(attrs, path, *level0)))
    ]
    transform = {kind: i for i, kind in enumerate(kinds) if isinstance(kind, str)}  # -> its index
    if "scale" not in transform or "translation" not in transform:
        raise InputError(f"{path}: level 0 has no scale or no translation transformation")
    size_um = _json_number(attrs, path, *level0, transform["scale"], "scale", -1)
    ty, tx = (
        _json_number(attrs, path, *level0, transform["translation"], "translation", k)
        for k in (-2, -1)
    )
    stride = size_um / mpp
    origin = ((tx - size_um / 2) / mpp, (ty - size_um / 2) / mpp)
    arrays = [
        _zarr_array(group, _json_text(attrs, path, *datasets, k, "path"), path)
        for k in range(n_levels)
    ]
    omero_index = {  # label -> its omero channel, whose display window a raw attention keeps
        _json_text(attrs, path, *ome, "omero", "channels", i, "label", default=""): i
        for i in range(len(omero_channels))
    }
    layers = {}
    for i, name in enumerate(channels):
        if name == "attention":
            label, vmin, vmax = (
                f"attention ({'percentile' if normalisation == 'rank' else normalisation})",
                0.0,
                1.0,
            )
            if normalisation == "raw" and name in omero_index:
                window = (*ome, "omero", "channels", omero_index[name], "window")
                vmin = _json_number(attrs, path, *window, "start", default=0.0)
                vmax = _json_number(attrs, path, *window, "end", default=1.0)
        elif name.startswith("prob_"):
            label, vmin, vmax = f"P({name.removeprefix('prob_')}) (tile probability)", 0.0, 1.0
        else:
            continue
        levels = tuple(np.asarray(a[i], np.float32) for a in arrays)
        layers[name] = HeatLayer(name, label, levels, origin, stride, vmin, vmax)
    return layers


def _read_explanations(
    path: Path | None, n_tiles: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]], dict[str, Any]]:
    """(method -> per-tile scores, method -> its scores on the slide, fold and in-sample flag)
    of ``explanations.h5``: the datasets its ``methods`` attribute lists (every dataset of one
    value per tile but the lesion fractions in a file without it)."""
    if path is None:
        return {}, {}, {}
    from wsi_mil.explain.store import read_explanations

    stored = read_explanations(path, require_complete=False)
    out: dict[str, np.ndarray] = {
        name: np.asarray(values, np.float64)
        for name, values in sorted(stored.maps.items())
        if values.shape == (n_tiles,)
    }
    scores = stored.scores
    meta: dict[str, Any] = {k: stored.attrs[k] for k in ("fold", "in_sample") if k in stored.attrs}
    return out, scores, meta


def _segment_layers(folder: Path) -> dict[str, ZarrHeatLayer]:
    """The pixel segmenter's layers of a ``segment/<slide_id>/`` folder: its lesion probability
    (``mask.zarr``) and every explanation map (``explain.zarr/<method>``), read lazily."""
    import zarr

    from wsi_mil.segment.explain import EXPLAIN_ZARR
    from wsi_mil.segment.infer import MASK

    found: list[tuple[str, str, zarr.Group, Path]] = []
    if (folder / MASK).is_dir():
        found.append(
            (
                "segment_mask",
                "segmenter P(lesion) (pixel mask)",
                zarr.open_group(str(folder / MASK), mode="r"),
                folder / MASK,
            )
        )
    if (folder / EXPLAIN_ZARR).is_dir():
        maps = zarr.open_group(str(folder / EXPLAIN_ZARR), mode="r")
        found += [
            (
                f"segment_{name}",
                f"segmenter {name} (explanation, window max = 1)",
                group,
                folder / EXPLAIN_ZARR / name,
            )
            for name, group in sorted(maps.groups(), key=lambda member: member[0])
        ]
    layers = {}
    for layer_id, label, group, path in found:
        attrs: dict[str, JSON] = dict(group.attrs)
        downsample = _json_number(attrs, path, "wsi_mil", "downsample_level0")
        levels = len(_json_list(attrs, path, "multiscales", 0, "datasets", min_len=1))
        layers[layer_id] = ZarrHeatLayer(
            layer_id,
            label,
            tuple(_zarr_array(group, str(k), path) for k in range(levels)),
            (0.0, 0.0),
            downsample,
        )
    return layers


def _zarr_array(group: zarr.Group, name: str, file: Path) -> zarr.Array:
    """The array ``name`` of a pyramid group, or an :class:`InputError` naming the file."""
    import zarr

    member = group.get(name)
    if not isinstance(member, zarr.Array):
        raise InputError(f"{file}: level {name!r} is missing or not an array")
    return member


# A zarr group's attributes are JSON of any shape as far as the type checker knows; the readers
# below walk them and check each value they use, so a malformed or foreign OME-Zarr shows as
# one line naming the file and the attribute (the page's "overlays unavailable: ...") rather
# than a bare KeyError or TypeError.
_Key = str | int


def _json_at(value: JSON, keys: tuple[_Key, ...]) -> JSON:
    """``value[keys[0]][keys[1]]...``: None where a key or an index is not there."""
    for key in keys:
        if isinstance(key, str) and isinstance(value, Mapping):
            value = value.get(key)
        elif (
            isinstance(key, int)
            and isinstance(value, Sequence)
            and not isinstance(value, str)
            and -len(value) <= key < len(value)
        ):
            value = value[key]
        else:
            return None
    return value


def _json_error(file: Path, keys: tuple[_Key, ...], expected: str) -> InputError:
    where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
    return InputError(f"{file}: attribute {where} is missing or not {expected}")


def _json_list(
    value: JSON, file: Path, *keys: _Key, default: Sequence[JSON] | None = None, min_len: int = 0
) -> Sequence[JSON]:
    """The list at ``keys`` (of at least ``min_len`` items); ``default`` where it is absent."""
    found = _json_at(value, keys)
    if found is None and default is not None:
        return default
    if isinstance(found, str) or not isinstance(found, Sequence) or len(found) < min_len:
        raise _json_error(file, keys, f"a list of at least {min_len}" if min_len else "a list")
    return found


def _json_text(value: JSON, file: Path, *keys: _Key, default: str | None = None) -> str:
    """The string at ``keys``; ``default`` where it is absent."""
    found = _json_at(value, keys)
    if found is None and default is not None:
        return default
    if not isinstance(found, str):
        raise _json_error(file, keys, "a string")
    return found


def _json_number(value: JSON, file: Path, *keys: _Key, default: float | None = None) -> float:
    """The number at ``keys`` (or a numeric string, which this reader has always taken);
    ``default`` where it is absent."""
    found = _json_at(value, keys)
    if found is None and default is not None:
        return default
    if isinstance(found, (int, float, str)):
        try:
            return float(found)
        except ValueError:
            pass
    raise _json_error(file, keys, "a number")


def _trust(
    explanations: dict[str, np.ndarray],
    scores: dict[str, dict[str, float]],
    meta: dict[str, Any],
    trust_path: Path | None,
) -> dict[str, dict[str, Any]]:
    """What the page shows beside each explanation layer (:mod:`wsi_mil.explain.trust`)."""
    import json

    from wsi_mil.explain.trust import fails_sanity, slide_trust, trust_line

    recommended = None
    if trust_path is not None:
        try:
            recommended = json.loads(trust_path.read_text(encoding="utf-8")).get("recommended")
        except (OSError, ValueError):
            recommended = None
    where = ""
    if "fold" in meta:
        sample = "in sample" if meta.get("in_sample") else "out of sample"
        where = f"  \u00b7  fold {meta['fold']}, {sample}"
    return {
        f"explain_{method}": {
            "method": method,
            "caption": trust_line(method, scores.get(method, {}))
            + where
            + (f"  \u00b7  recommended for this run: {recommended}" if recommended else ""),
            "fails_sanity": fails_sanity(scores.get(method, {})),
            "figures": slide_trust(scores.get(method, {})),
            "recommended": recommended,
        }
        for method in explanations
    }
