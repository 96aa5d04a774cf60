"""TRIDENT's feature files, read as feature bags and written from ours.

TRIDENT (mahmoodlab/TRIDENT) writes one HDF5 file per slide,
``<job>/<mag>x_<patch>px_<overlap>px_overlap/features_<encoder>/<slide>.h5``, with (read from its
``OpenSlideWSI.extract_patch_features`` and ``IO.save_h5``, mahmoodlab/TRIDENT ``trident/``):

* ``features`` ``[N, D]`` (chunks of one row, first axis resizable); attributes ``name`` (the
  slide's name) and ``savetodir``;
* ``coords`` ``[N, 2]`` int64, level-0 (x, y) of each patch's top-left corner; attributes
  ``patch_size`` (px at the target magnification), ``patch_size_level0`` (= ``patch_size *
  level0_magnification // target_magnification``), ``level0_magnification``,
  ``target_magnification``, ``overlap`` (px at the target magnification), ``name``,
  ``savetodir``.

No file attribute, no slide size, no µm/px: what a heatmap needs of the slide comes from the
slide itself (:func:`slide_attrs`), found by slide id in a slides folder the user names. The
only reader of these files is :mod:`features.bag`, which turns their attributes into a bag's
(:func:`trident_bag_attrs`), so every stage reads a TRIDENT folder as it reads ours.

TRIDENT writes in place (no temporary file), so a TRIDENT file cut short by a crash cannot be
told from a complete one beyond its two datasets having the same number of rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiling.storage import atomic_output, decode_attr, encode_attr
from wsi_mil.errors import WsiMilError

#: ``bag_format`` attribute of a bag read from a TRIDENT file.
TRIDENT_FORMAT = "trident"
#: Attributes TRIDENT writes on ``coords`` (its ``extract_tissue_coords``).
COORDS_ATTRS = (
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
    "overlap",
    "name",
    "savetodir",
)
FOLDER_PREFIX = "features_"


class TridentError(WsiMilError, ValueError):
    """A TRIDENT feature file that cannot be read as a bag."""


def is_trident_file(f: h5py.File) -> bool:
    """A file with TRIDENT's layout: ``features``, and ``coords`` carrying ``patch_size_level0``
    (our own bags carry their attributes on the file and ``complete`` last)."""
    return (
        "features" in f
        and "coords" in f
        and "complete" not in f.attrs
        and "patch_size_level0" in f["coords"].attrs
    )


def _dataset_attrs(dataset: h5py.Dataset) -> dict[str, Any]:
    return {str(k): decode_attr(v) for k, v in dataset.attrs.items()}


def encoder_from_folder(path: Path) -> str:
    """The encoder of a TRIDENT file: its folder is ``features_<encoder>``."""
    folder = path.parent.name
    return folder[len(FOLDER_PREFIX) :] if folder.startswith(FOLDER_PREFIX) else "trident"


def trident_bag_attrs(f: h5py.File, path: Path) -> dict[str, Any]:
    """A bag's attributes from a TRIDENT file: tile size and stride in level-0 px from
    ``patch_size_level0`` and ``overlap``, the slide id from the file name, the encoder from
    the folder name (or from the ``encoder`` attribute our own TRIDENT-layout copies carry).
    The slide's size and µm/px are not in the file: :func:`slide_attrs` adds them."""
    features, coords = f["features"], f["coords"]
    if features.ndim != 2 or coords.shape != (features.shape[0], 2):
        raise TridentError(
            f"{path}: TRIDENT file with features {features.shape} and coords "
            f"{coords.shape}: expected [N, D] and [N, 2]"
        )
    coords_attrs, feature_attrs = _dataset_attrs(coords), _dataset_attrs(features)
    try:
        patch_size = int(coords_attrs["patch_size"])
        size0 = float(coords_attrs["patch_size_level0"])
        overlap = float(coords_attrs.get("overlap", 0) or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise TridentError(
            f"{path}: TRIDENT coords attributes unusable ({exc}); they need "
            f"patch_size and patch_size_level0"
        ) from exc
    if patch_size <= 0 or size0 <= 0 or not 0 <= overlap < patch_size:
        raise TridentError(
            f"{path}: patch_size {patch_size}, patch_size_level0 {size0}, "
            f"overlap {overlap}: not a tiling"
        )
    attrs: dict[str, Any] = {f"trident_{k}": v for k, v in coords_attrs.items()}
    attrs.update({k: v for k, v in feature_attrs.items() if k not in ("name", "savetodir")})
    attrs.update(
        bag_format=TRIDENT_FORMAT,
        slide_id=path.stem,
        tile_size=patch_size,
        tile_size_level0=size0,
        stride=(patch_size - overlap) * size0 / patch_size,
        encoder=feature_attrs.get("encoder", encoder_from_folder(path)),
        encoder_dim=int(features.shape[1]),
        dtype=features.dtype.name,
        num_tiles=int(features.shape[0]),
    )
    return attrs


def _magnification_from_mpp(mpp: float) -> int:
    """TRIDENT's magnification of a level-0 µm/px (its ``OpenSlideWSI._fetch_magnification``)."""
    for bound, mag in ((0.16, 80), (0.2, 60), (0.3, 40), (0.6, 20), (1.2, 10), (2.4, 5)):
        if mpp < bound:
            return mag
    raise TridentError(f"level-0 µm/px {mpp} is too coarse for a TRIDENT magnification")


def slide_attrs(slide_path: str | os.PathLike, attrs: dict[str, Any]) -> dict[str, Any]:
    """What a TRIDENT bag lacks of its slide: path, size, µm/px, the pyramid level to read its
    tiles from. µm/px comes from the slide's metadata; a slide without any is given TRIDENT's
    own inverse (10 µm/px divided by ``level0_magnification``: 40x -> 0.25), said so in
    ``mpp_source``."""
    from tiling.slide import SlideMppError, level_for_downsample, open_slide, slide_mpp

    slide_path = Path(slide_path)
    slide = open_slide(slide_path)
    try:
        width, height = (int(v) for v in slide.dimensions)
        try:
            mpp, source = slide_mpp(slide, slide_path)
        except SlideMppError:
            level0_mag = attrs.get("trident_level0_magnification")
            if level0_mag in (None, "None"):
                raise
            mpp, source = 10.0 / float(level0_mag), "trident level0_magnification"
        downsample = float(attrs["tile_size_level0"]) / float(attrs["tile_size"])
        level = level_for_downsample(slide, downsample)
        read_downsample = float(slide.level_downsamples[level])
    finally:
        slide.close()
    return {
        "slide_path": str(slide_path),
        "slide_width": width,
        "slide_height": height,
        "slide_mpp": float(mpp),
        "mpp_source": source,
        "target_mpp": mpp * downsample,
        "read_level": int(level),
        "read_downsample": read_downsample,
    }


def trident_subfolder(attrs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """TRIDENT's job subfolder name for a bag's tiling, and the ``coords`` attributes TRIDENT
    would have written for it (magnifications by TRIDENT's rule from our µm/px)."""
    size0 = float(attrs["tile_size_level0"])
    patch_size = int(attrs["tile_size"])
    level0_mag = _magnification_from_mpp(float(attrs["slide_mpp"]))
    target_mag = level0_mag * patch_size / size0
    target_mag = (
        round(target_mag) if abs(target_mag - round(target_mag)) < 0.05 else round(target_mag, 3)
    )
    overlap = round(patch_size - float(attrs["stride"]) * patch_size / size0)
    coords_attrs = {
        "patch_size": patch_size,
        "patch_size_level0": round(size0),
        "level0_magnification": level0_mag,
        "target_magnification": target_mag,
        "overlap": overlap,
        "name": str(attrs["slide_id"]),
    }
    return f"{target_mag}x_{patch_size}px_{overlap}px_overlap", coords_attrs


def write_trident_bag(
    out_path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    coords_attrs: dict[str, Any],
    feature_attrs: dict[str, Any],
) -> Path:
    """Write one slide's features in TRIDENT's layout (datasets chunked and resizable as its
    ``save_h5`` makes them), atomically. ``feature_attrs`` may add our encoder's attributes
    to TRIDENT's ``name``/``savetodir``: TRIDENT ignores attributes it does not know."""
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as f:
        for key, value, extra in (
            ("features", np.asarray(features), feature_attrs),
            ("coords", np.asarray(coords, dtype=np.int64), coords_attrs),
        ):
            dataset = f.create_dataset(
                key,
                shape=value.shape,
                dtype=value.dtype,
                chunks=(1,) + value.shape[1:],
                maxshape=(None,) + value.shape[1:],
            )
            dataset[:] = value
            for name, attr in {**extra, "savetodir": str(out_path.parent)}.items():
                dataset.attrs[name] = "None" if attr is None else encode_attr(attr)
    return out_path
