"""Training tiles for the pixel segmenter: RGB tiles at one µm/px and their lesion masks.

Tiles are cut from slides around their annotated lesions and rasterised from the polygons with
:func:`tiling.annotations.geometry_mask`, so a mask pixel is lesion exactly when its centre lies
in a tumour polygon and outside every exclusion polygon (``SlideAnnotations.lesions``:
Camelyon16's ``_2`` groups are cut out, as the official masks do). The centres are drawn in
three kinds so the network sees what it must tell apart, in the shares of
``SegmentTrainParams.balance``: *lesion* (at least a quarter tile inside a lesion), *border*
(within a quarter tile of a lesion boundary, where outlines are decided) and *normal* (tissue
more than a quarter tile from any lesion). Slides without lesions give normal tiles only.
Tissue comes from the tiling step's detector (:func:`tiling.tissue.detect_tissue`) on an
8 µm/px thumbnail, so glass is not sampled as "normal".

Tiles are held in memory as uint8 (a few hundred per cohort at 256 px is tens of MB), which
makes every epoch see the same tiles and training reproducible from the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiling.annotations import as_multipolygon, find_annotation, geometry_mask, read_annotations
from tiling.discover import check_unique_ids, find_slides
from tiling.params import AnnotationParams, TissueParams
from tiling.reader import TileReader
from tiling.slide import level_for_downsample, open_slide, read_thumbnail, slide_mpp
from tiling.tissue import detect_tissue
from wsi_mil.errors import WsiMilError
from wsi_mil.segment.params import SegmentTrainParams

#: Resolution (µm/px) of the thumbnail the tile centres are drawn on.
SAMPLING_MPP = 8.0
KINDS = ("lesion", "border", "normal")


class SegmentDataError(WsiMilError, ValueError):
    """Training inputs that cannot make a training set (the message says which and why)."""


@dataclass(frozen=True)
class TrainingSlide:
    """A slide to cut training tiles from; ``annotation`` None means a slide without lesions."""

    slide_id: str
    path: Path
    annotation: Path | None


@dataclass
class TileSet:
    """Tiles, masks and the kind of each tile (index into :data:`KINDS`)."""

    tiles: np.ndarray  # uint8 [N, T, T, 3]
    masks: np.ndarray  # uint8 [N, T, T], 1 = lesion
    kinds: np.ndarray  # int8 [N]
    corners: np.ndarray  # int64 [N, 2], level-0 (x, y) top-left corner of each tile
    slide_ids: list[str]  # [N]

    @classmethod
    def concat(cls, parts: list[TileSet], tile_size: int) -> TileSet:
        if not parts:
            return cls(
                np.zeros((0, tile_size, tile_size, 3), np.uint8),
                np.zeros((0, tile_size, tile_size), np.uint8),
                np.zeros(0, np.int8),
                np.zeros((0, 2), np.int64),
                [],
            )
        return cls(
            np.concatenate([p.tiles for p in parts]),
            np.concatenate([p.masks for p in parts]),
            np.concatenate([p.kinds for p in parts]),
            np.concatenate([p.corners for p in parts]),
            [s for p in parts for s in p.slide_ids],
        )


def training_slides(
    slides: list[str | os.PathLike],
    annotations_dir: str | os.PathLike,
    labels: dict[str, str] | None = None,
    negative_class: str | None = None,
    split_ids: set[str] | None = None,
) -> list[TrainingSlide]:
    """The slides to train on: every slide with an annotation file, plus, when ``labels`` are
    given, the slides of ``negative_class`` (whose tissue is all normal).

    A slide of another class without an annotation is left out: its lesions are unknown, so
    none of its pixels can be called normal. ``split_ids`` restricts to those slides.
    """
    found = check_unique_ids(find_slides(slides))
    chosen = []
    for slide_id, path in sorted(found.items()):
        if split_ids is not None and slide_id not in split_ids:
            continue
        annotation = find_annotation(annotations_dir, slide_id)
        if annotation is not None:
            chosen.append(TrainingSlide(slide_id, path, annotation))
        elif labels is not None and labels.get(slide_id) == negative_class:
            chosen.append(TrainingSlide(slide_id, path, None))
    return chosen


def _pick(mask: np.ndarray, count: int, rng: np.random.Generator, downsample: float) -> np.ndarray:
    """``count`` level-0 (x, y) points in random pixels of ``mask`` (jittered within them)."""
    rows, cols = np.nonzero(mask)
    if count <= 0 or rows.size == 0:
        return np.zeros((0, 2))
    chosen = rng.integers(rows.size, size=count)
    jitter = rng.random((count, 2))
    return np.column_stack([cols[chosen] + jitter[:, 0], rows[chosen] + jitter[:, 1]]) * downsample


def kind_counts(
    total: int, balance: tuple[float, float, float], available: list[bool]
) -> list[int]:
    """Tiles of each kind: ``total`` split by ``balance`` over the kinds that are available."""
    shares = np.array([b if ok else 0.0 for b, ok in zip(balance, available)])
    if shares.sum() <= 0:
        return [0, 0, 0]
    counts = np.floor(total * shares / shares.sum()).astype(int)
    for k in np.argsort(-shares)[: total - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def sample_slide(
    slide: TrainingSlide,
    params: SegmentTrainParams,
    rng: np.random.Generator,
    annotation_params: AnnotationParams | None = None,
    mpp_override: float | None = None,
) -> TileSet:
    """Cut ``params.tiles_per_slide`` tiles and their masks from one slide."""
    handle = open_slide(slide.path)
    try:
        mpp, _ = slide_mpp(handle, slide.path, mpp_override)
        width, height = handle.dimensions
        downsample = params.mpp / mpp
        side0 = params.tile_size * downsample  # tile side in level-0 px
        read_level = level_for_downsample(handle, downsample)
        reader = TileReader(
            handle,
            {
                "read_level": read_level,
                "read_downsample": handle.level_downsamples[read_level],
                "tile_size": params.tile_size,
                "tile_size_level0": side0,
            },
        )
        lesions = (
            read_annotations(slide.annotation, annotation_params or AnnotationParams()).lesions
            if slide.annotation is not None
            else as_multipolygon(None)
        )
        thumb = read_thumbnail(handle, target_mpp=max(SAMPLING_MPP, mpp), slide_mpp=mpp)
        tissue = detect_tissue(thumb.image, thumb.downsample, mpp, TissueParams()).mask
        if not tissue.any():
            tissue = np.ones_like(tissue)
        shape, scale = tissue.shape, 1.0 / thumb.downsample
        quarter = side0 / 4
        if lesions.is_empty:
            near = inside = np.zeros(shape, bool)
        else:
            near = geometry_mask(lesions.buffer(quarter), shape, scale)
            inside = geometry_mask(lesions.buffer(-quarter), shape, scale)
            if not inside.any():  # lesions thinner than half a tile: their own pixels
                inside = geometry_mask(lesions, shape, scale)
        regions = [inside, near & ~inside, tissue & ~near]
        counts = kind_counts(
            params.tiles_per_slide, params.balance, [bool(r.any()) for r in regions]
        )
        centres = [_pick(region, n, rng, thumb.downsample) for region, n in zip(regions, counts)]
        kinds = np.concatenate([np.full(len(c), k, np.int8) for k, c in enumerate(centres)])
        corners = np.concatenate(centres) - side0 / 2
        corners[:, 0] = np.clip(corners[:, 0], 0, max(0.0, width - side0))
        corners[:, 1] = np.clip(corners[:, 1], 0, max(0.0, height - side0))
        corners = np.round(corners).astype(np.int64)
        size = params.tile_size
        tiles = np.empty((len(corners), size, size, 3), np.uint8)
        masks = np.empty((len(corners), size, size), np.uint8)
        for i, (x, y) in enumerate(corners):
            tiles[i] = reader.read(int(x), int(y))
            masks[i] = geometry_mask(
                lesions, (size, size), 1.0 / downsample, origin=(float(x), float(y))
            )
    finally:
        handle.close()
    return TileSet(tiles, masks, kinds, corners, [slide.slide_id] * len(corners))


def split_slides(
    slides: list[TrainingSlide], val_fraction: float, seed: int
) -> tuple[list[TrainingSlide], list[TrainingSlide]]:
    """(train, validation) slides: the validation share taken from slides with lesions and
    from slides without, so both sides see lesions."""
    lesion = [s for s in slides if s.annotation is not None]
    normal = [s for s in slides if s.annotation is None]
    if len(lesion) < 2:
        raise SegmentDataError(
            f"segment-train needs at least 2 slides with a lesion annotation "
            f"(one to train on, one to validate), found {len(lesion)}"
        )
    rng = np.random.default_rng(seed)
    train, val = [], []
    for group in (lesion, normal):
        order = [group[i] for i in rng.permutation(len(group))]
        n_val = min(len(group) - 1, max(1, round(val_fraction * len(group)))) if group else 0
        if group is normal and len(group) == 1:
            n_val = 0
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train, key=lambda s: s.slide_id), sorted(val, key=lambda s: s.slide_id)
