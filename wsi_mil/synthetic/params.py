"""Parameters of the synthetic cohort, kept free of numpy and shapely so a config reads quickly.
Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CohortParams:
    """Size and make-up of a synthetic cohort."""

    #: Training slides without / with metastases.
    train_normal: int = 8
    train_tumor: int = 8
    #: Test slides without / with metastases (named test_NNN, shuffled as Camelyon16's).
    test_normal: int = 4
    test_tumor: int = 4
    #: Side of a slide in level-0 pixels (height varies between 80 % and 100 % of it).
    size_px: int = 4096
    #: Level-0 resolution in µm/px (Camelyon16 scans are 0.243; 0.5 keeps slides small).
    mpp: float = 0.5
    #: Seed of everything: the same seed gives the same cohort, pixel for pixel.
    seed: int = 0
    #: Folder of Camelyon16 JSON outlines (e.g. ``shared/data/annotations/camelyon16_json``) to
    #: take real lesion shapes from; None draws random smooth blobs instead.
    outlines: Path | None = None
    #: Longest diameter range of the main lesion of a tumour slide, as a share of the slide side
    #: (at the default 4096 px, 0.5 µm/px: 410 to 920 µm, a macro-metastasis).
    main_lesion: tuple[float, float] = (0.2, 0.45)
    #: ... but at least this long (µm), so every tumour slide has a lesion that the Camelyon16
    #: FROC counts (isolated tumour cells, < 200 µm, are not counted) even on small slides.
    main_lesion_min_um: float = 300.0
    #: Number range and diameter range (share of the slide side) of further, smaller lesions
    #: (at the default size 80 to 300 µm: some are isolated tumour cells, < 200 µm).
    extra_lesions: tuple[int, int] = (0, 2)
    extra_lesion: tuple[float, float] = (0.04, 0.15)
    #: TIFF tile compression (``jpeg``, ``deflate`` or ``none``).
    compression: str = "jpeg"
    #: Worker processes generating slides in parallel.
    workers: int = 1

