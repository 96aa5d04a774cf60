"""The pixel segmenters: MONAI's AttentionUnet, SwinUNETR and UNETR (2-D) and UNet, two output
classes.

The networks are MONAI's own (``monai.networks.nets``), not re-implementations; this module only
chooses their 2-D, RGB-in, background/lesion-out configuration from
:class:`~wsi_mil.segment.params.SegmentTrainParams` and fixes how tiles are normalised, so
training and inference (and a model card read a year later) agree.

UNETR (Hatamizadeh et al., WACV 2022) is a plain ViT on 16-px patches whose 3rd, 6th, 9th and
12th layers feed a convolutional decoder. MONAI fixes its patch at 16 px and its depth at 12
layers (the decoder climbs back from the token grid in four 2x steps), so the choices left are
the token width and heads (``unetr_hidden_size``, ``unetr_heads``: ViT-Tiny's 192 and 3 by
default) and the decoder's channels. At the default 1 µm/px and 256 px a token is a 16 µm
square (one or two nuclei) and a window has 16 x 16 tokens, so its self-attention maps are
fine enough to outline a lesion; at 2 µm/px and 64 px (the benchmark's) they are 4 x 4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wsi_mil.extras import require_extra
from wsi_mil.segment.params import SegmentTrainParams

#: Output classes of every segmenter: channel 1 is the lesion probability after softmax.
CLASSES = ("background", "lesion")
#: uint8 RGB -> network input: ``(x / 255 - MEAN) / STD`` per channel (recorded in model cards).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def build_network(params: SegmentTrainParams) -> torch.nn.Module:
    """The MONAI network ``params.net`` for RGB tiles of ``params.tile_size`` px."""
    require_extra("segment", "a pixel segmenter")
    from monai.networks.nets import UNETR, AttentionUnet, SwinUNETR, UNet

    strides = (2,) * (len(params.channels) - 1)
    if params.net == "attention_unet":
        return AttentionUnet(
            spatial_dims=2,
            in_channels=3,
            out_channels=len(CLASSES),
            channels=params.channels,
            strides=strides,
        )
    if params.net == "unet":
        return UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=len(CLASSES),
            channels=params.channels,
            strides=strides,
            num_res_units=1,
        )
    if params.net == "swin_unetr":
        return SwinUNETR(
            spatial_dims=2,
            in_channels=3,
            out_channels=len(CLASSES),
            feature_size=params.swin_feature_size,
            depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24),
            window_size=7,
        )
    if params.net == "unetr":
        return UNETR(
            in_channels=3,
            out_channels=len(CLASSES),
            img_size=(params.tile_size, params.tile_size),
            feature_size=params.unetr_feature_size,
            hidden_size=params.unetr_hidden_size,
            mlp_dim=4 * params.unetr_hidden_size,
            num_heads=params.unetr_heads,
            spatial_dims=2,
        )
    raise ValueError(f"unknown network {params.net!r}")


def to_input(tiles: np.ndarray, device: Any) -> torch.Tensor:
    """uint8 RGB tiles ``[N, H, W, 3]`` -> normalised float tensor ``[N, 3, H, W]``."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std
