"""Predict one slide from its feature bag with a trained run: one fold or the fold ensemble.

A run's fold is rebuilt from ``fold_<k>/model.json`` (registry name and arguments) and its
``model.pt`` state dict, loaded with ``weights_only=True`` (no pickled code is ever executed).
The bag is read ``chunk_size`` tiles at a time in two passes (scores, then the weighted sum),
so memory stays bounded for any slide: a 200 000-tile bag needs a few hundred MB, not the
features' full float32 copy. A model that uses the tiles' positions (``uses_coords``) also
gets the bag's grid coordinates (:func:`wsi_mil.mil.bags.bag_grid_coords`).

Each fold's probabilities pass through its temperature (1 unless the run was trained with
``--calibrate``). A slide predicted by one fold (out of fold, or ``--fold K``) is decided at that
fold's own threshold; the ensemble of several folds combines their probabilities in log-odds
and decides at the threshold whose logit is the mean of theirs (:mod:`wsi_mil.mil.thresholds`
says why), and averages their tile probabilities and attention (:func:`ensemble_attention`).

Every task (:mod:`wsi_mil.mil.tasks`) is predicted the same way; what a fold's outputs mean is
its recorded task's: class probabilities, target probabilities (each target combined in
log-odds and decided at its own threshold, as a binary class), a risk with its survival curve
(the ensemble: the mean of the folds' risks and curves, the high/low risk group at the mean of
their cuts), a value (the mean of the folds'). A run trained on patient-level bags predicts a
patient's slides together (:func:`predict_patient`) and writes one file per slide with its own
tiles, all carrying the patient's outputs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.bag import BagError, open_bag_features, read_bag_attrs, read_bag_coords
from features.device import resolve_device
from wsi_mil.errors import WsiMilError
from wsi_mil.metrics.calibration import apply_temperature
from wsi_mil.mil.bags import BagSetError, bag_grid_coords
from wsi_mil.mil.models import MILModel, create_model
from wsi_mil.mil.params import PredictParams
from wsi_mil.mil.predictions import (
    PredictionFileError,
    SlidePrediction,
    normalise_attention,
    read_prediction_attrs,
    write_prediction,
)
from wsi_mil.mil.tasks import Task, task_from_meta
from wsi_mil.mil.thresholds import ENSEMBLE_RULE, ensemble_probs, ensemble_threshold, logit

#: bag attributes that describe the bag file itself rather than the slide, not copied over.
_NOT_COPIED = ("num_tiles", "complete", "created", "wsi_mil_version")


class RunError(WsiMilError, ValueError):
    """A run folder without usable models."""


@dataclass
class FoldModel:
    fold: int
    model: MILModel
    meta: dict[str, Any]
    sha256: str

    @property
    def temperature(self) -> float:
        """The fold's temperature (``--calibrate``), 1 for an uncalibrated run."""
        return float(self.meta.get("temperature", 1.0))

    @property
    def task(self) -> Task:
        """The fold's task, with what it fitted (:func:`wsi_mil.mil.tasks.task_from_meta`)."""
        return task_from_meta(self.meta)


@dataclass
class LoadedRun:
    """The models of a run, and what they share."""

    run_dir: Path
    folds: list[FoldModel]
    class_names: list[str]  # the outputs' names: classes, targets, risk, the target column
    negative_index: int | None  # None: subtypes, or a task without classes
    #: of all loaded folds together (:meth:`decision_threshold` of ``folds``): a probability,
    #: one per target, a risk cut, or None (regression)
    threshold: Any
    encoder: str
    in_dim: int
    device: torch.device
    #: slide id -> {fold: role} from the run's splits.csv (role: train, val or test)
    roles: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def checkpoint_sha256(self) -> str:
        """One fold's checkpoint hash, or a hash of the folds' hashes for an ensemble."""
        if len(self.folds) == 1:
            return self.folds[0].sha256
        return hashlib.sha256("".join(f.sha256 for f in self.folds).encode()).hexdigest()

    @property
    def task(self) -> Task:
        """The run's task (the first fold's; every fold records the same kind and outputs)."""
        return self.folds[0].task

    @property
    def bag_level(self) -> str:
        """ "slide", or "patient" for a run trained on patient-level bags."""
        return str(self.folds[0].meta.get("bag_level", "slide"))

    @staticmethod
    def decision_threshold(chosen: list[FoldModel]) -> tuple[Any, str]:
        """(threshold, rule) of the fold models that predict a slide: one fold's own, or the
        ensemble's: :func:`wsi_mil.mil.thresholds.ensemble_threshold` of a class's or each
        target's, the mean of the risk cuts, none for a regression."""
        if len(chosen) == 1:
            value = chosen[0].meta.get("threshold")
            return (float(value) if isinstance(value, (int, float)) else value), str(
                chosen[0].meta.get("threshold_rule", f"fold {chosen[0].fold}'s threshold")
            )
        kind = chosen[0].task.kind
        values: list[Any] = [fm.meta.get("threshold") for fm in chosen]  # shape by task kind
        if kind == "multilabel":
            return [
                ensemble_threshold([v[t] for v in values]) for t in range(len(values[0]))
            ], ENSEMBLE_RULE
        if kind == "survival":
            return float(np.mean(values)), "mean of the folds' risk cuts"
        if kind == "regression":
            return None, "none: the predicted value is the output"
        return ensemble_threshold([float(v) for v in values]), ENSEMBLE_RULE


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


