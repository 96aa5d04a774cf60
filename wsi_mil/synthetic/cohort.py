"""A Camelyon-shaped synthetic cohort: slides, lesion annotations and labels, made on the spot.

Tests, the Camelyon16 dry run and the demo need a cohort that behaves like Camelyon16 (normal
and tumour lymph-node slides, lesion outlines in ASAP XML, a labels CSV with an official-style
train/test split) without downloading 700 GB. :func:`generate_cohort` writes:

* ``slides/<slide_id>.tif``: pyramidal TIFFs at a known µm/px
  (:func:`wsi_mil.synthetic.pyramid_tiff.write_pyramidal_tiff`) that OpenSlide opens;
* ``annotations/<slide_id>.xml``: the lesions of each tumour slide, ASAP XML with Camelyon16's
  groups (``_0`` tumour, ``_2`` exclusion);
* ``labels.csv``: ``slide_id,label,split`` as ``camelyon16_labels.csv`` (``normal``/``tumor``,
  ``train``/``test``), slide ids ``normal_NNN``/``tumor_NNN`` for training and ``test_NNN`` for
  test, as Camelyon16 names them.

The tissue is H&E-like and procedural: pink stroma with a fibrous texture and small purple
nuclei; metastases have larger, darker, denser nuclei on a more purple cytoplasm, so an
ImageNet encoder's features separate them. Lesion outlines are real Camelyon16 outlines (the
JSON outlines in the shared data, when ``outlines`` points at them) scaled, rotated and placed
inside the tissue, or random smooth blobs otherwise. Everything is deterministic per ``seed``:
nuclei live on jittered lattices whose cells are hashed from their position, so a pixel has
the same value however the slide is read.

Rendering is vectorised NumPy, one full-width strip of rows at a time (the TIFF writer asks for
tiles row by row): a 4096 x 3700 px slide takes about 2 s on one core of a shared 2-core
machine (JPEG encoding and the pyramid included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, Polygon

from tiling.annotations import (
    as_multipolygon,
    geometry_mask,
    read_annotations,
    write_asap_xml,
)
from tiling.storage import csv_text
from wsi_mil.errors import MissingInputError
from wsi_mil.synthetic.params import CohortParams
from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

LABEL_COLUMNS = ("slide_id", "label", "split")


@dataclass(frozen=True)
class CohortSlide:
    """One generated slide and its ground truth."""

    slide_id: str
    label: str  # "normal" | "tumor"
    split: str  # "train" | "test"
    path: Path
    annotation: Path | None  # ASAP XML of the lesions (tumour slides only)
    width: int
    height: int
    mpp: float


@dataclass(frozen=True)
class Cohort:
    """The files of a generated cohort."""

    root: Path
    slides: tuple[CohortSlide, ...]
    labels_csv: Path

    @property
    def slides_dir(self) -> Path:
        return self.root / "slides"

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"


@dataclass(frozen=True)
class SlideDesign:
    """Geometry of one synthetic slide (level-0 px) and the seed of its texture."""

    width: int
    height: int
    mpp: float
    tissue: MultiPolygon
    lesions: MultiPolygon
    seed: int


# --------------------------------------------------------------------------- geometry


def _blob(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    aspect: float = 1.0,
    vertices: int = 96,
) -> Polygon:
    """A smooth random closed shape: a circle with low-order harmonic wobbles."""
    theta = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0.0, 0.18 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    angle = rng.uniform(0, np.pi)
    x, y = r * np.cos(theta) * radius * aspect, r * np.sin(theta) * radius
    xr = x * np.cos(angle) - y * np.sin(angle)
    yr = x * np.sin(angle) + y * np.cos(angle)
    return Polygon(np.column_stack([cx + xr, cy + yr]))


@lru_cache(maxsize=16)
def _real_outlines(path: Path) -> tuple[Polygon, ...]:
    """The lesions of one Camelyon16 outline file with enough vertices to have a shape."""
    lesions = read_annotations(path).lesions
    return tuple(p for p in lesions.geoms if len(p.exterior.coords) >= 12)


def _outline_files(outlines: Path | None) -> list[Path]:
    if outlines is None:
        return []
    outlines = Path(outlines)
    if not outlines.is_dir():
        raise MissingInputError(f"{outlines}: outline folder not found")
    return sorted(outlines.rglob("*.json"))


def _lesion_shape(rng: np.random.Generator, files: list[Path], diameter: float) -> Polygon:
    """A lesion outline centred on the origin with longest bounding-box side ``diameter``."""
    shape = None
    if files:
        candidates = _real_outlines(files[int(rng.integers(len(files)))])
        if candidates:
            shape = candidates[int(rng.integers(len(candidates)))]
    if shape is None:
        shape = _blob(rng, 0.0, 0.0, 1.0, aspect=rng.uniform(0.6, 1.0))
    shape = affinity.rotate(shape, rng.uniform(0, 360), origin="centroid")
    if rng.random() < 0.5:
        shape = affinity.scale(shape, xfact=-1.0, origin="centroid")
    minx, miny, maxx, maxy = shape.bounds
    factor = diameter / max(maxx - minx, maxy - miny)
    centroid = shape.centroid
    shape = affinity.translate(shape, -centroid.x, -centroid.y)
    return affinity.scale(shape, factor, factor, origin=(0, 0))


def slide_size(slide_seed: int, params: CohortParams) -> tuple[int, int]:
    """(width, height) of a slide: the first draw of its seed sets the height."""
    rng = np.random.default_rng(slide_seed)
    return int(params.size_px), round(params.size_px * (0.8 + 0.2 * rng.random()))


def design_slide(slide_seed: int, tumor: bool, params: CohortParams) -> SlideDesign:
    """Tissue and lesion geometry of one slide, from its seed alone."""
    rng = np.random.default_rng(slide_seed)
    width, height = slide_size(slide_seed, params)
    rng.random()  # the draw slide_size made
    pieces = []
    n_pieces = 1 if rng.random() < 0.6 else 2
    for i in range(n_pieces):
        if n_pieces == 1:
            cx, cy, radius = width / 2, height / 2, 0.36 * min(width, height)
        else:
            cx = width * (0.3 + 0.4 * i) + rng.uniform(-0.03, 0.03) * width
            cy, radius = height / 2 + rng.uniform(-0.1, 0.1) * height, 0.26 * min(width, height)
        pieces.append(_blob(rng, cx, cy, radius, aspect=rng.uniform(0.75, 1.15)))
    tissue = as_multipolygon(MultiPolygon(pieces).buffer(0))
    lesions = MultiPolygon()
    if tumor:
        files = _outline_files(params.outlines)
        side = min(width, height)
        sizes = [
            max(rng.uniform(*params.main_lesion) * side, params.main_lesion_min_um / params.mpp)
        ]
        sizes += [
            rng.uniform(*params.extra_lesion) * side
            for _ in range(int(rng.integers(params.extra_lesions[0], params.extra_lesions[1] + 1)))
        ]
        placed = []
        for diameter in sizes:
            shape = _lesion_shape(rng, files, diameter)
            # centre it where the whole lesion fits in tissue if possible, else as deep as can be
            room = tissue.buffer(-diameter * 0.5)
            if room.is_empty:
                room = tissue.buffer(-diameter * 0.25)
            if room.is_empty:
                room = tissue
            minx, miny, maxx, maxy = room.bounds
            for _ in range(100):
                centre = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
                if room.contains(centre):
                    break
            placed.append(affinity.translate(shape, centre.x, centre.y).intersection(tissue))
        lesions = as_multipolygon(
            MultiPolygon([p for g in placed for p in as_multipolygon(g).geoms]).buffer(0)
        )
    return SlideDesign(
        width=width, height=height, mpp=params.mpp, tissue=tissue, lesions=lesions, seed=slide_seed
    )


# --------------------------------------------------------------------------- texture


def _hash_uniform(seed: int, *keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats hashed from integer arrays (splitmix64): position-deterministic."""
    with np.errstate(over="ignore"):
        h = np.full(
            np.broadcast_shapes(*(k.shape for k in keys)),
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15),
            dtype=np.uint64,
        )
        for key in keys:
            h ^= (key.astype(np.int64) + (1 << 32)).astype(np.uint64) * np.uint64(
                0xBF58476D1CE4E5B9
            )
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class _Nuclei:
    """One jittered lattice of round nuclei; sizes in µm."""

    spacing_um: float
    radius_um: tuple[float, float]
    presence: float  # share of lattice cells holding a nucleus
    colour: tuple[float, float, float]
    key: int


