"""Attention-MIL (Ilse, Tomczak & Welling, ICML 2018): ``abmil`` and ``gated_abmil``.

The attention networks follow CLAM's ``Attn_Net`` and ``Attn_Net_Gated`` (Lu et al. 2021):
``a = w^T tanh(V h)`` and the gated ``a = w^T (tanh(V h) * sigmoid(U h))``; the gate lets the
network switch off tiles whose tanh response is uninformative, which is why the gated form is
the default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wsi_mil.mil.models.base import MILModel
from wsi_mil.mil.models.registry import register_model


class AttentionNet(nn.Module):
    """CLAM's ``Attn_Net``: Linear, tanh, (dropout), Linear to ``branches`` scores per tile."""

    def __init__(self, dim: int, attention_dim: int, dropout: float, branches: int = 1) -> None:
        super().__init__()
        self.V = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.w = nn.Linear(attention_dim, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(self.V(h))


class GatedAttentionNet(nn.Module):
    """CLAM's ``Attn_Net_Gated``: tanh branch times sigmoid gate, then Linear to scores."""

    def __init__(self, dim: int, attention_dim: int, dropout: float, branches: int = 1) -> None:
        super().__init__()
        self.V = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.U = nn.Sequential(nn.Linear(dim, attention_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(attention_dim, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(self.V(h) * self.U(h))


class _AttentionMIL(MILModel):
    gated: bool = True
    supports_branches = True

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        net = GatedAttentionNet if self.gated else AttentionNet
        self.attention = net(
            self.hidden_dim, self.hparams["attention_dim"], self.hparams["dropout"], self.branches
        )
        self.add_output_head()

    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention(h)


@register_model("gated_abmil")
class GatedABMIL(_AttentionMIL):
    """Gated attention-MIL, the default model."""

    gated = True


@register_model("abmil")
class ABMIL(_AttentionMIL):
    """Attention-MIL without the gate."""

    gated = False
