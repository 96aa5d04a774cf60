"""``features/<encoder>/<slide_id>.h5``: a feature bag, all that training and prediction need.

Datasets: ``features`` ``[N, D]`` (float16 by default), ``coords`` and ``tissue_fraction``
copied from the tiles file in the same order, and optionally ``tile_labels`` ``[N]`` (lesion
fraction per tile, from annotations). Attributes: all of the tiles file's, plus the encoder's
(``encoder``, ``encoder_dim``, ``weights``, ``weights_sha256``, ``input_size``, ``mean``,
``std``, ``dtype``, and ``pooling``, stain handling and tile QC when recorded) and
``complete`` = True, written last.

This module is the only code that opens feature bags: :func:`write_bag` and
:func:`add_tile_labels` write them; every stage reads them through :func:`read_bag_attrs`,
:func:`open_bag_features`, :func:`read_bag_features`, :func:`read_bag_coords`,
:func:`read_bag_view`, :func:`read_bag_dataset` and :func:`read_bag_tile_labels`, whose errors
(a missing, unreadable or half-written file, a missing dataset or attribute) are one-line
:class:`BagError` naming the file. A file in TRIDENT's layout
(:mod:`features.trident`) is read through the same functions, its attributes translated into
ours, so ``train``, ``predict``, ``heatmap``, ``explain`` and ``view`` take a TRIDENT folder as
they take ours. Given the slide (``slide_path``), a TRIDENT bag's attributes also carry the
slide's size and µm/px, which TRIDENT does not record.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from features.trident import (
    TRIDENT_FORMAT,
    TridentError,
    is_trident_file,
    slide_attrs,
    trident_bag_attrs,
    trident_subfolder,
    write_trident_bag,
)
from tiling.storage import atomic_output, provenance, read_attrs, write_attrs
from tiling.tiles_file import TilesFile
from wsi_mil.errors import WsiMilError

ENCODER_ATTRS = (
    "encoder",
    "encoder_dim",
    "weights",
    "weights_sha256",
    "input_size",
    "mean",
    "std",
    "dtype",
)


class BagError(WsiMilError, ValueError):
    """A feature bag that is missing, incomplete or not in the wsi-mil format."""


def write_bag(
    path: str | os.PathLike,
    features: np.ndarray,
    tiles: TilesFile,
    encoder_attrs: Mapping[str, Any],
    datasets: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a feature bag atomically, carrying over the tiles file's coordinates and attributes.

    ``datasets`` adds per-tile arrays (first axis = tiles, e.g. tile QC measures or augmented
    feature views ``[views, N, D]`` stored tile-first as ``[N, views, D]``)."""
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
        f.create_dataset(
            "features", data=features, chunks=(min(len(features), 1024) or 1, features.shape[1])
        )
        f.create_dataset("coords", data=tiles.coords)
        f.create_dataset("tissue_fraction", data=tiles.tissue_fraction)
        for name, values in (datasets or {}).items():
            values = np.asarray(values)
            if values.shape[0] != len(tiles):
                raise BagError(
                    f"{path}: dataset {name} has {values.shape[0]} rows for {len(tiles)} tiles"
                )
            f.create_dataset(name, data=values)
        write_attrs(f, attrs)
        f.attrs["complete"] = True
    return path


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[h5py.File]:
    """A bag open for reading; a missing or unreadable file is a :class:`BagError` naming it."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # FileNotFoundError too
        raise BagError(f"{path}: cannot read feature bag ({exc})") from exc
    with f:
        yield f


def is_complete_bag(path: str | os.PathLike) -> bool:
    """True when ``path`` is a readable bag whose ``complete`` attribute was written, or a
    TRIDENT feature file whose features and coordinates have the same number of rows."""
    try:
        with _open(path) as f:
            if is_trident_file(f):
                return f["features"].ndim == 2 and f["coords"].shape == (len(f["features"]), 2)
            return bool(f.attrs.get("complete", False)) and "features" in f
    except (BagError, OSError):
        return False


def read_bag_attrs(
    path: str | os.PathLike, slide_path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The attributes of a complete bag (ours, or a TRIDENT file's translated into ours), with
    ``num_tiles``, ``feature_dim`` and ``has_tile_labels``; a clear error otherwise.

    ``slide_path`` completes a TRIDENT bag with its slide's path, size and µm/px (our bags
    carry them already and ignore it)."""
    path = Path(path)
    if not is_complete_bag(path):
        raise BagError(
            f"{path}: not a complete wsi-mil feature bag (nor a TRIDENT feature "
            f"file with features and coords)"
        )
    with _open(path) as f:
        try:
            trident = is_trident_file(f)
            attrs = trident_bag_attrs(f, path) if trident else read_attrs(f)
        except TridentError as exc:
            raise BagError(str(exc)) from exc
        missing = [] if trident else [k for k in ENCODER_ATTRS if k not in attrs]
        if missing:
            raise BagError(f"{path}: feature bag attributes missing {missing}")
        attrs["num_tiles"] = int(f["features"].shape[0])
        attrs["feature_dim"] = int(f["features"].shape[1]) if f["features"].ndim == 2 else 0
        attrs["has_tile_labels"] = "tile_labels" in f
    if trident and slide_path is not None:
        attrs.update(slide_attrs(slide_path, attrs))
    return attrs


