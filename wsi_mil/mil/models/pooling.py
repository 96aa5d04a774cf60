"""Baselines without learned attention: ``mean_pool`` and ``max_pool`` (embedding-level).

They show how much a learned attention adds. Their "attention" is still reported with the same
contract (non-negative, sums to 1 over real tiles, 0 on padding) so heatmaps work for them too:
uniform for the mean, and for the max each tile's share of the embedding dimensions it wins.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wsi_mil.mil.models.base import MILModel, MILOutput
from wsi_mil.mil.models.registry import register_model


class _PoolingMIL(MILModel):
    ranks_by_attention = False

    def __init__(self, in_dim: int, n_classes: int, **kwargs) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        self.add_output_head()


@register_model("mean_pool")
class MeanPoolMIL(_PoolingMIL):
    """The mean of the tile embeddings: softmax pooling of constant scores."""

    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*h.shape[:-1], 1, dtype=h.dtype, device=h.device)


@register_model("max_pool")
class MaxPoolMIL(_PoolingMIL):
    """The element-wise maximum of the tile embeddings (Ilse et al.'s embedding-level max)."""

    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        # Not used for pooling; ``pool`` is overridden. Kept for the base interface.
        return torch.zeros(*h.shape[:-1], 1, dtype=h.dtype, device=h.device)

    def pool(self, h: torch.Tensor, raw: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masked = h.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
        pooled, winners = masked.max(dim=1)  # [B, H] each
        wins = torch.zeros(h.shape[:2], device=h.device)
        wins.scatter_add_(1, winners, torch.ones_like(winners, dtype=wins.dtype))
        weights = (wins / h.shape[-1]).unsqueeze(-1)
        return weights, pooled.unsqueeze(1).to(h.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                coords: torch.Tensor | None = None) -> MILOutput:
        out = super().forward(x, mask, labels, coords)
        # the raw score of a tile is its count of won dimensions
        return out._replace(raw_attention=out.branch_attention[..., 0] * self.hidden_dim)

    @torch.no_grad()
    def predict_chunked(self, read: Callable[[int, int], torch.Tensor], num_tiles: int,
                        chunk_size: int = 16384,
                        coords: torch.Tensor | None = None) -> MILOutput:
        """One pass: running maximum and the index of the tile that holds it, per dimension
        (``coords`` ignored)."""
        device = next(self.parameters()).device
        best = torch.full((self.hidden_dim,), float("-inf"), device=device)
        winner = torch.zeros(self.hidden_dim, dtype=torch.long, device=device)
        tile_logits = []
        for start in range(0, num_tiles, chunk_size):
            h = self.embed(read(start, min(start + chunk_size, num_tiles)).float())
            tile_logits.append(self.tile_scores(h).float())
            value, index = h.max(dim=0)
            better = value > best
            best = torch.where(better, value, best)
            winner = torch.where(better, index + start, winner)
        wins = torch.bincount(winner, minlength=num_tiles).float()
        logits = self.classify(best.view(1, 1, -1))
        weights = wins / self.hidden_dim
        return MILOutput(logits, weights.unsqueeze(0), wins.unsqueeze(0),
                         torch.cat(tile_logits).unsqueeze(0), weights.view(1, -1, 1), None)
