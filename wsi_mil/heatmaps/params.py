"""Heatmap and export parameters, kept free of numpy, OpenCV and matplotlib so that building the
command line and reading a config stay instant. Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from wsi_mil.config.schema import check_fields, constrained
from wsi_mil.mil.params import positive_class_field, positive_tile_threshold_field

Normalisation = Literal["rank", "minmax", "raw"]
NORMALISATIONS: tuple[str, ...] = typing.get_args(Normalisation)
Format = Literal["png", "zarr", "geojson"]
FORMATS: tuple[Format, ...] = typing.get_args(Format)
ATTENTION = "attention"


@dataclass(frozen=True)
class HeatmapParams:
    """Everything a user chooses about heatmaps and exports (``wsi-mil heatmap``, YAML ``heatmap``)."""

    #: longest side of the thumbnail (and heatmap canvas) in pixels; ignored when ``mpp`` is set
    max_side: int = 2048
    #: resolution of the thumbnail in µm/px (e.g. 8.0); overrides ``max_side`` when given
    mpp: float | None = constrained(None, gt=0)
    #: what the overlay shows: "attention", a class name (that class's tile probability), or,
    #: with --explanations, a stored explanation method (e.g. "integrated_gradients")
    score: str = ATTENTION
    #: tile scores -> colours: "rank" (percentile, CLAM's default), "minmax" or "raw"
    normalize: Normalisation = "rank"
    #: Gaussian smoothing width (sigma) in µm; 0 turns smoothing off
    smooth_um: float = constrained(0.0, ge=0)
    #: matplotlib colour map of the overlay
    cmap: str = "coolwarm"
    #: opacity of the heatmap over the thumbnail, 0..1
    alpha: float = constrained(0.4, ge=0, le=1)
    #: clip the heat to the tissue polygons of the tiling step when they are available
    tissue_clip: bool = True
    #: number of most-attended tiles shown in topk.png (0: no topk.png)
    topk: int = constrained(8, ge=0)
    positive_class: str | None = positive_class_field()
    #: tile probability at or above which a grid cell counts as positive in the segmentation
    seg_threshold: float = positive_tile_threshold_field()
    #: outputs to write: any of "png", "zarr", "geojson"
    formats: tuple[Format, ...] = FORMATS
    #: chunk side of the zarr arrays (cells)
    zarr_chunk: int = constrained(256, ge=1)
    #: OME-Zarr metadata version: "0.4" (zarr format 2, read by every OME-Zarr tool) or "0.5"
    ome_zarr_version: Literal["0.4", "0.5"] = "0.4"
    #: attention rollout of the encoder over each top-k tile (ViT encoders with weights only)
    rollout: bool = False
    #: how rollout fuses the heads of a layer: "mean", "max" or "min"
    rollout_head_fusion: Literal["mean", "max", "min"] = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))  # a YAML list is fine too
        check_fields(self)  # every Literal and range above
        if self.mpp is None and self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 px, got {self.max_side}")
