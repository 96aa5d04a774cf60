"""Train MIL models on feature bags with slide labels, fold by fold, and write a run folder.

``runs/<name>/``: ``config.yaml`` (every resolved setting), ``splits.csv`` (fold, slide, role),
per fold ``fold_<k>/model.pt`` (state dict only, loadable with ``weights_only=True``) with
``model.json`` (registry name, constructor arguments, class names, validation threshold: all
that :mod:`wsi_mil.mil.predict` needs to rebuild it), ``metrics.json`` (test and validation
metrics), ``log.csv`` (per epoch) and ``test_predictions.csv``; and ``summary.json`` (mean ± std
over folds, plus the metrics of the pooled out-of-fold predictions).

Training choices, and why: AdamW with a cosine (or plateau) schedule; early stopping on the
validation loss (smoother than AUC on a few dozen slides) restoring the best epoch; the slide
loss weighted by inverse class frequency (cohorts are rarely balanced); fixed seeds; bf16
autocast on CUDA only (CPU bf16 matmuls are slower than float32 on most CPUs).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm

from tiling.storage import atomic_output, provenance, write_text_atomic
from wsi_mil.metrics.slide import choose_threshold, predict_indices, slide_auc, slide_metrics
from wsi_mil.mil.bags import BagDataset, collate_bags, match_bags
from wsi_mil.mil.labels import LabelTable, read_labels
from wsi_mil.mil.models import DEFAULT_MODEL, MILModel, create_model, list_models
from wsi_mil.mil.models.segmentation import segmentation_loss
from wsi_mil.mil.splits import FoldSplit, make_splits, splits_csv

SCHEDULES = ("cosine", "plateau", "none")
MONITORS = ("loss", "auc", "none")
OPTIMIZERS = ("adamw", "adam")
SUMMARY_METRICS = ("auc", "accuracy", "balanced_accuracy", "f1")


@dataclass(frozen=True)
class TrainParams:
    """Every setting of ``wsi-mil train`` (the ``train:`` section of a YAML config)."""

    model: str = DEFAULT_MODEL  # registry name: gated_abmil, abmil, clam_sb, clam_mb, ...
    hidden_dims: tuple[int, ...] = (512,)  # widths of the tile embedding MLP
    attention_dim: int = 256  # width of the attention network
    dropout: float = 0.25  # dropout in the embedding and attention networks
    k_sample: int = 8  # top/bottom-k tiles for CLAM's instance loss and head pseudo-labels
    subtyping: bool = False  # CLAM: also push other classes' top tiles to "not this class"
    bag_weight: float = 0.7  # CLAM: weight of the slide loss against the instance loss
    seg_weight: float = 0.5  # weight of the segmentation-head loss
    tile_label_threshold: float = 0.5  # lesion fraction from which a tile label is positive
    negative_class: str | None = None  # class whose slides are all-negative; None: first sorted
    folds: int = 5  # cross-validation folds (ignored when the labels CSV has a split column)
    val_fraction: float = 0.2  # share of each fold's training patients kept for validation
    epochs: int = 50  # maximum epochs per fold
    lr: float = 2e-4  # peak learning rate
    weight_decay: float = 1e-4  # decoupled (AdamW) or L2 (Adam) weight decay
    optimizer: str = "adamw"  # adamw | adam
    schedule: str = "cosine"  # cosine | plateau | none
    patience: int = 10  # epochs without validation improvement before stopping
    min_epochs: int = 5  # never stop before this many epochs
    monitor: str = "loss"  # early stopping on validation: loss | auc | none (keep last epoch)
    batch_size: int = 1  # bags per step (padded and masked when > 1)
    class_weighting: bool = True  # weight the slide loss by inverse class frequency
    max_train_tiles: int | None = None  # random tiles per training bag per step (None: all)
    memory_gb: float = 8.0  # hold bags in memory (float16) when they fit, else stream
    seed: int = 0  # seeds splits, initialisation, shuffling and tile sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bootstrap: int = 1000  # bootstrap resamples for the AUC confidence interval (0: none)

    def __post_init__(self) -> None:
        checks = {
            "model": (self.model in list_models(), f"one of {list_models()}"),
            "schedule": (self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            "monitor": (self.monitor in MONITORS, f"one of {MONITORS}"),
            "optimizer": (self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "k_sample": (self.k_sample >= 1, ">= 1"),
            "bag_weight": (0 <= self.bag_weight <= 1, "in [0, 1]"),
            "max_train_tiles": (self.max_train_tiles is None or self.max_train_tiles >= 1,
                                ">= 1 or None"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"TrainParams.{name} = {getattr(self, name)!r}: must be {expected}")
        object.__setattr__(self, "hidden_dims", tuple(int(w) for w in self.hidden_dims))

    def model_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"hidden_dims": self.hidden_dims,
                                  "attention_dim": self.attention_dim, "dropout": self.dropout}
        if self.model.startswith("clam"):
            kwargs.update(k_sample=self.k_sample, subtyping=self.subtyping)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class EpochStats:
    loss: float = 0.0
    slide_loss: float = 0.0
    seg_loss: float = 0.0
    instance_loss: float = 0.0
    labels: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)

    def y(self) -> np.ndarray:
        return np.asarray(self.labels)

    def p(self) -> np.ndarray:
        return np.concatenate(self.probs) if self.probs else np.zeros((0, 0))


def run_epoch(model: MILModel, dataset: BagDataset, params: TrainParams, negative_index: int,
              device: torch.device, weights: torch.Tensor | None,
              optimizer: torch.optim.Optimizer | None = None,
              generator: torch.Generator | None = None) -> EpochStats:
    """One pass over ``dataset``: trains when ``optimizer`` is given, else evaluates."""
    training = optimizer is not None
    model.train(training)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=params.batch_size if training else 1, shuffle=training,
        collate_fn=collate_bags, generator=generator,
    )
    stats, n = EpochStats(), 0
    weights = None if weights is None else weights.to(device)
    for batch in loader:
        batch = batch.to(device)
        with torch.set_grad_enabled(training), torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
        ):
            out = model(batch.features, batch.mask, batch.labels if training else None)
            slide = F.cross_entropy(out.logits.float(), batch.labels, weight=weights)
            loss = slide
            if out.instance_loss is not None:
                loss = params.bag_weight * slide + (1 - params.bag_weight) * out.instance_loss
            seg = torch.zeros((), device=device)
            if params.seg_weight > 0:
                seg = segmentation_loss(out, batch.mask, batch.labels, batch.tile_labels,
                                        negative_index=negative_index, k=params.k_sample,
                                        threshold=params.tile_label_threshold,
                                        rank_by_attention=model.ranks_by_attention)
                loss = loss + params.seg_weight * seg
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        size = len(batch.slide_ids)
        n += size
        stats.loss += float(loss.detach()) * size
        stats.slide_loss += float(slide.detach()) * size
        stats.seg_loss += float(seg.detach()) * size
        if out.instance_loss is not None:
            stats.instance_loss += float(out.instance_loss.detach()) * size
        stats.labels += batch.labels.tolist()
        stats.probs.append(out.logits.float().softmax(dim=1).detach().cpu().numpy())
    for name in ("loss", "slide_loss", "seg_loss", "instance_loss"):
        setattr(stats, name, getattr(stats, name) / max(n, 1))
    return stats


@dataclass
class FoldResult:
    model: MILModel
    best_epoch: int
    log: list[dict[str, Any]]
    val: EpochStats


def make_optimizer(model: MILModel, params: TrainParams) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    # foreach: one fused update per step instead of a Python loop over tensors (CPU too)
    return cls(model.parameters(), lr=params.lr, weight_decay=params.weight_decay, foreach=True)


def train_fold(model: MILModel, train: BagDataset, val: BagDataset, params: TrainParams,
               negative_index: int, *, seed: int, desc: str = "train") -> FoldResult:
    """Train with early stopping on ``val``; the returned model holds the best epoch's weights."""
    device = resolve_device(params.device)
    model.to(device)
    weights = (class_weights([r.label for r in train.records], model.n_classes)
               if params.class_weighting else None)
    optimizer = make_optimizer(model, params)
    scheduler: Any = None
    if params.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    elif params.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                               patience=max(1, params.patience // 3))
    generator = torch.Generator().manual_seed(seed)
    best_score, best_epoch = -math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    best_val = EpochStats()
    log: list[dict[str, Any]] = []
    bar = tqdm(range(params.epochs), desc=desc, unit="epoch", leave=False, file=sys.stderr,
               disable=None)
    for epoch in bar:
        start = time.perf_counter()
        tr = run_epoch(model, train, params, negative_index, device, weights, optimizer,
                       generator)
        va = run_epoch(model, val, params, negative_index, device, weights)
        auc = slide_auc(va.y(), va.p(), negative_index) if len(va.labels) else None
        if params.monitor == "none":  # fixed epoch count: the last epoch is the one kept
            score = float(epoch)
        elif params.monitor == "auc" and auc is not None:
            score = auc
        else:
            score = -va.loss
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step(va.loss) if params.schedule == "plateau" else scheduler.step()
        improved = score > best_score
        if improved:
            best_score, best_epoch, best_val = score, epoch, va
            best_state = copy.deepcopy(model.state_dict())
        log.append({"epoch": epoch, "lr": lr, "train_loss": tr.loss,
                    "train_slide_loss": tr.slide_loss, "train_seg_loss": tr.seg_loss,
                    "train_instance_loss": tr.instance_loss, "val_loss": va.loss,
                    "val_auc": auc, "best": improved,
                    "seconds": round(time.perf_counter() - start, 3)})
        bar.set_postfix(train=f"{tr.loss:.3f}", val=f"{va.loss:.3f}",
                        auc="-" if auc is None else f"{auc:.3f}")
        if epoch + 1 >= params.min_epochs and epoch - best_epoch >= params.patience:
            break
    model.load_state_dict(best_state)
    return FoldResult(model, best_epoch, log, best_val)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def save_model(fold_dir: Path, model: MILModel, meta: dict[str, Any]) -> None:
    """``model.pt`` (state dict only) and ``model.json`` (how to rebuild it), atomically."""
    with atomic_output(fold_dir / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_text_atomic(fold_dir / "model.json",
                      json.dumps({**model.config(), **meta}, indent=2) + "\n")


def summarise(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std (population std over folds) of each headline metric."""
    out: dict[str, Any] = {}
    for name in SUMMARY_METRICS:
        values = [m[name] for m in fold_metrics if m.get(name) is not None]
        out[name] = {"mean": float(np.mean(values)) if values else None,
                     "std": float(np.std(values)) if values else None,
                     "values": values}
    return out


def prediction_rows(split: FoldSplit, probs: np.ndarray, predicted: np.ndarray,
              labels: LabelTable) -> list[dict[str, Any]]:
    by_slide = labels.by_slide()
    rows = []
    for slide_id, p, k in zip(split.test, probs, predicted, strict=True):
        row = {"slide_id": slide_id, "label": by_slide[slide_id].label,
               "predicted_label": labels.class_names[int(k)]}
        row.update({f"prob_{c}": round(float(v), 6) for c, v in zip(labels.class_names, p)})
        rows.append(row)
    return rows


def finished_fold(fold_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(metrics, test prediction rows) of a fold whose files are all written, else None.

    ``test_predictions.csv`` is the fold's last file (after ``model.pt``, ``model.json``,
    ``metrics.json`` and ``log.csv``), each written atomically: when it exists the fold is done.
    """
    names = ("model.pt", "model.json", "metrics.json", "log.csv", "test_predictions.csv")
    if not all((fold_dir / name).is_file() for name in names):
        return None
    metrics = json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8"))
    with (fold_dir / "test_predictions.csv").open(newline="", encoding="utf-8") as f:
        rows = [{k: float(v) if k.startswith("prob_") else v for k, v in row.items()}
                for row in csv.DictReader(f)]
    return metrics, rows


def _same_run(previous: Path, config: dict[str, Any]) -> bool:
    """Whether the run folder's ``config.yaml`` was written for this exact training."""
    if not previous.is_file():
        return False
    try:
        old = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return False
    keys = ("train", "features", "labels", "class_names", "negative_class", "n_slides", "n_folds")
    return all(old.get(key) == config.get(key) for key in keys)


def train_run(features_dir: str | os.PathLike, labels_csv: str | os.PathLike,
              out_dir: str | os.PathLike, params: TrainParams = TrainParams(),
              resume: bool = False) -> dict[str, Any]:
    """Train every fold, write the run folder, and return the summary (also ``summary.json``).

    With ``resume``, a fold whose files are complete (:func:`finished_fold`) from a run with
    the same settings, bags and labels is kept, not retrained: a run killed at fold 4 of 5
    restarts at fold 4.
    """
    features_dir, out_dir = Path(features_dir), Path(out_dir)
    labels = read_labels(labels_csv)
    negative_index = labels.negative_index(params.negative_class)
    bag_set = match_bags(features_dir, labels)
    splits = make_splits(labels, params.folds, params.val_fraction, params.seed)
    config = {
        "train": params.to_dict(),
        "features": str(features_dir.resolve()),
        "labels": str(Path(labels_csv).resolve()),
        "encoder": bag_set.encoder,
        "in_dim": bag_set.dim,
        "class_names": list(labels.class_names),
        "negative_class": labels.class_names[negative_index],
        "n_slides": len(bag_set.records),
        "n_folds": len(splits),
        **provenance(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = resume and _same_run(out_dir / "config.yaml", config)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(out_dir / "splits.csv", splits_csv(splits, labels))
    records = {r.slide_id: r for r in bag_set.records}

    def dataset(ids: tuple[str, ...], seed: int, train: bool) -> BagDataset:
        return BagDataset([records[s] for s in ids], bag_set.dim, memory_gb=params.memory_gb,
                          max_tiles=params.max_train_tiles if train else None, seed=seed)

    fold_metrics, pooled_rows = [], []
    for split in splits:
        seed = params.seed + split.fold
        seed_everything(seed)
        fold_dir = out_dir / f"fold_{split.fold}"
        finished = finished_fold(fold_dir) if resume else None
        if finished is not None:
            fold_metrics.append(finished[0])
            pooled_rows += finished[1]
            tqdm.write(f"fold {split.fold}: complete in {fold_dir}, kept", file=sys.stderr)
            continue
        model = create_model(params.model, bag_set.dim, len(labels.class_names),
                             **params.model_kwargs())
        result = train_fold(model, dataset(split.train, seed, True), dataset(split.val, seed, False),
                            params, negative_index, seed=seed, desc=f"fold {split.fold}")
        threshold = choose_threshold(result.val.y(), result.val.p(), negative_index)
        test = run_epoch(result.model, dataset(split.test, seed, False), params, negative_index,
                         resolve_device(params.device), None)
        predicted = predict_indices(test.p(), threshold, negative_index)
        metrics = slide_metrics(test.y(), test.p(), predicted, labels.class_names,
                                negative_index, n_boot=params.bootstrap, seed=params.seed)
        val_predicted = predict_indices(result.val.p(), threshold, negative_index)
        metrics.update(fold=split.fold, threshold=threshold, best_epoch=result.best_epoch,
                       epochs_run=len(result.log), n_train=len(split.train), n_val=len(split.val),
                       validation=slide_metrics(result.val.y(), result.val.p(), val_predicted,
                                                labels.class_names, negative_index, n_boot=0))
        save_model(fold_dir, result.model, {
            "class_names": list(labels.class_names),
            "negative_class": labels.class_names[negative_index],
            "threshold": threshold, "encoder": bag_set.encoder, "fold": split.fold,
            "best_epoch": result.best_epoch, "run": out_dir.name,
        })
        write_text_atomic(fold_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text_atomic(fold_dir / "log.csv", _csv_text(result.log))
        rows = prediction_rows(split, test.p(), predicted, labels)
        write_text_atomic(fold_dir / "test_predictions.csv", _csv_text(rows))
        pooled_rows += rows
        fold_metrics.append(metrics)
        auc = metrics["auc"]
        tqdm.write(f"fold {split.fold}: test AUC {'-' if auc is None else f'{auc:.3f}'}, "
                   f"accuracy {metrics['accuracy']:.3f} (best epoch {result.best_epoch})",
                   file=sys.stderr)
    summary = {"model": params.model, "class_names": list(labels.class_names),
               "n_folds": len(splits), **summarise(fold_metrics)}
    if len(splits) > 1:
        y = np.array([labels.class_index(r["label"]) for r in pooled_rows])
        p = np.array([[r[f"prob_{c}"] for c in labels.class_names] for r in pooled_rows])
        k = np.array([labels.class_index(r["predicted_label"]) for r in pooled_rows])
        summary["pooled_out_of_fold"] = slide_metrics(
            y, p, k, labels.class_names, negative_index, n_boot=params.bootstrap,
            seed=params.seed)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def params_from_dict(values: dict[str, Any]) -> TrainParams:
    """A :class:`TrainParams` from a mapping (CLI or YAML), rejecting unknown keys."""
    known = {f.name for f in fields(TrainParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
    return TrainParams(**values)
