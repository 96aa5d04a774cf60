"""Train / validation / test splits of a labelled cohort, grouped by patient.

Slides of one patient share tissue, staining and scanner, so a model that saw one of them in
training is not tested fairly on another: splits are made with scikit-learn's
``StratifiedGroupKFold`` on ``patient_id`` (class balance kept per fold as far as the groups
allow). Validation, used for early stopping and the decision threshold, is carved out of each
fold's training part the same grouped way, never from test. When the labels CSV has a
``split`` column (an official split, as Camelyon16's) it is used as it is: one fold, test =
``test``, validation = ``val`` rows or, if there are none, carved from ``train``; a patient
whose slides it puts in two parts is an error.

Without a ``patient_id`` column every slide is its own patient. When the slide ids follow a
convention that names the patient (TCGA barcodes, ``patient_<n>_node_<m>``,
:func:`wsi_mil.mil.labels.patients_in_slide_ids`) and some patient has several slides, a
warning says so: those slides can then land on both sides of a split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tiling.storage import csv_text
from wsi_mil.errors import WsiMilError
from wsi_mil.mil.labels import LabelTable, patients_in_slide_ids

ROLES = ("train", "val", "test")


class SplitError(WsiMilError, ValueError):
    """A cohort that cannot be split as asked."""


@dataclass(frozen=True)
class FoldSplit:
    """Slide ids of one fold's training, validation and test parts."""

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _grouped_parts(
    ids: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[np.ndarray]:
    """Indices of ``n_splits`` stratified, grouped parts of ``ids``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(ids, y, groups)]


def carve_validation(
    ids: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
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


def make_splits(
    labels: LabelTable, folds: int = 5, val_fraction: float = 0.2, seed: int = 0
) -> list[FoldSplit]:
    """Folds for a cohort: the CSV's ``split`` column if present, else grouped k-fold CV."""
    ids = np.array([r.slide_id for r in labels.rows])
    y = labels.strata()  # the class, or what another task's folds are stratified by
    groups = np.array([r.patient_id for r in labels.rows])
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not labels.has_patient_id:
        warn_shared_patients(labels)
    if labels.has_split:
        unassigned = [r.slide_id for r in labels.rows if r.split is None]
        if unassigned:
            raise SplitError(
                f"{labels.path}: split column is empty for {len(unassigned)} "
                f"slide(s), e.g. {unassigned[:5]}"
            )
        split = np.array([r.split for r in labels.rows])
        test = ids[split == "test"]
        train_mask = split == "train"
        if (split == "val").any():
            train, val = ids[train_mask], ids[split == "val"]
        else:
            train, val = carve_validation(
                ids[train_mask], y[train_mask], groups[train_mask], val_fraction, seed
            )
        if len(test) == 0:
            raise SplitError(f"{labels.path}: split column has no 'test' rows")
        check_patients_in_one_part(labels, {"train": train, "val": val, "test": test})
        return [FoldSplit(0, tuple(train), tuple(val), tuple(test))]
    n_groups = len(np.unique(groups))
    if folds < 2 or folds > n_groups:
        raise SplitError(
            f"{labels.path}: cannot make {folds} folds from {n_groups} patient "
            f"group(s) (need 2 <= folds <= groups)"
        )
    largest_class = int(np.bincount(y).max())
    if folds > largest_class:
        what = "class" if labels.task == "classification" else "stratum"
        raise SplitError(
            f"{labels.path}: cannot make {folds} stratified folds when the largest "
            f"{what} has {largest_class} slide(s); use --folds {largest_class} or "
            f"fewer"
        )
    out = []
    for k, test_idx in enumerate(_grouped_parts(ids, y, groups, folds, seed)):
        rest = np.setdiff1d(np.arange(len(ids)), test_idx)
        train, val = carve_validation(ids[rest], y[rest], groups[rest], val_fraction, seed + k)
        out.append(FoldSplit(k, tuple(train), tuple(val), tuple(ids[test_idx])))
    return out


def check_patients_in_one_part(labels: LabelTable, parts: dict[str, np.ndarray]) -> None:
    """A :class:`SplitError` naming the patients whose slides lie in more than one part (a
    model tested on a patient it trained or was validated on)."""
    rows = labels.by_slide()
    seen: dict[str, dict[str, list[str]]] = {}
    for part, ids in parts.items():
        for slide_id in ids:
            seen.setdefault(rows[str(slide_id)].patient_id, {}).setdefault(part, []).append(
                str(slide_id)
            )
    straddling = {p: by_part for p, by_part in seen.items() if len(by_part) > 1}
    if straddling:
        patient, by_part = next(iter(straddling.items()))
        where = "; ".join(f"{part}: {', '.join(ids[:3])}" for part, ids in by_part.items())
        raise SplitError(
            f"{labels.path}: the split column puts {len(straddling)} patient(s) in more than one "
            f"part, e.g. patient {patient!r} ({where}); a patient's slides must all be in "
            f"train, all in val or all in test"
        )


def warn_shared_patients(labels: LabelTable) -> None:
    """Warn when a labels CSV without ``patient_id`` has slide ids that name shared patients."""
    found = patients_in_slide_ids([r.slide_id for r in labels.rows])
    if found is None:
        return
    convention, shared = found
    patient, ids = max(shared.items(), key=lambda item: len(item[1]))
    warnings.warn(
        f"{labels.path} has no patient_id column, so every slide is treated as its own "
        f"patient, but its slide ids look like {convention}s naming {len(shared)} patient(s) "
        f"with several slides (e.g. {patient}: {', '.join(ids[:3])}). Their slides can land on "
        f"both sides of a split and inflate every figure: add a patient_id column",
        stacklevel=3,
    )


def splits_csv(
    splits: list[FoldSplit], labels: LabelTable, members: dict[str, tuple[str, ...]] | None = None
) -> str:
    """``splits.csv``: one row per (fold, slide) with its role, label and patient.

    ``members``: for patient-level bags, each bag's (patient's) slides: every slide gets its
    patient's role, so a slide is always looked up by its own id.
    """
    rows = labels.by_slide()
    members = members or {}
    return csv_text(
        (
            {
                "fold": split.fold,
                "slide_id": slide_id,
                "role": role,
                "label": rows[bag].label,
                "patient_id": rows[bag].patient_id,
            }
            for split in splits
            for role in ROLES
            for bag in getattr(split, role)
            for slide_id in members.get(bag, (bag,))
        ),
        ("fold", "slide_id", "role", "label", "patient_id"),
    )
