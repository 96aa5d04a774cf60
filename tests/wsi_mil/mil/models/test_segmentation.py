"""Segmentation-head targets: negative slides, pseudo-labelled top tiles, tile labels (on the
test device, ``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from wsi_mil.mil.models.base import MILOutput
from wsi_mil.mil.models.segmentation import segmentation_loss


def output(tile_logits, attention):
    b, _n, _ = tile_logits.shape
    return MILOutput(
        torch.zeros(b, 2, device=tile_logits.device),
        attention,
        attention,
        tile_logits,
        attention.unsqueeze(-1),
        None,
    )


def test_negative_slide_makes_every_real_tile_negative(device):
    logits = torch.randn(1, 4, 2, device=device)
    mask = torch.tensor([[True, True, True, False]], device=device)
    loss = segmentation_loss(
        output(logits, torch.full((1, 4), 1 / 3, device=device)),
        mask,
        torch.tensor([0], device=device),
        torch.full((1, 4), math.nan, device=device),
        negative_index=0,
        k=2,
    )
    expected = F.cross_entropy(logits[0, :3], torch.zeros(3, dtype=torch.long, device=device))
    torch.testing.assert_close(loss, expected)


def test_positive_slide_pseudo_labels_top_and_bottom_attended(device):
    logits = torch.randn(1, 5, 2, device=device)
    attention = torch.tensor([[0.05, 0.5, 0.1, 0.3, 0.05]], device=device)
    loss = segmentation_loss(
        output(logits, attention),
        torch.ones(1, 5, dtype=torch.bool, device=device),
        torch.tensor([1], device=device),
        torch.full((1, 5), math.nan, device=device),
        negative_index=0,
        k=2,
    )
    idx = torch.tensor([1, 3, 0, 4])  # top 2 by attention, then bottom 2 (ties: stable order)
    expected = F.cross_entropy(logits[0, idx], torch.tensor([1, 1, 0, 0], device=device))
    torch.testing.assert_close(loss, expected)


def test_tile_labels_replace_pseudo_labels(device):
    logits = torch.randn(1, 4, 2, device=device)
    tile_labels = torch.tensor([[0.0, 0.8, 0.4, 1.0]], device=device)
    loss = segmentation_loss(
        output(logits, torch.full((1, 4), 0.25, device=device)),
        torch.ones(1, 4, dtype=torch.bool, device=device),
        torch.tensor([1], device=device),
        tile_labels,
        negative_index=0,
        k=1,
        threshold=0.5,
    )
    expected = F.cross_entropy(logits[0], torch.tensor([0, 1, 0, 1], device=device))
    torch.testing.assert_close(loss, expected)
