"""Fixtures of the wsi_mil tests. Heatmaps: a generated slide with a planted lesion and
predictions that mark it.

The slide is 4096 x 3072 px at 0.5 µm/px: white glass, an elliptical pink tissue section, and
a purple circular lesion placed off-centre (so a swapped x/y or a shift would show). Tiles of
128 px are laid every 64 px (50 % overlap) where their centre is on tissue. Each tile's
attention and tumour probability is the fraction of its area inside the lesion, computed from
the circle itself, so a heatmap that puts those scores back in the right place reproduces the
lesion.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from shapely import contains_xy
from shapely.affinity import scale
from shapely.geometry import Point

from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

WIDTH, HEIGHT, MPP = 4096, 3072, 0.5
TILE, STRIDE = 128, 64
TISSUE = scale(Point(2048, 1536).buffer(1, quad_segs=64), 1800, 1300)
LESION_CENTER, LESION_RADIUS = (2700.0, 1200.0), 700.0
LESION = Point(*LESION_CENTER).buffer(LESION_RADIUS, quad_segs=64)
CLASSES = ["normal", "tumor"]


def render(x: int, y: int, w: int, h: int) -> np.ndarray:
    """Level-0 pixels of a region: glass, tissue, lesion."""
    xs, ys = np.meshgrid(np.arange(x, x + w) + 0.5, np.arange(y, y + h) + 0.5)
    image = np.full((h, w, 3), 244, np.uint8)
    image[contains_xy(TISSUE, xs, ys)] = (228, 150, 195)
    image[contains_xy(LESION, xs, ys)] = (110, 50, 150)
    return image


def write_slide(path: Path) -> Path:
    from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

    return write_pyramidal_tiff(path, WIDTH, HEIGHT, MPP, render, compression="deflate")


def lesion_fraction(coords: np.ndarray, size: float) -> np.ndarray:
    """Fraction of each tile's area inside the lesion, on an 8 x 8 sub-grid of points."""
    offsets = (np.arange(8) + 0.5) * size / 8
    ox, oy = np.meshgrid(offsets, offsets)
    xs = coords[:, 0, None] + ox.ravel()[None, :]
    ys = coords[:, 1, None] + oy.ravel()[None, :]
    return contains_xy(LESION, xs, ys).mean(axis=1)


def tile_coords() -> np.ndarray:
    xs, ys = np.meshgrid(
        np.arange(0, WIDTH - TILE + 1, STRIDE), np.arange(0, HEIGHT - TILE + 1, STRIDE)
    )
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    centres = coords + TILE / 2
    return coords[contains_xy(TISSUE, centres[:, 0], centres[:, 1])]


def slide_attrs(slide_path: Path | str) -> dict:
    return {
        "slide_path": str(slide_path),
        "slide_id": "lesion",
        "slide_width": WIDTH,
        "slide_height": HEIGHT,
        "slide_mpp": MPP,
        "mpp_source": "metadata",
        "target_mpp": MPP,
        "tile_size": TILE,
        "tile_size_level0": float(TILE),
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": float(STRIDE),
        "min_tissue": 0.5,
    }


def make_prediction(slide_path: Path | str, slide_id: str = "lesion") -> SlidePrediction:
    coords = tile_coords()
    fraction = lesion_fraction(coords, TILE)
    attention = (4.0 * fraction - 2.0).astype(np.float32)
    probs = np.stack([1.0 - fraction, fraction], axis=1).astype(np.float32)
    return SlidePrediction(
        slide_id=slide_id,
        coords=coords,
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=probs,
        probs=np.array([0.08, 0.92], np.float32),
        class_names=CLASSES,
        predicted_label="tumor",
        attrs={**slide_attrs(slide_path), "slide_id": slide_id},
    )


def write_predictions(folder: Path, slide_path: Path, slide_id: str = "lesion") -> Path:
    return write_prediction(folder / f"{slide_id}.h5", make_prediction(slide_path, slide_id))


@pytest.fixture(scope="session")
def lesion() -> SimpleNamespace:
    """The planted-lesion geometry and helpers, for tests to compare against."""
    return SimpleNamespace(
        width=WIDTH,
        height=HEIGHT,
        mpp=MPP,
        tile=TILE,
        stride=STRIDE,
        tissue=TISSUE,
        lesion=LESION,
        classes=CLASSES,
        make_prediction=make_prediction,
        write_predictions=write_predictions,
        tile_coords=tile_coords,
    )


@pytest.fixture(scope="session")
def lesion_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated lesion slide as a pyramidal TIFF (written once per test session)."""
    return write_slide(tmp_path_factory.mktemp("lesion_slide") / "lesion.tiff")
