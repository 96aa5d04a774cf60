"""Parameters of the lesion-level metrics, kept free of scipy and scikit-image so a config reads
quickly. Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrocParams:
    """The official evaluation's constants, as physical sizes so any scanner resolution works."""

    #: µm/px of the evaluation mask (official: level 5 of 0.243 µm/px scans = 7.776).
    mask_mpp: float = 0.243 * 32
    #: µm added to a lesion's diameter before labelling (official: 75, i.e. 37.5 per side).
    dilation_um: float = 75.0
    #: A grown lesion with a major axis below this (µm) is isolated tumour cells (official 275 =
    #: 200 µm + the 75 µm growth).
    itc_axis_um: float = 275.0
    #: Local maxima of the tile-probability map below this probability are not detections.
    min_probability: float = 0.0
    #: Minimum distance (in tiles) between two detections on the tile-probability map.
    min_distance_tiles: int = 1



@dataclass(frozen=True)
class AuditParams:
    """Settings of ``wsi-mil audit`` (the shortcut audit, :mod:`wsi_mil.pipeline.audit`)."""

    #: Column of the labels CSV holding the site (any grouping suspected of being a shortcut:
    #: hospital, scanner, batch).
    column: str = "site"
    #: Folds of the stratified cross-validation of the site probe (fewer when a site is small).
    folds: int = 5
    #: Label permutations of the probe's permutation test (its p-value is >= 1 / (this + 1)).
    permutations: int = 200
    #: p-value below which a probe beats chance, or a site-label association counts.
    alpha: float = 0.05
    #: Cramér's V between site and label from which a site signal is a shortcut risk.
    min_cramers_v: float = 0.3
    #: A tile is mostly background when more than this share of it is glass.
    background: float = 0.5
    #: A tile is mostly pen when more than this share of it is ink.
    pen: float = 0.25
    #: A tile is out of focus when its focus is below this fraction of the cohort's median
    #: focus of tissue tiles.
    blur: float = 0.2
    #: Attention on flagged tiles counts as a shortcut when its share is this many times the
    #: flagged tiles' share of the tiles (and above 10 %).
    attention_ratio: float = 2.0
    #: Seed of the probe's folds and permutations.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2 or self.permutations < 1:
            raise ValueError(f"folds must be >= 2 and permutations >= 1, got {self.folds}, "
                             f"{self.permutations}")
        for name in ("alpha", "background", "pen", "blur"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
