"""Feature bags with planted positive tiles: a cohort whose answer is known.

Background tiles are Gaussian noise; a positive bag hides a few tiles shifted along one fixed
direction (the "lesion" signature). A MIL model must find them from slide labels alone, so these
bags test (and benchmark) training, attention and the segmentation head without slides or an
encoder. Bags are written in the real ``features/<encoder>/<slide_id>.h5`` format, on a square
tile grid, with the planted tiles as ``tile_labels``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.bag import add_tile_labels, write_bag
from tiling.storage import write_text_atomic
from tiling.tiles_file import TilesFile

ENCODER = "planted"


@dataclass(frozen=True)
class PlantedBag:
    slide_id: str
    features: np.ndarray  # float32 [N, D]
    label: int  # 1 when the bag hides planted tiles
    planted: np.ndarray  # bool [N]


def iter_planted_bags(n_bags: int, n_tiles: int | tuple[int, int], dim: int, *,
                      planted_fraction: float = 0.1, shift: float = 3.0, seed: int = 0,
                      prefix: str = "slide") -> Iterator[PlantedBag]:
    """Half the bags (alternating) positive; ``n_tiles`` fixed or drawn from ``[lo, hi]``.

    Planted tiles are shifted by ``shift`` standard deviations along one unit direction.
    Bags are made one at a time, so a Camelyon-sized cohort never has to fit in memory.
    """
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    for i in range(n_bags):
        n = n_tiles if isinstance(n_tiles, int) else int(rng.integers(n_tiles[0], n_tiles[1] + 1))
        features = rng.standard_normal((n, dim), dtype=np.float32)
        label = i % 2
        planted = np.zeros(n, dtype=bool)
        if label:
            k = max(1, round(planted_fraction * n))
            planted[rng.choice(n, k, replace=False)] = True
            features[planted] += shift * direction
        yield PlantedBag(f"{prefix}_{i:04d}", features, label, planted)


def planted_bags(n_bags: int, n_tiles: int | tuple[int, int], dim: int,
                 **kwargs) -> list[PlantedBag]:
    """:func:`iter_planted_bags` as a list."""
    return list(iter_planted_bags(n_bags, n_tiles, dim, **kwargs))


def tiles_for(slide_id: str, n: int, tile_size: int = 224) -> TilesFile:
    """A tiles file for ``n`` tiles laid out on a square grid (for bags made without a slide)."""
    side = math.ceil(math.sqrt(n))
    idx = np.arange(n)
    coords = np.stack([idx % side, idx // side], axis=1).astype(np.int64) * tile_size
    attrs = {
        "slide_path": f"synthetic://{slide_id}", "slide_id": slide_id,
        "slide_width": side * tile_size, "slide_height": side * tile_size, "slide_mpp": 0.5,
        "mpp_source": "override", "target_mpp": 0.5, "tile_size": tile_size,
        "tile_size_level0": float(tile_size), "read_level": 0, "read_downsample": 1.0,
        "stride": tile_size, "min_tissue": 0.0, "tissue_method": "synthetic",
        "tissue_params": {},
    }
    return TilesFile(Path(f"synthetic://{slide_id}"), coords,
                     np.ones(n, dtype=np.float32), attrs)


def write_planted_bags(root: str | os.PathLike, bags: Iterable[PlantedBag], *,
                       with_tile_labels: bool = False,
                       dtype: type = np.float16) -> tuple[Path, Path]:
    """Write ``root/features/planted/*.h5`` and ``root/labels.csv`` (``neg``/``pos``).

    Returns (features folder, labels CSV). Slides are grouped into patients of two.
    """
    root = Path(root)
    features_dir = root / "features" / ENCODER
    rows = ["slide_id,label,patient_id"]
    for i, bag in enumerate(bags):
        encoder_attrs = {"encoder": ENCODER, "encoder_dim": bag.features.shape[1],
                         "weights": "none", "weights_sha256": "", "input_size": 0,
                         "mean": [0.0], "std": [1.0], "dtype": np.dtype(dtype).name}
        path = features_dir / f"{bag.slide_id}.h5"
        write_bag(path, bag.features.astype(dtype), tiles_for(bag.slide_id, len(bag.planted)),
                  encoder_attrs)
        if with_tile_labels:
            add_tile_labels(path, bag.planted.astype(np.float32), "planted")
        rows.append(f"{bag.slide_id},{'pos' if bag.label else 'neg'},patient_{i // 2:04d}")
    labels_csv = root / "labels.csv"
    write_text_atomic(labels_csv, "\n".join(rows) + "\n")
    return features_dir, labels_csv

