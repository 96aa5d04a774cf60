"""Which tiles made the prediction: ``explain(model, bag, method)`` -> one score per tile.

Every method answers for one target class (by default the predicted one) and returns a float64
array in the bag's tile order; higher means "more evidence for the target". Methods:

* ``attention``: the pooling weights of an attention model (Ilse et al., ICML 2018), or the
  class token's attention in the last layer of a transformer, averaged over heads.
* ``rollout``: attention rollout (Abnar & Zuidema, ACL 2020) across the transformer MIL layers:
  the class token's row of ``prod_l (0.5 A_l + 0.5 I)`` (head-averaged, rows renormalised).
* ``chefer_iccv2021``: gradient-weighted attention rollout, the rule of Chefer, Gur & Wolf,
  "Generic Attention-model Explainability", ICCV 2021 (their code's rule for every
  transformer): ``R = I``, then per layer ``R += mean_h((dy/dA_l * A_l)^+) R``; the class row.
  (Called ``relevance`` in earlier releases.)
* ``chefer_cvpr2021``: the full method of Chefer, Gur & Wolf, "Transformer Interpretability
  Beyond Attention Visualization", CVPR 2021: per layer ``A_l' = I + mean_h((dy/dA_l *
  R(A_l))^+)``, where ``R(A_l)`` is the layer-wise relevance (LRP) of the attention matrix
  itself, then ``prod_l A_l'``; the class row. Their LRP uses their own rules (alpha-beta);
  here ``R(A_l)`` is the LRP-0 relevance under the xMIL rules (:mod:`wsi_mil.explain.lrp`),
  scaled to a target relevance of magnitude 1 (they start from a one-hot output):
  ``R(A_l) = A_l * d y~ / d A_l / |y~|`` with ``y~`` the logit under those rules. The magnitude,
  not the sign: dividing by a negative logit (the tumour logit of a benign slide) would turn
  every relevance round, and the positive part would then keep only the evidence against the
  class (a first version did, and its maps were constant on such slides).
* ``lrp``: layer-wise relevance propagation with the xMIL rules (Hense et al., "xMIL", NeurIPS
  2024): :mod:`wsi_mil.explain.lrp`; all models. Relevances sum to the logit less the share the
  biases (and a transformer's class token) absorb.
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
  where the LN-rule gives 0.97 (``tests/wsi_mil/explain/test_methods.py``). Not for
  ``mean_pool`` / ``max_pool``: their "attention" is not in the graph of their logits.
* ``perturbation``: drop one tile, the change of the target logit (xMIL's "perturbation drop",
  an occlusion method): :mod:`wsi_mil.explain.perturbation`.
* ``keep_one``: the target logit of the bag made of that tile alone, less that of a bag of one
  all-zero tile (xMIL's "perturbation keep", centred so that its sign says "evidence for").
  On TransMIL bounded by ``max_perturbation_tiles`` too: each one-tile bag is padded to 128
  Nyström landmarks, whose pseudo-inverse costs about as much as a 1 000-tile bag.
* ``segmentation``: the tile-level segmentation head's probability of the target class.
* ``random``: uniform noise from ``seed``, the baseline every score is compared with.

``rollout`` and the two Chefer rules need a transformer (attention pooling has one attention
layer and no token mixing); :func:`available_methods` lists what a model supports. TransMIL's
PPEG (depth-wise convolutions between its two attention layers) also mixes tokens: ``lrp``,
the gradient methods and the perturbations include it, ``rollout`` and the Chefer rules (which
compose attention matrices only) leave it out; :func:`ppeg_mixing_share` measures how much of
the tokens' signal it moves (``docs/explanations.md``). Memory: ``attention``, ``lrp``,
``gradient_x_input``, ``segmentation`` and ``random`` cost one forward (and backward) pass;
``integrated_gradients`` ``ig_steps`` of them; the perturbations one pass per tile on
transformers (closed form on the others); on transformers ``rollout``, the Chefer rules and
``attention_x_gradient`` hold every layer's ``heads x T x T`` attention matrix, so they are
quadratic in the bag size (2 GB per layer at 8 000 tiles and 8 heads, twice that with its
gradient): bags above ``max_quadratic_tiles`` are refused with a clear error instead of
exhausting memory.

How the sign of each map is read (:data:`SIGNED`): maps of the methods listed there are signed
attributions, positive for evidence for the target and negative against it; every other map is
non-negative by construction.
"""

from __future__ import annotations

from typing import TypeGuard

import numpy as np
import torch

