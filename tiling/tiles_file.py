"""``tiles/<slide_id>.h5``: the tile coordinates of one slide, and everything that produced them.

The contract (see ARCHITECTURE.md): ``coords`` int64 ``[N, 2]`` level-0 (x, y) of each tile's
top-left corner, ``tissue_fraction`` float32 ``[N]``, and root attributes recording the slide,
its resolution and every tiling choice. A later stage needs nothing but this file and the slide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiling.storage import atomic_output, provenance, read_attrs, write_attrs
from wsi_mil.errors import WsiMilError

#: Attributes every tiles file carries; a file missing one is not a wsi-mil tiles file.
REQUIRED_ATTRS = (
    "slide_path",
    "slide_id",
    "slide_width",
    "slide_height",
    "slide_mpp",
    "mpp_source",
    "target_mpp",
    "tile_size",
    "tile_size_level0",
    "read_level",
    "read_downsample",
    "stride",
    "min_tissue",
    "tissue_method",
    "tissue_params",
    "wsi_mil_version",
    "created",
)


class TilesFileError(WsiMilError, ValueError):
    """A tiles file that is missing, unreadable or not in the wsi-mil format."""


@dataclass(frozen=True)
class TilesFile:
    """The content of a tiles file: coordinates, tissue fractions and attributes."""

    path: Path
    coords: np.ndarray  # int64 [N, 2], level-0 (x, y) top-left corners
    tissue_fraction: np.ndarray  # float32 [N]
    attrs: dict[str, Any]

    @property
    def slide_id(self) -> str:
        return str(self.attrs["slide_id"])

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def write_tiles_file(
    path: str | os.PathLike,
    coords: np.ndarray,
    tissue_fraction: np.ndarray,
    attrs: dict[str, Any],
) -> Path:
    """Write a tiles file atomically; ``wsi_mil_version`` and ``created`` are added here."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    tissue_fraction = np.asarray(tissue_fraction, dtype=np.float32).reshape(-1)
    if coords.shape[0] != tissue_fraction.shape[0]:
        raise ValueError(
            f"{path}: {coords.shape[0]} coordinates but {tissue_fraction.shape[0]} tissue fractions"
        )
    full_attrs = {**attrs, **provenance()}
    missing = [key for key in REQUIRED_ATTRS if key not in full_attrs]
    if missing:
        raise ValueError(f"{path}: tiles file attributes missing {missing}")
    path = Path(path)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=coords)
        f.create_dataset("tissue_fraction", data=tissue_fraction)
        write_attrs(f, full_attrs)
    return path


def read_tiles_file(path: str | os.PathLike) -> TilesFile:
    """Read a tiles file, with an error that names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise TilesFileError(f"{path}: tiles file not found")
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f or "tissue_fraction" not in f:
                raise TilesFileError(
                    f"{path}: not a wsi-mil tiles file (needs datasets 'coords' and "
                    f"'tissue_fraction', found {sorted(f.keys())})"
                )
            coords = f["coords"][:].astype(np.int64)
            tissue_fraction = f["tissue_fraction"][:].astype(np.float32)
            attrs = read_attrs(f)
    except OSError as exc:
        raise TilesFileError(f"{path}: cannot read HDF5 file ({exc})") from exc
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise TilesFileError(f"{path}: tiles file attributes missing {missing}")
    return TilesFile(path=path, coords=coords, tissue_fraction=tissue_fraction, attrs=attrs)
