"""Where a pixel segmenter looks when it outlines a lesion: explanation maps inside windows.

Every method answers one question for a batch of windows ``x`` ``[B, 3, T, T]`` (normalised
as :func:`wsi_mil.segment.nets.to_input` makes them) and returns float maps ``[B, T, T]``:
which pixels made the network call the pixels of ``region`` lesion. ``region`` ``[B, T, T]``
is the segmenter's own mask (lesion probability >= the mask threshold), and the quantity
explained is the **lesion log-odds summed over that mask**, ``sum_{p in region} (z_lesion -
z_background)_p`` (Vinogradova et al., AAAI 2020, "Seg-Grad-CAM": a segmentation's score is its
class logit summed over the pixels it claims). Over the mask rather than the whole window: the
question is why the network outlined what it outlined; summed over the whole window, the many
background pixels (strongly negative log-odds) would dominate and the map would explain why
the tissue around the lesion is not lesion. The log-odds rather than the lesion logit alone:
with two softmax classes only their difference matters. A window whose mask is empty has
nothing to explain, and every target-dependent map of it is zero.

Methods (:data:`NETWORK_METHODS` says which network has which):

* ``attention_rollout`` (UNETR): Abnar & Zuidema's rollout (ACL 2020) through the 12 layers of
  UNETR's ViT, read from MONAI's own ``SABlock.save_attn`` matrices: per layer the
  head-averaged attention mixed with the residual, ``0.5 A + 0.5 I`` (rows renormalised),
  multiplied from the first layer to the last. UNETR has no class token, so the map of token
  ``j`` is ``sum_i w_i R[i, j]`` with ``w_i`` the share of patch ``i`` inside ``region``: how
  much each patch fed the tokens of the outlined lesion. Class-agnostic (no gradient).
* ``relevance`` (UNETR): Chefer, Gur & Wolf's gradient-weighted relevance (CVPR 2021, the
  attention-only rule of their ICCV 2021 code, as :mod:`wsi_mil.explain.methods` applies it to
  MIL transformers): ``R = I``, then per layer ``R += mean_h((dy/dA * A)^+) R``, read with the
  same row weights ``w``. ``save_attn`` stores a detached copy, so the attention with its
  gradient is taken from a forward hook on the ``SABlock``'s ``drop_weights`` (identity in eval
  mode), the tensor that multiplies the values.
* ``gradcam``: Grad-CAM (Selvaraju et al., ICCV 2017; Captum's ``LayerGradCam``) at one stage,
  by default the deepest encoder stage at 1/8 of the window's side or finer
  (:func:`gradcam_layer_name`): the U-Nets' bottleneck (with four levels), Swin-UNETR's
  ``encoder4`` (its Swin stage 3; the bottleneck ``encoder10`` is at 1/32, 2 x 2 cells on a
  64-px window), UNETR's ``encoder4`` (its 9th layer's tokens, once upsampled).
* ``attention_gates`` (Attention U-Net): the gate coefficients (Oktay et al., MIDL 2018) of every
  decoder level, read by a forward hook on each MONAI ``AttentionBlock``'s ``psi`` (the
  sigmoid that multiplies the skip connection), upsampled to the window. The map is their mean;
  ``attention_gates_level<k>`` (1: the full-resolution skip) are the levels. The gates depend on
  the input only, not on the target: they are the network's own "where to look", in every
  window.
* ``integrated_gradients``: Sundararajan et al. (ICML 2017; Captum) on the input pixels, from
  a window of empty glass (white, RGB 255: no stain, so no evidence of anything), summed over
  the three colour channels. Signed. The baseline matters: in a trial on planted lesions while
  building this, the positive mass from mid-grey (the normalisation's zero) fell inside the
  lesion no more than noise's, and clearly more from white.
* ``random``: uniform noise, the baseline of every score.

Maps coarser than the window (tokens, gates, Grad-CAM) are upsampled bilinearly (Captum's
``LayerAttribution.interpolate``), so a peak is a point rather than a 16-px plateau.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsi_mil.errors import WsiMilError
from wsi_mil.extras import require_extra
from wsi_mil.segment.params import EXPLAIN_METHODS

#: The methods each network has, in the order of the tables.
NETWORK_METHODS = {
    "unetr": ("attention_rollout", "relevance", "gradcam", "integrated_gradients", "random"),
    "swin_unetr": ("gradcam", "integrated_gradients", "random"),
    "attention_unet": ("gradcam", "attention_gates", "integrated_gradients", "random"),
    "unet": ("gradcam", "integrated_gradients", "random"),
}
#: The methods computed with Captum (the 'explain' extra).
CAPTUM_METHODS = ("gradcam", "integrated_gradients")
#: UNETR's patch side in pixels (fixed by MONAI).
UNETR_PATCH = 16
#: A Grad-CAM stage is at most this many times coarser than the window (see the docstring).
GRADCAM_MAX_DOWNSAMPLE = 8


class AttributionError(WsiMilError, ValueError):
    """A method or layer the network does not have (the message names the alternatives)."""


def available_methods(net: str, wanted: tuple[str, ...] | list[str] = EXPLAIN_METHODS) -> list[str]:
    """The methods of ``wanted`` that network ``net`` has, in table order."""
    have = NETWORK_METHODS.get(net, ())
    return [m for m in EXPLAIN_METHODS if m in wanted and m in have]


def lesion_target(logits: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``[B]``: the lesion log-odds summed over each window's ``region`` (see the docstring)."""
    log_odds = logits[:, 1] - logits[:, 0]
    return (log_odds * region.to(log_odds.dtype)).flatten(1).sum(1)


