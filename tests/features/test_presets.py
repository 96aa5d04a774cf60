"""Every encoder preset, built with random weights: architecture, pooling and output dimension.

No weights can be downloaded here, so each preset is built from its registry entry alone. The
giant ones (ViT-g/14, 1.1 B parameters: 4.5 GB of float32 just to hold them) are built on
PyTorch's ``meta`` device, where timm allocates and initialises nothing and a forward pass
computes shapes only: every preset is checked in about a second, in no memory. The parameter
counts are compared with those the model cards publish, which catches a wrong depth, width,
MLP ratio or register count. The numerics that shapes cannot show (which tokens are pooled, the
transformers -> timm renaming, CONCH's attention pooler) are checked on small models on the CPU.
"""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from features.conch import AttentionalPooler
from features.registry import (
    build_architecture,
    create_encoder,
    embed,
    get_spec,
    list_encoders,
    output_dim,
)
from features.weights import WeightsError, hf_dinov2_to_timm, to_timm_layout

#: Parameter counts (millions) the model cards publish, and how close the build must come.
CARD_PARAMS_M = {
    "uni2_h": (681, 0.01),  # "681M parameters"
    "virchow2": (632, 0.01),  # "632M parameters"
    "hoptimus0": (1100, 0.05),  # "1.1B parameters"
    "hoptimus1": (1100, 0.05),
    "gigapath": (1134, 0.01),  # ViT-g/16 tile encoder, 1.13B
    "midnight12k": (1100, 0.05),  # DINOv2 ViT-g/14
    "h0_mini": (86, 0.02),  # ViT-B/14
    "phikon": (86, 0.02),  # ViT-B/16
    "uni": (303, 0.02),  # ViT-L/16
    "phikon_v2": (303, 0.02),  # ViT-L/16
}


def random_preset(name: str, device: str = "meta") -> torch.nn.Module:
    spec = get_spec(name)
    model = build_architecture(spec, device)
    return spec.adapt(model) if spec.adapt is not None else model


@pytest.mark.parametrize("name", [spec.name for spec in list_encoders()])
def test_preset_builds_to_its_architecture_and_dimension(name):
    spec = get_spec(name)
    model = random_preset(name)
    images = torch.empty(2, 3, spec.input_size, spec.input_size, device="meta")
    features = embed(model, images, spec.pooling)
    assert tuple(features.shape) == (2, spec.dim)
    assert output_dim(model, spec.pooling) == spec.dim
    if name in CARD_PARAMS_M:
        expected, tolerance = CARD_PARAMS_M[name]
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(count - expected) <= tolerance * expected, f"{name}: {count:.1f} M"
    assert spec.licence and spec.description
    assert spec.hub_id or spec.bundled is not None


def test_presets_cover_the_field():
    names = {spec.name for spec in list_encoders()}
    assert {
        "uni",
        "uni2_h",
        "conch_v15",
        "virchow2",
        "hoptimus0",
        "hoptimus1",
        "h0_mini",
        "phikon",
        "phikon_v2",
        "gigapath",
        "midnight12k",
        "efficientnet_lite0",
        "resnet50_trunc",
        "vit_small_dino",
    } <= names


def test_register_tokens_are_what_the_cards_say():
    assert random_preset("virchow2").num_prefix_tokens == 5  # class token + 4 registers
    assert random_preset("uni2_h").num_prefix_tokens == 9  # class token + 8 registers
    assert random_preset("hoptimus0").num_prefix_tokens == 5
    assert random_preset("gigapath").num_prefix_tokens == 1
    uni2 = random_preset("uni2_h")
    assert uni2.patch_embed.patch_size == (14, 14) and uni2.no_embed_class
    assert isinstance(uni2.blocks[0].mlp, timm.layers.GluMlp)  # SwiGLUPacked
    assert isinstance(uni2.blocks[0].mlp.act, torch.nn.SiLU)
    assert uni2.blocks[0].ls1.gamma.shape == (1536,)  # layer scale


def tiny_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=56,
        depth=2,
        embed_dim=64,
        num_heads=4,
        **kwargs,
    ).eval()


def test_cls_plus_mean_leaves_the_register_tokens_out():
    """On a tiny random ViT with 4 registers: [CLS, mean of tokens 5...] (Virchow2's rule)."""
    model = tiny_vit()
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        tokens = model.forward_features(images)
        features = embed(model, images, "cls+mean")
    assert tokens.shape[1] == 1 + 4 + 16
    torch.testing.assert_close(features[:, :64], tokens[:, 0])
    torch.testing.assert_close(features[:, 64:], tokens[:, 5:].mean(dim=1))
    assert not torch.allclose(features[:, 64:], tokens[:, 1:].mean(dim=1))


