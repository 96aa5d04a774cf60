"""Which tiles made the prediction: ``explain(model, bag, method)`` -> one score per tile.

Every method answers for one target class (by default the predicted one) and returns a float64
array in the bag's tile order; higher means "more evidence for the target". Methods:

* ``attention``: the pooling weights of an attention model (Ilse et al., ICML 2018), or the
  class token's attention in the last layer of a transformer, averaged over heads.
* ``rollout``: attention rollout (Abnar & Zuidema, ACL 2020) across the transformer MIL layers:
  the class token's row of ``prod_l (0.5 A_l + 0.5 I)`` (head-averaged, rows renormalised).
* ``relevance``: gradient-weighted attention relevance (Chefer, Gur & Wolf, CVPR 2021, in the
  attention-only form of their follow-up, ICCV 2021, which their code uses for every
  transformer): ``R = I``, then per layer ``R += mean_h((dy/dA_l * A_l)^+) R``; the class row.
* ``gradient_x_input``: the logit's gradient times the tile features (Shrikumar et al. 2016),
  summed over the feature dimensions of each tile; Captum's ``InputXGradient``.
* ``integrated_gradients``: Sundararajan, Taly & Yan (ICML 2017), from the all-zero bag (the
  features of "no tissue signal") in ``ig_steps`` steps; Captum's ``IntegratedGradients``.
  Completeness holds: the scores sum to ``logit(bag) - logit(zeros)`` up to the quadrature error.
* ``attention_x_gradient``: a Grad-CAM analogue for MIL (Selvaraju et al., ICCV 2017): each
  tile's attention weight times the gradient of the target logit with respect to it, i.e. its
  first-order contribution to the logit (for attention pooling, ``a_i w_c . h_i``). On
  transformers (the class token's last-layer attention, heads summed) the gradient is taken
  with every LayerNorm's scale held constant (Ali et al., ICML 2022, the "LN-rule"): through
  the final LayerNorm the plain gradient removes the direction of the class token's own output,
  i.e. what the attended lesion tiles contributed, and ranked planted tiles at tile AUC 0.57
  where the LN-rule gives 0.97 (``tests/wsi_mil/explain/test_methods.py``).
* ``segmentation``: the tile-level segmentation head's probability of the target class.
* ``random``: uniform noise from ``seed``, the baseline every score is compared with.

``rollout`` and ``relevance`` need a transformer (attention pooling has one attention layer and
no token mixing); :func:`available_methods` lists what a model supports. Memory: ``attention``,
``gradient_x_input``, ``segmentation`` and ``random`` cost one forward (and backward) pass;
``integrated_gradients`` ``ig_steps`` of them (one bag per step); on transformers ``rollout``,
``relevance`` and ``attention_x_gradient`` hold every layer's ``heads x T x T`` attention
matrix, so they are quadratic in the bag size (2 GB per layer at 8 000 tiles and 8 heads,
twice that with its gradient): bags above ``max_quadratic_tiles`` are refused with a clear
error instead of exhausting memory.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from wsi_mil.explain.params import METHOD_NAMES
from wsi_mil.mil.models import MILModel
from wsi_mil.mil.models.transformers import _TransformerMIL

METHODS = METHOD_NAMES
#: methods that need a transformer's per-layer attention matrices.
TRANSFORMER_ONLY = ("rollout", "relevance")
#: default largest bag for which a transformer's full attention matrices are built.
MAX_QUADRATIC_TILES = 8000


class ExplainError(ValueError):
    """A method that cannot explain this model or bag."""


def is_transformer(model: MILModel) -> bool:
    return isinstance(model, _TransformerMIL)


def available_methods(model: MILModel) -> list[str]:
    """The methods of :data:`METHODS` that apply to ``model``."""
    return [m for m in METHODS if is_transformer(model) or m not in TRANSFORMER_ONLY]


def _as_bag(model: MILModel, bag: np.ndarray | torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(bag) if not isinstance(bag, torch.Tensor) else bag)
    x = x.to(device=device, dtype=torch.float32)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ExplainError(f"a bag is [tiles, features] with at least one tile, got "
                           f"{tuple(x.shape)}")
    return x


def _recorded(model: _TransformerMIL, x: torch.Tensor, coords: torch.Tensor | None,
              target: int, max_tiles: int, method: str) -> torch.Tensor:
    """Forward with recorded attention; returns the target logit (graph kept)."""
    if x.shape[0] > max_tiles:
        raise ExplainError(f"{method} on {model.name} builds {x.shape[0]} x {x.shape[0]} "
                           f"attention matrices; bags above {max_tiles} tiles are refused "
                           "(raise max_quadratic_tiles if memory allows)")
    return model(x, coords=coords, record=True).logits[0, target]


def _to_tiles(row: torch.Tensor, tiles: torch.Tensor, n: int) -> np.ndarray:
    """A class-token row over the tokens after the class token -> per tile (repeats summed)."""
    out = row.new_zeros(n).index_add(0, tiles, row)
    return out.detach().double().cpu().numpy()


def rollout_scores(model: _TransformerMIL, x: torch.Tensor, coords: torch.Tensor | None,
                   max_tiles: int) -> np.ndarray:
    """Abnar & Zuidema's rollout over the recorded layers (see the module docstring)."""
    with torch.no_grad():
        _recorded(model, x, coords, 0, max_tiles, "rollout")
        result = None
        for record in model.records:
            a = record.matrix.mean(0)
            a = 0.5 * a + 0.5 * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
            a = a / a.sum(-1, keepdim=True)
            result = a if result is None else a @ result
        return _to_tiles(result[0, 1:], model.records[0].tiles, x.shape[0])


