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