def load_run(
    run_dir: str | os.PathLike, fold: int | None = None, device: str = "auto"
) -> LoadedRun:
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
        for key in ("class_names", "in_dim", "encoder", "negative_class", "task", "bag_level"):
            if f.meta.get(key) != first.get(key):
                raise RunError(
                    f"{run_dir}: fold {f.fold} has {key} {f.meta.get(key)!r}, "
                    f"fold {folds[0].fold} has {first.get(key)!r}"
                )
    class_names = list(first["class_names"])
    negative = first.get("negative_class")
    return LoadedRun(
        run_dir,
        folds,
        class_names,
        class_names.index(negative) if negative in class_names else None,
        LoadedRun.decision_threshold(folds)[0],
        str(first["encoder"]),
        int(first["in_dim"]),
        torch_device,
        read_roles(run_dir / "splits.csv"),
    )


def read_roles(splits_csv: Path) -> dict[str, dict[int, str]]:
    """slide id -> {fold: role} from a run's ``splits.csv`` ({} for a run without one)."""
    roles: dict[str, dict[int, str]] = {}
    if not splits_csv.is_file():
        return roles
    with splits_csv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            roles.setdefault(row["slide_id"], {})[int(row["fold"])] = row["role"]
    return roles


def choose_folds(run: LoadedRun, slide_id: str, oof: bool | None) -> tuple[list[FoldModel], bool]:
    """(the fold models that predict ``slide_id``, whether any of them trained on it).

    A slide that some loaded fold held out as its test slide is predicted by those folds only
    (out of fold) unless ``oof`` is False; with ``oof`` True a slide no fold held out fails.
    """
    roles = run.roles.get(slide_id, {})
    held_out = [fm for fm in run.folds if roles.get(fm.fold) == "test"]
    if oof is not False and held_out and len(held_out) < len(run.folds):
        chosen = held_out
    elif oof is True and not held_out:
        raise RunError(
            f"{slide_id}: no fold of {run.run_dir} held this slide out, so it has "
            f"no out-of-fold prediction (drop --oof to predict it with the ensemble)"
        )
    else:
        chosen = run.folds
    in_sample = any(roles.get(fm.fold) in ("train", "val") for fm in chosen)
    return chosen, in_sample


def ensemble_attention(raw: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(attention, attention_norm) of fold models' raw attention scores.

    Raw scores of different models have their own offset and scale, so they are never
    averaged: ``attention`` is the log of the folds' mean pooling weights (its softmax is
    exactly that mean, so attention-mass metrics score what the ensemble pools with), and
    ``attention_norm`` the mean of each fold's min-max normalised scores, rescaled to [0, 1].
    For one model both reduce to that model's own scores.
    """
    if len(raw) == 1:
        return raw[0].astype(np.float32), normalise_attention(raw[0])
    weights = []
    for scores in raw:
        scores = scores.astype(np.float64)
        shifted = np.exp(scores - scores.max())
        weights.append(shifted / shifted.sum())
    attention = np.log(np.mean(weights, axis=0) + 1e-300)
    norm = normalise_attention(np.mean([normalise_attention(s) for s in raw], axis=0))
    return attention.astype(np.float32), norm


def cached_run(
    run_dir: str | os.PathLike, fold: int | None = None, device: str = "auto"
) -> LoadedRun:
    """A loaded run shared by the slides of a batch (each worker process loads it once)."""
    return _load_cached(str(Path(run_dir).resolve()), fold, device)


@lru_cache(maxsize=4)
def _load_cached(run_dir: str, fold: int | None, device: str) -> LoadedRun:
    return load_run(run_dir, fold, device)


def combine_outputs(
    chosen: list[FoldModel], logits: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(the slide's outputs, its survival curve at the run's times or None) from each chosen
    fold's raw outputs ``[C]`` (the module docstring says how each task combines them)."""
    task = chosen[0].task
    if task.kind == "classification":
        probs = ensemble_probs(
            [
                apply_temperature(fm.task.decode(z)[0], fm.temperature)
                for fm, z in zip(chosen, logits, strict=True)
            ]
        )
        return probs, None
    decoded = [fm.task.decode(z)[0] for fm, z in zip(chosen, logits, strict=True)]
    if task.kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-np.mean([logit(d) for d in decoded], axis=0))), None
    outputs = np.mean(decoded, axis=0)
    if task.kind == "survival":
        times = task.fitted["survival_times"]
        curve = np.mean(
            [fm.task.survival(z, times)[0] for fm, z in zip(chosen, logits, strict=True)], axis=0
        )
        return outputs, curve
    return outputs, None


