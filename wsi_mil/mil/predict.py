"""Predict one slide from its feature bag with a trained run: one fold or the fold ensemble.

A run's fold is rebuilt from ``fold_<k>/model.json`` (registry name and arguments) and its
``model.pt`` state dict, loaded with ``weights_only=True`` (no pickled code is ever executed).
The bag is read ``chunk_size`` tiles at a time in two passes (scores, then the weighted sum),
so memory stays bounded for any slide: a 200 000-tile bag needs a few hundred MB, not the
features' full float32 copy.

The ensemble averages the folds' slide probabilities, tile probabilities and raw attention
scores, and decides with the mean of the folds' validation thresholds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from features.bag import BagError, read_bag_attrs
from wsi_mil.metrics.slide import predict_indices
from wsi_mil.mil.models import MILModel, create_model
from wsi_mil.mil.predictions import SlidePrediction, normalise_attention, write_prediction
from wsi_mil.mil.train import resolve_device

#: bag attributes that describe the bag file itself rather than the slide, not copied over.
_NOT_COPIED = ("num_tiles", "complete", "created", "wsi_mil_version")


class RunError(ValueError):
    """A run folder without usable models."""


@dataclass(frozen=True)
class PredictParams:
    """Settings of ``wsi-mil predict`` (the ``predict:`` section of a YAML config)."""

    fold: int | None = None  # one fold's model; None: the ensemble of every fold
    chunk_size: int = 16384  # tiles per chunk (bounds memory on very large slides)
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class FoldModel:
    fold: int
    model: MILModel
    meta: dict[str, Any]
    sha256: str


@dataclass
class LoadedRun:
    """The models of a run, and what they share."""

    run_dir: Path
    folds: list[FoldModel]
    class_names: list[str]
    negative_index: int
    threshold: float
    encoder: str
    in_dim: int
    device: torch.device

    @property
    def checkpoint_sha256(self) -> str:
        """One fold's checkpoint hash, or a hash of the folds' hashes for an ensemble."""
        if len(self.folds) == 1:
            return self.folds[0].sha256
        return hashlib.sha256("".join(f.sha256 for f in self.folds).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_fold(fold_dir: Path, device: torch.device) -> FoldModel:
    """Rebuild one fold's model from ``model.json`` + ``model.pt``."""
    meta_path, weights = fold_dir / "model.json", fold_dir / "model.pt"
    if not meta_path.is_file() or not weights.is_file():
        raise RunError(f"{fold_dir}: needs model.json and model.pt")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model = create_model(meta["model"], meta["in_dim"], meta["n_classes"], **meta["kwargs"])
    state = torch.load(weights, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return FoldModel(int(meta.get("fold", 0)), model, meta, _sha256(weights))


def load_run(run_dir: str | os.PathLike, fold: int | None = None,
             device: str = "auto") -> LoadedRun:
    """The run's fold ``fold``, or all its folds (an ensemble) when ``fold`` is None."""
    run_dir = Path(run_dir)
    fold_dirs = sorted(run_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if fold is not None:
        fold_dirs = [d for d in fold_dirs if d.name == f"fold_{fold}"]
        if not fold_dirs:
            raise RunError(f"{run_dir}: no fold_{fold}")
    if not fold_dirs:
        raise RunError(f"{run_dir}: not a wsi-mil run (no fold_<k>/ folders)")
    torch_device = resolve_device(device)
    folds = [load_fold(d, torch_device) for d in fold_dirs]
    first = folds[0].meta
    for f in folds[1:]:
        for key in ("class_names", "in_dim", "encoder", "negative_class"):
            if f.meta[key] != first[key]:
                raise RunError(f"{run_dir}: fold {f.fold} has {key} {f.meta[key]!r}, "
                               f"fold {folds[0].fold} has {first[key]!r}")
    class_names = list(first["class_names"])
    return LoadedRun(run_dir, folds, class_names,
                     class_names.index(first["negative_class"]),
                     float(np.mean([f.meta["threshold"] for f in folds])),
                     str(first["encoder"]), int(first["in_dim"]), torch_device)


def cached_run(run_dir: str | os.PathLike, fold: int | None = None,
               device: str = "auto") -> LoadedRun:
    """A loaded run shared by the slides of a batch (each worker process loads it once)."""
    return _load_cached(str(Path(run_dir).resolve()), fold, device)


@lru_cache(maxsize=4)
def _load_cached(run_dir: str, fold: int | None, device: str) -> LoadedRun:
    return load_run(run_dir, fold, device)


@torch.no_grad()
def predict_bag(run: LoadedRun, bag_path: str | os.PathLike,
                chunk_size: int = 16384) -> SlidePrediction:
    """Predict one bag, reading its features in chunks."""
    bag_path = Path(bag_path)
    attrs = read_bag_attrs(bag_path)
    with h5py.File(bag_path, "r") as f:
        data = f["features"]
        n, dim = data.shape
        if n == 0:
            raise BagError(f"{bag_path}: empty bag (no tiles)")
        if dim != run.in_dim:
            raise BagError(f"{bag_path}: {dim} features per tile (encoder "
                           f"{attrs.get('encoder')!r}), but {run.run_dir} was trained on "
                           f"{run.in_dim} ({run.encoder!r})")

        def read(start: int, end: int) -> torch.Tensor:
            chunk = torch.from_numpy(data[start:end]).to(run.device)
            if not torch.isfinite(chunk).all():
                raise BagError(f"{bag_path}: NaN/inf features in tiles {start}..{end - 1}")
            return chunk

        outputs = [fm.model.predict_chunked(read, n, chunk_size) for fm in run.folds]
        coords = f["coords"][:]
    probs = np.mean([o.logits.float().softmax(1)[0].cpu().numpy() for o in outputs], axis=0)
    raw = np.mean([o.raw_attention[0].cpu().numpy() for o in outputs], axis=0)
    tile_probs = np.mean([o.tile_logits[0].float().softmax(1).cpu().numpy() for o in outputs],
                         axis=0)
    predicted = int(predict_indices(probs[None], run.threshold, run.negative_index)[0])
    slide_attrs = {k: v for k, v in attrs.items() if k not in _NOT_COPIED}
    slide_attrs.update(
        run_id=run.run_dir.name, run_path=str(run.run_dir.resolve()),
        checkpoint_sha256=run.checkpoint_sha256, folds=[fm.fold for fm in run.folds],
        model=run.folds[0].meta["model"], threshold=run.threshold,
        negative_class=run.class_names[run.negative_index], features_path=str(bag_path),
    )
    return SlidePrediction(
        slide_id=bag_path.stem, coords=coords, attention=raw.astype(np.float32),
        attention_norm=normalise_attention(raw), tile_probs=tile_probs.astype(np.float32),
        probs=probs.astype(np.float32), class_names=run.class_names,
        predicted_label=run.class_names[predicted], attrs=slide_attrs,
    )


def predict_slide(bag_path: str | os.PathLike, out_path: str | os.PathLike,
                  run_dir: str | os.PathLike, params: PredictParams = PredictParams()) -> Path:
    """The per-slide step: bag in, ``predictions/<slide_id>.h5`` out (models cached)."""
    run = cached_run(run_dir, params.fold, params.device)
    return write_prediction(out_path, predict_bag(run, bag_path, params.chunk_size))


def is_current_prediction(path: Path, checkpoint_sha256: str) -> bool:
    """True when ``path`` is a predictions file written by these exact checkpoints."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("checkpoint_sha256", "")) == checkpoint_sha256
    except OSError:
        return False