# Normal lymph node / stroma: small lymphocyte-like nuclei, two lattices so they look irregular.
NORMAL_NUCLEI = (
    _Nuclei(11.0, (1.8, 2.8), 0.55, (95.0, 55.0, 140.0), 1),
    _Nuclei(17.0, (2.0, 3.2), 0.45, (110.0, 70.0, 155.0), 2),
)
# Metastasis: larger, darker, densely packed nuclei.
TUMOR_NUCLEI = (
    _Nuclei(10.0, (3.2, 4.4), 0.95, (60.0, 25.0, 105.0), 3),
    _Nuclei(14.0, (3.6, 5.0), 0.7, (75.0, 30.0, 115.0), 4),
)
STROMA = np.array([236.0, 172.0, 205.0])
TUMOR_CYTOPLASM = np.array([205.0, 140.0, 200.0])
GLASS = np.array([243.0, 241.0, 244.0])


def _nuclei_alpha(
    lattice: _Nuclei, seed: int, xs: np.ndarray, ys: np.ndarray, mpp: float
) -> np.ndarray:
    """Coverage (0..1, anti-aliased, scaled by a per-nucleus stain intensity) of one lattice at
    pixel centres ``xs`` (row vector) and ``ys`` (column vector).

    Each cell holds at most one nucleus kept wholly inside it, so a pixel needs to look at its
    own cell only: one gather per pixel instead of nine.
    """
    cell = lattice.spacing_um / mpp
    ci = np.floor(xs / cell).astype(np.int64)  # [1, w]
    cj = np.floor(ys / cell).astype(np.int64)  # [h, 1]
    # per-cell random numbers, drawn on the small block of cells this region covers
    i0, j0 = int(ci.min()), int(cj.min())
    gi, gj = np.meshgrid(np.arange(i0, int(ci.max()) + 1), np.arange(j0, int(cj.max()) + 1))
    u = [_hash_uniform(seed * 16 + lattice.key, gi, gj, np.full_like(gi, k)) for k in range(4)]
    rmin, rmax = (r / mpp for r in lattice.radius_um)
    radius = rmin + (rmax - rmin) * u[0]
    margin = np.minimum(radius + 0.5, cell / 2)
    cx = gi * cell + margin + (cell - 2 * margin) * u[1]
    cy = gj * cell + margin + (cell - 2 * margin) * u[2]
    # stain intensity 0.75..1 where a nucleus is present, 0 where the cell is empty
    strength = np.where(u[3] < lattice.presence, 0.75 + 0.25 * u[0], 0.0)
    local = (cj - j0, ci - i0)  # broadcasts to [h, w]
    dx = (xs - cx[local]).astype(np.float32)
    dy = (ys - cy[local]).astype(np.float32)
    alpha = radius[local].astype(np.float32) + np.float32(0.5) - np.sqrt(dx * dx + dy * dy)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha *= strength[local].astype(np.float32)
    return alpha