@contextmanager
def open_bag_features(path: str | os.PathLike) -> Iterator[h5py.Dataset]:
    """The bag's ``features`` dataset ``[N, D]``, open for reading in chunks (both layouts)."""
    with _open(path) as f:
        if "features" not in f:
            raise BagError(f"{path}: no 'features' dataset")
        yield f["features"]


def read_bag_features(path: str | os.PathLike, rows: np.ndarray | None = None) -> np.ndarray:
    """Features ``[N, D]`` of a bag (only ``rows``, sorted indices, when given)."""
    with open_bag_features(path) as data:
        return data[:] if rows is None else data[rows]


def read_bag_coords(path: str | os.PathLike) -> np.ndarray:
    """Level-0 (x, y) of each tile's top-left corner ``[N, 2]``."""
    with _open(path) as f:
        if "coords" not in f:
            raise BagError(f"{path}: no 'coords' dataset")
        return f["coords"][:]


def read_bag_dataset(path: str | os.PathLike, name: str) -> np.ndarray | None:
    """A per-tile dataset of a bag (``tile_labels``, tile QC, ...), or None when absent."""
    with _open(path) as f:
        return f[name][:] if name in f else None


def trident_copy_path(bag_path: Path, attrs: Mapping[str, Any] | None = None) -> Path:
    """Where :func:`export_trident` puts a bag's copy: ``OUT/trident/<mag>x_<px>px_<overlap>px_
    overlap/features_<encoder>/<slide_id>.h5`` for a bag ``OUT/<encoder>/<slide_id>.h5``."""
    attrs = dict(attrs) if attrs is not None else read_bag_attrs(bag_path)
    subfolder, _ = trident_subfolder(attrs)
    return (
        bag_path.parent.parent
        / "trident"
        / subfolder
        / f"features_{bag_path.parent.name}"
        / bag_path.name
    )


def export_trident(bag_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Copy one of our bags in TRIDENT's layout (default :func:`trident_copy_path`), so
    TRIDENT's slide encoders and its users' scripts read it; the encoder's attributes ride
    along on ``features``, where TRIDENT ignores them and we read them back."""
    bag_path = Path(bag_path)
    attrs = read_bag_attrs(bag_path)
    if attrs.get("bag_format") == TRIDENT_FORMAT:
        raise BagError(f"{bag_path}: already a TRIDENT feature file")
    _, coords_attrs = trident_subfolder(attrs)
    out_path = Path(out_path) if out_path is not None else trident_copy_path(bag_path, attrs)
    feature_attrs = {
        "name": str(attrs["slide_id"]),
        **{k: attrs[k] for k in ENCODER_ATTRS if k in attrs},
    }
    return write_trident_bag(
        out_path,
        read_bag_features(bag_path),
        read_bag_coords(bag_path),
        coords_attrs,
        feature_attrs,
    )


def with_slide_attrs(attrs: dict[str, Any], slide_path: str | os.PathLike | None) -> dict[str, Any]:
    """Attributes of a TRIDENT bag, or of predictions made from one, completed from the slide
    when they lack its size and µm/px (a stage that has the slide calls this; ours pass)."""
    if "slide_width" in attrs or slide_path is None or attrs.get("bag_format") != TRIDENT_FORMAT:
        return attrs
    return {**attrs, **slide_attrs(slide_path, attrs)}


def read_bag_view(path: str | os.PathLike, view: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Features ``[N, D]`` of a bag's stain-augmented ``view`` (1..``stain_views``; 0 is the
    plain features), only ``rows`` when given."""
    if view == 0:
        return read_bag_features(path, rows)
    with _open(path) as f:
        if "stain_views" not in f or not 1 <= view <= f["stain_views"].shape[1]:
            raise BagError(f"{path}: no stain-augmented view {view}")
        data = f["stain_views"]
        return data[:, view - 1] if rows is None else data[rows, view - 1]


def read_bag_tile_labels(path: str | os.PathLike) -> np.ndarray | None:
    """Lesion fraction per tile ``[N]`` (float32), or None when the bag has none."""
    values = read_bag_dataset(path, "tile_labels")
    return None if values is None else values.astype(np.float32).reshape(-1)


def add_tile_labels(path: str | os.PathLike, tile_labels: np.ndarray, source: str) -> None:
    """Add (or replace) the ``tile_labels`` dataset of a bag, atomically (copy, edit, replace)."""
    path = Path(path)
    attrs = read_bag_attrs(path)
    tile_labels = np.asarray(tile_labels, dtype=np.float32).reshape(-1)
    if tile_labels.shape[0] != attrs["num_tiles"]:
        raise BagError(f"{path}: {tile_labels.shape[0]} tile labels for {attrs['num_tiles']} tiles")
    with atomic_output(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if "tile_labels" in f:
                del f["tile_labels"]
            f.create_dataset("tile_labels", data=tile_labels)
            f.attrs["tile_labels_source"] = source
