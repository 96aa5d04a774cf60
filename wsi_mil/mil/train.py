"""Train MIL models on feature bags with slide labels, fold by fold, and write a run folder.

``runs/<name>/``: ``config.yaml`` (every resolved setting), ``splits.csv`` (fold, slide, role),
per fold ``fold_<k>/model.pt`` (state dict only, loadable with ``weights_only=True``),
``log.csv`` (per epoch: losses, validation AUC, attention entropy) and ``training.json`` (the
fold's training record: best epoch, validation and test probabilities), then, once every fold
is trained, ``model.json`` (registry name, constructor arguments, class names, the fold's
decision threshold and temperature: all that :mod:`wsi_mil.mil.predict` needs to rebuild it),
``metrics.json`` (test and validation metrics, the threshold's rule and the slides that chose
it), ``val_predictions.csv`` and ``test_predictions.csv``; and ``summary.json`` (mean ± std over
folds, the metrics of the pooled out-of-fold predictions at each fold's own threshold, every
threshold with its rule, and the ensemble's).

Training choices, and why: Adam with strong L2 weight decay (small cohorts overfit within 20
epochs under AdamW's weak decoupled decay; see ``TrainParams.weight_decay``) and a cosine (or
plateau) schedule; early stopping and model
selection on the slide-level validation loss (smoother than AUC on a few dozen slides, and free
of the pseudo-labelled segmentation and instance losses) from ``min_epochs`` on, restoring the
best epoch; per-fold decision thresholds from every fold's validation predictions pooled minus
that fold's test slides (:mod:`wsi_mil.mil.thresholds`); the slide loss of each bag weighted by
inverse class frequency and divided by the number of bags, in training and in the validation
loss that picks the epoch (cohorts are rarely balanced; ``mil.tasks.slide_loss`` says why
not PyTorch's weighted mean); optional temperature scaling on each fold's validation slides;
fixed seeds; bf16 autocast on CUDA only (CPU bf16 matmuls are slower than float32 on most
CPUs).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F

from features.device import resolve_device
from tiling.storage import atomic_output, csv_text, provenance, write_text_atomic
from wsi_mil.config.executor import ClusterParams, ExecutorParams
from wsi_mil.console import progress_bar
from wsi_mil.errors import WsiMilError
from wsi_mil.executors import map_ordered
from wsi_mil.metrics.attention import attention_entropies
from wsi_mil.metrics.calibration import apply_temperature, fit_temperature
from wsi_mil.metrics.slide import predict_indices, slide_auc, slide_metrics
from wsi_mil.mil.bags import BagDataset, collate_bags, match_bags, patient_bags
from wsi_mil.mil.labels import LabelsError, LabelTable, check_trainable, patient_table, read_labels
from wsi_mil.mil.models import MILModel, create_model
from wsi_mil.mil.models.segmentation import one_vs_rest_segmentation_loss, segmentation_loss
from wsi_mil.mil.params import TrainParams
from wsi_mil.mil.splits import FoldSplit, make_splits, splits_csv
from wsi_mil.mil.tasks import Task, fit_baseline, fit_task, make_task
from wsi_mil.mil.thresholds import ENSEMBLE_RULE, ensemble_threshold, fold_thresholds

logger = logging.getLogger(__name__)
SUMMARY_METRICS = ("auc", "accuracy", "balanced_accuracy", "f1", "brier", "ece")


class TrainingError(WsiMilError, ValueError):
    """A fold that cannot be trained as asked (its validation gives no usable score)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class EpochStats:
    loss: float = 0.0
    slide_loss: float = 0.0
    seg_loss: float = 0.0
    instance_loss: float = 0.0
    labels: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)  # the task's outputs (decoded)
    logits: list[np.ndarray] = field(default_factory=list)  # the model's raw outputs
    targets: list[np.ndarray] = field(default_factory=list)  # the task's numbers per bag
    #: per bag: attention entropy in nats and normalised by log(tiles) (see metrics.attention)
    entropy: list[float] = field(default_factory=list)
    entropy_norm: list[float] = field(default_factory=list)

    def y(self) -> np.ndarray:
        return np.asarray(self.labels)

    def p(self) -> np.ndarray:
        return np.concatenate(self.probs) if self.probs else np.zeros((0, 0))

    def z(self) -> np.ndarray:
        """Raw outputs ``[n, outputs]``."""
        return np.concatenate(self.logits) if self.logits else np.zeros((0, 0))

    def t(self) -> np.ndarray:
        """The task's numbers ``[n, T]`` (multilabel targets, time and event, value)."""
        return np.concatenate(self.targets) if self.targets else np.zeros((0, 0))

    def mean_entropy(self, normalised: bool = False) -> float | None:
        values = self.entropy_norm if normalised else self.entropy
        return round(float(np.mean(values)), 6) if values else None

    def add_entropy(self, attention: torch.Tensor, mask: torch.Tensor) -> None:
        """Record each bag's attention entropy (the weights renormalised over its real tiles)."""
        h, norm = attention_entropies(
            attention.detach().float().cpu().numpy(), mask.detach().cpu().numpy()
        )
        self.entropy += h.tolist()
        self.entropy_norm += norm.tolist()