def _fibres(seed: int, xs: np.ndarray, ys: np.ndarray, mpp: float) -> np.ndarray:
    """Low-frequency brightness texture of stroma (a few oriented waves), about 1 +- 0.1.

    ``sin(a x + b y + p)`` is separable (``sin(ax+p) cos(by) + cos(ax+p) sin(by)``), so each wave
    costs two outer products instead of a sine per pixel.
    """
    rng = np.random.default_rng(seed + 7)
    field = np.zeros((ys.shape[0], xs.shape[1]), dtype=np.float32)
    for _ in range(5):
        angle = rng.uniform(0, np.pi)
        k = 2 * np.pi / (rng.uniform(15.0, 60.0) / mpp)
        ax = (xs * k * np.cos(angle) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        by = (ys * k * np.sin(angle)).astype(np.float32)
        field += np.sin(ax) * np.cos(by) + np.cos(ax) * np.sin(by)
    return 1.0 + 0.035 * field


_NOISE_SIZE = 256


@lru_cache(maxsize=8)
def _noise_tile(seed: int) -> np.ndarray:
    """A periodic tile of pixel noise (+-5 grey levels), indexed by absolute position."""
    return (
        np.random.default_rng(seed + 11)
        .uniform(-5.0, 5.0, (_NOISE_SIZE, _NOISE_SIZE))
        .astype(np.float32)
    )


def render_region(design: SlideDesign, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The level-0 pixels (uint8 RGB ``[h, w, 3]``) of a region of a designed slide."""
    xs = np.arange(x, x + w, dtype=np.float64)[None, :] + 0.5
    ys = np.arange(y, y + h, dtype=np.float64)[:, None] + 0.5
    tissue = geometry_mask(design.tissue, (h, w), 1.0, origin=(x, y))
    image = np.empty((h, w, 3), dtype=np.float32)
    image[:] = GLASS
    if tissue.any():
        tumor = geometry_mask(design.lesions, (h, w), 1.0, origin=(x, y)) & tissue
        base = np.where(
            tumor[..., None], TUMOR_CYTOPLASM.astype(np.float32), STROMA.astype(np.float32)
        )
        base *= _fibres(design.seed, xs, ys, design.mpp)[..., None]
        for lattices, where in ((NORMAL_NUCLEI, tissue & ~tumor), (TUMOR_NUCLEI, tumor)):
            if not where.any():
                continue
            for lattice in lattices:
                alpha = _nuclei_alpha(lattice, design.seed, xs, ys, design.mpp)
                alpha *= where
                base += (np.asarray(lattice.colour, np.float32) - base) * alpha[..., None]
        np.copyto(image, base, where=tissue[..., None])
    rows = np.arange(y, y + h) % _NOISE_SIZE
    cols = np.arange(x, x + w) % _NOISE_SIZE
    image += _noise_tile(design.seed)[rows[:, None], cols[None, :]][..., None]
    np.clip(image + 0.5, 0, 255, out=image)
    return image.astype(np.uint8)


class StripRenderer:
    """``render(x, y, w, h)`` for the TIFF writer, computing one full-width strip at a time.

    The writer asks for level-0 tiles row by row; rendering the whole row of tiles at once
    makes the NumPy work a few large operations instead of many small ones.
    """

    def __init__(self, design: SlideDesign):
        self.design = design
        self.y, self.h, self.strip = -1, 0, np.zeros((0, 0, 3), np.uint8)

    def __call__(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if not (self.y <= y and y + h <= self.y + self.h):
            self.y, self.h = y, h
            self.strip = render_region(self.design, 0, y, self.design.width, h)
        return self.strip[y - self.y : y - self.y + h, x : x + w]


# --------------------------------------------------------------------------- cohort


def _plan(params: CohortParams) -> list[tuple[str, str, str]]:
    """(slide_id, label, split) of every slide, Camelyon16-style names, test order shuffled."""
    plan = [(f"normal_{i + 1:03d}", "normal", "train") for i in range(params.train_normal)]
    plan += [(f"tumor_{i + 1:03d}", "tumor", "train") for i in range(params.train_tumor)]
    test_labels = ["normal"] * params.test_normal + ["tumor"] * params.test_tumor
    np.random.default_rng(params.seed).shuffle(test_labels)
    plan += [(f"test_{i + 1:03d}", label, "test") for i, label in enumerate(test_labels)]
    return plan


def _slide_seed(params: CohortParams, index: int) -> int:
    return int(np.random.SeedSequence([params.seed, index]).generate_state(1)[0])


def write_slide(slide: CohortSlide, seed: int, params: CohortParams) -> Path:
    """Write one slide (and its annotation); module-level so a process pool can run it."""
    design = design_slide(seed, slide.label == "tumor", params)
    if slide.annotation is not None:
        write_asap_xml(slide.annotation, design.lesions)
    return write_pyramidal_tiff(
        slide.path,
        design.width,
        design.height,
        design.mpp,
        StripRenderer(design),
        compression=params.compression,
    )


def labels_csv_text(slides: list[CohortSlide]) -> str:
    """The cohort's labels CSV (``slide_id,label,split``)."""
    return csv_text(
        ({"slide_id": s.slide_id, "label": s.label, "split": s.split} for s in slides),
        LABEL_COLUMNS,
    )


#: lesion share of the tissue at which a slide's burden z reaches 1 (the largest planted
#: lesions cover about that much)
FULL_BURDEN = 0.4


def lesion_burden(design: SlideDesign) -> float:
    """The slide's lesion burden z in [0, 1]: its lesions' share of its tissue area over
    :data:`FULL_BURDEN` (0 for a normal slide)."""
    if design.lesions.is_empty or design.tissue.area == 0:
        return 0.0
    return float(min(1.0, design.lesions.area / design.tissue.area / FULL_BURDEN))


def task_labels_csv_text(
    planned: list[tuple[CohortSlide, int]], params: CohortParams, task: str
) -> str:
    """A survival (``slide_id,time,event,split``) or regression (``slide_id,target,split``)
    labels CSV of the cohort whose numbers depend on each slide's lesion burden as the
    generated bags' do (:mod:`wsi_mil.synthetic.bags`): ``T = 60 exp(-2.5 z + 0.4 e)``
    censored at a uniform time in [0, 120], or ``10 z + e``; the noise is drawn from the
    cohort's seed, so the same cohort gets the same numbers."""
    rng = np.random.default_rng([params.seed, 25])
    rows = []
    for slide, seed in planned:
        z = lesion_burden(design_slide(seed, slide.label == "tumor", params))
        noise, censor = rng.standard_normal(), rng.uniform(0.0, 120.0)
        if task == "survival":
            event_time = 60.0 * np.exp(-2.5 * z + 0.4 * noise)
            rows.append(
                {
                    "slide_id": slide.slide_id,
                    "time": round(float(min(event_time, censor)), 3),
                    "event": int(event_time <= censor),
                    "split": slide.split,
                }
            )
        else:
            rows.append(
                {
                    "slide_id": slide.slide_id,
                    "target": round(10.0 * z + noise, 4),
                    "split": slide.split,
                }
            )
    return csv_text(rows)


def plan_cohort(out_dir: str | os.PathLike, params: CohortParams) -> list[tuple[CohortSlide, int]]:
    """Every slide of the cohort under ``out_dir`` with its seed (nothing is written):
    ``write_slide(slide, seed, params)`` makes one, deterministically."""
    root = Path(out_dir)
    planned = []
    for index, (slide_id, label, split) in enumerate(_plan(params)):
        seed = _slide_seed(params, index)
        width, height = slide_size(seed, params)
        slide = CohortSlide(
            slide_id=slide_id,
            label=label,
            split=split,
            path=root / "slides" / f"{slide_id}.tif",
            annotation=root / "annotations" / f"{slide_id}.xml" if label == "tumor" else None,
            width=width,
            height=height,
            mpp=params.mpp,
        )
        planned.append((slide, seed))
    return planned
