"""Parameters of the region-label-text report (``wsi-mil report``), stdlib only so the command
line builds instantly; each field's ``#:`` comment is its documentation."""

from __future__ import annotations

from dataclasses import dataclass

from wsi_mil.config.schema import check_fields, constrained
from wsi_mil.mil.params import (
    attended_tile_threshold_field,
    positive_class_field,
    positive_tile_threshold_field,
)


@dataclass(frozen=True)
class ReportParams:
    """What counts as attended and segmented in a slide's report, and how text is read."""

    attention_threshold: float = attended_tile_threshold_field()
    #: Tile probability at or above which the segmentation head puts a tile in a class (the
    #: model's region of each class, unless the pixel segmenter outlines the positive class).
    probability_threshold: float = positive_tile_threshold_field()
    positive_class: str | None = positive_class_field()
    #: Words before a mention in which a negation cue negates it (0: no negation).
    negation_window: int = constrained(6, ge=0)
    #: Segmented lesions listed one by one in the Markdown and HTML pages (largest first; the
    #: JSON has all).
    max_lesions_listed: int = constrained(20, ge=0)

    def __post_init__(self) -> None:
        check_fields(self)
