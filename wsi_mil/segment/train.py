"""Training a pixel segmenter: MONAI network, Dice + cross-entropy, AdamW, warm-up then cosine.

The loss is MONAI's ``DiceCELoss`` (soft Dice on the lesion and background channels plus
cross-entropy): the cross-entropy keeps gradients useful on tiles without lesion, the Dice term
keeps small lesions from being drowned by background pixels. The learning rate rises linearly
for ``warmup_epochs`` and then follows a half cosine to zero at ``epochs``. After every epoch
the pooled pixel Dice on the validation slides' tiles (every pixel of every validation tile
counted once, so false positives on normal tiles count) decides early stopping, and the best
epoch's weights are kept.

Outputs in the model folder: ``segmenter.pt`` (a state dict; load with
:func:`load_segmenter`, which uses ``torch.load(weights_only=True)``) and ``model_card.json``
(network, every parameter, input normalisation, classes, training and validation slides, the
per-epoch history, the checkpoint's SHA-256, library versions).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.device import resolve_device
from tiling.params import AnnotationParams
from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.errors import WsiMilError
from wsi_mil.extras import require_extra
from wsi_mil.metrics.segmentation import overlap_scores
from wsi_mil.segment.data import KINDS, TileSet, TrainingSlide, sample_slide, split_slides
from wsi_mil.segment.nets import CLASSES, MEAN, STD, build_network, to_input
from wsi_mil.segment.params import SegmentTrainParams

logger = logging.getLogger(__name__)
CHECKPOINT = "segmenter.pt"
MODEL_CARD = "model_card.json"


class SegmenterFileError(WsiMilError, ValueError):
    """A model folder without a readable segmenter checkpoint or model card."""


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then a half cosine down to 0 at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flips and 90-degree rotation of a batch of tiles and their masks
    (tissue has no orientation)."""
    k = int(torch.randint(4, (1,), generator=generator))
    flip = bool(torch.randint(2, (1,), generator=generator))
    x, y = torch.rot90(x, k, dims=(2, 3)), torch.rot90(y, k, dims=(2, 3))
    if flip:
        x, y = torch.flip(x, dims=(3,)), torch.flip(y, dims=(3,))
    return x, y


@torch.no_grad()
def predict_tiles(
    model: torch.nn.Module, tiles: np.ndarray, device: torch.device, batch_size: int
) -> np.ndarray:
    """Lesion probability of every pixel of uint8 RGB tiles ``[N, T, T, 3]`` (float32)."""
    model.eval()
    out = np.empty(tiles.shape[:3], np.float32)
    for start in range(0, len(tiles), batch_size):
        logits = model(to_input(tiles[start : start + batch_size], device))
        out[start : start + batch_size] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
    return out


def pooled_dice(
    model: torch.nn.Module, data: TileSet, device: torch.device, batch_size: int
) -> float:
    """Pixel Dice of the tile predictions (probability >= 0.5) pooled over all tiles."""
    predicted = predict_tiles(model, data.tiles, device, batch_size) >= 0.5
    return float(overlap_scores(predicted, data.masks.astype(bool))["dice"])


def _sample(
    slides: list[TrainingSlide],
    params: SegmentTrainParams,
    rng: np.random.Generator,
    annotation_params: AnnotationParams,
) -> TileSet:
    parts = []
    for slide in slides:
        part = sample_slide(slide, params, rng, annotation_params)
        counts = {k: int((part.kinds == i).sum()) for i, k in enumerate(KINDS)}
        logger.info("  %s: %d tiles %s", slide.slide_id, len(part.kinds), counts)
        parts.append(part)
    return TileSet.concat(parts, params.tile_size)


