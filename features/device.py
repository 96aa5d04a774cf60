"""The torch device every stage runs on: one rule for extraction, training, prediction and
segmentation, so ``--device auto`` means the same everywhere."""

from __future__ import annotations

import torch

from wsi_mil.errors import WsiMilError


class DeviceError(WsiMilError, ValueError):
    """A device that was asked for but is not available here."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must be available."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(
            f"device {device!r}: not a torch device (auto, cpu, cuda, cuda:N, mps)"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but CUDA is not available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} asked for, but MPS is not available")
    return resolved
