"""``features/<encoder>/<slide_id>.h5``: a feature bag, all that training and prediction need.

Datasets: ``features`` ``[N, D]`` (float16 by default), ``coords`` and ``tissue_fraction``
copied from the tiles file in the same order, and optionally ``tile_labels`` ``[N]`` (lesion
fraction per tile, from annotations). Attributes: all of the tiles file's, plus the encoder's
(``encoder``, ``encoder_dim``, ``weights``, ``weights_sha256``, ``input_size``, ``mean``,
``std``, ``dtype``) and ``complete`` = True, written last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiling.storage import atomic_output, provenance, read_attrs, write_attrs
from tiling.tiles_file import TilesFile

ENCODER_ATTRS = (
    "encoder", "encoder_dim", "weights", "weights_sha256", "input_size", "mean", "std", "dtype",
)


class BagError(ValueError):
    """A feature bag that is missing, incomplete or not in the wsi-mil format."""


def write_bag(
    path: str | os.PathLike,
    features: np.ndarray,
    tiles: TilesFile,
    encoder_attrs: Mapping[str, Any],
) -> Path:
    """Write a feature bag atomically, carrying over the tiles file's coordinates and attributes."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != len(tiles):
        raise BagError(
            f"{path}: features of shape {features.shape} do not match {len(tiles)} tiles "
            f"of {tiles.path}"
        )
    missing = [key for key in ENCODER_ATTRS if key not in encoder_attrs]
    if missing:
        raise BagError(f"{path}: encoder attributes missing {missing}")
    attrs = {**tiles.attrs, **encoder_attrs, **provenance(), "tiles_file": str(tiles.path)}
    path = Path(path)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=features, chunks=(min(len(features), 1024) or 1,
                                                           features.shape[1]))
        f.create_dataset("coords", data=tiles.coords)
        f.create_dataset("tissue_fraction", data=tiles.tissue_fraction)
        write_attrs(f, attrs)
        f.attrs["complete"] = True
    return path


def is_complete_bag(path: str | os.PathLike) -> bool:
    """True when ``path`` is a readable bag whose ``complete`` attribute was written."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and "features" in f
    except (OSError, FileNotFoundError):
        return False


def read_bag_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a complete bag, with a clear error otherwise."""
    path = Path(path)
    if not is_complete_bag(path):
        raise BagError(f"{path}: not a complete wsi-mil feature bag")
    with h5py.File(path, "r") as f:
        attrs = read_attrs(f)
        attrs["num_tiles"] = int(f["features"].shape[0])
    return attrs


def add_tile_labels(path: str | os.PathLike, tile_labels: np.ndarray, source: str) -> None:
    """Add (or replace) the ``tile_labels`` dataset of a bag, atomically (copy, edit, replace)."""
    path = Path(path)
    attrs = read_bag_attrs(path)
    tile_labels = np.asarray(tile_labels, dtype=np.float32).reshape(-1)
    if tile_labels.shape[0] != attrs["num_tiles"]:
        raise BagError(
            f"{path}: {tile_labels.shape[0]} tile labels for {attrs['num_tiles']} tiles"
        )
    with atomic_output(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if "tile_labels" in f:
                del f["tile_labels"]
            f.create_dataset("tile_labels", data=tile_labels)
            f.attrs["tile_labels_source"] = source
