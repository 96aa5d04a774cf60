"""The tiling stage's parameters, kept free of numpy, OpenCV and OpenSlide so that building the
command line (``wsi-mil --help``) and reading a config stay instant.

Each field's ``#:`` comment is its documentation: the ``--help`` text of its flag and the comment
above its key in ``configs/default.yaml`` are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wsi_mil.config.schema import check_fields, constrained


@dataclass(frozen=True)
class TissueParams:
    """Parameters of tissue detection. Sizes in µm/µm², so they hold across scanners."""

    #: µm/px of the low-resolution image tissue is detected on (read from the pyramid level
    #: just finer than this, then shrunk). 8 µm/px gives 16 mask px across a 128 µm tile.
    tissue_mpp: float = constrained(8.0, gt=0)
    #: Least long side in px of the tissue image: a slide too small for it at ``tissue_mpp``
    #: (a 275 µm field is 34 px at 8 µm/px) is detected at a finer µm/px, never finer than
    #: the slide itself.
    tissue_min_side: int = constrained(512, ge=1)
    #: "auto": Otsu's threshold kept within [``min_saturation``, ``max_saturation``], right
    #: on whole slides and on fields that are all tissue (see tiling/tissue.py); "otsu":
    #: Otsu floored at ``min_saturation`` only (CLAM's rule); "fixed": ``saturation_threshold``.
    tissue_method: Literal["auto", "otsu", "fixed"] = "auto"
    #: Saturation (0-255) above which a pixel is tissue when ``tissue_method="fixed"``.
    saturation_threshold: int = constrained(20, ge=0, le=255)
    #: Lowest threshold Otsu may pick, so empty glass (saturation noise) never becomes tissue.
    min_saturation: int = constrained(10, ge=0, le=255)
    #: Highest threshold "auto" may pick: glass lies below it, faint stroma above it.
    max_saturation: int = constrained(15, ge=0, le=255)
    #: Median blur diameter in µm applied to the saturation before thresholding (a wider one
    #: erases thin strands of tissue).
    median_blur_um: float = 16.0
    #: Morphological closing diameter in µm that joins tissue fragments.
    closing_um: float = 32.0
    #: Connected tissue regions smaller than this (µm²) are dropped (specks, dust).
    min_region_um2: float = 20_000.0
    #: Holes in tissue smaller than this (µm²) are filled; larger holes stay holes.
    max_hole_um2: float = 10_000.0
    #: Size filters relative to the slide: ``min_region_um2`` and ``max_hole_um2`` never exceed
    #: this fraction of the slide's area, so a small field keeps its small pieces of tissue.
    size_filter_fraction: float = constrained(0.01, ge=0, le=1)
    #: Pixels darker than this (HSV value, 0-255) are never tissue: black ink, dust, edges.
    black_level: int = constrained(30, ge=0, le=255)
    #: Remove pen-ink hues (``pen_hue_deg``) from the tissue mask.
    pen_filter: bool = False
    #: Hue range in degrees (0-360) treated as pen ink when ``pen_filter``; the default covers
    #: green, cyan and blue inks, which H&E (pink 300-360, purple 240-300) does not reach.
    pen_hue_deg: tuple[float, float] = (60.0, 200.0)
    #: Tiles whose low-resolution pixels are more than this fraction near-white are dropped.
    max_white_fraction: float = constrained(0.9, ge=0, le=1)
    #: Tiles whose low-resolution pixels are more than this fraction near-black are dropped.
    max_black_fraction: float = constrained(0.5, ge=0, le=1)
    #: A pixel is near-white when all three channels are at least this (0-255).
    white_level: int = constrained(220, ge=0, le=255)

    def __post_init__(self) -> None:
        check_fields(self)  # every Literal and range above
        if self.tissue_method == "auto" and self.min_saturation > self.max_saturation:
            raise ValueError(
                f"min_saturation {self.min_saturation} exceeds max_saturation {self.max_saturation}"
            )
        if len(self.pen_hue_deg) != 2:
            raise ValueError(f"pen_hue_deg must be (low, high) degrees, got {self.pen_hue_deg}")


@dataclass(frozen=True)
class TilingParams(TissueParams):
    """Every setting of the tiling stage (the tissue-detection fields come from TissueParams)."""

    #: µm/px the tiles are laid and read at (0.5 ~ "20x", 0.25 ~ "40x"; used exactly).
    target_mpp: float = constrained(0.5, gt=0)
    #: Tile side in px at ``target_mpp``.
    tile_size: int = constrained(256, ge=1)
    #: Least tissue fraction (0-1) of a kept tile; tiles with no tissue are never kept.
    min_tissue: float = constrained(0.25, ge=0, le=1)
    #: Fraction (0 <= overlap < 1) of a tile shared with its neighbour; stride = size * (1 - overlap).
    overlap: float = constrained(0.0, ge=0, lt=1)
    #: Largest allowed enlargement when ``target_mpp`` is finer than the slide (see module doc).
    max_upsample: float = constrained(1.1, ge=1)
    #: Also lay tiles that overhang the right and bottom edges (the overhang reads as white
    #: glass; ``min_tissue`` applies to the part inside the slide), so a strip of tissue
    #: narrower than a tile is not lost: 13 percent of a 500 px field tiled in 233 px tiles.
    edge_tiles: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # checks every field, these included


@dataclass(frozen=True)
class AnnotationParams:
    """Which annotation groups (classes) are lesion and which are cut out of a lesion."""

    #: Group / class names (case-insensitive) that are tumour: Camelyon16 ``Tumor``, ``_0`` and
    #: ``_1``, Camelyon17 ``metastases``, QuPath ``Tumor``.
    tumor_groups: tuple[str, ...] = ("tumor", "tumour", "_0", "_1", "metastases", "metastasis")
    #: Group / class names (case-insensitive) drawn inside a lesion to exclude non-tumour tissue:
    #: Camelyon16 ``_2``.
    exclusion_groups: tuple[str, ...] = ("_2", "exclusion", "ignore")
