"""Parameters of the lesion-level metrics, kept free of scipy and scikit-image so a config reads
quickly. Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsi_mil.config.schema import check_fields, constrained

#: The share of a tile's area inside an annotated lesion at or above which the tile *is* lesion:
#: the positive tile labels training learns from and the truth the explanation and lesion
#: scores compare against. Tiles below it but above zero are a lesion's border.
LESION_FRACTION = 0.5


def lesion_fraction_field() -> Any:
    """The lesion-fraction field of every stage that turns annotations into tile truth (training's
    tile labels, the explanation and lesion scores): one default, range and meaning."""
    return constrained(
        LESION_FRACTION,
        ge=0.0,
        le=1.0,
        doc=(
            "lesion area fraction at or above which a tile is a lesion tile (its label positive, "
            "its truth tumour); tiles between 0 and it are the lesion's border"
        ),
    )


@dataclass(frozen=True)
class FrocParams:
    """The official evaluation's constants, as physical sizes so any scanner resolution works."""

    #: µm/px of the evaluation mask (official: level 5 of 0.243 µm/px scans = 7.776).
    mask_mpp: float = constrained(0.243 * 32, gt=0)
    #: µm added to a lesion's diameter before labelling (official: 75, i.e. 37.5 per side).
    dilation_um: float = constrained(75.0, ge=0)
    #: A grown lesion with a major axis below this (µm) is isolated tumour cells (official 275 =
    #: 200 µm + the 75 µm growth).
    itc_axis_um: float = constrained(275.0, ge=0)
    #: Local maxima of the tile-probability map below this probability are not detections.
    min_probability: float = constrained(0.0, ge=0, le=1)
    #: Minimum distance (in tiles) between two detections on the tile-probability map.
    min_distance_tiles: int = constrained(1, ge=0)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class AuditParams:
    """Settings of ``wsi-mil audit`` (the shortcut audit, :mod:`wsi_mil.pipeline.audit`)."""

    #: Column of the labels CSV holding the site (any grouping suspected of being a shortcut:
    #: hospital, scanner, batch).
    column: str = "site"
    #: Folds of the stratified cross-validation of the site probe (fewer when a site is small).
    folds: int = constrained(5, ge=2)
    #: Label permutations of the probe's permutation test (its p-value is >= 1 / (this + 1)).
    permutations: int = constrained(200, ge=1)
    #: p-value below which a probe beats chance, or a site-label association counts.
    alpha: float = constrained(0.05, gt=0, lt=1)
    #: Cramér's V between site and label from which a site signal is a shortcut risk.
    min_cramers_v: float = constrained(0.3, ge=0, le=1)
    #: A tile is mostly background when more than this share of it is glass.
    background: float = constrained(0.5, gt=0, lt=1)
    #: A tile is mostly pen when more than this share of it is ink.
    pen: float = constrained(0.25, gt=0, lt=1)
    #: A tile is out of focus when its focus is below this fraction of the cohort's median
    #: focus of tissue tiles.
    blur: float = constrained(0.2, gt=0, lt=1)
    #: Attention on flagged tiles counts as a shortcut when its share is this many times the
    #: flagged tiles' share of the tiles (and above 10 %).
    attention_ratio: float = constrained(2.0, gt=0)
    #: Seed of the probe's folds and permutations.
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
