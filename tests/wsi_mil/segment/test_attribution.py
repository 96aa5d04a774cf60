"""Explanation maps of the pixel segmenters, on tiny MONAI networks with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_mil.segment.attribution import (
    AttributionError,
    attention_gate_maps,
    attention_rollout_maps,
    available_methods,
    explain_windows,
    glass_input,
    gradcam_layer_name,
    integrated_gradients_maps,
    lesion_target,
    randomised_copy,
    relevance_maps,
    rollout,
    token_weights,
    vit_attention,
)
from wsi_mil.segment.nets import build_network
from wsi_mil.segment.params import EXPLAIN_METHODS, SegmentTrainParams

SIZE = 64


def tiny(net: str) -> torch.nn.Module:
    torch.manual_seed(0)
    params = SegmentTrainParams(
        net=net,
        mpp=2.0,
        tile_size=SIZE,
        channels=(8, 16, 32),
        swin_feature_size=12,
        unetr_hidden_size=24,
        unetr_heads=2,
        unetr_feature_size=8,
    )
    return build_network(params).eval()


@pytest.fixture(scope="module")
def windows() -> tuple[torch.Tensor, torch.Tensor]:
    """Three random windows; the region is a band in the first two, empty in the third."""
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    region = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    region[:2, 8:40, 16:48] = True
    return x, region


def test_rollout_of_a_one_layer_unetr_is_its_residual_mixed_attention(windows):
    x, region = windows
    model = tiny("unetr")
    model.vit.blocks = model.vit.blocks[:1]  # rollout reads the ViT alone
    block = model.vit.blocks[0].attn
    with torch.no_grad():  # by hand: patch embedding, LayerNorm, q k^T / sqrt(d), softmax
        h = model.vit.blocks[0].norm1(model.vit.patch_embedding(x))
        b, t, _ = h.shape
        qkv = block.qkv(h).view(b, t, 3, 2, 12).permute(2, 0, 3, 1, 4)
        a = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) * 12**-0.5, -1).mean(1)
        mixed = 0.5 * a + 0.5 * torch.eye(t)
        mixed = mixed / mixed.sum(-1, keepdim=True)
    attention = vit_attention(model.vit, x)
    assert len(attention) == 1 and not block.save_attn  # switched back off
    torch.testing.assert_close(rollout(attention), mixed, atol=1e-5, rtol=1e-4)
    tokens = torch.einsum("bi,bij->bj", token_weights(region), mixed).view(b, 1, 4, 4)
    expected = torch.nn.functional.interpolate(tokens, size=(SIZE, SIZE), mode="bilinear")[:, 0]
    np.testing.assert_allclose(
        attention_rollout_maps(model, x, region), expected.numpy(), atol=1e-5
    )


def test_token_weights_are_the_outlined_share_of_each_patch():
    region = torch.zeros(1, 32, 32, dtype=torch.bool)
    region[0, :16, :8] = True  # half of the top-left 16-px patch
    assert token_weights(region).tolist() == [[0.5, 0.0, 0.0, 0.0]]


def test_a_window_with_nothing_outlined_has_nothing_to_explain(windows):
    x, region = windows
    model = tiny("unetr")
    maps = explain_windows(model, "unetr", x, region, EXPLAIN_METHODS, ig_steps=4)
    assert set(maps) == {
        "attention_rollout",
        "relevance",
        "gradcam",
        "integrated_gradients",
        "random",
    }
    for name in ("attention_rollout", "relevance", "gradcam", "integrated_gradients"):
        assert maps[name].shape == (3, SIZE, SIZE)
        assert not maps[name][2].any(), name  # the empty window
        assert maps[name][:2].any(), name
    assert maps["random"][2].std() > 0.2  # the baseline is noise everywhere


def test_relevance_grows_from_the_identity_on_the_outlined_tokens(windows):
    x, region = windows
    values = relevance_maps(tiny("unetr"), x[:1], region[:1])
    assert values.min() >= 0
    # the identity term alone gives the outlined tokens their share: relevance only adds to it
    tokens = token_weights(region[:1]).view(1, 1, 4, 4)
    floor = torch.nn.functional.interpolate(tokens, size=(SIZE, SIZE), mode="bilinear")[0, 0]
    assert (values[0] >= floor.numpy() - 1e-6).all()


@pytest.mark.parametrize("net", ["unet", "attention_unet", "swin_unetr", "unetr"])
def test_gradcam_reads_a_stage_at_most_eight_times_coarser(net):
    model = tiny(net)
    name = gradcam_layer_name(model, net, SIZE)
    layer = dict(model.named_modules())[name]
    seen = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        model(torch.zeros(1, 3, SIZE, SIZE))
    hook.remove()
    assert seen and seen[0] * 8 >= SIZE and seen[0] < SIZE
    with pytest.raises(AttributionError, match="encoder stages"):
        gradcam_layer_name(model, net, SIZE, "no.such.layer")


def test_attention_gates_are_each_decoder_levels_coefficients(windows):
    x, _ = windows
    maps = attention_gate_maps(tiny("attention_unet"), x)
    levels = [maps["attention_gates_level1"], maps["attention_gates_level2"]]
    assert set(maps) == {"attention_gates", "attention_gates_level1", "attention_gates_level2"}
    for level in levels:
        assert level.shape == (3, SIZE, SIZE) and 0 <= level.min() and level.max() <= 1
    np.testing.assert_allclose(maps["attention_gates"], np.mean(levels, axis=0), atol=1e-6)
    with pytest.raises(AttributionError, match="no attention gates"):
        attention_gate_maps(tiny("unet"), x)


def test_integrated_gradients_add_up_to_the_change_from_empty_glass(windows):
    """Completeness (Sundararajan et al.): the attributions sum to target(x) - target(glass)."""
    x, region = windows
    model = tiny("unet")
    values = integrated_gradients_maps(model, x[:1], region[:1], steps=64)
    with torch.no_grad():
        gap = (
            lesion_target(model(x[:1]), region[:1])
            - lesion_target(model(glass_input(x[:1])), region[:1])
        ).item()
    assert values.sum() == pytest.approx(gap, rel=0.02, abs=1e-3)


def test_each_network_has_its_methods():
    assert available_methods("unet") == ["gradcam", "integrated_gradients", "random"]
    assert "attention_gates" in available_methods("attention_unet")
    assert available_methods("unetr", ("attention_rollout", "attention_gates")) == [
        "attention_rollout"
    ]
    assert available_methods("swin_unetr", ("relevance",)) == []


def test_the_randomised_copy_changes_every_weight_and_nothing_else():
    model = tiny("unetr")
    with torch.no_grad():  # as if trained: no weight at its initial value
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    clone = randomised_copy(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # the trained network is untouched
    for (name, a), (_, b) in zip(model.named_parameters(), clone.named_parameters()):
        assert not torch.equal(a, b), name
