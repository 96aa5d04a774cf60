"""Predictions files with a known answer, to test and benchmark what comes after the MIL model.

Testing and benchmarking what comes after the MIL model (the pixel segmenter's choice of
flagged tiles, its stitching and its scores beside the tile head) needs predictions without
training a MIL model first. :func:`annotation_prediction` writes a real
``predictions/<slide_id>.h5`` for a tiled slide in which each tile's positive-class probability
is the lesion area fraction of the tile (exact, from :func:`tiling.annotations.tile_fractions`)
and the attention is the same fraction. It is the best any tile-level head can do, which makes
it the strictest tile head to compare a pixel segmenter against. :func:`flagged_prediction`
writes one whose tiles are flagged 0 or 1 by the caller (a lesion of a chosen shape on a slide
with no annotation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tiling.annotations import as_multipolygon, read_annotations, tile_fractions
from tiling.tiles_file import read_tiles_file
from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

CLASS_NAMES = ("normal", "tumor")


def annotation_prediction(
    tiles_path: str | os.PathLike, annotation: str | os.PathLike | None, out_path: str | os.PathLike
) -> Path:
    """Write the predictions file of a tiles file whose tile head is the lesion fraction."""
    tiles = read_tiles_file(tiles_path)
    lesions = (
        read_annotations(annotation).lesions if annotation is not None else as_multipolygon(None)
    )
    fractions = tile_fractions(lesions, tiles.coords, float(tiles.attrs["tile_size_level0"]))
    positive = float(fractions.max()) if fractions.size else 0.0
    tile_probs = np.column_stack([1.0 - fractions, fractions]).astype(np.float32)
    prediction = SlidePrediction(
        slide_id=tiles.slide_id,
        coords=tiles.coords,
        attention=fractions.astype(np.float32),
        attention_norm=normalise_attention(fractions),
        tile_probs=tile_probs,
        probs=np.array([1.0 - positive, positive], np.float32),
        class_names=list(CLASS_NAMES),
        predicted_label=CLASS_NAMES[int(positive >= 0.5)],
        attrs={
            **tiles.attrs,
            "negative_class": CLASS_NAMES[0],
            "tiles_file": str(tiles_path),
            "run_id": "annotation",
        },
    )
    return write_prediction(out_path, prediction)


def flagged_prediction(
    out_path: str | os.PathLike,
    slide_path: str | os.PathLike,
    coords: np.ndarray,
    flags: np.ndarray,
    *,
    size: tuple[int, int],
    mpp: float,
    tile: int,
) -> Path:
    """Write the predictions file of a slide (``size`` level-0 px, ``mpp`` µm/px) tiled at
    ``coords`` (top-left corners, ``tile`` px, no overlap) whose tiles' positive-class
    probability and attention are ``flags`` (0 or 1): the tiles a pixel segmenter is sent."""
    flag = np.asarray(flags, dtype=np.float32)
    prediction = SlidePrediction(
        slide_id=Path(out_path).stem,
        coords=np.asarray(coords, dtype=np.int64),
        attention=flag,
        attention_norm=normalise_attention(flag),
        tile_probs=np.column_stack([1 - flag, flag]).astype(np.float32),
        probs=np.array([0.0, 1.0], np.float32),
        class_names=list(CLASS_NAMES),
        predicted_label=CLASS_NAMES[1],
        attrs={
            "slide_width": size[0],
            "slide_height": size[1],
            "slide_mpp": mpp,
            "tile_size_level0": float(tile),
            "stride": float(tile),
            "slide_path": str(slide_path),
            "negative_class": CLASS_NAMES[0],
        },
    )
    return write_prediction(out_path, prediction)
