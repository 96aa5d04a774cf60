"""Parameters of the synthetic cohort, kept free of numpy and shapely so a config reads quickly.
Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsi_mil.config.schema import check_fields, constrained


@dataclass(frozen=True)
class CohortParams:
    """Size and make-up of a synthetic cohort."""

    #: Training slides without / with metastases.
    train_normal: int = constrained(8, ge=0)
    train_tumor: int = constrained(8, ge=0)
    #: Test slides without / with metastases (named test_NNN, shuffled as Camelyon16's).
    test_normal: int = constrained(4, ge=0)
    test_tumor: int = constrained(4, ge=0)
    #: Side of a slide in level-0 pixels (height varies between 80 % and 100 % of it).
    size_px: int = constrained(4096, ge=1)
    #: Level-0 resolution in µm/px (Camelyon16 scans are 0.243; 0.5 keeps slides small).
    mpp: float = constrained(0.5, gt=0)
    #: Seed of everything: the same seed gives the same cohort, pixel for pixel.
    seed: int = 0
    #: Folder of Camelyon16 JSON outlines (e.g. ``shared/data/annotations/camelyon16_json``) to
    #: take real lesion shapes from; None draws random smooth blobs instead.
    outlines: Path | None = None
    #: Longest diameter range of the main lesion of a tumour slide, as a share of the slide side
    #: (at the default 4096 px, 0.5 µm/px: 410 to 920 µm, a macro-metastasis).
    main_lesion: tuple[float, float] = constrained((0.2, 0.45), gt=0, le=1)
    #: ... but at least this long (µm), so every tumour slide has a lesion that the Camelyon16
    #: FROC counts (isolated tumour cells, < 200 µm, are not counted) even on small slides.
    main_lesion_min_um: float = constrained(300.0, ge=0)
    #: Number range and diameter range (share of the slide side) of further, smaller lesions
    #: (at the default size 80 to 300 µm: some are isolated tumour cells, < 200 µm).
    extra_lesions: tuple[int, int] = constrained((0, 2), ge=0)
    extra_lesion: tuple[float, float] = constrained((0.04, 0.15), gt=0, le=1)
    #: TIFF tile compression (``jpeg``, ``deflate`` or ``none``).
    compression: Literal["jpeg", "deflate", "none"] = "jpeg"
    #: Worker processes generating slides in parallel.
    workers: int = constrained(1, ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
