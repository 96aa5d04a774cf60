"""The labels CSV: what each slide is (a class, 0/1 targets, a survival time, a number), which
patient it came from, which split.

Columns, by task (``docs/tasks.md``; a header row is required; extra columns are ignored so a
clinical table can be used as it is):

* classification: ``slide_id,label[,patient_id][,split]``. Class names are the distinct labels,
  in sorted order, so the same CSV always gives the same class indices.
* multilabel: ``slide_id,<target>,<target>...`` with one 0/1 column per target (the columns
  named, or every column but ``slide_id``, ``patient_id`` and ``split``).
* survival: ``slide_id,time,event`` (time since diagnosis in any unit, >= 0; event 1 when the
  event was observed at that time, 0 when the slide's patient was censored then).
* regression: ``slide_id,target`` (or another column named), a finite number.

``patient_id`` groups slides for cross-validation (slides of one patient never straddle train
and test); when it is absent each slide is its own group. ``split`` is ``train``, ``val`` or
``test`` (an official split, as Camelyon16's); empty means "not assigned".

Every problem is reported with the file and the CSV line number (the header is line 1), since
a labels table is usually edited by hand.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from wsi_mil.errors import WsiMilError

REQUIRED_COLUMNS = ("slide_id", "label")
SPLITS = ("train", "val", "test")
#: columns that identify a slide rather than describe it (never a multilabel target)
ID_COLUMNS = ("slide_id", "patient_id", "split")
#: the survival columns, and the regression column when none is named
SURVIVAL_COLUMNS = ("time", "event")
REGRESSION_COLUMN = "target"
#: strata of a regression cohort's folds: quantile bins of the target
REGRESSION_STRATA = 4


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
    #: the task's numbers: multilabel 0/1 per target, survival (time, event), regression (value,);
    #: empty for classification (``label`` is the class)
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class LabelTable:
    """All rows of a labels CSV, with the class names they define."""

    path: Path
    rows: tuple[SlideLabel, ...]
    class_names: tuple[str, ...]
    has_patient_id: bool = False  # whether the CSV has a patient_id column
    task: str = "classification"
    #: multilabel: the target columns; regression: the target column; survival: time, event
    target_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def class_index(self, label: str) -> int:
        return self.class_names.index(label)

    def values(self, slide_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """The task's numbers of ``slide_ids`` as a float array ``[n, len(values)]``."""
        import numpy as np

        rows = self.by_slide()
        return np.array([rows[s].values for s in slide_ids], dtype=np.float64).reshape(
            len(slide_ids), -1
        )

    def strata(self) -> np.ndarray:
        """What folds are stratified by, per row: the class; the combination of the multilabel
        targets; the event (censored or not: folds stratified by event); the quantile bin
        (of :data:`REGRESSION_STRATA`) of a regression target."""
        import numpy as np

        if self.task == "classification":
            return np.array([self.class_index(r.label) for r in self.rows], dtype=int)
        if self.task == "multilabel":
            return np.array(
                [sum(int(v) << i for i, v in enumerate(r.values)) for r in self.rows], dtype=int
            )
        if self.task == "survival":
            return np.array([int(r.values[1]) for r in self.rows], dtype=int)
        values = np.array([r.values[0] for r in self.rows])
        edges = np.unique(np.quantile(values, np.linspace(0, 1, REGRESSION_STRATA + 1)[1:-1]))
        return np.searchsorted(edges, values, side="right").astype(int)

    def by_slide(self) -> dict[str, SlideLabel]:
        return {row.slide_id: row for row in self.rows}

    def restricted_to(self, slide_ids: set[str] | frozenset[str]) -> LabelTable:
        """The same table with only the rows of ``slide_ids`` (the class names are kept, so a
        model trained on the rest still knows every class)."""
        return dataclasses.replace(
            self, rows=tuple(r for r in self.rows if r.slide_id in slide_ids)
        )

    @property
    def has_split(self) -> bool:
        return any(row.split is not None for row in self.rows)

    def negative_index(self, negative_class: str | None) -> int:
        """Index of the "negative" class (every tile of such a slide is negative): the one
        named, else the one :func:`recognise_negative_class` finds, else an error."""
        return self.class_names.index(
            choose_negative_class(self.class_names, negative_class, source=str(self.path))
        )

    def negative_index_or_none(self, negative_class: str | None, subtyping: bool) -> int | None:
        """:meth:`negative_index` for training: None (no negative class: the classes are
        subtypes) when ``subtyping`` is on, or when none is named and no class has a negative
        name (``luad``/``lusc``)."""
        if subtyping:
            return None
        if negative_class is None and recognise_negative_class(self.class_names) is None:
            return None
        return self.negative_index(negative_class)


#: Label names (lower case) taken for the negative class when none is named: the class whose
#: slides hold no lesion, so the segmentation head learns "every tile negative" from them.
NEGATIVE_NAMES = (
    "normal",
    "negative",
    "benign",
    "none",
    "no",
    "0",
    "false",
    "healthy",
    "control",
    "non-tumor",
    "non-tumour",
    "nontumor",
    "nontumour",
    "no_tumor",
    "no_tumour",
    "absent",
    "neg",
)


