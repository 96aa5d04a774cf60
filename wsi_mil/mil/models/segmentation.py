"""Training targets for the tile-level segmentation head, from slide labels or tile labels.

The head is a per-tile classifier on the tile embeddings. Slide labels give it weak but
reliable supervision: every tile of a *negative* slide is negative (a normal lymph node has no
tumour anywhere), while in a positive slide only some tiles are positive, so, as in CLAM's
instance loss, the ``k`` most attended tiles are taken as positive (of the slide's class) and
the ``k`` least attended as negative. Where a bag carries ``tile_labels`` (lesion fraction per
tile, e.g. from annotations) they replace the pseudo-labels for that slide: a tile is of the
slide's class when its fraction reaches ``threshold``, negative otherwise.

The negative class is one of the label classes (named, or recognised by its name: ``benign``,
``normal``, ``0``, ...); with more than two classes every other class is a "positive" subtype,
and tiles of a slide of class ``c`` are pseudo-labelled ``c``.

Without a negative class (subtyping: ``luad``/``lusc``) and for multilabel targets, no tile is
"lesion-free" by its slide's label, so the head is **one-vs-rest**, one sigmoid per class or
target (:func:`one_vs_rest_segmentation_loss`): output ``c`` learns that the ``k`` most
attended tiles of a slide with ``c`` (ranked by ``c``'s branch when the model has one per
output) are ``c`` and its ``k`` least attended are not, and that *every* tile of a slide
without ``c`` is not ``c`` (a LUAD slide holds no LUSC tumour; a slide whose target is 0 has
none of that lesion). That is each class's tiles against the other classes', the per-class
form of the negative-class rule, and the heatmap of output ``c`` is that class's map.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from wsi_mil.mil.models.base import MILOutput
from wsi_mil.mil.models.clam import top_bottom_k


def segmentation_loss(
    out: MILOutput,
    mask: torch.Tensor,
    labels: torch.Tensor,
    tile_labels: torch.Tensor,
    *,
    negative_index: int,
    k: int,
    threshold: float = 0.5,
    rank_by_attention: bool = True,
) -> torch.Tensor:
    """Mean over bags of the head's cross-entropy on its tile targets.

    ``tile_labels`` ``[B, N]`` is NaN where unknown; a bag uses its tile labels only when all
    its real tiles have one. ``rank_by_attention`` False ranks tiles by the head's own
    (detached) score for the slide's class instead (for models without learned attention).
    """
    losses = []
    for b in range(out.logits.shape[0]):
        real = mask[b]
        y = int(labels[b])
        logits = out.tile_logits[b][real].float()  # [n, C]
        known = tile_labels[b][real]
        if y == negative_index:
            idx = torch.arange(logits.shape[0], device=logits.device)
            target = torch.full_like(idx, negative_index)
        elif not torch.isnan(known).any():
            idx = torch.arange(logits.shape[0], device=logits.device)
            target = torch.where(known >= threshold, y, negative_index).long()
        else:
            if rank_by_attention:
                branch = y if out.branch_attention.shape[-1] > 1 else 0
                scores = out.branch_attention[b][real][:, branch]
            else:
                scores = logits.detach().softmax(dim=1)[:, y]
            top, bottom = top_bottom_k(scores, k)
            idx = torch.cat([top, bottom])
            target = torch.cat([torch.full_like(top, y), torch.full_like(bottom, negative_index)])
        losses.append(F.cross_entropy(logits[idx], target))
    return torch.stack(losses).mean()


def one_vs_rest_segmentation_loss(
    out: MILOutput,
    mask: torch.Tensor,
    present: torch.Tensor,
    tile_labels: torch.Tensor,
    *,
    k: int,
    threshold: float = 0.5,
    rank_by_attention: bool = True,
) -> torch.Tensor:
    """Mean over bags of the one-vs-rest head's binary cross-entropy (the module docstring).

    ``present`` ``[B, C]``: 1 where the bag has class or target ``c`` (one-hot for subtyping,
    the 0/1 targets for multilabel). A bag's ``tile_labels`` (lesion fraction) stand for its
    pseudo-labels when it has exactly one output present and every real tile has one.
    """
    losses = []
    n_out = out.tile_logits.shape[-1]
    for b in range(out.logits.shape[0]):
        real = mask[b]
        logits = out.tile_logits[b][real].float()  # [n, C]
        known = tile_labels[b][real]
        on = present[b] > 0.5
        n = logits.shape[0]
        target = torch.zeros_like(logits)
        weight = torch.zeros_like(logits)
        weight[:, ~on] = 1.0  # every tile of a bag without c is not c
        for c in torch.nonzero(on).flatten().tolist():
            if int(on.sum()) == 1 and not torch.isnan(known).any():
                target[:, c] = (known >= threshold).float()
                weight[:, c] = 1.0
                continue
            if rank_by_attention:
                branch = c if out.branch_attention.shape[-1] == n_out and n_out > 1 else 0
                scores = out.branch_attention[b][real][:, branch]
            else:
                scores = logits[:, c].detach()
            top, bottom = top_bottom_k(scores, k)
            target[top, c] = 1.0
            weight[top, c] = 1.0
            weight[bottom, c] = 1.0
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        losses.append((bce * weight).sum() / weight.sum().clamp_min(1.0) if n else bce.sum())
    return torch.stack(losses).mean()
