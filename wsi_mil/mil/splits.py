"""Train / validation / test splits of a labelled cohort, grouped by patient.

Slides of one patient share tissue, staining and scanner, so a model that saw one of them in
training is not tested fairly on another: splits are made with scikit-learn's
``StratifiedGroupKFold`` on ``patient_id`` (class balance kept per fold as far as the groups
allow). Validation, used for early stopping and the decision threshold, is carved out of each
fold's training part the same grouped way, never from test. When the labels CSV has a
``split`` column (an official split, as Camelyon16's) it is used as it is: one fold, test =
``test``, validation = ``val`` rows or, if there are none, carved from ``train``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tiling.storage import csv_text
from wsi_mil.mil.labels import LabelTable

ROLES = ("train", "val", "test")


class SplitError(ValueError):
    """A cohort that cannot be split as asked."""


@dataclass(frozen=True)
class FoldSplit:
    """Slide ids of one fold's training, validation and test parts."""

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _grouped_parts(ids: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int,
                   seed: int) -> list[np.ndarray]:
    """Indices of ``n_splits`` stratified, grouped parts of ``ids``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(ids, y, groups)]


def carve_validation(ids: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``ids`` into (train, val) with about ``val_fraction`` of the groups in val."""
    n_groups = len(np.unique(groups))
    # StratifiedGroupKFold cannot make more parts than the largest class has members, so on
    # small data the validation part grows (8 slides, 4 per class: a quarter, not a fifth)
    largest_class = int(np.bincount(y).max()) if len(y) else 0
    n_splits = max(2, min(round(1 / val_fraction), n_groups, largest_class))
    if n_groups < 2 or largest_class < 2:
        raise SplitError(f"cannot carve a validation set from {n_groups} patient group(s)")
    val = _grouped_parts(ids, y, groups, n_splits, seed)[0]
    train = np.setdiff1d(np.arange(len(ids)), val)
    return ids[train], ids[val]


def make_splits(labels: LabelTable, folds: int = 5, val_fraction: float = 0.2,
                seed: int = 0) -> list[FoldSplit]:
    """Folds for a cohort: the CSV's ``split`` column if present, else grouped k-fold CV."""
    ids = np.array([r.slide_id for r in labels.rows])
    y = np.array([labels.class_index(r.label) for r in labels.rows])
    groups = np.array([r.patient_id for r in labels.rows])
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if labels.has_split:
        unassigned = [r.slide_id for r in labels.rows if r.split is None]
        if unassigned:
            raise SplitError(f"{labels.path}: split column is empty for {len(unassigned)} "
                             f"slide(s), e.g. {unassigned[:5]}")
        split = np.array([r.split for r in labels.rows])
        test = ids[split == "test"]
        train_mask = split == "train"
        if (split == "val").any():
            train, val = ids[train_mask], ids[split == "val"]
        else:
            train, val = carve_validation(ids[train_mask], y[train_mask], groups[train_mask],
                                          val_fraction, seed)
        if len(test) == 0:
            raise SplitError(f"{labels.path}: split column has no 'test' rows")
        return [FoldSplit(0, tuple(train), tuple(val), tuple(test))]
    n_groups = len(np.unique(groups))
    if folds < 2 or folds > n_groups:
        raise SplitError(f"{labels.path}: cannot make {folds} folds from {n_groups} patient "
                         f"group(s) (need 2 <= folds <= groups)")
    largest_class = int(np.bincount(y).max())
    if folds > largest_class:
        raise SplitError(f"{labels.path}: cannot make {folds} stratified folds when the largest "
                         f"class has {largest_class} slide(s); use --folds {largest_class} or "
                         f"fewer")
    out = []
    for k, test_idx in enumerate(_grouped_parts(ids, y, groups, folds, seed)):
        rest = np.setdiff1d(np.arange(len(ids)), test_idx)
        train, val = carve_validation(ids[rest], y[rest], groups[rest], val_fraction, seed + k)
        out.append(FoldSplit(k, tuple(train), tuple(val), tuple(ids[test_idx])))
    return out


def splits_csv(splits: list[FoldSplit], labels: LabelTable) -> str:
    """``splits.csv``: one row per (fold, slide) with its role, label and patient."""
    rows = labels.by_slide()
    return csv_text(({"fold": split.fold, "slide_id": slide_id, "role": role,
                      "label": rows[slide_id].label, "patient_id": rows[slide_id].patient_id}
                     for split in splits for role in ROLES for slide_id in getattr(split, role)),
                    ("fold", "slide_id", "role", "label", "patient_id"))