def timm_to_hf_dinov2(state: dict[str, torch.Tensor], swiglu: bool) -> dict[str, torch.Tensor]:
    """Write a timm DINOv2 ViT's state dict as transformers' ``Dinov2Model`` saves it."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1]),
        "embeddings.position_embeddings": state["pos_embed"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    if "reg_token" in state:
        out["embeddings.register_tokens"] = state["reg_token"]
    for p in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{p}"] = state[f"patch_embed.proj.{p}"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    fc1, fc2 = ("weights_in", "weights_out") if swiglu else ("fc1", "fc2")
    for i in range(depth):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        out[h + "layer_scale1.lambda1"] = state[b + "ls1.gamma"]
        out[h + "layer_scale2.lambda1"] = state[b + "ls2.gamma"]
        for p in ("weight", "bias"):
            q, k, v = state[b + f"attn.qkv.{p}"].chunk(3, dim=0)
            out[h + f"attention.attention.query.{p}"] = q
            out[h + f"attention.attention.key.{p}"] = k
            out[h + f"attention.attention.value.{p}"] = v
            out[h + f"attention.output.dense.{p}"] = state[b + f"attn.proj.{p}"]
            out[h + f"norm1.{p}"] = state[b + f"norm1.{p}"]
            out[h + f"norm2.{p}"] = state[b + f"norm2.{p}"]
            out[h + f"mlp.{fc1}.{p}"] = state[b + f"mlp.fc1.{p}"]
            out[h + f"mlp.{fc2}.{p}"] = state[b + f"mlp.fc2.{p}"]
    return out


@pytest.mark.parametrize("swiglu", [False, True])
def test_transformers_dinov2_checkpoint_is_renamed_to_timm(swiglu):
    """Phikon-v2 and Midnight publish transformers' Dinov2Model layout: a tiny random DINOv2
    ViT (with registers; SwiGLU as in Midnight's ViT-g) written that way loads strictly into
    the timm model it came from and gives the same features."""
    kwargs = (
        {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU, "mlp_ratio": 4.0}
        if swiglu
        else {}
    )
    model = tiny_vit(**kwargs)
    hf_state = timm_to_hf_dinov2(model.state_dict(), swiglu)
    converted = to_timm_layout(hf_state)
    assert converted.keys() == model.state_dict().keys()
    clone = tiny_vit(**kwargs)
    torch.nn.init.zeros_(clone.cls_token)
    clone.load_state_dict(converted, strict=True)
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(clone(images), model(images))
    with pytest.raises(WeightsError, match="unknown key"):
        hf_dinov2_to_timm({**hf_state, "encoder.layer.0.extra.weight": torch.zeros(1)})


def test_attentional_pooler_is_multi_head_attention_of_one_learned_query():
    """CONCH's pooler, against the attention written out head by head."""
    torch.manual_seed(3)
    pooler = AttentionalPooler(d_model=16, context_dim=24, n_head=4, n_queries=1).eval()
    tokens = torch.randn(2, 7, 24)
    with torch.no_grad():
        got = pooler(tokens)
        keys, values = pooler.to_kv(pooler.ln_k(tokens)).chunk(2, dim=-1)
        query = pooler.to_q(pooler.ln_q(pooler.query))  # [1, 16]
        heads = []
        for h in range(4):
            part = slice(4 * h, 4 * h + 4)
            scores = (query[:, part] @ keys[..., part].transpose(1, 2)) / 2.0  # sqrt(4)
            heads.append(scores.softmax(-1) @ values[..., part])
        expected = pooler.to_out(torch.cat(heads, dim=-1))
    assert got.shape == (2, 1, 16)
    torch.testing.assert_close(got, expected)


def test_weights_load_from_a_folder_holding_the_hub_files(tmp_path):
    """A copy of a hub repository (model.safetensors inside) given as --weights, or placed as
    $WSI_MIL_WEIGHTS/<name>/: a random-init ViT-S/16 stands in for DINO's weights."""
    import os
    from pathlib import Path

    from safetensors.torch import save_file

    torch.manual_seed(4)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    folder = tmp_path / "vit_small_patch16_224.dino"
    folder.mkdir()
    save_file(vit.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    encoder = create_encoder("vit_small_dino", weights=folder)
    assert encoder.weights == str((folder / "model.safetensors").resolve())
    installed = Path(os.environ["WSI_MIL_WEIGHTS"]) / "vit_small_dino"
    installed.mkdir()
    save_file(vit.state_dict(), str(installed / "model.safetensors"))
    assert (
        get_spec("vit_small_dino").weights_status() == f"ready ({installed / 'model.safetensors'})"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="expected one of model.safetensors"):
        create_encoder("vit_small_dino", weights=empty)


def test_gated_model_from_the_hub_names_its_licence(monkeypatch, caplog):
    """Asking the hub for a gated model (the download mocked: no test touches the network):
    the licence and where to accept it are logged first, and repeated in the error."""
    import huggingface_hub

    def refused(repo_id, filename, **kwargs):
        raise PermissionError(f"401 Client Error: access to model {repo_id} is restricted")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with caplog.at_level(logging.WARNING), pytest.raises(WeightsError) as excinfo:
        create_encoder("virchow2")
    message = str(excinfo.value)
    assert "CC-BY-NC-ND-4.0" in message and "https://huggingface.co/paige-ai/Virchow2" in message
    assert "401" in message and "--weights PATH" in message
    assert "gated" in caplog.text and "CC-BY-NC-ND-4.0" in caplog.text