@torch.no_grad()
def predict_bag(
    run: LoadedRun,
    bag_path: str | os.PathLike,
    chunk_size: int = 16384,
    oof: bool | None = None,
    slide_path: str | os.PathLike | None = None,
) -> SlidePrediction:
    """Predict one bag, reading its features in chunks; the models are chosen by
    :func:`choose_folds` and combined as the module docstring says. ``slide_path`` completes
    a TRIDENT bag's attributes with its slide's size and µm/px, so the predictions carry what
    heatmaps need."""
    bag_path = Path(bag_path)
    return _predict(run, bag_path.stem, [(bag_path.stem, bag_path, slide_path)], chunk_size, oof)[0]


def predict_patient(
    run: LoadedRun,
    patient_id: str,
    parts: Sequence[tuple[str, Path, str | os.PathLike | None]],
    chunk_size: int = 16384,
    oof: bool | None = None,
) -> list[SlidePrediction]:
    """Predict one patient-level bag (a run trained with ``bag_level: patient``): ``parts``
    are its slides (slide id, bag file, slide file or None) in the order training pooled them.
    One prediction per slide, with that slide's tiles, attention from the pooled bag (a
    slide's share of the patient's attention) and the patient's outputs."""
    return _predict(run, patient_id, parts, chunk_size, oof)


@torch.no_grad()
def _predict(
    run: LoadedRun,
    bag_id: str,
    parts: Sequence[tuple[str, Path, str | os.PathLike | None]],
    chunk_size: int,
    oof: bool | None,
) -> list[SlidePrediction]:
    """The prediction of one bag made of ``parts``' tiles, in order, split back per part."""
    from contextlib import ExitStack

    attrs_of, coords_of, sizes = [], [], []
    with ExitStack() as stack:
        datasets = []
        for _, bag_path, slide_path in parts:
            attrs = read_bag_attrs(bag_path, slide_path)
            data = stack.enter_context(open_bag_features(bag_path))
            n, dim = data.shape
            if n == 0:
                raise BagError(f"{bag_path}: empty bag (no tiles)")
            if dim != run.in_dim:
                raise BagError(
                    f"{bag_path}: {dim} features per tile (encoder "
                    f"{attrs.get('encoder')!r}), but {run.run_dir} was trained on "
                    f"{run.in_dim} ({run.encoder!r})"
                )
            attrs_of.append(attrs)
            coords_of.append(read_bag_coords(bag_path))
            datasets.append(data)
            sizes.append(n)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n = int(offsets[-1])

        def read(start: int, end: int) -> torch.Tensor:
            pieces = []
            for k, data in enumerate(datasets):
                lo, hi = max(start, offsets[k]), min(end, offsets[k + 1])
                if lo < hi:
                    pieces.append(data[lo - offsets[k] : hi - offsets[k]])
            chunk = torch.from_numpy(np.concatenate(pieces) if len(pieces) > 1 else pieces[0]).to(
                run.device
            )
            if not torch.isfinite(chunk).all():
                raise BagError(
                    f"{parts[0][1] if len(parts) == 1 else bag_id}: NaN/inf "
                    f"features in tiles {start}..{end - 1}"
                )
            return chunk

        chosen, in_sample = choose_folds(
            run, bag_id if run.bag_level == "slide" else _patient_key(run, parts), oof
        )
        grid = None  # the tiles' grid positions, for a model that uses them (others ignore them)
        if any(fm.model.uses_coords for fm in chosen):
            from wsi_mil.mil.bags import joined_grid_coords

            try:
                grid = torch.from_numpy(
                    joined_grid_coords(
                        [
                            bag_grid_coords(path, c, a)
                            for (_, path, _), c, a in zip(parts, coords_of, attrs_of)
                        ]
                    )
                ).to(run.device)
            except BagSetError as exc:
                raise BagError(str(exc)) from exc
        outputs = [fm.model.predict_chunked(read, n, chunk_size, coords=grid) for fm in chosen]
    task = chosen[0].task
    probs, curve = combine_outputs(chosen, [o.logits.float().cpu().numpy() for o in outputs])
    threshold, rule = run.decision_threshold(chosen)
    attention, attention_norm = ensemble_attention(
        [o.raw_attention[0].float().cpu().numpy() for o in outputs]
    )
    tile_probs = np.mean(
        [
            fm.task.decode_tiles(o.tile_logits[0].float().cpu().numpy())
            for fm, o in zip(chosen, outputs, strict=True)
        ],
        axis=0,
    )
    branch = _branch_attention(outputs, task)
    predicted = task.predicted_labels(probs[None], threshold)[0]
    shared = {
        "run_id": run.run_dir.name,
        "run_path": str(run.run_dir.resolve()),
        "checkpoint_sha256": run.checkpoint_sha256,
        "folds": [fm.fold for fm in chosen],
        "in_sample": in_sample,
        "out_of_fold": len(chosen) < len(run.folds),
        "model": run.folds[0].meta["model"],
        "threshold": threshold,
        "threshold_rule": rule,
        "negative_class": (
            None if run.negative_index is None else run.class_names[run.negative_index]
        ),
        "task": task.kind,
        "segmentation": task.segmentation,
        "bag_level": run.bag_level,
    }
    if curve is not None:
        shared.update(
            survival_times=[float(t) for t in task.fitted["survival_times"]],
            survival=[float(v) for v in curve],
        )
    if run.bag_level == "patient":
        shared.update(patient_id=bag_id, bag_slides=[slide_id for slide_id, _, _ in parts])
    out = []
    for k, (slide_id, bag_path, _) in enumerate(parts):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        slide_attrs = {key: v for key, v in attrs_of[k].items() if key not in _NOT_COPIED}
        slide_attrs.update(shared, features_path=str(bag_path))
        if branch is not None:
            slide_attrs["branch_names"] = list(run.class_names)
        prediction = SlidePrediction(
            slide_id=slide_id,
            coords=coords_of[k],
            attention=attention[lo:hi],
            attention_norm=attention_norm[lo:hi],
            tile_probs=tile_probs[lo:hi].astype(np.float32),
            probs=np.asarray(probs, dtype=np.float32),
            class_names=run.class_names,
            predicted_label=predicted,
            attrs=slide_attrs,
        )
        if branch is not None:
            prediction.branch_attention = branch[lo:hi]
        out.append(prediction)
    return out


