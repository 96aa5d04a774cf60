"""CONCH v1.5's vision tower: a timm ViT-L/16 trunk, CoCa's attentional pooler and a layer norm.

CONCH v1.5 (MahmoodLab, ``MahmoodLab/conchv1_5``, file ``pytorch_model_vision.bin``) is not a
timm model, and its definition ships with no PyPI package (MahmoodLab's ``conch`` package and
TRIDENT's ``model_zoo/conchv1_5`` are installed from GitHub), so it is defined here: the trunk
is timm's ViT-L/16 with layer scale, and the pooler is the few lines of attention below. The
parameter names (``trunk.*``, ``attn_pool_contrast.*``, ``ln_contrast.*``) are the checkpoint's,
so it loads strictly without renaming.

Settings, from the reference definition (``CONCHVisionTower`` in TRIDENT's
``trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py``): trunk ViT-L/16 (1024 wide,
24 blocks, 16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, layer scale) built on the
224-px grid; one learned query of width 768 attending with 8 heads over the trunk's
layer-normed tokens (keys layer-normed, no biases in the projections); a final LayerNorm(768).
Tiles are 448 px: the trunk's 14 x 14 position embedding is resampled to 28 x 28 on the fly
(timm's ``dynamic_img_size``, bicubic). The reference resamples with DINO's ``scale_factor``
form of the same bicubic interpolation, which samples the grid at very slightly different
points, so features agree with the reference's closely but not to the last bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: CONCH v1.5's input side in pixels (its model card's eval transform: resize and crop 448).
CONCH_V15_INPUT = 448
CONCH_V15_DIM = 768


class AttentionalPooler(nn.Module):
    """CoCa's attentional pooler: ``n_queries`` learned queries attend over the tokens."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.heads = n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, H * d]`` -> ``[B, H, T, d]``."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, context_dim]`` -> pooled ``[B, n_queries, d_model]``."""
        batch = tokens.shape[0]
        keys, values = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)
        queries = self.to_q(self.ln_q(self.query)).expand(batch, -1, -1)
        out = F.scaled_dot_product_attention(
            self._heads(queries), self._heads(keys), self._heads(values)
        )
        return self.to_out(out.transpose(1, 2).reshape(batch, queries.shape[1], -1))


class ConchVisionTower(nn.Module):
    """Tiles ``[B, 3, 448, 448]`` -> CONCH v1.5 embeddings ``[B, 768]``."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.trunk = timm.create_model(
            "vit_large_patch16_224",
            pretrained=False,
            num_classes=0,
            img_size=224,
            init_values=1.0,
            dynamic_img_size=True,
        )
        self.attn_pool_contrast = AttentionalPooler(CONCH_V15_DIM, 1024, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(CONCH_V15_DIM)
        self.num_features = CONCH_V15_DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(images)  # type: ignore[operator]
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
