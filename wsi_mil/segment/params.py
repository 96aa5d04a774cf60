"""Parameters of pixel-level lesion segmentation (``wsi-mil segment-train`` and ``segment``).

Kept free of heavy imports (stdlib only) so the command line can build its flags from these
dataclasses without loading torch or MONAI.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from features.params import device_field
from wsi_mil.config.schema import check_fields, constrained
from wsi_mil.mil.params import positive_class_field, positive_tile_threshold_field

#: The MONAI networks ``segment-train`` can train.
Network = Literal["attention_unet", "swin_unetr", "unet", "unetr"]
NETWORKS: tuple[str, ...] = typing.get_args(Network)
#: Explanations ``segment --explain`` can compute, in the order of the tables (see
#: :mod:`wsi_mil.segment.attribution` for what each is and which networks have it).
EXPLAIN_METHODS = (
    "attention_rollout",
    "relevance",
    "gradcam",
    "attention_gates",
    "integrated_gradients",
    "random",
)


@dataclass(frozen=True)
class SegmentTrainParams:
    """How a pixel segmenter is trained on tiles cut around annotated lesions."""

    #: Network: "attention_unet" (MONAI AttentionUnet, attention gates on the skips),
    #: "swin_unetr" (MONAI SwinUNETR in 2-D, a Swin-transformer encoder), "unet" (MONAI UNet)
    #: or "unetr" (MONAI UNETR in 2-D: a plain ViT encoder on 16-px patches).
    net: Network = "attention_unet"
    #: Resolution of the tiles and masks in µm/px (1.0: a 256-px tile spans 256 µm).
    mpp: float = constrained(1.0, gt=0)
    #: Side of a training tile (and of an inference window) in pixels; a multiple of 32.
    tile_size: int = 256
    #: Feature channels per resolution level (attention_unet, unet); each level halves the size.
    channels: tuple[int, ...] = constrained((16, 32, 64, 128), ge=1)
    #: SwinUNETR ``feature_size`` (a multiple of 12).
    swin_feature_size: int = 24
    #: UNETR: width of its ViT's tokens (192, with 3 heads: ViT-Tiny's; MONAI's default 768 is
    #: ViT-Base, 13x the weights, too many for a few hundred training tiles). The patch is
    #: MONAI's fixed 16 px (its decoder climbs back to pixels in four 2x steps).
    unetr_hidden_size: int = 192
    #: UNETR: attention heads per layer (``unetr_hidden_size`` must divide by it).
    unetr_heads: int = 3
    #: UNETR: channels of its convolutional decoder's finest level (MONAI's ``feature_size``).
    unetr_feature_size: int = 16
    #: Tiles cut from each training slide.
    tiles_per_slide: int = constrained(64, ge=1)
    #: Shares of lesion, lesion-border and normal-tissue tiles on an annotated slide (slides
    #: without lesions give normal tiles only); normalised to sum to 1.
    balance: tuple[float, float, float] = constrained((0.35, 0.35, 0.3), ge=0)
    #: Share of the training slides held out to measure the validation Dice (at least one).
    val_fraction: float = constrained(0.2, gt=0, lt=1)
    #: Most training epochs (one pass over the training tiles each).
    epochs: int = constrained(30, ge=1)
    #: Stop when the validation Dice has not improved for this many epochs.
    patience: int = constrained(6, ge=1)
    #: Tiles per optimisation step.
    batch_size: int = constrained(16, ge=1)
    #: Peak learning rate of AdamW.
    lr: float = constrained(2e-3, gt=0)
    #: AdamW weight decay.
    weight_decay: float = constrained(1e-4, ge=0)
    #: Epochs of linear learning-rate warm-up before the cosine decay.
    warmup_epochs: float = constrained(1.0, ge=0)
    #: Random flips and 90-degree rotations of the training tiles.
    augment: bool = True
    #: Seed of the tile sampling, the validation split, the initial weights and the batches.
    seed: int = 0
    device: str = device_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "balance", tuple(float(b) for b in self.balance))
        check_fields(self)  # every Literal and range above
        if self.tile_size < 32 or self.tile_size % 32:
            raise ValueError(f"tile_size must be a multiple of 32, got {self.tile_size}")
        if len(self.channels) < 2:
            raise ValueError(f"channels needs at least two positive values, got {self.channels}")
        if self.tile_size % 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"tile_size {self.tile_size} must be divisible by "
                f"2**{len(self.channels) - 1} for {len(self.channels)} levels"
            )
        if self.swin_feature_size < 12 or self.swin_feature_size % 12:
            raise ValueError(
                f"swin_feature_size must be a multiple of 12, got {self.swin_feature_size}"
            )
        if (
            self.unetr_hidden_size < 1
            or self.unetr_heads < 1
            or self.unetr_hidden_size % self.unetr_heads
            or self.unetr_feature_size < 1
        ):
            raise ValueError(
                f"unetr_hidden_size ({self.unetr_hidden_size}) must be a positive "
                f"multiple of unetr_heads ({self.unetr_heads}), "
                f"unetr_feature_size positive"
            )
        if len(self.balance) != 3 or sum(self.balance) <= 0:
            raise ValueError(f"balance needs three non-negative shares, got {self.balance}")


@dataclass(frozen=True)
class SegmentParams:
    """Which tiles of a slide the segmenter sees, and how its masks become outputs."""

    #: Tile probability (of the positive class, from the MIL segmentation head) at or above
    #: which a tile is sent to the segmenter.
    threshold: float = positive_tile_threshold_field()
    #: Normalised attention (0..1) at or above which a tile is also sent; null: attention
    #: flags nothing.
    attention_threshold: float | None = constrained(None, ge=0, le=1)
    #: Rings of neighbouring tiles added around the flagged ones (0: only flagged tiles).
    margin: int = constrained(1, ge=0)
    positive_class: str | None = positive_class_field()
    #: Share of a segmenter window that overlaps its neighbour; the overlaps are blended with
    #: MONAI's Gaussian importance map, so window edges leave no seams.
    overlap: float = constrained(0.25, ge=0, lt=1)
    #: Pixel probability at or above which a mask pixel is lesion.
    mask_threshold: float = constrained(0.5, gt=0, lt=1)
    #: Lesion polygons smaller than this (µm²) are dropped from lesions.geojson.
    min_area_um2: float = constrained(200.0, ge=0)
    #: Outline simplification tolerance in mask pixels (0: the exact pixel staircase).
    simplify_px: float = constrained(1.0, ge=0)
    #: Windows per forward pass.
    batch_size: int = constrained(16, ge=1)
    #: Chunk side (pixels) of the mask pyramid's zarr arrays; also bounds the memory in use.
    zarr_chunk: int = constrained(512, ge=64)
    #: Longest side of outline.png in pixels.
    png_max_side: int = constrained(2048, ge=64)
    device: str = device_field()
    #: Explanations of the segmenter's lesion output to compute in every window and stitch into
    #: explain.zarr (attention_rollout, relevance, gradcam, attention_gates,
    #: integrated_gradients, random; those the network does not have are skipped); none: no
    #: explanations.
    explain: tuple[str, ...] = constrained((), choices=EXPLAIN_METHODS)
    #: Integration steps of integrated_gradients (one forward and backward pass each).
    explain_ig_steps: int = constrained(16, ge=2)
    #: Module of the network (a name of ``model.named_modules()``) whose output gradcam uses;
    #: null: the deepest encoder stage at 1/8 of the window's side or finer.
    explain_gradcam_layer: str | None = None
    #: Windows whose annotated lesion covers a share of the window in [min, max] are scored:
    #: the lesion-border windows (deep inside a lesion or far from one, any map scores the same).
    explain_lesion_share: tuple[float, float] = (0.05, 0.95)
    #: Scored windows per slide (those whose lesion share is nearest one half) that also get
    #: the costly scores: deletion/insertion curves and the randomisation check.
    explain_score_windows: int = constrained(8, ge=0)
    #: Steps of the pixel deletion and insertion curves (0: skip them).
    explain_perturbation_steps: int = constrained(10, ge=0)
    #: Random patch orders averaged for the deletion/insertion baseline.
    explain_perturbation_random: int = constrained(2, ge=1)
    #: Side in pixels of the square patches deletion/insertion remove or add.
    explain_patch_px: int = constrained(8, ge=1)
    #: What a removed patch becomes: "mean" (the window's mean colour) or "blur" (the window
    #: under a Gaussian blur of sigma ``explain_patch_px``; it keeps a region's colour, much of
    #: the evidence in H&E, so deleting blurred patches hardly moves the score).
    explain_fill: Literal["blur", "mean"] = "mean"
    #: Run Adebayo et al.'s model-randomisation check (the maps of the network with every
    #: weight re-initialised) on the costly-score windows.
    explain_sanity: bool = True
    #: Windows drawn per slide in explain.png (one row each: window, mask, one map per method).
    explain_figure_windows: int = constrained(3, ge=0)
    #: Seed of the random maps, the random patch orders and the randomised network.
    explain_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "explain", tuple(self.explain))
        object.__setattr__(
            self, "explain_lesion_share", tuple(float(v) for v in self.explain_lesion_share)
        )
        check_fields(self)  # every Literal and range above
        low, high = self.explain_lesion_share
        if not 0 <= low < high <= 1:
            raise ValueError(
                f"explain_lesion_share must be two shares 0 <= min < max <= 1, "
                f"got {self.explain_lesion_share}"
            )
