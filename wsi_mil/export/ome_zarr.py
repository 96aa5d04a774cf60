"""``heatmap.zarr``: the tile-grid scores as an OME-Zarr multiscale image, for napari and friends.

One image with a channel axis: ``attention`` (normalised as in the overlay), ``attention_raw``
and ``prob_<class>`` for each class, on the tile grid (one pixel per tile stride) and on
successive 2x NaN-aware means of it, chunked. The OME-Zarr ``multiscales`` metadata gives each
level's µm/px (``scale``) and position on the slide (``translation``), so napari places the
heat in micrometres on top of anything else opened in micrometres; ``omero`` channel metadata
names the channels, which napari turns into one layer each. Grid cells without a tile are NaN.

``ome_zarr_version="0.4"`` writes zarr format 2 (``.zattrs``, ``/`` chunk keys), which every
OME-Zarr reader understands (napari-ome-zarr, ome-zarr-py, vizarr, Fiji/MoBIE); ``"0.5"``
writes zarr format 3 with the metadata under the ``ome`` attribute key, as that version requires.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from tiling.lattice import SlideGeometry, TileGrid
from tiling.storage import atomic_output, provenance
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.heatmaps.stitch import block_mean, normalise_scores, tile_scores
from wsi_mil.mil.predictions import SlidePrediction

#: display colour of each kind of channel in omero metadata (hex RGB)
CHANNEL_COLORS = {"attention": "FF0000", "attention_raw": "FFFF00", "prob": "00FFFF"}


def pyramid(level0: np.ndarray, min_side: int) -> list[np.ndarray]:
    """[c, y, x] level 0 and its 2x NaN-aware means, until a level fits in ``min_side``."""
    levels = [level0]
    while max(levels[-1].shape[1:]) > min_side:
        levels.append(np.stack([block_mean(channel, 2) for channel in levels[-1]]))
    return levels


def _window(
    channel: np.ndarray, probability: bool, bounds: tuple[float, float] | None = None
) -> dict[str, float]:
    """The display window of a channel: [0, 1] for a probability, ``bounds`` when the scores'
    normalisation gave them, else the channel's own range."""
    if bounds is not None:
        low, high = bounds
    elif probability or np.isnan(channel).all():
        low, high = 0.0, 1.0
    else:
        low, high = float(np.nanmin(channel)), float(np.nanmax(channel))
        high = high if high > low else low + 1.0
    return {"start": low, "end": high, "min": low, "max": high}


def multiscales_metadata(
    name: str, grid: TileGrid, geometry: SlideGeometry, n_levels: int, version: str
) -> dict[str, Any]:
    """OME-Zarr ``multiscales`` entry: axes c/y/x in micrometres, scale and translation per level.

    Level k's pixel is ``2**k`` cells of ``stride * mpp`` µm. The translation puts each pixel's
    centre at the centre of the slide area it summarises (napari's convention).
    """
    cell_um = grid.stride * geometry.mpp
    origin_um = (grid.origin[1] * geometry.mpp, grid.origin[0] * geometry.mpp)  # (y, x)
    datasets = []
    for k in range(n_levels):
        size = cell_um * 2**k
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, size, size]},
                    {
                        "type": "translation",
                        "translation": [0.0, origin_um[0] + size / 2, origin_um[1] + size / 2],
                    },
                ],
            }
        )
    entry: dict[str, Any] = {
        "name": name,
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": datasets,
        "type": "mean",
        "metadata": {
            "description": "level 0 is the tile grid (one pixel per tile stride, "
            "overlapping tiles averaged); each next level is the "
            "NaN-aware 2x2 mean of the one before"
        },
    }
    if version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def write_heatmap_zarr(
    path: str | os.PathLike,
    prediction: SlidePrediction,
    params: HeatmapParams,
    grid: TileGrid | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``heatmap.zarr`` for one slide's prediction, atomically (the whole directory)."""
    path = Path(path)
    geometry = SlideGeometry.from_attrs(prediction.attrs, prediction.slide_id)
    grid = grid or TileGrid.from_coords(prediction.coords, geometry)
    # the overlay's normalisation and its colour-bar range: [0, 1] but for "raw" attention
    attention, low, high, _ = normalise_scores(
        tile_scores(prediction, "attention"), params.normalize, probability=False
    )
    prefix = "prob_" if prediction.has_segmentation else "tile_"  # a risk or value: no probability
    names = ["attention", "attention_raw", *[f"{prefix}{c}" for c in prediction.class_names]]
    columns = [
        attention,
        prediction.attention,
        *[prediction.tile_probs[:, i] for i in range(len(prediction.class_names))],
    ]
    level0 = np.stack([grid.stitch(column) for column in columns]).astype(np.float32)
    levels = pyramid(level0, params.zarr_chunk)

    version = params.ome_zarr_version
    zarr_format: Literal[2, 3] = 2 if version == "0.4" else 3
    multiscales = multiscales_metadata(prediction.slide_id, grid, geometry, len(levels), version)
    omero = {
        "name": prediction.slide_id,
        "channels": [
            {
                "label": name,
                "color": CHANNEL_COLORS["prob" if name.startswith(("prob_", "tile_")) else name],
                "active": name == "attention",
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": _window(
                    level0[i],
                    probability=name.startswith("prob_"),
                    bounds=(float(low), float(high)) if name == "attention" else None,
                ),
            }
            for i, name in enumerate(names)
        ],
        "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
    }
    wsi_mil_attrs = {
        **provenance(),
        "slide_id": prediction.slide_id,
        "channels": names,
        "attention_normalisation": params.normalize,
        "slide_mpp": geometry.mpp,
        "grid_origin_level0": list(grid.origin),
        "grid_stride_level0": grid.stride,
        "tile_size_level0": geometry.tile_size_level0,
        **dict(extra_attrs or {}),
    }
    if version == "0.4":
        attributes = {
            "multiscales": [multiscales],
            "omero": {"version": "0.4", **omero},
            "wsi_mil": wsi_mil_attrs,
        }
    else:
        attributes = {
            "ome": {"version": "0.5", "multiscales": [multiscales], "omero": omero},
            "wsi_mil": wsi_mil_attrs,
        }

    chunk = params.zarr_chunk
    with atomic_output(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        for k, data in enumerate(levels):
            options: dict[str, Any] = (
                {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
                if zarr_format == 2
                else {"dimension_names": ["c", "y", "x"]}
            )
            array = group.create_array(
                str(k),
                shape=data.shape,
                dtype="float32",
                chunks=(1, min(chunk, data.shape[1]), min(chunk, data.shape[2])),
                fill_value=float("nan"),
                **options,
            )
            array[...] = data
        group.attrs.update(attributes)  # type: ignore[arg-type]  # zarr's JSON type
    return path