def train_segmenter(
    slides: list[TrainingSlide],
    out_dir: str | os.PathLike,
    params: SegmentTrainParams | None = None,
    annotation_params: AnnotationParams | None = None,
) -> dict[str, Any]:
    """Train a segmenter on tiles of ``slides``; write ``segmenter.pt`` and ``model_card.json``
    into ``out_dir``; return the model card."""
    out_dir = Path(out_dir)
    params = params or SegmentTrainParams()
    annotation_params = annotation_params or AnnotationParams()
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    train_slides, val_slides = split_slides(slides, params.val_fraction, params.seed)
    logger.info(
        "sampling tiles at %s µm/px, %s px: %d training, %d validation slides",
        params.mpp,
        params.tile_size,
        len(train_slides),
        len(val_slides),
    )
    train = _sample(train_slides, params, rng, annotation_params)
    val = _sample(val_slides, params, rng, annotation_params)
    device = resolve_device(params.device)
    model = build_network(params).to(device)
    require_extra("segment", "training a pixel segmenter")
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    steps_per_epoch = math.ceil(len(train.tiles) / params.batch_size)
    total = steps_per_epoch * params.epochs
    warmup = max(1, round(params.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, warmup, total)
    )
    generator = torch.Generator().manual_seed(params.seed)
    best_dice, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history = []
    started = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(len(train.tiles), generator=generator).numpy()
        losses = []
        for start in range(0, len(order), params.batch_size):
            index = np.sort(order[start : start + params.batch_size])
            x = to_input(train.tiles[index], device)
            y = torch.from_numpy(train.masks[index]).to(device).unsqueeze(1).long()
            if params.augment:
                x, y = augment(x, y, generator)
            loss = loss_fn(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        dice = pooled_dice(model, val, device, params.batch_size)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val_dice": dice,
                "lr": float(scheduler.get_last_lr()[0]),
            }
        )
        logger.info("epoch %d: loss %.4f, validation Dice %.4f", epoch, np.mean(losses), dice)
        if dice > best_dice:
            best_dice, best_epoch, best_state = dice, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= params.patience:
            logger.info("early stop: no better validation Dice for %d epochs", params.patience)
            break
    buffer = io.BytesIO()
    torch.save(best_state, buffer)
    blob = buffer.getvalue()
    require_extra("segment", "training a pixel segmenter")
    import monai

    card = {
        **provenance(),
        "format": "wsi-mil segmenter",
        "net": params.net,
        "params": dataclasses.asdict(params),
        "classes": list(CLASSES),
        "input": {
            "channels": "RGB",
            "dtype": "uint8",
            "mpp": params.mpp,
            "tile_size": params.tile_size,
            "normalisation": {
                "formula": "(x / 255 - mean) / std",
                "mean": list(MEAN),
                "std": list(STD),
            },
        },
        "loss": "monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)",
        "optimiser": "AdamW, linear warm-up then cosine decay",
        "train_slides": [s.slide_id for s in train_slides],
        "val_slides": [s.slide_id for s in val_slides],
        "train_tiles": {k: int((train.kinds == i).sum()) for i, k in enumerate(KINDS)},
        "val_tiles": {k: int((val.kinds == i).sum()) for i, k in enumerate(KINDS)},
        "best_epoch": best_epoch,
        "best_val_dice": best_dice,
        "history": history,
        "train_seconds": time.perf_counter() - started,
        "checkpoint": CHECKPOINT,
        "checkpoint_sha256": hashlib.sha256(blob).hexdigest(),
        "versions": {"torch": torch.__version__, "monai": monai.__version__},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / CHECKPOINT) as tmp:
        tmp.write_bytes(blob)
    write_text_atomic(out_dir / MODEL_CARD, json.dumps(card, indent=2) + "\n")
    return card


def read_model_card(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The model card of a segmenter folder, with an error naming the file when unusable."""
    path = Path(model_dir) / MODEL_CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SegmenterFileError(
            f"{path}: no segmenter model card (train one with wsi-mil segment-train)"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise SegmenterFileError(f"{path}: unreadable model card ({exc})") from exc
    if card.get("format") != "wsi-mil segmenter":
        raise SegmenterFileError(f"{path}: not a wsi-mil segmenter model card")
    return card


def card_params(card: dict[str, Any]) -> SegmentTrainParams:
    """The training parameters recorded in a model card."""
    return SegmentTrainParams(**card["params"])


def load_segmenter(
    model_dir: str | os.PathLike, device: str = "auto"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network of a model folder (in eval mode, on ``device``) and its card."""
    card = read_model_card(model_dir)
    path = Path(model_dir) / card.get("checkpoint", CHECKPOINT)
    if not path.is_file():
        raise SegmenterFileError(f"{path}: segmenter checkpoint not found")
    model = build_network(card_params(card))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval(), card