def classification_task(n_classes: int, negative_index: int | None) -> Task:
    """The classification task of a model trained outside a run (tests, benchmarks)."""
    names = tuple(str(c) for c in range(n_classes))
    return Task(
        "classification",
        names,
        n_classes,
        "negative" if negative_index is not None else "one_vs_rest",
        negative_index,
    )


def auxiliary_loss(
    task: Task, out: Any, batch: Any, params: TrainParams, model: MILModel, device: torch.device
) -> torch.Tensor:
    """The segmentation head's loss of a batch, as the task teaches it (see
    :mod:`wsi_mil.mil.models.segmentation`); 0 without a head or with ``seg_weight`` 0."""
    if params.seg_weight <= 0 or task.segmentation is None:
        return torch.zeros((), device=device)
    tile_labels = (
        batch.tile_labels
        if params.use_tile_labels
        else torch.full_like(batch.tile_labels, float("nan"))
    )
    if task.segmentation == "negative":
        assert task.negative_index is not None  # make_task pairs "negative" with its index
        return segmentation_loss(
            out,
            batch.mask,
            batch.labels,
            tile_labels,
            negative_index=task.negative_index,
            k=params.k_sample,
            threshold=params.tile_label_threshold,
            rank_by_attention=model.ranks_by_attention,
        )
    present = (
        batch.targets
        if task.kind == "multilabel"
        else F.one_hot(batch.labels, task.n_outputs).float()
    )
    return one_vs_rest_segmentation_loss(
        out,
        batch.mask,
        present,
        tile_labels,
        k=params.k_sample,
        threshold=params.tile_label_threshold,
        rank_by_attention=model.ranks_by_attention,
    )


