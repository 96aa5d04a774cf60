"""Fixtures of the segmentation tests: a segmenter whose answer is known exactly, and model
folders of tiny networks with random weights.

:class:`DarkPixels` marks every pixel darker than glass as lesion, pixel by pixel, so a
stitched mask must reproduce the painted shapes exactly: any offset, scale or blending error
in reading, stitching or the pyramid shows up as a displaced centroid. It is also what the
memory test runs (a trained network would only add weights, not change the bookkeeping).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
import torch

from wsi_mil.segment.nets import build_network
from wsi_mil.segment.params import SegmentTrainParams
from wsi_mil.synthetic.predictions import flagged_prediction


class DarkPixels(torch.nn.Module):
    """Logits ``[N, 2, H, W]``: lesion where the normalised mean intensity is below 1.0
    (tissue at (196, 96, 168) is about 0.4, glass at 243 about 1.8)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = self.scale * (1.0 - x.mean(dim=1, keepdim=True))
        return torch.cat([torch.zeros_like(lesion), lesion], dim=1)


def dark_card(mpp: float, tile_size: int) -> dict:
    """The parts of a model card inference reads."""
    return {
        "input": {"mpp": mpp, "tile_size": tile_size},
        "net": "dark_pixels",
        "checkpoint_sha256": "0" * 64,
    }


def grid_prediction(
    path, slide_path, width: int, height: int, mpp: float, tile: int, positive
) -> None:
    """A predictions file with tiles on a ``tile``-px grid over the whole slide; tile
    probabilities 1 where ``positive(x, y)`` (level-0 top-left corner) is true, else 0."""
    xs, ys = np.meshgrid(np.arange(0, width, tile), np.arange(0, height, tile))
    coords = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.int64)
    flags = np.array([bool(positive(x, y)) for x, y in coords])
    flagged_prediction(path, slide_path, coords, flags, size=(width, height), mpp=mpp, tile=tile)


def write_model(folder, net: str = "unet", lesion_bias: float = 0.0) -> None:
    """A model folder as segment-train leaves it, with random weights; ``lesion_bias`` is added
    to the lesion logit of the last convolution (a random network's mask is salt and pepper,
    whose outlines take long to merge; a bias of a few units makes most windows all lesion)."""
    torch.manual_seed(0)
    params = SegmentTrainParams(net=net, mpp=2.0, tile_size=64, channels=(8, 16, 32))
    network = build_network(params)
    convolutions = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    last = [m for m in network.modules() if isinstance(m, convolutions) and m.out_channels == 2][-1]
    with torch.no_grad():
        last.bias[1] += lesion_bias
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    folder.mkdir(parents=True)
    (folder / "segmenter.pt").write_bytes(buffer.getvalue())
    (folder / "model_card.json").write_text(
        json.dumps(
            {
                "format": "wsi-mil segmenter",
                "net": net,
                "params": dataclasses.asdict(params),
                "input": {"mpp": 2.0, "tile_size": 64},
                "checkpoint": "segmenter.pt",
                "checkpoint_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
            }
        )
    )


@pytest.fixture(scope="session")
def random_segmenter():
    """``write(folder, net, lesion_bias)``: a model folder of a tiny network with random
    weights."""
    return write_model


@pytest.fixture(scope="session")
def segment_helpers():
    """(DarkPixels, dark_card, grid_prediction) for the tests of this folder."""
    return DarkPixels, dark_card, grid_prediction
