"""The labels CSV: which class each slide belongs to, which patient it came from, which split.

Columns: ``slide_id,label[,patient_id][,split]`` (a header row is required; extra columns are
ignored so a clinical table can be used as it is). Class names are the distinct labels, in
sorted order, so the same CSV always gives the same class indices. ``patient_id`` groups slides
for cross-validation (slides of one patient never straddle train and test); when it is absent
each slide is its own group. ``split`` is ``train``, ``val`` or ``test`` (an official split, as
Camelyon16's); empty means "not assigned".

Every problem is reported with the file and the CSV line number (the header is line 1), since
a labels table is usually edited by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from wsi_mil.errors import WsiMilError

REQUIRED_COLUMNS = ("slide_id", "label")
SPLITS = ("train", "val", "test")


class LabelsError(WsiMilError, ValueError):
    """A labels CSV that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class SlideLabel:
    """One row of the labels CSV."""

    slide_id: str
    label: str
    patient_id: str  # the slide id itself when the CSV has no patient_id column
    split: str | None  # "train" | "val" | "test", or None when not assigned
    line: int  # CSV line number, for error messages


@dataclass(frozen=True)
class LabelTable:
    """All rows of a labels CSV, with the class names they define."""

    path: Path
    rows: tuple[SlideLabel, ...]
    class_names: tuple[str, ...]
    has_patient_id: bool = False  # whether the CSV has a patient_id column

    def __len__(self) -> int:
        return len(self.rows)

    def class_index(self, label: str) -> int:
        return self.class_names.index(label)

    def by_slide(self) -> dict[str, SlideLabel]:
        return {row.slide_id: row for row in self.rows}

    def restricted_to(self, slide_ids: set[str] | frozenset[str]) -> LabelTable:
        """The same table with only the rows of ``slide_ids`` (the class names are kept, so a
        model trained on the rest still knows every class)."""
        return dataclasses.replace(self, rows=tuple(r for r in self.rows if r.slide_id in slide_ids))

    @property
    def has_split(self) -> bool:
        return any(row.split is not None for row in self.rows)

    def negative_index(self, negative_class: str | None) -> int:
        """Index of the "negative" class (every tile of such a slide is negative): the one
        named, else the one :func:`recognise_negative_class` finds, else an error."""
        return self.class_names.index(
            choose_negative_class(self.class_names, negative_class, source=str(self.path)))


#: Label names (lower case) taken for the negative class when none is named: the class whose
#: slides hold no lesion, so the segmentation head learns "every tile negative" from them.
NEGATIVE_NAMES = ("normal", "negative", "benign", "none", "no", "0", "false", "healthy",
                  "control", "non-tumor", "non-tumour", "nontumor", "nontumour", "no_tumor",
                  "no_tumour", "absent", "neg")


def recognise_negative_class(class_names: tuple[str, ...] | list[str]) -> str | None:
    """The one class whose name says "negative" (``NEGATIVE_NAMES``), or None."""
    found = [name for name in class_names if name.strip().lower() in NEGATIVE_NAMES]
    return found[0] if len(found) == 1 else None


def choose_negative_class(class_names: tuple[str, ...] | list[str], negative_class: str | None,
                          *, source: str = "labels") -> str:
    """The negative class: ``negative_class`` if given (it must be a label), else the one class
    with a negative name. Sorting never decides: with labels ``epithelial``/``none`` the first
    sorted is the *positive* class, and a head trained on that flip learns the opposite map.
    """
    names = list(class_names)
    if negative_class is not None:
        if negative_class not in names:
            raise LabelsError(f"{source}: negative class {negative_class!r} is not one of the "
                              f"labels {names}")
        return negative_class
    recognised = recognise_negative_class(names)
    if recognised is None:
        raise LabelsError(
            f"{source}: cannot tell which of the labels {names} is the negative class (the "
            f"slides without lesion); name it with --negative-class (YAML: "
            f"train.negative_class), e.g. --negative-class {names[0]}")
    return recognised


def read_labels(path: str | os.PathLike, class_names: tuple[str, ...] | None = None) -> LabelTable:
    """Read and check a labels CSV.

    ``class_names`` (e.g. those a trained model was trained with) makes any other label an
    error, and fixes the class order; without it the classes are the sorted distinct labels and
    there must be at least two.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: labels CSV not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            raise LabelsError(
                f"{path}: labels CSV needs columns {list(REQUIRED_COLUMNS)} "
                f"(optional: patient_id, split); missing {missing}, header is {header}"
            )
        reader.fieldnames = header
        rows: list[SlideLabel] = []
        seen: dict[str, int] = {}
        for line, record in enumerate(reader, start=2):
            rows.append(_parse_row(path, line, record, seen, class_names))
    if not rows:
        raise LabelsError(f"{path}: labels CSV has a header but no rows")
    if class_names is None:
        names = tuple(sorted({row.label for row in rows}))
        if len(names) < 2:
            raise LabelsError(
                f"{path}: needs at least two classes to train a classifier, found {list(names)}"
            )
    else:
        names = tuple(class_names)
    return LabelTable(path=path, rows=tuple(rows), class_names=names,
                      has_patient_id="patient_id" in header)


def _parse_row(
    path: Path,
    line: int,
    record: dict[str, str | None],
    seen: dict[str, int],
    class_names: tuple[str, ...] | None,
) -> SlideLabel:
    def cell(name: str) -> str:
        value = record.get(name)
        return "" if value is None else str(value).strip()

    slide_id, label = cell("slide_id"), cell("label")
    where = f"{path}, line {line}"
    if not slide_id:
        raise LabelsError(f"{where}: empty slide_id")
    if not label:
        raise LabelsError(f"{where}: slide {slide_id!r} has an empty label")
    if slide_id in seen:
        raise LabelsError(
            f"{where}: duplicate slide_id {slide_id!r} (first on line {seen[slide_id]})"
        )
    seen[slide_id] = line
    if class_names is not None and label not in class_names:
        raise LabelsError(
            f"{where}: unknown label {label!r} for slide {slide_id!r}; "
            f"expected one of {list(class_names)}"
        )
    split = cell("split").lower() or None
    if split is not None and split not in SPLITS:
        raise LabelsError(
            f"{where}: split {split!r} for slide {slide_id!r} is not one of {list(SPLITS)}"
        )
    return SlideLabel(slide_id=slide_id, label=label, patient_id=cell("patient_id") or slide_id,
                      split=split, line=line)


#: Slide-naming conventions that carry the patient: (convention, pattern whose group 1 is the
#: patient). TCGA barcodes name the patient in their first three fields (TCGA-<site>-<patient>);
#: Camelyon17 and many in-house cohorts name slides ``patient_<n>_node_<m>`` or similar.
PATIENT_PATTERNS = (
    ("TCGA barcode", re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-|$)", re.IGNORECASE)),
    ("patient/case number", re.compile(r"((?:patient|case|subject)[_-]?\d+)", re.IGNORECASE)),
)


def patients_in_slide_ids(slide_ids: list[str] | tuple[str, ...]
                          ) -> tuple[str, dict[str, list[str]]] | None:
    """(convention, {patient: slide ids}) of the patients that slide ids name with two or more
    slides, by :data:`PATIENT_PATTERNS`; None when no convention finds a shared patient."""
    for convention, pattern in PATIENT_PATTERNS:
        groups: dict[str, list[str]] = {}
        for slide_id in slide_ids:
            match = pattern.search(slide_id)
            if match:
                groups.setdefault(match.group(1).upper(), []).append(slide_id)
        shared = {p: ids for p, ids in groups.items() if len(ids) > 1}
        if shared:
            return convention, shared
    return None