def relevance_scores(model: _TransformerMIL, x: torch.Tensor, coords: torch.Tensor | None,
                     target: int, max_tiles: int) -> np.ndarray:
    """Chefer et al.'s gradient-weighted relevance (see the module docstring)."""
    logit = _recorded(model, x, coords, target, max_tiles, "relevance")
    matrices = [r.matrix for r in model.records]
    grads = torch.autograd.grad(logit, matrices)
    with torch.no_grad():
        t = matrices[0].shape[-1]
        relevance = torch.eye(t, dtype=matrices[0].dtype, device=x.device)
        for a, g in zip(matrices, grads):
            cam = (g * a).clamp_min(0).mean(0)
            relevance = relevance + cam @ relevance
        return _to_tiles(relevance[0, 1:], model.records[0].tiles, x.shape[0])


def attention_x_gradient_scores(model: MILModel, x: torch.Tensor, coords: torch.Tensor | None,
                                target: int, max_tiles: int) -> np.ndarray:
    """Each tile's attention times the target logit's gradient with respect to it."""
    if is_transformer(model):
        with model.detached_norm_scale():  # the LN-rule (see the module docstring)
            logit = _recorded(model, x, coords, target, max_tiles, "attention_x_gradient")
            last = model.records[-1]
            (grad,) = torch.autograd.grad(logit, last.matrix)
        row = (last.matrix[:, 0, 1:] * grad[:, 0, 1:]).sum(0)
        return _to_tiles(row, last.tiles, x.shape[0])
    out = model(x, coords=coords)
    weights = out.branch_attention  # [1, N, K], the tensor pooling used
    (grad,) = torch.autograd.grad(out.logits[0, target], weights)
    branch = target if weights.shape[-1] > 1 else 0
    return (weights * grad)[0, :, branch].detach().double().cpu().numpy()


def _logits_fn(model: MILModel, coords: torch.Tensor | None):
    """The logits of a batch of copies of the bag (Captum's calls), at the bag's positions."""
    def forward(batch: torch.Tensor) -> torch.Tensor:
        c = None if coords is None else coords.expand(batch.shape[0], -1, -1)
        return model(batch, coords=c).logits
    return forward


def gradient_x_input_scores(model: MILModel, x: torch.Tensor, coords: torch.Tensor | None,
                            target: int) -> np.ndarray:
    from captum.attr import InputXGradient

    attr = InputXGradient(_logits_fn(model, coords)).attribute(x.unsqueeze(0), target=target)
    return attr[0].sum(-1).detach().double().cpu().numpy()


