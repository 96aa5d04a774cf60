"""Heatmap and export parameters, kept free of numpy, OpenCV and matplotlib so that building the
command line and reading a config stay instant. Each field's ``#:`` comment is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

NORMALISATIONS = ("rank", "minmax", "raw")



FORMATS = ("png", "zarr", "geojson")



ATTENTION = "attention"



@dataclass(frozen=True)
class HeatmapParams:
    """Everything a user chooses about heatmaps and exports (``wsi-mil heatmap``, YAML ``heatmap``)."""

    #: longest side of the thumbnail (and heatmap canvas) in pixels; ignored when ``mpp`` is set
    max_side: int = 2048
    #: resolution of the thumbnail in µm/px (e.g. 8.0); overrides ``max_side`` when given
    mpp: float | None = None
    #: what the overlay shows: "attention", a class name (that class's tile probability), or,
    #: with --explanations, a stored explanation method (e.g. "integrated_gradients")
    score: str = ATTENTION
    #: tile scores -> colours: "rank" (percentile, CLAM's default), "minmax" or "raw"
    normalize: str = "rank"
    #: Gaussian smoothing width (sigma) in µm; 0 turns smoothing off
    smooth_um: float = 0.0
    #: matplotlib colour map of the overlay
    cmap: str = "coolwarm"
    #: opacity of the heatmap over the thumbnail, 0..1
    alpha: float = 0.4
    #: clip the heat to the tissue polygons of the tiling step when they are available
    tissue_clip: bool = True
    #: number of most-attended tiles shown in topk.png (0: no topk.png)
    topk: int = 8
    #: class whose tile probability is the segmentation; None: the class that is not the run's
    #: negative class (recorded in the predictions)
    positive_class: str | None = None
    #: tile probability at or above which a grid cell counts as positive in the segmentation
    seg_threshold: float = 0.5
    #: outputs to write: any of "png", "zarr", "geojson"
    formats: tuple[str, ...] = FORMATS
    #: chunk side of the zarr arrays (cells)
    zarr_chunk: int = 256
    #: OME-Zarr metadata version: "0.4" (zarr format 2, read by every OME-Zarr tool) or "0.5"
    ome_zarr_version: str = "0.4"
    #: attention rollout of the encoder over each top-k tile (ViT encoders with weights only)
    rollout: bool = False
    #: how rollout fuses the heads of a layer: "mean", "max" or "min"
    rollout_head_fusion: str = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))  # a YAML list is fine too
        if self.normalize not in NORMALISATIONS:
            raise ValueError(f"normalize must be one of {NORMALISATIONS}, got {self.normalize!r}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown formats {unknown}; choose from {FORMATS}")
        if self.mpp is None and self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 px, got {self.max_side}")
        if self.mpp is not None and not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.smooth_um < 0:
            raise ValueError(f"smooth_um must be >= 0, got {self.smooth_um}")
        if self.topk < 0:
            raise ValueError(f"topk must be >= 0, got {self.topk}")
        if self.ome_zarr_version not in ("0.4", "0.5"):
            raise ValueError(f"ome_zarr_version must be '0.4' or '0.5', got {self.ome_zarr_version!r}")
        if self.rollout_head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"rollout_head_fusion must be mean, max or min, "
                             f"got {self.rollout_head_fusion!r}")