def recognise_negative_class(class_names: tuple[str, ...] | list[str]) -> str | None:
    """The one class whose name says "negative" (``NEGATIVE_NAMES``), or None."""
    found = [name for name in class_names if name.strip().lower() in NEGATIVE_NAMES]
    return found[0] if len(found) == 1 else None


def choose_negative_class(
    class_names: tuple[str, ...] | list[str], negative_class: str | None, *, source: str = "labels"
) -> str:
    """The negative class: ``negative_class`` if given (it must be a label), else the one class
    with a negative name. Sorting never decides: with labels ``epithelial``/``none`` the first
    sorted is the *positive* class, and a head trained on that flip learns the opposite map.
    """
    names = list(class_names)
    if negative_class is not None:
        if negative_class not in names:
            raise LabelsError(
                f"{source}: negative class {negative_class!r} is not one of the labels {names}"
            )
        return negative_class
    recognised = recognise_negative_class(names)
    if recognised is None:
        raise LabelsError(
            f"{source}: cannot tell which of the labels {names} is the negative class (the "
            f"slides without lesion); name it with --negative-class (YAML: "
            f"train.negative_class), e.g. --negative-class {names[0]}"
        )
    return recognised


def read_labels(
    path: str | os.PathLike,
    class_names: tuple[str, ...] | None = None,
    *,
    task: str = "classification",
    targets: tuple[str, ...] = (),
) -> LabelTable:
    """Read and check a labels CSV of ``task`` (the module docstring lists each format).

    Classification: ``class_names`` (e.g. those a trained model was trained with) makes any
    other label an error, and fixes the class order; without it the classes are the sorted
    distinct labels and there must be at least two. ``targets``: the multilabel target columns
    or the regression column (see :class:`wsi_mil.mil.params.TrainParams`).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: labels CSV not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in (reader.fieldnames or [])]
        required, target_names = _task_columns(path, header, task, targets)
        missing = [col for col in required if col not in header]
        if missing:
            raise LabelsError(
                f"{path}: a {task} labels CSV needs columns {list(required)} "
                f"(optional: patient_id, split); missing {missing}, header is {header}"
            )
        reader.fieldnames = header
        rows: list[SlideLabel] = []
        seen: dict[str, int] = {}
        for line, record in enumerate(reader, start=2):
            if task == "classification":
                rows.append(_parse_row(path, line, record, seen, class_names))
            else:
                rows.append(_parse_task_row(path, line, record, seen, task, target_names))
    if not rows:
        raise LabelsError(f"{path}: labels CSV has a header but no rows")
    if task != "classification":
        if task == "survival" and not any(row.values[1] for row in rows):
            raise LabelsError(
                f"{path}: every slide is censored (event 0): a survival model "
                f"needs observed events to learn from"
            )
        names = target_names if task == "multilabel" else ()
        return LabelTable(
            path=path,
            rows=tuple(rows),
            class_names=names,
            has_patient_id="patient_id" in header,
            task=task,
            target_names=target_names,
        )
    if class_names is None:
        names = tuple(sorted({row.label for row in rows}))
        if len(names) < 2:
            raise LabelsError(
                f"{path}: needs at least two classes to train a classifier, found {list(names)}"
            )
    else:
        names = tuple(class_names)
    return LabelTable(
        path=path, rows=tuple(rows), class_names=names, has_patient_id="patient_id" in header
    )


def _task_columns(
    path: Path, header: list[str], task: str, targets: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required columns, target names) of a labels CSV of ``task``."""
    if task == "classification":
        return REQUIRED_COLUMNS, ()
    if task == "multilabel":
        names = tuple(targets) or tuple(c for c in header if c not in ID_COLUMNS and c)
        if not names:
            raise LabelsError(
                f"{path}: a multilabel labels CSV needs one 0/1 column per "
                f"target besides slide_id (header is {header})"
            )
        return ("slide_id", *names), names
    if task == "survival":
        return ("slide_id", *SURVIVAL_COLUMNS), SURVIVAL_COLUMNS
    if task == "regression":
        column = targets[0] if targets else REGRESSION_COLUMN
        return ("slide_id", column), (column,)
    raise LabelsError(f"{path}: unknown task {task!r}")


