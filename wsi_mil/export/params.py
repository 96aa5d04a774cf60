"""Parameters of the region-label-text report (``wsi-mil report``), stdlib only so the command
line builds instantly; each field's ``#:`` comment is its documentation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportParams:
    """What counts as attended and segmented in a slide's report, and how text is read."""

    #: Normalised attention (0..1) at or above which a tile counts as attended.
    attention_threshold: float = 0.5
    #: Tile probability at or above which the segmentation head puts a tile in a class (the
    #: model's region of each class, unless the pixel segmenter outlines the positive class).
    probability_threshold: float = 0.5
    #: The class the pixel segmenter's lesions are; null: the run's positive class.
    positive_class: str | None = None
    #: Words before a mention in which a negation cue negates it (0: no negation).
    negation_window: int = 6
    #: Segmented lesions listed one by one in the Markdown and HTML pages (largest first; the
    #: JSON has all).
    max_lesions_listed: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.attention_threshold <= 1 or not 0 <= self.probability_threshold <= 1:
            raise ValueError("attention_threshold and probability_threshold must be in [0, 1]")
        if self.negation_window < 0 or self.max_lesions_listed < 0:
            raise ValueError("negation_window and max_lesions_listed must be 0 or more")
