"""Grad-CAM inside a tile for CNN encoders (Selvaraju et al., ICCV 2017), for the top-k tiles.

Beside attention rollout for ViT encoders (:mod:`wsi_mil.explain.encoder_rollout`), this says
where inside a tile a convolutional encoder (the bundled EfficientNet-Lite0 first) found the
evidence the MIL model used. The target is the **slide** logit of the explained class as a
function of the tile's pixels: the tile's features in the bag are replaced by the encoder's
output for the image (the other tiles' stored features stay fixed), so the gradient flows from
the slide prediction through the MIL model and the encoder to its last feature map. Captum's
``LayerGradCam`` does the Grad-CAM arithmetic (channel weights = spatially averaged gradients,
ReLU of the weighted sum of activations) and ``LayerAttribution.interpolate`` brings the map to
the tile's input size.

The layer is the one Grad-CAM prescribes, the last convolutional feature map, taken where the
encoder pools it (:func:`gradcam_layer`: the input of its global pooling): a whole block's
output, after the residual addition and activation. The last ``Conv2d`` itself is not it: in a
ResNet (``resnet50_trunc``: ``layer3.5.conv3``) it is inside a bottleneck, before the skip
connection is added, so it misses what the skip carries; in EfficientNet (``conv_head``) it
is before the batch norm and activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from wsi_mil.errors import WsiMilError
from wsi_mil.extras import require_extra
from wsi_mil.mil.models import MILModel


class GradCamError(WsiMilError, ValueError):
    """An encoder Grad-CAM cannot explain (no convolution)."""


def gradcam_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module, whether its *input* is the map) of the feature map Grad-CAM reads: the input
    of the encoder's global pooling (timm's ``global_pool``, else its last adaptive average
    pooling), else the output of its last convolution."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise GradCamError(
            f"{type(model).__name__} has no Conv2d layer: Grad-CAM needs a CNN "
            "encoder (use attention rollout for ViTs)"
        )
    pool = getattr(model, "global_pool", None)
    if not isinstance(pool, nn.Module):
        pools = [
            m
            for m in model.modules()
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        ]
        pool = pools[-1] if pools else None
    if pool is not None:
        return pool, True
    return convs[-1], False


def tile_gradcam(
    encoder: Any,
    model: MILModel,
    features: np.ndarray,
    indices: Sequence[int] | npt.NDArray[np.integer],
    tiles: Sequence[np.ndarray],
    target: int,
    coords: np.ndarray | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``[k, S, S]`` in [0, 1] (``S`` the encoder's input size) of tiles
    ``indices`` of the bag ``features`` ``[N, D]``, whose RGB images are ``tiles``;
    ``coords`` ``[N, 2]``: the bag's grid positions, for a model that uses them."""
    require_extra("explain", "tile Grad-CAM")
    from captum.attr import LayerAttribution, LayerGradCam

    from tiling.reader import resize_rgb

    device = encoder.device
    bag = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
    grid = (
        None
        if coords is None
        else torch.as_tensor(np.asarray(coords, dtype=np.float32), device=device)
    )
    layer, to_input = gradcam_layer(encoder.model)
    encoder.model.eval()
    model.eval()
    maps = []
    for index, tile in zip(indices, tiles):
        image = resize_rgb(np.ascontiguousarray(tile), encoder.input_size)
        x = encoder.preprocess(torch.from_numpy(image[None]))

        def slide_logits(images: torch.Tensor, index: int = int(index)) -> torch.Tensor:
            encoded = encoder.model(images).float()  # [B, D]
            bags = bag.unsqueeze(0).repeat(len(images), 1, 1)
            bags[:, index] = encoded
            positions = None if grid is None else grid.expand(len(images), -1, -1)
            return model(bags, coords=positions).logits

        cam = LayerGradCam(slide_logits, layer).attribute(
            x, target=target, relu_attributions=True, attribute_to_layer_input=to_input
        )
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0]
        cam = cam.detach().cpu().numpy()
        top = cam.max()
        maps.append(cam / top if top > 0 else cam)
    return np.stack(maps) if maps else np.zeros((0, encoder.input_size, encoder.input_size))
