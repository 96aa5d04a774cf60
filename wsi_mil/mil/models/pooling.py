"""Baselines without learned attention: ``mean_pool`` and ``max_pool`` (embedding-level).

They show how much a learned attention adds. Their "attention" is still reported with the same
contract (non-negative, sums to 1 over real tiles, 0 on padding) so heatmaps work for them too:
uniform for the mean, and for the max each tile's share of the embedding dimensions it wins.
A dimension that several tiles tie for (a ReLU unit dead on every tile is 0 on all of them)
is shared equally among them: crediting it to the first of them, as ``argmax`` does, gave the
first tile of a bag over half the weight when many units were dead. Neither model's
"attention" is in the graph of its logits, so gradients with respect to it do not exist
(:func:`wsi_mil.explain.methods.available_methods` does not offer such methods for them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from wsi_mil.mil.models.base import MILModel, MILOutput
from wsi_mil.mil.models.registry import register_model


class _PoolingMIL(MILModel):
    ranks_by_attention = False

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
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

    def pool(
        self, h: torch.Tensor, raw: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Element-wise max over real tiles; each tile's weight is its share of the dimensions,
        a tied dimension split equally among the tiles that hold its maximum."""
        masked = h.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
        pooled = masked.max(dim=1).values  # [B, H]
        with torch.no_grad():
            ties = (masked == pooled.unsqueeze(1)) & mask.unsqueeze(-1)  # [B, N, H]
            share = ties / ties.sum(dim=1, keepdim=True).clamp_min(1)
            weights = (share.sum(-1) / h.shape[-1]).unsqueeze(-1)
        return weights, pooled.unsqueeze(1).to(h.dtype)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
    ) -> MILOutput:
        out = super().forward(x, mask, labels, coords)
        # the raw score of a tile is its count of won dimensions
        return out._replace(raw_attention=out.branch_attention[..., 0] * self.hidden_dim)

    @torch.no_grad()
    def predict_chunked(
        self,
        read: Callable[[int, int], torch.Tensor],
        num_tiles: int,
        chunk_size: int = 16384,
        coords: torch.Tensor | None = None,
    ) -> MILOutput:
        """Three passes over the chunks (``coords`` ignored): the running maximum per dimension,
        then how many tiles tie for it, then each tile's share of the dimensions it holds, as
        :meth:`pool` computes them on the whole bag."""
        device = next(self.parameters()).device
        best = torch.full((self.hidden_dim,), float("-inf"), device=device)
        tile_logits = []
        chunks = [(s, min(s + chunk_size, num_tiles)) for s in range(0, num_tiles, chunk_size)]
        for start, end in chunks:
            h = self.embed(read(start, end).float())
            tile_logits.append(self.tile_scores(h).float())
            best = torch.maximum(best, h.float().max(dim=0).values)
        ties = torch.zeros(self.hidden_dim, device=device)
        for start, end in chunks:
            ties += (self.embed(read(start, end).float()).float() == best).sum(dim=0)
        wins = torch.cat(
            [
                ((self.embed(read(start, end).float()).float() == best) / ties.clamp_min(1)).sum(
                    dim=1
                )
                for start, end in chunks
            ]
        )
        logits = self.classify(best.view(1, 1, -1))
        weights = wins / self.hidden_dim
        return MILOutput(
            logits,
            weights.unsqueeze(0),
            wins.unsqueeze(0),
            torch.cat(tile_logits).unsqueeze(0),
            weights.view(1, -1, 1),
            None,
        )