def integrated_gradients_scores(model: MILModel, x: torch.Tensor, coords: torch.Tensor | None,
                                target: int, steps: int = 32) -> np.ndarray:
    """The zero baseline keeps the bag's tile positions: positions are context, not attributed
    (completeness reads ``logit(bag) - logit(zeros)`` at the same positions)."""
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(_logits_fn(model, coords)).attribute(
        x.unsqueeze(0), baselines=torch.zeros_like(x).unsqueeze(0), target=target,
        n_steps=steps, method="gausslegendre", internal_batch_size=1)
    return attr[0].sum(-1).detach().double().cpu().numpy()


def explain(model: MILModel, bag: np.ndarray | torch.Tensor, method: str, *,
            target: int | None = None, seed: int = 0, ig_steps: int = 32,
            max_quadratic_tiles: int = MAX_QUADRATIC_TILES,
            coords: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Per-tile scores ``[N]`` of ``method`` for ``model`` on one bag ``[N, D]``.

    ``target`` is the class explained (None: the predicted class). ``coords`` ``[N, 2]``: the
    tiles' grid positions (:func:`wsi_mil.mil.bags.read_grid_coords`), needed by a model that
    uses them (``model.uses_coords``) and ignored by the others. The model is put in eval mode
    (dropout off) for the explanation and left so.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown explanation method {method!r}; choose from {list(METHODS)}")
    if method not in available_methods(model):
        raise ExplainError(f"{method} needs a transformer MIL model (transmil, "
                           f"transformer_mil); {model.name} has a single attention pooling")
    model.eval()
    try:
        x = _as_bag(model, bag)
        c = None if coords is None else torch.as_tensor(np.asarray(coords), dtype=torch.float32,
                                                          device=x.device)
        return _explain(model, x, c, method, target, seed, ig_steps, max_quadratic_tiles)
    finally:
        if is_transformer(model):
            model.records = []  # free the recorded attention matrices and their graph


def _explain(model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, method: str,
             target: int | None, seed: int, ig_steps: int,
             max_quadratic_tiles: int) -> np.ndarray:
    n = x.shape[0]
    if method == "random":
        return np.random.default_rng(seed).random(n)
    with torch.no_grad():
        out = model(x, coords=coords)
    if target is None:
        target = int(out.logits[0].argmax())
    if not 0 <= target < model.n_classes:
        raise ExplainError(f"target class {target} out of range for {model.n_classes} classes")
    if method == "attention":
        weights = out.branch_attention[0]
        branch = target if weights.shape[-1] > 1 else 0
        return weights[:, branch].double().cpu().numpy()
    if method == "segmentation":
        if getattr(model, "tile_head", True) is None:  # no head: the tile's own risk or value
            return out.tile_logits[0].float()[:, target].double().cpu().numpy()
        return out.tile_logits[0].float().softmax(-1)[:, target].double().cpu().numpy()
    if method == "rollout":
        return rollout_scores(model, x, coords, max_quadratic_tiles)
    if method == "relevance":
        return relevance_scores(model, x, coords, target, max_quadratic_tiles)
    if method == "attention_x_gradient":
        return attention_x_gradient_scores(model, x, coords, target, max_quadratic_tiles)
    if method == "gradient_x_input":
        return gradient_x_input_scores(model, x, coords, target)
    return integrated_gradients_scores(model, x, coords, target, ig_steps)


def randomised_copy(model: MILModel, seed: int = 0) -> MILModel:
    """The model with every weight re-initialised (Adebayo et al.'s full model-parameter
    randomisation): a copy, so the trained model is untouched."""
    torch.manual_seed(seed)
    if is_transformer(model):
        model.records = []  # recorded attention is part of an autograd graph: not copyable
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if module is not clone and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for param in clone.parameters(recurse=False):  # e.g. a transformer's class token
        with torch.no_grad():
            param.normal_(0.0, 0.02)
    return clone.eval()
