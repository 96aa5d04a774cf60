"""Layer-wise relevance propagation (LRP) for every MIL model, with the xMIL rules.

Hense et al., "xMIL: Insightful Explanations for Multiple Instance Learning in
Histopathology" (NeurIPS 2024; code ``bifold-pathomics/xMIL``, ``xai/explanation.py``
``explain_lrp_gi`` and the models' ``activations``): relevance of the target logit is propagated
back to the tiles with

* the **AH-rule** for attention: the attention weights (attention pooling's softmax, a
  transformer's attention matrices, TransMIL's Nyström factors) are a gate, held constant, so
  relevance flows through the values only (``detach_attn=True`` in their code);
* the **LN-rule** for LayerNorm (Ali et al., "XAI for Transformers: Better Explanations
  through Conservative Propagation", ICML 2022): the normalising scale is held constant;
* LRP-0 for linear and convolutional layers (xMIL's default ``gamma = 0``, ``eps`` -> 0), so
  ReLU passes relevance to the units it lets through; other element-wise activations (the GELU
  of ``transformer_mil``'s MLP) pass relevance unchanged (the identity rule);
* TransMIL's PPEG convolutions and the Nyström layer's residual convolution are linear token
  mixers and propagate relevance like any linear layer (xMIL's ``detach_pe=False``, their
  default).

With those rules every remaining operation is linear in the input (or ReLU, which is linear
where it is active), so layer-by-layer LRP-0 equals gradient x input of the modified forward
pass (Ancona et al., ICLR 2018; it is how xMIL and Ali et al. compute it):
:meth:`wsi_mil.mil.models.base.MILModel.lrp_rules` makes the modifications and Captum's
``InputXGradient`` takes the product. Captum's own ``LRP`` class does not fit: it propagates
module by module with a rule per module type and cannot see the functional operations these
models are made of (the softmax-weighted sums, the attention products, the gate), nor treat
the attention as a gate or the LayerNorm with the LN-rule; xMIL hand-writes its propagation
for the same reason.

**Conservation**: without biases the modified forward pass is positively homogeneous of degree
1 in the tile features (linear maps, ReLU, constant gates and scales), so by Euler's theorem the
tiles' relevances sum exactly to the target logit. Biases take their share (LRP-0 leaves a
bias's relevance at the bias; on transformers the class token and the positional embedding
are such constant inputs too): ``sum_i R_i + bias_share = logit``. :class:`Relevance` reports
both; ``tests/wsi_mil/explain/test_lrp.py`` checks that with the biases (and the class token)
zeroed the relevances sum to the logit on every model, and that the share is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wsi_mil.extras import require_extra
from wsi_mil.mil.models import MILModel
from wsi_mil.mil.models.base import logits_fn


@dataclass(frozen=True)
class Relevance:
    """One bag's LRP relevance of the target logit."""

    tiles: np.ndarray  # [N] relevance per tile (summed over its features)
    logit: float  # the target logit
    bias_share: float  # relevance absorbed by biases and constant inputs: logit - sum(tiles)


def lrp_relevance(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int
) -> Relevance:
    """LRP relevance per tile of ``model``'s ``target`` logit on one bag ``x`` ``[N, D]``."""
    require_extra("explain", "LRP")
    from captum.attr import InputXGradient

    model.eval()
    with model.lrp_rules():
        forward = logits_fn(model, coords)
        attr = InputXGradient(forward).attribute(x.unsqueeze(0), target=target)[0]
        with torch.no_grad():
            logit = float(forward(x.unsqueeze(0))[0, target])
    tiles = attr.sum(-1).detach().double().cpu().numpy()
    return Relevance(tiles=tiles, logit=logit, bias_share=logit - float(tiles.sum()))