from wsi_mil.errors import WsiMilError
from wsi_mil.explain.params import METHOD_NAMES, RENAMED, ExplainParams
from wsi_mil.extras import require_extra
from wsi_mil.mil.models import MILModel, MILOutput
from wsi_mil.mil.models.base import logits_fn
from wsi_mil.mil.models.pooling import _PoolingMIL
from wsi_mil.mil.models.transformers import TransMIL, _TransformerMIL

METHODS = METHOD_NAMES
#: methods that need a transformer's per-layer attention matrices.
TRANSFORMER_ONLY = ("rollout", "chefer_iccv2021", "chefer_cvpr2021")
#: methods whose maps are signed attributions (negative: evidence against the target).
SIGNED = (
    "lrp",
    "gradient_x_input",
    "integrated_gradients",
    "attention_x_gradient",
    "perturbation",
    "keep_one",
)
#: default largest bag for which a transformer's full attention matrices are built.
MAX_QUADRATIC_TILES = ExplainParams.max_quadratic_tiles
#: default largest bag on which a transformer leaves each tile out in turn.
MAX_PERTURBATION_TILES = ExplainParams.max_perturbation_tiles


class ExplainError(WsiMilError, ValueError):
    """A method that cannot explain this model or bag."""


def is_transformer(model: MILModel) -> TypeGuard[_TransformerMIL]:
    return isinstance(model, _TransformerMIL)


def available_methods(model: MILModel) -> list[str]:
    """The methods of :data:`METHODS` that run on ``model``: the transformer-only ones on
    transformers, ``attention_x_gradient`` where the attention is in the logits' graph."""
    out = []
    for method in METHODS:
        if method in TRANSFORMER_ONLY and not is_transformer(model):
            continue
        if method == "attention_x_gradient" and isinstance(model, _PoolingMIL):
            continue
        out.append(method)
    return out


def _as_bag(model: MILModel, bag: np.ndarray | torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(bag) if not isinstance(bag, torch.Tensor) else bag)
    x = x.to(device=device, dtype=torch.float32)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ExplainError(
            f"a bag is [tiles, features] with at least one tile, got {tuple(x.shape)}"
        )
    return x


def _check_quadratic(model: MILModel, n: int, max_tiles: int, method: str) -> None:
    if n > max_tiles:
        raise ExplainError(
            f"{method} on {model.name} builds {n} x {n} attention matrices; "
            f"bags above {max_tiles} tiles are refused (raise "
            "max_quadratic_tiles if memory allows)"
        )


def _recorded(
    model: _TransformerMIL,
    x: torch.Tensor,
    coords: torch.Tensor | None,
    target: int,
    max_tiles: int,
    method: str,
) -> torch.Tensor:
    """Forward with recorded attention; returns the target logit (graph kept)."""
    _check_quadratic(model, x.shape[0], max_tiles, method)
    return model(x, coords=coords, record=True).logits[0, target]


def _to_tiles(row: torch.Tensor, tiles: torch.Tensor, n: int) -> np.ndarray:
    """A class-token row over the tokens after the class token -> per tile (repeats summed)."""
    out = row.new_zeros(n).index_add(0, tiles, row)
    return out.detach().double().cpu().numpy()


def rollout_scores(
    model: _TransformerMIL, x: torch.Tensor, coords: torch.Tensor | None, max_tiles: int
) -> np.ndarray:
    """Abnar & Zuidema's rollout over the recorded layers (see the module docstring)."""
    with torch.no_grad():
        _recorded(model, x, coords, 0, max_tiles, "rollout")
        result: torch.Tensor | None = None
        for record in model.records:
            a = record.matrix.mean(0)
            a = 0.5 * a + 0.5 * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
            a = a / a.sum(-1, keepdim=True)
            result = a if result is None else a @ result
        assert result is not None, "a transformer has at least one attention layer"
        return _to_tiles(result[0, 1:], model.records[0].tiles, x.shape[0])


def _weighted_rollout(cams: list[torch.Tensor]) -> torch.Tensor:
    """``prod_l (I + cam_l)``, first layer rightmost: Chefer et al.'s rollout of the
    per-layer relevance maps (``R = I; R += cam_l R``)."""
    eye = torch.eye(cams[0].shape[-1], dtype=cams[0].dtype, device=cams[0].device)
    relevance = eye
    for cam in cams:
        relevance = relevance + cam @ relevance
    return relevance


