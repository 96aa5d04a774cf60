"""Attention rollout over a tile, tested on a small randomly initialised timm ViT.

No ViT weights can be downloaded here, so the model is random (``img_size=32``, 8-px patches,
a 4 x 4 patch grid). What rollout must satisfy does not depend on the weights: every rollout
row sums to 1, the map has the patch grid's shape, the recorded attention is exactly what the
attention block computes, and with all attention uniform the map is uniform (proof: zero
query/key weights give equal logits, so each layer's matrix is 1/N everywhere; 0.5 A + 0.5 I
then treats every non-class token alike, and so does their product).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from wsi_mil.explain.encoder_rollout import (
    AttentionRecorder,
    RolloutError,
    attention_rollout,
    rollout,
)


@pytest.fixture
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
        num_classes=0,
    )
    return model.eval()


def test_recorder_captures_each_layer_and_restores_fused_attention(vit):
    fused_before = [block.attn.fused_attn for block in vit.blocks]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), AttentionRecorder(vit) as maps:
        out = vit(x)
    assert len(maps) == 3 and maps[0].shape == (2, 2, 17, 17)  # 16 patches + class token
    assert [block.attn.fused_attn for block in vit.blocks] == fused_before
    with torch.no_grad():
        assert torch.allclose(vit(x), out, atol=1e-5)  # the explicit path changes nothing
    # the first block's recorded attention is softmax(q k^T / sqrt(d)) of its input
    attn = vit.blocks[0].attn
    with torch.no_grad():
        tokens = vit.blocks[0].norm1(vit._pos_embed(vit.patch_embed(x)))
        qkv = attn.qkv(tokens).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
        expected = (qkv[0] * attn.scale @ qkv[1].transpose(-2, -1)).softmax(-1)
    assert torch.allclose(maps[0], expected, atol=1e-5)


def test_rollout_rows_sum_to_one_and_map_fills_the_patch_grid(vit):
    with torch.no_grad(), AttentionRecorder(vit) as maps:
        vit(torch.randn(3, 3, 32, 32))
    for fusion in ("mean", "max", "min"):
        matrix = rollout(maps, fusion)
        assert matrix.shape == (3, 17, 17)
        assert torch.allclose(matrix.sum(-1), torch.ones(3, 17), atol=1e-5)
    result = attention_rollout(vit, torch.randn(3, 3, 32, 32))
    assert result.shape == (3, 4, 4)
    # the class token's share flowing from the patches: positive, and less than its whole row
    assert (result > 0).all() and (result.sum(axis=(1, 2)) < 1.0).all()


def test_uniform_attention_gives_a_uniform_map(vit):
    with torch.no_grad():
        for block in vit.blocks:
            block.attn.qkv.weight[:64].zero_()  # query and key rows: all logits equal
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias[:64].zero_()
    result = attention_rollout(vit, torch.randn(1, 3, 32, 32))
    assert np.allclose(result, result.mean(), rtol=1e-5)


def test_rollout_follows_attention_to_one_patch(vit):
    # force every layer to attend from everywhere to patch 5 (token 6): rollout must peak there
    def focus(module, inputs, output):
        forced = torch.zeros_like(output)
        forced[..., 6] = 1.0
        return forced

    hooks = [block.attn.attn_drop.register_forward_hook(focus) for block in vit.blocks]
    try:
        result = attention_rollout(vit, torch.randn(1, 3, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    assert np.unravel_index(result[0].argmax(), (4, 4)) == (1, 1)
    assert np.sort(result[0].ravel())[-2] < 0.5 * result[0].max()


def test_a_cnn_is_refused():
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(RolloutError, match="ViT"):
        attention_rollout(cnn, torch.randn(1, 3, 32, 32))


def test_topk_rollout_maps_are_saved_beside_topk(tmp_path, vit, lesion, lesion_slide):
    from features.registry import Encoder
    from tiling.reader import TileReader
    from tiling.slide import open_slide
    from wsi_mil.heatmaps.params import HeatmapParams
    from wsi_mil.heatmaps.render import top_tiles, write_topk_png

    encoder = Encoder(
        name="random-test-vit",
        model=vit,
        dim=32,
        input_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights="random init",
        weights_sha256="",
    )
    prediction = lesion.make_prediction(lesion_slide)
    slide = open_slide(lesion_slide)
    reader = TileReader(slide, prediction.attrs)
    written = write_topk_png(
        tmp_path / "topk.png", prediction, reader.read, HeatmapParams(topk=3, rollout=True), encoder
    )
    slide.close()
    assert [p.name for p in written] == ["topk.png", "topk_rollout.png", "topk_rollout.npz"]
    saved = np.load(written[2])
    assert saved["maps"].shape == (3, 4, 4)
    assert np.array_equal(saved["coords"], prediction.coords[top_tiles(prediction, 3)])
