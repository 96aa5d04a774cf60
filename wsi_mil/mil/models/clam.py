"""CLAM (Lu et al., Nature Biomedical Engineering 2021): ``clam_sb`` and ``clam_mb``.

Gated attention plus the instance-clustering loss: per class, a binary instance classifier
learns that the ``k`` most attended tiles of a slide of that class are "in class" and the ``k``
least attended are not (and, with ``subtyping``, that the most attended tiles of the other
classes' branches are not). It sharpens attention on small lesions. ``k`` is capped by the bag
size (at most half the tiles are "top"), and the two sets never overlap, so a one-tile bag
gives one "in class" tile and no negatives rather than an index error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from wsi_mil.mil.models.attention import GatedAttentionNet
from wsi_mil.mil.models.base import MILModel
from wsi_mil.mil.models.registry import register_model


def top_bottom_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` highest and ``k`` lowest scores.

    Capped by the bag size: at most half the tiles (rounded up) count as "top", the rest of
    the cap as "bottom", so the sets never overlap and a one-tile bag has one top tile.
    """
    n = scores.shape[0]
    k_top = min(k, (n + 1) // 2)
    k_bottom = min(k, n - k_top)
    order = torch.argsort(scores, descending=True)
    return order[:k_top], order[n - k_bottom :] if k_bottom else order[:0]


class _CLAM(MILModel):
    def __init__(
        self, in_dim: int, n_classes: int, k_sample: int = 8, subtyping: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        self.hparams.update(k_sample=int(k_sample), subtyping=bool(subtyping))
        self.attention = GatedAttentionNet(
            self.hidden_dim, self.hparams["attention_dim"], self.hparams["dropout"], self.branches
        )
        self.instance_classifiers = nn.ModuleList(
            nn.Linear(self.hidden_dim, 2) for _ in range(n_classes)
        )

    def attention_scores(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention(h)

    def instance_loss(
        self, h: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean over bags of CLAM's instance loss (cross-entropy on top/bottom-k tiles).

        ``labels`` ``[B]`` class indices, or ``[B, C]`` 0/1 targets (a multilabel run): every
        target present in a bag is an "in class" output for it, and the top tiles of an
        absent target's branch are pushed to "not this class" (the subtyping term: a slide
        without the target has none of its tiles).
        """
        k = self.hparams["k_sample"]
        multilabel = labels.dim() == 2
        losses = []
        for b in range(h.shape[0]):
            real = mask[b]
            hb, wb = h[b][real], weights[b][real]  # [n, H], [n, K]
            total = h.new_zeros(())
            for c in range(self.n_classes):
                scores = wb[:, c if self.one_branch_per_class else 0]
                top, bottom = top_bottom_k(scores, k)
                present = bool(labels[b, c] > 0.5) if multilabel else c == int(labels[b])
                if present:
                    idx = torch.cat([top, bottom])
                    target = torch.cat([torch.ones_like(top), torch.zeros_like(bottom)])
                elif self.hparams["subtyping"] or multilabel:
                    idx, target = top, torch.zeros_like(top)
                else:
                    continue
                logits = self.instance_classifiers[c](hb[idx])
                total = total + F.cross_entropy(logits.float(), target)
            if self.hparams["subtyping"] or multilabel:
                total = total / self.n_classes
            losses.append(total)
        return torch.stack(losses).mean()


@register_model("clam_sb")
class CLAMSingleBranch(_CLAM):
    """CLAM with one attention branch shared by all classes."""

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        self.add_output_head()


@register_model("clam_mb")
class CLAMMultiBranch(_CLAM):
    """CLAM with one attention branch and one bag classifier per class."""

    one_branch_per_class = True

    def __init__(self, in_dim: int, n_classes: int, **kwargs: Any) -> None:
        super().__init__(in_dim, n_classes, **kwargs)
        self.add_output_head()