def run_epoch(
    model: MILModel,
    dataset: BagDataset,
    params: TrainParams,
    negative_index: int | None,
    device: torch.device,
    weights: torch.Tensor | None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    task: Task | None = None,
) -> EpochStats:
    """One pass over ``dataset``: trains when ``optimizer`` is given, else evaluates.

    ``task`` (default: classification with ``negative_index``) gives the slide loss. A task
    whose loss needs several bags at once (Cox) gathers ``cox_batch_size`` bags' outputs and
    steps once on their partial likelihood; evaluated, its loss is the partial likelihood of
    the whole set (one number per epoch, the same every epoch's selection compares).
    """
    task = task or classification_task(model.n_classes, negative_index)
    training = optimizer is not None
    model.train(training)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=params.batch_size if training else 1,
        shuffle=training,
        collate_fn=collate_bags,
        generator=generator,
    )
    stats, n = EpochStats(), 0
    weights = None if weights is None else weights.to(device)
    grouped = task.groups_bags
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def grouped_step(final: bool) -> None:
        """The Cox loss of the pending bags (a mini-batch of ``cox_batch_size``), stepped."""
        size = sum(len(z) for z, _, _ in pending)
        if not pending or (not final and size < params.cox_batch_size):
            return
        logits, labels, targets = (torch.cat([p[i] for p in pending]) for i in range(3))
        pending.clear()
        if size < 2:
            return  # one bag has no risk set
        assert optimizer is not None  # only called while training
        loss = task.slide_loss(logits, labels, targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats.loss += float(loss.detach()) * size
        stats.slide_loss += float(loss.detach()) * size

    for batch in loader:
        batch = batch.to(device)
        instance_labels = (
            batch.labels
            if task.kind == "classification"
            else batch.targets
            if task.kind == "multilabel"
            else None
        )
        with (
            torch.set_grad_enabled(training),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            out = model(
                batch.features,
                batch.mask,
                instance_labels if training else None,
                coords=batch.coords,
            )
            seg = auxiliary_loss(task, out, batch, params, model, device)
            if grouped:
                slide = torch.zeros((), device=device)
                loss = params.seg_weight * seg
            else:
                slide = task.slide_loss(out.logits, batch.labels, batch.targets, weights)
                loss = slide
                if out.instance_loss is not None:
                    loss = params.bag_weight * slide + (1 - params.bag_weight) * out.instance_loss
                loss = loss + params.seg_weight * seg
        if grouped:
            pending.append(
                (out.logits if training else out.logits.detach(), batch.labels, batch.targets)
            )
            if training:
                grouped_step(final=False)
        elif optimizer is not None:  # training
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        size = len(batch.slide_ids)
        n += size
        if not grouped:
            stats.loss += float(loss.detach()) * size
            stats.slide_loss += float(slide.detach()) * size
        stats.seg_loss += float(seg.detach()) * size
        if out.instance_loss is not None:
            stats.instance_loss += float(out.instance_loss.detach()) * size
        stats.labels += batch.labels.tolist()
        logits = out.logits.float().detach().cpu().numpy()
        stats.logits.append(logits)
        stats.probs.append(task.decode(logits))
        stats.targets.append(batch.targets.detach().cpu().numpy())
        stats.add_entropy(out.attention, batch.mask)
    if grouped and training:
        grouped_step(final=True)
    elif grouped and pending:  # evaluation: the partial likelihood of the whole set
        logits, labels, targets = (torch.cat([p[i] for p in pending]) for i in range(3))
        with torch.no_grad():
            value = float(task.slide_loss(logits, labels, targets, weights)) * len(logits)
        stats.loss += value
        stats.slide_loss += value
    for name in ("loss", "slide_loss", "seg_loss", "instance_loss"):
        setattr(stats, name, getattr(stats, name) / max(n, 1))
    return stats


def monitor_score(task: Task, stats: EpochStats) -> float | None:
    """The task's validation score (``monitor: auc``, ``log.csv``'s ``val_<name>``): the slide
    AUC, the multilabel macro AUC, Harrell's C, R²; None where undefined."""
    if not len(stats.labels) or not np.isfinite(stats.p()).all():
        return None
    if task.kind == "classification":
        negative = 0 if task.negative_index is None else task.negative_index
        return slide_auc(stats.y(), stats.p(), negative)
    if task.kind == "multilabel":
        from wsi_mil.metrics.multilabel import macro_auc

        return macro_auc(stats.t().astype(int), stats.p())
    if task.kind == "survival":
        from wsi_mil.metrics.survival import harrell_c

        targets = stats.t()
        return harrell_c(targets[:, 0], targets[:, 1], stats.p()[:, 0])
    targets = stats.t()
    if len(targets) < 2 or np.ptp(targets[:, 0]) == 0:
        return None
    from sklearn.metrics import r2_score

    return float(r2_score(targets[:, 0], stats.p()[:, 0]))


#: what ``log.csv`` calls each task's validation score
SCORE_NAMES = {
    "classification": "auc",
    "multilabel": "auc",
    "survival": "c_index",
    "regression": "r2",
}


@dataclass
class FoldResult:
    model: MILModel
    best_epoch: int
    log: list[dict[str, Any]]
    val: EpochStats


def make_optimizer(
    parameters: Iterable[torch.Tensor], params: TrainParams, *, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser ``params.optimizer`` names, over ``parameters`` (``model.parameters()``).

    ``fused``: one kernel for the whole update, on CPU and CUDA (training uses it: AdamW over
    the default ``gated_abmil``'s 0.38 M parameters takes 1.8 ms a step fused against 4.9 ms
    foreach on one CPU thread, a third of a small bag's whole step; the stacked networks of
    ``scripts/bench_mil_classic.py``: SGD 14 ms fused, 57 foreach). Else ``foreach``: a few
    batched updates per step instead of a Python loop over tensors.
    """
    kwargs: dict[str, Any] = {
        "lr": params.lr,
        "weight_decay": params.weight_decay,
        ("fused" if fused else "foreach"): True,
    }
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, momentum=0.9, nesterov=True, **kwargs)
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, **kwargs)


def train_fold(
    model: MILModel,
    train: BagDataset,
    val: BagDataset,
    params: TrainParams,
    negative_index: int | None,
    *,
    seed: int,
    desc: str = "train",
    task: Task | None = None,
) -> FoldResult:
    """Train with early stopping on ``val``; the returned model holds the best epoch's weights.

    The epoch kept is the best by ``params.monitor`` on the validation slides, looked for only
    from epoch ``min_epochs`` on (counting from 1); training stops ``patience`` epochs after the
    best one. The monitored loss is the slide-level loss alone: the segmentation head's and
    CLAM's instance losses train on targets the model picked itself (its most and least
    attended tiles), so they can fall while the slide decisions get worse. The validation
    loss carries the training's class weights (``mil.tasks.slide_loss``), so the epoch is chosen on
    the quantity that is optimised. A fold in which no eligible epoch gave a finite validation
    score raises :class:`TrainingError` rather than keeping the untrained weights.
    """
    device = resolve_device(params.device)
    model.to(device)
    task = task or classification_task(model.n_classes, negative_index)
    weights = (
        task.weights(np.array([r.target for r in train.records]), [r.label for r in train.records])
        if params.class_weighting
        else None
    )
    score_name = f"val_{SCORE_NAMES[task.kind]}"
    optimizer = make_optimizer(model.parameters(), params, fused=device.type in ("cpu", "cuda"))
    scheduler: Any = None
    if params.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    elif params.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(1, params.patience // 3)
        )
    generator = torch.Generator().manual_seed(seed)
    first = min(params.min_epochs, params.epochs) - 1  # the first epoch that may be kept
    best_score, best_epoch = -math.inf, first
    best_state = copy.deepcopy(model.state_dict())
    best_val = EpochStats()
    log: list[dict[str, Any]] = []
    bar = progress_bar(  # a terminal only: a log file would keep every redraw
        range(params.epochs), desc=desc, unit="epoch", leave=False, show=sys.stderr.isatty()
    )
    for epoch in bar:
        start = time.perf_counter()
        tr = run_epoch(
            model, train, params, negative_index, device, weights, optimizer, generator, task=task
        )
        va = run_epoch(model, val, params, negative_index, device, weights, task=task)
        auc = monitor_score(task, va)
        if params.monitor == "none":  # fixed epoch count: the last epoch is the one kept
            score = float(epoch)
        elif params.monitor == "auc" and auc is not None:
            score = auc
        else:
            score = -va.slide_loss
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step(va.slide_loss) if params.schedule == "plateau" else scheduler.step()
        improved = epoch >= first and score > best_score
        if improved:
            best_score, best_epoch, best_val = score, epoch, va
            best_state = copy.deepcopy(model.state_dict())
        log.append(
            {
                "epoch": epoch,
                "lr": lr,
                "train_loss": tr.loss,
                "train_slide_loss": tr.slide_loss,
                "train_seg_loss": tr.seg_loss,
                "train_instance_loss": tr.instance_loss,
                "train_attention_entropy": tr.mean_entropy(),
                "val_loss": va.loss,
                "val_slide_loss": va.slide_loss,
                score_name: auc,
                "val_attention_entropy": va.mean_entropy(),
                "val_attention_entropy_norm": va.mean_entropy(normalised=True),
                "best": improved,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        bar.set_postfix(
            train=f"{tr.loss:.3f}",
            val=f"{va.slide_loss:.3f}",
            auc="-" if auc is None else f"{auc:.3f}",
        )
        if epoch >= first and epoch - best_epoch >= params.patience:
            break
    if best_score == -math.inf:
        raise TrainingError(
            f"{desc}: every validation score from epoch {first + 1} on was NaN (validation "
            f"slide loss {log[-1]['val_slide_loss']}): no epoch can be chosen. Check the bags "
            f"for NaN/inf features and the learning rate ({params.lr})"
        )
    model.load_state_dict(best_state)
    return FoldResult(model, best_epoch, log, best_val)


def save_weights(fold_dir: Path, model: MILModel) -> None:
    """``model.pt``: the state dict only (loadable with ``weights_only=True``), atomically."""
    with atomic_output(fold_dir / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)


def save_model(fold_dir: Path, model: MILModel, meta: dict[str, Any]) -> None:
    """``model.pt`` and ``model.json`` (how to rebuild it, with ``meta``), atomically."""
    save_weights(fold_dir, model)
    write_text_atomic(
        fold_dir / "model.json", json.dumps({**model.config(), **meta}, indent=2) + "\n"
    )


def summarise(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of each headline metric over folds (sample std, ddof 1: the folds are a
    sample of the splits that could have been drawn; None for one fold)."""
    out: dict[str, Any] = {}
    for name in SUMMARY_METRICS:
        values = [m[name] for m in fold_metrics if m.get(name) is not None]
        out[name] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": values,
        }
    return out


def prediction_rows(
    slide_ids: tuple[str, ...], probs: np.ndarray, predicted: np.ndarray, labels: LabelTable
) -> list[dict[str, Any]]:
    """A classification's ``val/test_predictions.csv`` rows (``predicted``: class indices)."""
    by_slide = labels.by_slide()
    rows = []
    for slide_id, p, k in zip(slide_ids, probs, predicted, strict=True):
        row: dict[str, object] = {
            "slide_id": slide_id,
            "label": by_slide[slide_id].label,
            "predicted_label": labels.class_names[int(k)],
        }
        row.update({f"prob_{c}": round(float(v), 6) for c, v in zip(labels.class_names, p)})
        rows.append(row)
    return rows


def finished_fold(fold_dir: Path) -> dict[str, Any] | None:
    """The training record (``training.json``) of a fold whose training is done, else None.

    ``training.json`` is the fold's last training file (after ``model.pt`` and ``log.csv``),
    each written atomically: when it exists the fold is trained. It holds what the run-level
    step needs without retraining: the best epoch, the model's configuration, and the
    validation and test probabilities.
    """
    names = ("model.pt", "log.csv", "training.json")
    if not all((fold_dir / name).is_file() for name in names):
        return None
    return json.loads((fold_dir / "training.json").read_text(encoding="utf-8"))


def _same_run(previous: Path, config: dict[str, Any]) -> bool:
    """Whether the run folder's ``config.yaml`` was written for this exact training."""
    if not previous.is_file():
        return False
    try:
        old = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return False
    keys = (
        "train",
        "features",
        "labels",
        "task",
        "class_names",
        "negative_class",
        "n_slides",
        "n_folds",
    )
    return all(old.get(key) == config.get(key) for key in keys)


def model_kwargs(params: TrainParams, task: Task) -> dict[str, Any]:
    """The model's constructor arguments for ``task``: the parameters' own, plus one attention
    branch per output where the segmentation head is one-vs-rest (multilabel targets, and
    subtypes: each class's tiles are pseudo-labelled from that class's own attention, CLAM-MB's
    layout, where the model can have it: :mod:`wsi_mil.mil.models.base`), no segmentation head
    without tile classes (survival, regression), and CLAM's subtyping term for classes without
    a negative one.

    Why a branch per subtype: with one shared attention, a model that tells luad from lusc can
    attend to luad's tiles alone (their absence says lusc), and lusc's tiles are then never
    among the most attended, so lusc's head would learn nothing (tile AUC 0.42 for lusc,
    0.87 for luad on generated subtypes, ``tests/wsi_mil/mil/test_train_tasks.py``)."""
    from wsi_mil.mil.models.registry import model_class

    kwargs = params.model_kwargs()
    cls = model_class(params.model)
    if task.segmentation == "one_vs_rest" and cls.supports_branches:
        kwargs["branch_per_output"] = True
    if task.segmentation is None:
        kwargs["segmentation_head"] = False
    if task.kind == "classification" and task.negative_index is None and "subtyping" in kwargs:
        kwargs["subtyping"] = True
    return kwargs


def read_training_labels(
    labels_csv: str | os.PathLike, params: TrainParams
) -> tuple[LabelTable, int | None]:
    """The labels CSV of ``params.task`` and the negative class's index (classification with
    one; None for subtypes and the other tasks), checked as far as the CSV alone allows."""
    labels = read_labels(labels_csv, task=params.task, targets=params.targets)
    negative_index = None
    if params.task == "classification":
        negative_index = labels.negative_index_or_none(params.negative_class, params.subtyping)
    elif params.negative_class is not None or params.subtyping:
        raise LabelsError(
            f"{labels_csv}: negative_class and subtyping are classification "
            f"settings; the task is {params.task}"
        )
    check_trainable(labels)
    return labels, negative_index


def train_folds(
    features_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: TrainParams | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train every fold, write the run folder, and return the summary (also ``summary.json``).

    Every check of the labels and bags runs before anything is written, so a malformed labels
    CSV leaves no run folder behind. With ``resume``, a fold whose files are complete
    (:func:`finished_fold`) from a run with the same settings, bags and labels is kept, not
    retrained: a run killed at fold 4 of 5 restarts at fold 4.
    """
    params = TrainParams() if params is None else params
    features_dir, out_dir = Path(features_dir), Path(out_dir)
    labels, negative_index = read_training_labels(labels_csv, params)
    bag_set = match_bags(features_dir, labels, missing=params.missing_bags)
    if bag_set.missing:  # left out with a warning: the splits are made of the slides that exist
        labels = labels.restricted_to({r.slide_id for r in bag_set.records})
    members: dict[str, tuple[str, ...]] = {}
    if params.bag_level == "patient":
        if not labels.has_patient_id:
            raise LabelsError(f"{labels_csv}: --bag-level patient needs a patient_id column")
        labels, members = patient_table(labels)
        bag_set = patient_bags(bag_set, labels, members)
        labels = labels.restricted_to({r.slide_id for r in bag_set.records})
    check_trainable(labels)
    task = make_task(params, labels, negative_index)
    splits = make_splits(labels, params.folds, params.val_fraction, params.seed)
    config = {
        "train": params.to_dict(),
        "features": str(features_dir.resolve()),
        "labels": str(Path(labels_csv).resolve()),
        "task": task.kind,
        "encoder": bag_set.encoder,
        "in_dim": bag_set.dim,
        "class_names": list(task.output_names),
        "negative_class": (None if negative_index is None else labels.class_names[negative_index]),
        "segmentation_head": task.segmentation,
        "bag_level": params.bag_level,
        "n_slides": len(bag_set.records),
        "left_out_no_bag": list(bag_set.missing),
        "n_folds": len(splits),
        **provenance(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = resume and _same_run(out_dir / "config.yaml", config)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(out_dir / "splits.csv", splits_csv(splits, labels, members))
    records = {r.slide_id: r for r in bag_set.records}

    def dataset(ids: tuple[str, ...], seed: int, train: bool, with_coords: bool) -> BagDataset:
        return BagDataset(
            [records[s] for s in ids],
            bag_set.dim,
            memory_gb=params.memory_gb,
            max_tiles=params.max_train_tiles if train else None,
            seed=seed,
            with_coords=with_coords,
            stain_views=train,
        )

    def train_one(split: FoldSplit) -> dict[str, Any]:
        seed = params.seed + split.fold
        seed_everything(seed)
        fold_dir = out_dir / f"fold_{split.fold}"
        fitted = fit_task(task, labels.values(list(split.train)))
        model = create_model(
            params.model, bag_set.dim, task.n_outputs, **model_kwargs(params, task)
        )
        coords = model.uses_coords  # the bags' tile positions, read only for a model using them
        result = train_fold(
            model,
            dataset(split.train, seed, True, coords),
            dataset(split.val, seed, False, coords),
            params,
            negative_index,
            seed=seed,
            desc=f"fold {split.fold}",
            task=fitted,
        )
        device = resolve_device(params.device)
        test = run_epoch(
            result.model,
            dataset(split.test, seed, False, coords),
            params,
            negative_index,
            device,
            None,
            task=fitted,
        )
        record: dict[str, Any] = {
            "fold": split.fold,
            "model_config": result.model.config(),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.log),
            "n_train": len(split.train),
            "n_val": len(split.val),
        }
        if task.kind == "classification":
            record.update(
                val={"slide_ids": list(split.val), "probs": result.val.p().tolist()},
                test={"slide_ids": list(split.test), "probs": test.p().tolist()},
            )
        else:
            record.update(
                val={"slide_ids": list(split.val), "logits": result.val.z().tolist()},
                test={"slide_ids": list(split.test), "logits": test.z().tolist()},
            )
        if task.kind == "survival":  # the baseline and the risk cut, on the training slides
            train = run_epoch(
                result.model,
                dataset(split.train, seed, False, coords),
                params,
                negative_index,
                device,
                None,
                task=fitted,
            )
            fitted = fit_baseline(fitted, train.z(), train.t())
            record["risk_cut"] = float(np.median(fitted.decode(train.z())[:, 0]))
            test.probs = [fitted.decode(test.z())]  # centred risks (Cox), for the line below
        record["fitted"] = fitted.fitted
        save_weights(fold_dir, result.model)
        write_text_atomic(fold_dir / "log.csv", csv_text(result.log))
        write_text_atomic(fold_dir / "training.json", json.dumps(record) + "\n")
        name = {"auc": "AUC", "c_index": "Harrell's C", "r2": "R²"}[SCORE_NAMES[task.kind]]
        score = monitor_score(fitted, test)
        logger.info(
            "fold %s: test %s %s (best epoch %d of %d)",
            split.fold,
            name,
            "-" if score is None else f"{score:.3f}",
            result.best_epoch + 1,
            len(result.log),
        )
        return record

    trained, todo = [], []
    for split in splits:
        fold_dir = out_dir / f"fold_{split.fold}"
        finished = finished_fold(fold_dir) if resume else None
        if finished is not None:
            trained.append(finished)
            logger.info("fold %s: trained in %s, kept", split.fold, fold_dir)
        else:
            todo.append(split)
    trained += map_folds(train_one, todo, params.parallel_folds)
    trained.sort(key=lambda record: record["fold"])
    if task.kind == "classification":
        summary = finish_run(out_dir, trained, labels, negative_index, params, bag_set.encoder)
    else:
        from wsi_mil.mil.task_runs import finish_task_run

        summary = finish_task_run(out_dir, trained, labels, task, params, bag_set.encoder)
    summary.update(task=task.kind, bag_level=params.bag_level)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def map_folds(train_one: Any, splits: list[FoldSplit], parallel: int) -> list[dict[str, Any]]:
    """``train_one(split)`` for every split: here in order, or ``parallel`` at a time on a Dask
    LocalCluster on this machine, one worker process of one thread per fold (the executors,
    :func:`wsi_mil.executors.map_ordered`, start and stop it)."""
    executor = None
    if parallel > 1 and len(splits) > 1:
        executor = ExecutorParams(
            kind="dask",
            cluster=ClusterParams(n_workers=min(parallel, len(splits)), threads_per_worker=1),
        )
    return map_ordered(train_one, splits, stage="train-fold", executor=executor)


def finish_run(
    out_dir: Path,
    trained: list[dict[str, Any]],
    labels: LabelTable,
    negative_index: int | None,
    params: TrainParams,
    encoder: str,
) -> dict[str, Any]:
    """The run-level step after every fold is trained: calibration, thresholds, fold files.

    With ``params.calibrate``, each fold's temperature is fitted on its own validation
    predictions (:func:`wsi_mil.metrics.calibration.fit_temperature`) and applied to its
    validation and test probabilities before anything else. Each fold's decision threshold is
    then chosen by :func:`wsi_mil.mil.thresholds.fold_thresholds` (every fold's validation
    predictions pooled, minus that fold's test slides). Then per fold ``model.json``,
    ``metrics.json``, ``val_predictions.csv`` and ``test_predictions.csv``; returns the summary
    (mean ± std over folds, pooled out-of-fold metrics at each fold's own threshold, every
    threshold with its rule, and the ensemble's threshold for new slides).

    Subtypes (``negative_index`` None): with two classes the second in sorted order plays the
    positive class for the figures and the threshold that need one (AUC, the threshold and
    accuracy are the same either way round; F1 and the sensitivities are that class's); with
    more, every slide is decided by its largest probability.
    """
    classes = list(labels.class_names)
    by_slide = labels.by_slide()
    subtypes = negative_index is None
    negative = 0 if negative_index is None else negative_index
    unit = f"{params.bag_level}s"  # what the run's bags are: slides, or patients

    def y_of(ids: list[str]) -> np.ndarray:
        return np.array([labels.class_index(by_slide[s].label) for s in ids], dtype=int)

    temperatures, probs = {}, {}
    for r in trained:
        raw = {
            part: np.asarray(r[part]["probs"], dtype=np.float64).reshape(-1, len(classes))
            for part in ("val", "test")
        }
        temperature = (
            fit_temperature(y_of(r["val"]["slide_ids"]), raw["val"]) if params.calibrate else 1.0
        )
        temperatures[r["fold"]] = temperature
        probs[r["fold"]] = {part: apply_temperature(p, temperature) for part, p in raw.items()}
    chosen = fold_thresholds(
        [r["val"]["slide_ids"] for r in trained],
        [y_of(r["val"]["slide_ids"]) for r in trained],
        [probs[r["fold"]]["val"] for r in trained],
        [r["test"]["slide_ids"] for r in trained],
        [r["fold"] for r in trained],
        negative,
        params.threshold_min_per_class,
        unit=unit,
    )
    fold_metrics, pooled_rows = [], []
    for record, decision in zip(trained, chosen, strict=True):
        fold, threshold = record["fold"], decision.threshold
        fold_dir = out_dir / f"fold_{fold}"
        parts = {}
        for part in ("val", "test"):
            ids, p = record[part]["slide_ids"], probs[fold][part]
            parts[part] = (ids, y_of(ids), p, predict_indices(p, threshold, negative))
        ids, y, p, k = parts["test"]
        metrics = slide_metrics(
            y, p, k, classes, negative, n_boot=params.bootstrap, seed=params.seed
        )
        _, vy, vp, vk = parts["val"]
        metrics.update(
            fold=fold,
            threshold=threshold,
            threshold_rule=decision.rule,
            threshold_pool=sorted(set(decision.pool)),
            temperature=temperatures[fold],
            best_epoch=record["best_epoch"],
            epochs_run=record["epochs_run"],
            n_train=record["n_train"],
            n_val=record["n_val"],
            validation=slide_metrics(vy, vp, vk, classes, negative, n_boot=0),
        )
        meta = {
            **record["model_config"],
            "task": "classification",
            "class_names": classes,
            "negative_class": None if subtypes else classes[negative],
            "segmentation": "one_vs_rest" if subtypes else "negative",
            "bag_level": params.bag_level,
            "threshold": threshold,
            "threshold_rule": decision.rule,
            "temperature": temperatures[fold],
            "encoder": encoder,
            "fold": fold,
            "best_epoch": record["best_epoch"],
            "run": out_dir.name,
        }
        write_text_atomic(fold_dir / "model.json", json.dumps(meta, indent=2) + "\n")
        write_text_atomic(fold_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        for part in ("val", "test"):
            rows = prediction_rows(tuple(parts[part][0]), parts[part][2], parts[part][3], labels)
            write_text_atomic(fold_dir / f"{part}_predictions.csv", csv_text(rows))
        pooled_rows.append((y, p, k))
        fold_metrics.append(metrics)
        auc = metrics["auc"]
        logger.info(
            "fold %s: test AUC %s, accuracy %.3f at threshold %.3f (%s; none of its %d "
            "test %s among them)",
            fold,
            "-" if auc is None else f"{auc:.3f}",
            metrics["accuracy"],
            threshold,
            decision.rule,
            len(ids),
            unit,
        )
    ensemble = ensemble_threshold([d.threshold for d in chosen])
    summary = {
        "model": params.model,
        "class_names": classes,
        "n_folds": len(trained),
        "negative_class": None if subtypes else classes[negative],
        "subtyping": subtypes,
        "thresholds": [d.as_dict() for d in chosen],
        "ensemble_threshold": ensemble,
        "ensemble_threshold_rule": ENSEMBLE_RULE if len(chosen) > 1 else chosen[0].rule,
        "calibration": (
            {
                "method": "temperature scaling on each fold's validation slides",
                "temperatures": list(temperatures.values()),
            }
            if params.calibrate
            else None
        ),
        **summarise(fold_metrics),
    }
    if len(trained) > 1:
        y, p, k = (np.concatenate([r[i] for r in pooled_rows]) for i in range(3))
        summary["pooled_out_of_fold"] = slide_metrics(
            y, p, k, classes, negative, n_boot=params.bootstrap, seed=params.seed
        )
        summary["pooled_out_of_fold"]["thresholds"] = "each fold's own, for its test slides"
    return summary
