"""A small generated project for the viewer tests: one slide with a planted high-attention tile.

The slide is 2048 x 1536 px at 0.5 µm/px: glass, a rectangular pink tissue section, and one
dark-purple square exactly where the planted tile lies. Tiles of 128 level-0 px are laid
without overlap on the tissue; every tile has a low attention except the planted one, whose
attention (and tumour probability) is the highest, so its heat is the top colour of the map.
A second slide, ``broken``, has predictions but a slide file OpenSlide cannot open.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, box

from tiling.tissue_geojson import write_tissue_geojson
from wsi_mil.export.ome_zarr import write_heatmap_zarr
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction

WIDTH, HEIGHT, MPP, TILE = 2048, 1536, 0.5, 128
TISSUE = (256, 256, 1792, 1280)  # x0, y0, x1, y1 level-0 px
PLANTED = (1280, 512)  # top-left of the planted tile
GLASS, PINK, PURPLE = (244, 244, 244), (228, 150, 195), (70, 20, 110)
CLASSES = ["normal", "tumor"]


def render(x: int, y: int, w: int, h: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x, x + w), np.arange(y, y + h))
    image = np.full((h, w, 3), GLASS, np.uint8)
    x0, y0, x1, y1 = TISSUE
    image[(xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)] = PINK
    px, py = PLANTED
    image[(xs >= px) & (xs < px + TILE) & (ys >= py) & (ys < py + TILE)] = PURPLE
    return image


def prediction(slide_path: Path, slide_id: str) -> SlidePrediction:
    x0, y0, x1, y1 = TISSUE
    xs, ys = np.meshgrid(np.arange(x0, x1, TILE), np.arange(y0, y1, TILE))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    rng = np.random.default_rng(0)
    attention = rng.uniform(-1.0, 0.0, len(coords)).astype(np.float32)
    planted = np.flatnonzero((coords[:, 0] == PLANTED[0]) & (coords[:, 1] == PLANTED[1]))[0]
    attention[planted] = 3.0
    tumor = np.full(len(coords), 0.1, np.float32)
    tumor[planted] = 0.95
    attrs = {
        "slide_path": str(slide_path),
        "slide_id": slide_id,
        "slide_width": WIDTH,
        "slide_height": HEIGHT,
        "slide_mpp": MPP,
        "mpp_source": "metadata",
        "target_mpp": MPP,
        "tile_size": TILE,
        "tile_size_level0": float(TILE),
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": float(TILE),
        "min_tissue": 0.5,
    }
    return SlidePrediction(
        slide_id=slide_id,
        coords=coords,
        attention=attention,
        attention_norm=normalise_attention(attention),
        tile_probs=np.stack([1 - tumor, tumor], axis=1),
        probs=np.array([0.2, 0.8], np.float32),
        class_names=CLASSES,
        predicted_label="tumor",
        attrs=attrs,
    )


def make_project(root: Path, slide_file: Path, zarr: bool = True) -> Path:
    """``root`` laid out as ``wsi-mil run`` writes it, for slides ``planted`` and ``broken``."""
    slides = root / "slides"
    slides.mkdir(parents=True)
    (slides / "planted.tiff").write_bytes(slide_file.read_bytes())
    (slides / "broken.tiff").write_bytes(b"this is not a slide")
    rows = [["slide_id", "label", "predicted_label", "prob_normal", "prob_tumor"]]
    for slide_id in ("planted", "broken"):
        pred = prediction(slides / f"{slide_id}.tiff", slide_id)
        write_prediction(root / "predictions" / f"{slide_id}.h5", pred)
        write_tissue_geojson(
            root / "tiles" / f"{slide_id}.tissue.geojson", MultiPolygon([box(*TISSUE)]), slide_id
        )
        if zarr:
            (root / "heatmaps" / slide_id).mkdir(parents=True)
            write_heatmap_zarr(root / "heatmaps" / slide_id / "heatmap.zarr", pred, HeatmapParams())
        rows.append([slide_id, "tumor", "tumor", "0.2", "0.8"])
    with (root / "predictions.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


@pytest.fixture(scope="session")
def planted_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

    return write_pyramidal_tiff(
        tmp_path_factory.mktemp("viewer_slide") / "planted.tiff",
        WIDTH,
        HEIGHT,
        MPP,
        render,
        compression="deflate",
    )


@pytest.fixture
def project(tmp_path: Path, planted_slide: Path) -> Path:
    return make_project(tmp_path / "project", planted_slide)


@pytest.fixture(scope="session")
def planted() -> SimpleNamespace:
    return SimpleNamespace(
        width=WIDTH,
        height=HEIGHT,
        tile=TILE,
        tissue=TISSUE,
        planted=PLANTED,
        glass=GLASS,
        purple=PURPLE,
        pink=PINK,
        mpp=MPP,
        prediction=prediction,
        make_project=make_project,
    )