def _patient_key(run: LoadedRun, parts: Sequence[tuple[str, Path, Any]]) -> str:
    """The slide a patient-level bag's fold roles are read from (every slide of a patient has
    its patient's roles in splits.csv)."""
    for slide_id, _, _ in parts:
        if slide_id in run.roles:
            return slide_id
    return parts[0][0]


def _branch_attention(outputs: list[Any], task: Task) -> np.ndarray | None:
    """Each output's own attention branch ``[N, K]`` (the mean over the chosen folds of their
    pooling weights), for models with one branch per class or target; None otherwise."""
    weights = [o.branch_attention[0].float().cpu().numpy() for o in outputs]
    if weights[0].shape[1] <= 1 or weights[0].shape[1] != len(task.output_names):
        return None
    return np.mean(weights, axis=0).astype(np.float32)


def predict_slide(
    bag_path: str | os.PathLike,
    out_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: PredictParams = PredictParams(),
    slide_path: str | os.PathLike | None = None,
) -> Path:
    """The per-slide step: bag in, ``predictions/<slide_id>.h5`` out (models cached)."""
    run = cached_run(run_dir, params.fold, params.device)
    return write_prediction(
        out_path, predict_bag(run, bag_path, params.chunk_size, params.oof, slide_path)
    )


def predict_patient_slides(
    parts: Sequence[tuple[str, Path, str | os.PathLike | None]],
    patient_id: str,
    pred_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    params: PredictParams = PredictParams(),
) -> Path:
    """The per-patient step of a patient-level run: one ``<slide_id>.h5`` per slide of the
    patient (:func:`predict_patient`); returns the folder."""
    run = cached_run(run_dir, params.fold, params.device)
    pred_dir = Path(pred_dir)
    for prediction in predict_patient(run, patient_id, parts, params.chunk_size, params.oof):
        write_prediction(pred_dir / f"{prediction.slide_id}.h5", prediction)
    return pred_dir


def is_current_prediction(path: Path, checkpoint_sha256: str) -> bool:
    """True when ``path`` is a predictions file written by these exact checkpoints."""
    try:
        return str(read_prediction_attrs(path).get("checkpoint_sha256", "")) == checkpoint_sha256
    except PredictionFileError:
        return False