def _upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 1, h, w]`` -> ``[B, size, size]``, bilinear (Captum's interpolation)."""
    require_extra("explain", "Grad-CAM of a segmenter")
    from captum.attr import LayerAttribution

    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps[:, 0]
    return LayerAttribution.interpolate(maps, (size, size), "bilinear")[:, 0]


def _numpy(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().float().cpu().numpy()


# -- UNETR's self-attention ----------------------------------------------------------------
def _blocks(model: torch.nn.Module) -> list[Any]:
    vit = getattr(model, "vit", None)
    if vit is None:
        raise AttributionError(
            f"{type(model).__name__} has no ViT encoder: attention_rollout "
            "and relevance need a UNETR"
        )
    return list(vit.blocks)


def vit_attention(vit: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's attention ``[B, heads, T, T]`` of MONAI ``ViT`` ``vit`` on ``x``, kept by
    the ``SABlock``s themselves (``save_attn``, switched on for this call only)."""
    attentions = [block.attn for block in vit.blocks]  # type: ignore[union-attr]
    before = [a.save_attn for a in attentions]
    try:
        for a in attentions:
            a.save_attn = True
        with torch.no_grad():
            vit(x)
        return [a.att_mat for a in attentions]
    finally:
        for a, flag in zip(attentions, before):
            a.save_attn = flag


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """``[B, T, T]``: ``prod_l norm(0.5 mean_h(A_l) + 0.5 I)``, last layer on the left."""
    result = None
    for att in attentions:
        a = att.float().mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None, "no attention layers"
    return result


def token_weights(region: torch.Tensor, patch: int = UNETR_PATCH) -> torch.Tensor:
    """``[B, T]``: the share of each patch (tokens in row-major order) inside ``region``."""
    shares = F.avg_pool2d(region.float().unsqueeze(1), patch)
    return shares.flatten(1)


def _token_map(rows: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """Row weights ``[B, T]`` times ``[B, T, T]`` -> a ``[B, size, size]`` pixel map."""
    tokens = torch.einsum("bi,bij->bj", rows, matrix)
    side = size // UNETR_PATCH
    return _upsample(tokens.view(-1, 1, side, side), size)


def attention_rollout_maps(
    model: torch.nn.Module, x: torch.Tensor, region: torch.Tensor
) -> np.ndarray:
    """Rollout of UNETR's ViT read from the outlined tokens (see the module docstring)."""
    _blocks(model)
    matrix = rollout(vit_attention(model.vit, x))  # type: ignore[arg-type]
    return _numpy(_token_map(token_weights(region), matrix, x.shape[-1]))


def relevance_maps(model: torch.nn.Module, x: torch.Tensor, region: torch.Tensor) -> np.ndarray:
    """Chefer et al.'s relevance of UNETR's ViT (see the module docstring)."""
    blocks = _blocks(model)
    kept: list[torch.Tensor] = []
    hooks = [
        b.attn.drop_weights.register_forward_hook(lambda _m, _i, out: kept.append(out))
        for b in blocks
    ]
    try:
        with torch.enable_grad():
            target = lesion_target(model(x), region).sum()
            grads = torch.autograd.grad(target, kept, allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        t = kept[0].shape[-1]
        relevance = torch.eye(t, device=x.device).expand(x.shape[0], t, t).clone()
        for a, g in zip(kept, grads):
            if g is None:
                continue
            cam = (g * a).clamp_min(0).mean(1)
            relevance = relevance + cam @ relevance
        return _numpy(_token_map(token_weights(region), relevance, x.shape[-1]))


# -- Grad-CAM ------------------------------------------------------------------------------
def gradcam_stages(model: torch.nn.Module, net: str) -> list[str]:
    """Names of the network's encoder stages, shallowest first."""
    names = dict(model.named_modules())
    if net in ("swin_unetr", "unetr"):
        return [
            n for n in ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10") if n in names
        ]
    require_extra("segment", "a segmenter's Grad-CAM stages")
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets.attentionunet import AttentionLayer

    stages = ["model.0"]  # the first block: MONAI UNet's first down-sampling, AttentionUnet's head
    for name, module in model.named_modules():
        inner = getattr(module, "submodule", None)
        if isinstance(module, (SkipConnection, AttentionLayer)) and inner is not None:
            if isinstance(inner, torch.nn.Sequential):
                stages.append(f"{name}.submodule.0")  # the level's down-sampling block
            else:
                stages.append(f"{name}.submodule")  # the bottleneck
    return stages


def gradcam_layer_name(
    model: torch.nn.Module, net: str, tile_size: int, chosen: str | None = None
) -> str:
    """The module Grad-CAM reads: ``chosen`` when given (checked), else the deepest encoder
    stage whose output is at most :data:`GRADCAM_MAX_DOWNSAMPLE` times coarser than the
    window (found by one forward pass of a blank window through hooks on the stages)."""
    names = dict(model.named_modules())
    if chosen is not None:
        if chosen not in names:
            raise AttributionError(
                f"explain_gradcam_layer {chosen!r} is not a module of the "
                f"{net} network; its encoder stages are "
                f"{gradcam_stages(model, net)}"
            )
        return chosen
    candidates = gradcam_stages(model, net)
    sides: dict[str, int] = {}
    hooks = [
        names[n].register_forward_hook(
            lambda _m, _i, out, n=n: sides.__setitem__(n, int(out.shape[-1]))
        )
        for n in candidates
    ]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, tile_size, tile_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    fine = [n for n in candidates if sides.get(n, 0) * GRADCAM_MAX_DOWNSAMPLE >= tile_size]
    if not fine:
        raise AttributionError(f"no encoder stage of the {net} network found for gradcam")
    return fine[-1]


def gradcam_maps(
    model: torch.nn.Module, x: torch.Tensor, region: torch.Tensor, layer_name: str
) -> np.ndarray:
    """Captum's LayerGradCam of the outlined lesion's log-odds at ``layer_name``."""
    require_extra("explain", "Grad-CAM of a segmenter")
    from captum.attr import LayerGradCam

    layer = dict(model.named_modules())[layer_name]
    with torch.enable_grad():
        cam = LayerGradCam(lambda inp: lesion_target(model(inp), region), layer).attribute(
            x, relu_attributions=True
        )
    return _numpy(_upsample(cam, x.shape[-1]))


# -- the Attention U-Net's gates -----------------------------------------------------------
def attention_gate_maps(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """``attention_gates`` (mean of the levels) and ``attention_gates_level<k>`` (k = 1 at full
    resolution) of a MONAI AttentionUnet, each ``[B, T, T]`` in [0, 1]."""
    require_extra("segment", "attention-gate maps of a segmenter")
    from monai.networks.nets.attentionunet import AttentionBlock

    gates: list[torch.Tensor] = []
    hooks = [
        m.psi.register_forward_hook(lambda _m, _i, out: gates.append(out.detach()))
        for m in model.modules()
        if isinstance(m, AttentionBlock)
    ]
    if not hooks:
        raise AttributionError(f"{type(model).__name__} has no attention gates")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    levels = sorted(gates, key=lambda g: -g.shape[-1])  # finest first
    upsampled = [_upsample(g.float(), x.shape[-1]) for g in levels]
    maps = {"attention_gates": _numpy(torch.stack(upsampled).mean(0))}
    for k, level in enumerate(upsampled, start=1):
        maps[f"attention_gates_level{k}"] = _numpy(level)
    return maps


# -- integrated gradients and random -------------------------------------------------------
def glass_input(x: torch.Tensor) -> torch.Tensor:
    """Windows of empty glass (RGB 255, normalised like ``x``): integrated gradients' baseline."""
    from wsi_mil.segment.nets import to_input

    white = np.full((1, 1, 1, 3), 255, np.uint8)
    return to_input(white, x.device).expand_as(x).contiguous()


def integrated_gradients_maps(
    model: torch.nn.Module, x: torch.Tensor, region: torch.Tensor, steps: int
) -> np.ndarray:
    """Captum's IntegratedGradients from empty glass, channels summed."""
    require_extra("explain", "integrated gradients of a segmenter")
    from captum.attr import IntegratedGradients

    with torch.enable_grad():
        attr = IntegratedGradients(lambda inp: lesion_target(model(inp), region)).attribute(
            x,
            baselines=glass_input(x),
            n_steps=steps,
            method="gausslegendre",
            internal_batch_size=x.shape[0],
        )
    return _numpy(attr.sum(1))


def random_maps(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform noise ``shape`` from ``seed``: the baseline."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# -- all of them ---------------------------------------------------------------------------
def explain_windows(
    model: torch.nn.Module,
    net: str,
    x: torch.Tensor,
    region: torch.Tensor,
    methods: list[str] | tuple[str, ...],
    *,
    ig_steps: int = 16,
    gradcam_layer: str | None = None,
    seeds: list[int] | None = None,
    timer: Callable[[str, float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Maps ``[B, T, T]`` of every method of ``methods`` (those ``net`` has) for windows ``x``
    and their outlined ``region``; ``gradcam_layer`` is a name from
    :func:`gradcam_layer_name`; ``seeds``: one per window, of its random map (default 0..B-1);
    ``timer(method, seconds)`` is told what each cost."""
    import time

    model.eval()
    region = region.to(x.device)
    maps: dict[str, np.ndarray] = {}
    for method in available_methods(net, tuple(methods)):
        started = time.perf_counter()
        if method == "attention_rollout":
            maps[method] = attention_rollout_maps(model, x, region)
        elif method == "relevance":
            maps[method] = relevance_maps(model, x, region)
        elif method == "gradcam":
            layer = gradcam_layer or gradcam_layer_name(model, net, x.shape[-1])
            maps[method] = gradcam_maps(model, x, region, layer)
        elif method == "attention_gates":
            maps.update(attention_gate_maps(model, x))
        elif method == "integrated_gradients":
            maps[method] = integrated_gradients_maps(model, x, region, ig_steps)
        else:
            maps[method] = np.stack(
                [random_maps(tuple(x.shape[-2:]), s) for s in (seeds or range(x.shape[0]))]
            )
        if timer is not None:
            timer(method, time.perf_counter() - started)
    return maps


@contextmanager
def _same_rng_state() -> Iterator[None]:
    state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def randomised_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The network with every weight re-initialised (Adebayo et al.'s full model-parameter
    randomisation), as a copy: every module's own ``reset_parameters``, and the parameters no
    module resets (position embeddings, Swin's relative-position bias tables) drawn from
    N(0, 0.02), as ViTs initialise them. The global torch seed is left as it was."""
    clone = copy.deepcopy(model)
    reset: set[int] = set()
    with _same_rng_state(), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]
                reset.update(id(p) for p in module.parameters(recurse=False))
        for param in clone.parameters():
            if id(param) not in reset:
                param.normal_(0.0, 0.02)
    return clone.eval()