def chefer_iccv2021_scores(
    model: _TransformerMIL,
    x: torch.Tensor,
    coords: torch.Tensor | None,
    target: int,
    max_tiles: int,
) -> np.ndarray:
    """Chefer et al.'s ICCV 2021 gradient-weighted rollout (see the module docstring)."""
    logit = _recorded(model, x, coords, target, max_tiles, "chefer_iccv2021")
    matrices = [r.matrix for r in model.records]
    grads = torch.autograd.grad(logit, matrices)
    with torch.no_grad():
        cams = [(g * a).clamp_min(0).mean(0) for a, g in zip(matrices, grads)]
        return _to_tiles(_weighted_rollout(cams)[0, 1:], model.records[0].tiles, x.shape[0])


def chefer_cvpr2021_scores(
    model: _TransformerMIL,
    x: torch.Tensor,
    coords: torch.Tensor | None,
    target: int,
    max_tiles: int,
) -> np.ndarray:
    """Chefer et al.'s CVPR 2021 relevance: gradients times the LRP relevance of each attention
    matrix, rolled out (see the module docstring)."""
    logit = _recorded(model, x, coords, target, max_tiles, "chefer_cvpr2021")
    tiles = model.records[0].tiles
    grads = torch.autograd.grad(logit, [r.matrix for r in model.records])
    model.records = []
    with model.lrp_rules():  # the attention matrices are leaves: their LRP relevance is A dy/dA
        lrp_logit = model(x, coords=coords, record=True).logits[0, target]
        matrices = [r.matrix for r in model.records]
        lrp_grads = torch.autograd.grad(lrp_logit, matrices)
    with torch.no_grad():
        total = max(abs(float(lrp_logit)), 1e-12)  # relevance of magnitude 1 at the logit
        cams = [
            (g * (a * lg / total)).clamp_min(0).mean(0)
            for a, lg, g in zip(matrices, lrp_grads, grads)
        ]
        return _to_tiles(_weighted_rollout(cams)[0, 1:], tiles, x.shape[0])


def attention_x_gradient_scores(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int, max_tiles: int
) -> np.ndarray:
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


def gradient_x_input_scores(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int
) -> np.ndarray:
    require_extra("explain", "gradient x input")
    from captum.attr import InputXGradient

    attr = InputXGradient(logits_fn(model, coords)).attribute(x.unsqueeze(0), target=target)
    return attr[0].sum(-1).detach().double().cpu().numpy()


def integrated_gradients_scores(
    model: MILModel, x: torch.Tensor, coords: torch.Tensor | None, target: int, steps: int = 32
) -> np.ndarray:
    """The zero baseline keeps the bag's tile positions: positions are context, not attributed
    (completeness reads ``logit(bag) - logit(zeros)`` at the same positions)."""
    require_extra("explain", "integrated gradients")
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(logits_fn(model, coords)).attribute(
        x.unsqueeze(0),
        baselines=torch.zeros_like(x).unsqueeze(0),
        target=target,
        n_steps=steps,
        method="gausslegendre",
        internal_batch_size=1,
    )
    return attr[0].sum(-1).detach().double().cpu().numpy()