def _number(where: str, slide_id: str, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise LabelsError(f"{where}: slide {slide_id!r} has {column} {text!r}, not a number")
    return value


def _parse_task_row(
    path: Path,
    line: int,
    record: dict[str, str | None],
    seen: dict[str, int],
    task: str,
    names: tuple[str, ...],
) -> SlideLabel:
    """One row of a multilabel, survival or regression labels CSV."""

    def cell(name: str) -> str:
        value = record.get(name)
        return "" if value is None else str(value).strip()

    slide_id = cell("slide_id")
    where = f"{path}, line {line}"
    if not slide_id:
        raise LabelsError(f"{where}: empty slide_id")
    if slide_id in seen:
        raise LabelsError(
            f"{where}: duplicate slide_id {slide_id!r} (first on line {seen[slide_id]})"
        )
    seen[slide_id] = line
    if task == "multilabel":
        values = []
        for name in names:
            text = cell(name)
            if text not in ("0", "1"):
                raise LabelsError(
                    f"{where}: slide {slide_id!r} has target {name} {text!r}, expected 0 or 1"
                )
            values.append(float(text))
        label = ";".join(n for n, v in zip(names, values) if v) or "none"
    elif task == "survival":
        time = _number(where, slide_id, "time", cell("time"))
        if time < 0:
            raise LabelsError(f"{where}: slide {slide_id!r} has a negative time {time:g}")
        event = cell("event")
        if event not in ("0", "1"):
            raise LabelsError(
                f"{where}: slide {slide_id!r} has event {event!r}, expected 1 "
                f"(event observed) or 0 (censored)"
            )
        values = [time, float(event)]
        label = f"{time:g}" + ("" if event == "1" else "+")
    else:
        values = [_number(where, slide_id, names[0], cell(names[0]))]
        label = f"{values[0]:g}"
    split = cell("split").lower() or None
    if split is not None and split not in SPLITS:
        raise LabelsError(
            f"{where}: split {split!r} for slide {slide_id!r} is not one of {list(SPLITS)}"
        )
    return SlideLabel(
        slide_id=slide_id,
        label=label,
        patient_id=cell("patient_id") or slide_id,
        split=split,
        line=line,
        values=tuple(values),
    )


def check_trainable(table: LabelTable) -> None:
    """What a model cannot be trained on even though every row is well formed: a class (or a
    multilabel target's 0 or 1) held by fewer than two slides, which no fold can both train
    and test on, no event among the slides kept, or a regression target that is the same on
    every slide."""

    def few(counts: dict[str, list[SlideLabel]], what: str) -> None:
        for name, rows in counts.items():
            if len(rows) < 2:
                raise LabelsError(
                    f"{table.path}, line {rows[0].line}: {what} {name!r} has only one slide "
                    f"({rows[0].slide_id!r}): every {what} needs at least two slides to be "
                    f"trained and tested on"
                )

    if table.task == "classification":
        groups: dict[str, list[SlideLabel]] = {}
        for row in table.rows:
            groups.setdefault(row.label, []).append(row)
        few(groups, "class")
    elif table.task == "multilabel":
        for i, name in enumerate(table.target_names):
            for value in (0.0, 1.0):
                rows = [r for r in table.rows if r.values[i] == value]
                if not rows:
                    raise LabelsError(
                        f"{table.path}: target {name!r} is {int(value)} on no "
                        f"slide: a target needs slides with 0 and with 1"
                    )
                few({f"{name}={int(value)}": rows}, "target value")
    elif table.task == "survival" and not any(r.values[1] for r in table.rows):
        raise LabelsError(
            f"{table.path}: every slide with a feature bag is censored (event 0): "
            f"a survival model needs observed events to learn from"
        )
    elif table.task == "regression" and len({r.values[0] for r in table.rows}) < 2:
        raise LabelsError(
            f"{table.path}: every slide has the same {table.target_names[0]} "
            f"({table.rows[0].values[0]:g}): nothing to learn"
        )


def patient_table(table: LabelTable) -> tuple[LabelTable, dict[str, tuple[str, ...]]]:
    """(one row per patient, patient -> its slide ids) for patient-level bags.

    A patient's row keeps its first slide's line (for messages) and split; its slides must
    agree on the label, or there is no one truth for the bag that pools them.
    """
    members: dict[str, list[SlideLabel]] = {}
    for row in table.rows:
        members.setdefault(row.patient_id, []).append(row)
    rows = []
    for patient, slides in members.items():
        first = slides[0]
        for other in slides[1:]:
            if (other.label, other.values) != (first.label, first.values):
                raise LabelsError(
                    f"{table.path}, line {other.line}: patient {patient!r} has slides with "
                    f"different labels ({first.slide_id}: {first.label}, {other.slide_id}: "
                    f"{other.label}); a patient-level bag needs one label per patient"
                )
            if other.split != first.split:
                raise LabelsError(
                    f"{table.path}, line {other.line}: patient {patient!r} has slides in "
                    f"different splits ({first.split}, {other.split})"
                )
        rows.append(dataclasses.replace(first, slide_id=patient))
    return (
        dataclasses.replace(table, rows=tuple(rows)),
        {p: tuple(r.slide_id for r in slides) for p, slides in members.items()},
    )


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
    return SlideLabel(
        slide_id=slide_id,
        label=label,
        patient_id=cell("patient_id") or slide_id,
        split=split,
        line=line,
    )


#: Slide-naming conventions that carry the patient: (convention, pattern whose group 1 is the
#: patient). TCGA barcodes name the patient in their first three fields (TCGA-<site>-<patient>);
#: Camelyon17 and many in-house cohorts name slides ``patient_<n>_node_<m>`` or similar.
PATIENT_PATTERNS = (
    ("TCGA barcode", re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-|$)", re.IGNORECASE)),
    ("patient/case number", re.compile(r"((?:patient|case|subject)[_-]?\d+)", re.IGNORECASE)),
)


def patients_in_slide_ids(
    slide_ids: list[str] | tuple[str, ...],
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
