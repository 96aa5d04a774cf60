"""A localisation set on real tissue: collage slides of benign H&E with pasted malignant regions.

The demo's planted lesions (dense dots on pink) are too easy to tell explanations apart. Here
every pixel is real histology from the UCSB Breast Cancer Cell images (58 TMA fields of 896 x
768 px, benign and malignant, 10 TMA batches; ``../shared/data/ucsb_breast``): a slide's
background is a 2 x 2 mosaic of benign fields, and a positive slide has one or two rectangular
"lesions" of malignant tissue cut from a malignant field and pasted **on the tile grid** (source
and destination offsets are multiples of the tile size), so no seam falls inside a tile and
the lesion masks are exact. Negative slides are benign only. Train and test slides draw their
fields from disjoint TMA batches (``patient_id`` of the UCSB labels), so a model never sees the
test batches' tissue, nor their staining.

The fields carry no resolution; as ``scripts/bench_ucsb_breast.py`` argues from nuclear sizes,
they are written at 0.5 µm/px ("20x"), so 128 px tiles (64 µm) are read without resampling.
The images are not shipped with the package: the cohort is built at test or benchmark time.
Outputs, as the demo cohort's: ``slides/<id>.tif`` (pyramidal TIFF), ``annotations/<id>.xml``
(ASAP, positive slides only), ``labels.csv`` (``slide_id,label,patient_id,split``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiling.storage import write_text_atomic
from wsi_mil.errors import InputError, MissingInputError

#: µm/px written into the slides (the UCSB images record none; see the module docstring).
MPP = 0.5
FIELD_W, FIELD_H = 896, 768


@dataclass(frozen=True)
class CollageParams:
    """How many slides, how large, and which TMA batches are held out for testing."""

    #: tile size in px: lesions are pasted on this grid
    tile: int = 128
    #: slide size in tiles (columns, rows); at most 2 fields wide and high
    grid: tuple[int, int] = (12, 12)
    #: positive and negative slides per TMA batch
    per_batch: int = 2
    #: TMA batches kept for the test slides (the others make the training slides)
    test_batches: int = 3
    #: lesion rectangle side in tiles, drawn from [low, high]
    lesion_tiles: tuple[int, int] = (3, 5)
    #: most lesions per positive slide
    max_lesions: int = 2
    seed: int = 0


@dataclass(frozen=True)
class CollageSlide:
    slide_id: str
    label: str  # "tumor" | "normal"
    batch: str
    split: str  # "train" | "test"
    lesions: tuple[tuple[int, int, int, int], ...]  # (x, y, w, h) in level-0 px


def read_ucsb(root: str | os.PathLike) -> dict[str, dict[str, list[Path]]]:
    """TMA batch -> {"benign": [...], "malignant": [...]} image paths, from ``labels.csv``."""
    root = Path(root)
    batches: dict[str, dict[str, list[Path]]] = {}
    with (root / "labels.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = root / "images" / f"{row['slide_id']}.tif"
            if path.is_file():
                batches.setdefault(row["patient_id"], {"benign": [], "malignant": []})[
                    row["label"]
                ].append(path)
    return {b: v for b, v in sorted(batches.items()) if v["benign"] and v["malignant"]}


def _field(path: Path) -> np.ndarray:
    import tifffile

    image = tifffile.imread(path)
    if image.shape[:2] != (FIELD_H, FIELD_W):
        raise InputError(
            f"{path}: expected {FIELD_W}x{FIELD_H} px, got {image.shape[1]}x{image.shape[0]}"
        )
    return np.ascontiguousarray(image[..., :3])


def compose(
    rng: np.random.Generator,
    benign: list[Path],
    malignant: list[Path],
    tumor: bool,
    params: CollageParams,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One slide's pixels and its lesion rectangles (level-0 px)."""
    t, (cols, rows) = params.tile, params.grid
    width, height = cols * t, rows * t
    if width > 2 * FIELD_W or height > 2 * FIELD_H:
        raise ValueError(f"a collage of {cols}x{rows} tiles of {t} px exceeds 2 x 2 fields")
    image = np.empty((2 * FIELD_H, 2 * FIELD_W, 3), np.uint8)
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        field = _field(benign[int(rng.integers(len(benign)))])
        if rng.random() < 0.5:
            field = field[:, ::-1]
        image[i * FIELD_H : (i + 1) * FIELD_H, j * FIELD_W : (j + 1) * FIELD_W] = field
    image = image[:height, :width].copy()
    lesions: list[tuple[int, int, int, int]] = []
    occupied = np.zeros((rows, cols), bool)
    for _ in range(int(rng.integers(1, params.max_lesions + 1)) if tumor else 0):
        w, h = (
            int(rng.integers(params.lesion_tiles[0], params.lesion_tiles[1] + 1)) for _ in range(2)
        )
        for _attempt in range(20):  # lesions do not touch, so each is one polygon
            c, r = int(rng.integers(0, cols - w + 1)), int(rng.integers(0, rows - h + 1))
            if not occupied[max(0, r - 1) : r + h + 1, max(0, c - 1) : c + w + 1].any():
                break
        else:
            continue
        occupied[r : r + h, c : c + w] = True
        source = _field(malignant[int(rng.integers(len(malignant)))])
        sc = int(rng.integers(0, FIELD_W // t - w + 1)) * t
        sr = int(rng.integers(0, FIELD_H // t - h + 1)) * t
        image[r * t : (r + h) * t, c * t : (c + w) * t] = source[sr : sr + h * t, sc : sc + w * t]
        lesions.append((c * t, r * t, w * t, h * t))
    return image, lesions


def plan_collage(
    batches: dict[str, dict[str, list[Path]]], params: CollageParams
) -> list[CollageSlide]:
    """Which slides to make: ``per_batch`` positives and negatives per batch; the last
    ``test_batches`` batches (in sorted order) are the test split."""
    names = sorted(batches)
    if len(names) <= params.test_batches:
        raise InputError(f"{len(names)} TMA batches: cannot hold {params.test_batches} out")
    test = set(names[-params.test_batches :])
    slides = []
    for batch in names:
        split = "test" if batch in test else "train"
        for k in range(params.per_batch):
            for label in ("tumor", "normal"):
                slides.append(CollageSlide(f"collage_{batch}_{label}_{k}", label, batch, split, ()))
    return slides


def write_collage_cohort(
    ucsb_dir: str | os.PathLike, out_dir: str | os.PathLike, params: CollageParams = CollageParams()
) -> list[CollageSlide]:
    """Write the cohort (slides, ASAP annotations, labels.csv) into ``out_dir``."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    from tiling.annotations import write_asap_xml
    from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

    batches = read_ucsb(ucsb_dir)
    if not batches:
        raise MissingInputError(f"{ucsb_dir}: no UCSB images with labels (labels.csv, images/)")
    out_dir = Path(out_dir)
    (out_dir / "slides").mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    written = []
    for index, slide in enumerate(plan_collage(batches, params)):
        rng = np.random.default_rng([params.seed, index])
        fields = batches[slide.batch]
        image, lesions = compose(
            rng, fields["benign"], fields["malignant"], slide.label == "tumor", params
        )
        path = out_dir / "slides" / f"{slide.slide_id}.tif"
        if not path.is_file():

            def region(x: int, y: int, w: int, h: int, im: np.ndarray = image) -> np.ndarray:
                return im[y : y + h, x : x + w]

            write_pyramidal_tiff(path, image.shape[1], image.shape[0], MPP, region, tile=256)
        if lesions:
            write_asap_xml(
                out_dir / "annotations" / f"{slide.slide_id}.xml",
                unary_union([box(x, y, x + w, y + h) for x, y, w, h in lesions]),
            )
        written.append(
            CollageSlide(slide.slide_id, slide.label, slide.batch, slide.split, tuple(lesions))
        )
    rows = ["slide_id,label,patient_id,split"]
    rows += [f"{s.slide_id},{s.label},{s.batch},{s.split}" for s in written]
    write_text_atomic(out_dir / "labels.csv", "\n".join(rows) + "\n")
    return written