def explain(
    model: MILModel,
    bag: np.ndarray | torch.Tensor,
    method: str,
    *,
    target: int | None = None,
    seed: int = 0,
    ig_steps: int = 32,
    max_quadratic_tiles: int = MAX_QUADRATIC_TILES,
    max_perturbation_tiles: int = MAX_PERTURBATION_TILES,
    coords: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Per-tile scores ``[N]`` of ``method`` for ``model`` on one bag ``[N, D]``.

    ``target`` is the class explained (None: the predicted class). ``coords`` ``[N, 2]``: the
    tiles' grid positions (:func:`wsi_mil.mil.bags.read_grid_coords`), needed by a model that
    uses them (``model.uses_coords``) and ignored by the others. The model is put in eval mode
    (dropout off) for the explanation and left so.
    """
    if method in RENAMED:
        raise ExplainError(f"{method} is now called {RENAMED[method]}")
    if method not in METHODS:
        raise ExplainError(f"unknown explanation method {method!r}; choose from {list(METHODS)}")
    if method not in available_methods(model):
        if method in TRANSFORMER_ONLY:
            raise ExplainError(
                f"{method} needs a transformer MIL model (transmil, "
                f"transformer_mil); {model.name} has a single attention pooling"
            )
        raise ExplainError(
            f"{method} does not apply to {model.name}: its attention is not in "
            "the graph of its logits"
        )
    model.eval()
    try:
        x = _as_bag(model, bag)
        c = (
            None
            if coords is None
            else torch.as_tensor(np.asarray(coords), dtype=torch.float32, device=x.device)
        )
        return _explain(
            model, x, c, method, target, seed, ig_steps, max_quadratic_tiles, max_perturbation_tiles
        )
    finally:
        if is_transformer(model):
            model.records = []  # free the recorded attention matrices and their graph


def _explain(
    model: MILModel,
    x: torch.Tensor,
    coords: torch.Tensor | None,
    method: str,
    target: int | None,
    seed: int,
    ig_steps: int,
    max_quadratic_tiles: int,
    max_perturbation_tiles: int,
) -> np.ndarray:
    from wsi_mil.explain import lrp, perturbation

    n = x.shape[0]
    if method == "random":
        return np.random.default_rng(seed).random(n)
    # bounds first: a refused bag must not cost a forward pass (minutes at 100 000 tiles)
    if method in (*TRANSFORMER_ONLY, "attention_x_gradient") and is_transformer(model):
        _check_quadratic(model, n, max_quadratic_tiles, method)
    looped = (method == "perturbation" and is_transformer(model)) or (
        method == "keep_one" and isinstance(model, TransMIL)
    )
    if looped and n > max_perturbation_tiles:
        raise ExplainError(
            f"{method} on {model.name} runs the model on a bag per tile; bags "
            f"above {max_perturbation_tiles} tiles are refused (raise "
            "max_perturbation_tiles if time allows)"
        )
    out: MILOutput | None = None
    if target is None or method in ("attention", "segmentation"):
        with torch.no_grad():
            out = model(x, coords=coords)
        if target is None:
            target = int(out.logits[0].argmax())
    if not 0 <= target < model.n_classes:
        raise ExplainError(f"target class {target} out of range for {model.n_classes} classes")
    if method in ("attention", "segmentation"):
        assert out is not None, "the forward pass above runs for these methods"
        if method == "attention":
            weights = out.branch_attention[0]
            branch = target if weights.shape[-1] > 1 else 0
            return weights[:, branch].double().cpu().numpy()
        if getattr(model, "tile_head", True) is None:  # no head: the tile's own risk or value
            return out.tile_logits[0].float()[:, target].double().cpu().numpy()
        return out.tile_logits[0].float().softmax(-1)[:, target].double().cpu().numpy()
    if method in TRANSFORMER_ONLY:
        assert is_transformer(model), "explain() refuses these methods on other models"
        if method == "rollout":
            return rollout_scores(model, x, coords, max_quadratic_tiles)
        if method == "chefer_iccv2021":
            return chefer_iccv2021_scores(model, x, coords, target, max_quadratic_tiles)
        return chefer_cvpr2021_scores(model, x, coords, target, max_quadratic_tiles)
    if method == "lrp":
        return lrp.lrp_relevance(model, x, coords, target).tiles
    if method == "attention_x_gradient":
        return attention_x_gradient_scores(model, x, coords, target, max_quadratic_tiles)
    if method == "perturbation":
        return perturbation.drop_one(model, x, coords, target)
    if method == "keep_one":
        return perturbation.keep_one(model, x, coords, target)
    if method == "gradient_x_input":
        return gradient_x_input_scores(model, x, coords, target)
    return integrated_gradients_scores(model, x, coords, target, ig_steps)


@torch.no_grad()
def ppeg_mixing_share(model: MILModel, bag: np.ndarray | torch.Tensor) -> float:
    """How much of TransMIL's tile tokens PPEG's convolutions move between tokens: the mean over
    tokens of ``|conv7 + conv5 + conv3| / |identity + conv7 + conv5 + conv3|`` (Euclidean norms
    per token) at the PPEG of a forward pass on ``bag``. 0: PPEG passes every token through
    untouched (rollout and the Chefer rules, which leave it out, miss nothing); near 1: the
    tokens after PPEG are mostly their neighbours' mixture."""
    if not isinstance(model, TransMIL):
        raise ExplainError(f"{model.name} has no PPEG (only transmil has)")
    model.eval()
    x = _as_bag(model, bag)
    seen: dict[str, torch.Tensor] = {}
    hook = model.ppeg.register_forward_hook(
        lambda _m, inputs, output: seen.update(inputs=inputs[0], output=output)
    )
    try:
        model(x)
    finally:
        hook.remove()
    before, after = seen["inputs"][1:], seen["output"][1:]
    mixed = (after - before).norm(dim=-1)
    return float((mixed / after.norm(dim=-1).clamp_min(1e-12)).mean())
