"""Attention rollout (Abnar & Zuidema, 2020): where inside a tile a ViT encoder looked.

Each transformer layer mixes tokens with its attention matrix A (rows sum to 1); the residual
connection keeps half of each token, so the layer's effective mixing is 0.5 A + 0.5 I,
rows renormalised. The product of these over the layers says how much of each input patch
reaches each output token; the class token's row (or, for models pooling patch tokens without
one, the mean row of the patch tokens) over the patch tokens is the rollout map.

timm's ViT attention runs PyTorch's fused ``scaled_dot_product_attention`` by default, which
never materialises the attention matrix. :class:`AttentionRecorder` switches each attention
block to timm's explicit path (``fused_attn = False``, numerically the same attention) for the
duration of the pass and records the softmax output through a hook on the ``attn_drop`` module
that follows it, then restores the fused path.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_mil.errors import WsiMilError


class RolloutError(WsiMilError, ValueError):
    """A model attention rollout cannot explain (not a timm ViT)."""


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """timm attention modules (those with ``fused_attn`` and an ``attn_drop`` after softmax)."""
    return [
        m
        for m in model.modules()
        if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]


class AttentionRecorder:
    """Context manager recording every attention matrix ``[B, heads, N, N]`` of a forward pass."""

    def __init__(self, model: nn.Module):
        self.blocks = attention_blocks(model)
        if not self.blocks:
            raise RolloutError(
                f"{type(model).__name__} has no timm attention blocks; attention "
                f"rollout needs a ViT encoder"
            )
        self.maps: list[torch.Tensor] = []
        self._fused: list[Any] = []
        self._hooks: list[Any] = []

    def _record(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self.maps.append(output.detach().float())

    def __enter__(self) -> list[torch.Tensor]:
        """Start recording; returns the list the attention maps are appended to, layer by layer."""
        self.maps = []
        for block in self.blocks:
            self._fused.append(block.fused_attn)
            block.fused_attn = False  # type: ignore[assignment]  # timm's flag, not a submodule
            self._hooks.append(block.attn_drop.register_forward_hook(self._record))  # type: ignore[union-attr]
        return self.maps

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for hook in self._hooks:
            hook.remove()
        for block, fused in zip(self.blocks, self._fused):
            block.fused_attn = fused
        self._hooks, self._fused = [], []


def fuse_heads(attention: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """``[B, heads, N, N]`` -> ``[B, N, N]`` by the mean, max or min over heads."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be mean, max or min, got {head_fusion!r}")


def rollout(attentions: Sequence[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """The rollout matrix ``[B, N, N]`` of a stack of layer attentions (first layer first).

    Every factor is row-stochastic (0.5 A + 0.5 I, rows renormalised), so the product is too:
    each row of the result sums to 1.
    """
    if not attentions:
        raise RolloutError("no attention maps to roll out")
    result = None
    for attention in attentions:
        fused = fuse_heads(attention.float(), head_fusion)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    assert result is not None  # at least one layer, checked above
    return result


def patch_grid(model: nn.Module) -> tuple[int, int]:
    """(rows, cols) of patch tokens of a timm ViT."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None:
        raise RolloutError(
            f"{type(model).__name__} has no patch_embed.grid_size; attention "
            f"rollout needs a ViT encoder"
        )
    return int(grid[0]), int(grid[1])


def attention_rollout(
    model: nn.Module, images: torch.Tensor, head_fusion: str = "mean"
) -> np.ndarray:
    """Rollout maps ``[B, rows, cols]`` of normalised images ``[B, 3, H, W]``.

    The map is the class token's row of the rollout over the patch tokens (prefix tokens such as
    registers are left out); models without a class token use the mean row of the patch tokens.
    Values are the rollout weights themselves: the share of the output that flows from each
    patch (the rest stays with the prefix tokens), so maps of different tiles compare.
    """
    rows, cols = patch_grid(model)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    has_class_token = getattr(model, "cls_token", None) is not None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), AttentionRecorder(model) as maps:
            model(images)
    finally:
        model.train(was_training)
    matrix = rollout(maps, head_fusion)
    if has_class_token:
        weights = matrix[:, 0, prefix:]
    else:
        weights = matrix[:, prefix:, prefix:].mean(dim=1)
    if weights.shape[-1] != rows * cols:
        raise RolloutError(f"{weights.shape[-1]} patch tokens do not fill a {rows}x{cols} grid")
    return weights.reshape(-1, rows, cols).cpu().numpy()


def encoder_rollout(
    encoder: Any, tiles: Sequence[np.ndarray], head_fusion: str = "mean"
) -> np.ndarray:
    """Rollout maps of uint8 RGB tiles through a ``features.registry.Encoder`` (resized to its
    input size and normalised exactly as for feature extraction)."""
    from tiling.reader import resize_rgb

    batch = np.stack([resize_rgb(np.ascontiguousarray(t), encoder.input_size) for t in tiles])
    images = encoder.preprocess(torch.from_numpy(batch))
    return attention_rollout(encoder.model, images, head_fusion)
