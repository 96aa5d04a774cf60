"""``predictions/<slide_id>.h5``: what a model says about one slide, tile by tile.

Datasets: ``coords`` ``[N, 2]`` (level-0, same order as the bag), ``attention`` ``[N]`` (raw
scores, before softmax), ``attention_norm`` ``[N]`` in [0, 1], ``tile_probs`` ``[N, C]`` from
the segmentation head (or, for a task without one, the output head on each tile: its risk or
value), and, for a model with one attention branch per class or target, ``branch_attention``
``[N, C]`` (each branch's pooling weights). Attributes: slide-level ``probs`` ``[C]`` (the
task's outputs: class or target probabilities, the risk, the value), ``predicted_label``,
``class_names`` (the outputs' names), ``task``, ``run_id``, ``checkpoint_sha256``, for survival
``survival_times`` and ``survival`` (the predicted survival curve), for a patient-level bag
``patient_id`` and ``bag_slides``, plus the bag's slide and tiling attributes (so a heatmap can
find the slide and its geometry from this file alone).

This module is the only code that opens these files: :func:`write_prediction` (the predict
stage), :func:`read_prediction` (the whole file) and :func:`read_prediction_attrs` (only its
attributes, for tables over many slides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiling.storage import atomic_output, provenance, read_attrs, write_attrs
from wsi_mil.errors import WsiMilError
from wsi_mil.metrics.attention import minmax_scale
from wsi_mil.mil.labels import recognise_negative_class

#: Datasets every predictions file has (``branch_attention`` only for a model with one
#: attention branch per output).
REQUIRED_DATASETS = ("coords", "attention", "attention_norm", "tile_probs")
#: Attributes every predictions file has, beside the run's and the bag's.
REQUIRED_ATTRS = ("slide_id", "probs", "predicted_label", "class_names")


class PredictionFileError(WsiMilError, ValueError):
    """A predictions file that is missing or not in the wsi-mil format."""


@dataclass
class SlidePrediction:
    """One slide's prediction: slide-level probabilities and per-tile scores."""

    slide_id: str
    coords: np.ndarray  # int64 [N, 2]
    attention: np.ndarray  # float32 [N], raw
    attention_norm: np.ndarray  # float32 [N], in [0, 1]
    tile_probs: np.ndarray  # float32 [N, C]
    probs: np.ndarray  # float32 [C]
    class_names: list[str]
    predicted_label: str
    attrs: dict[str, Any] = field(default_factory=dict)  # slide/tiling/run attributes
    #: more per-tile scores by name, e.g. the explain stage's maps, that a heatmap can show
    #: (not stored in the predictions file)
    extra_scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: float32 [N, C]: each class's or target's own attention branch (models with one per
    #: output), else None
    branch_attention: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.coords.shape[0]
        shapes = {
            "attention": self.attention.shape,
            "attention_norm": self.attention_norm.shape,
            "tile_probs": self.tile_probs.shape[:1],
        }
        bad = {k: v for k, v in shapes.items() if v != (n,)}
        if bad:
            raise PredictionFileError(f"{self.slide_id}: {n} coords but {bad}")
        if self.tile_probs.ndim != 2 or self.tile_probs.shape[1] != len(self.class_names):
            raise PredictionFileError(
                f"{self.slide_id}: tile_probs {self.tile_probs.shape} for classes {self.class_names}"
            )

    @property
    def negative_class(self) -> str | None:
        """The class the run trained as negative (recorded in the file), if known."""
        value = self.attrs.get("negative_class")
        return None if value is None else str(value)

    @property
    def task(self) -> str:
        """The run's task (a file from before tasks: classification)."""
        return str(self.attrs.get("task", "classification"))

    @property
    def has_segmentation(self) -> bool:
        """Whether ``tile_probs`` are a segmentation head's probabilities (survival and
        regression runs have none: their tile scores are risks or values)."""
        return self.task in ("classification", "multilabel")

    def branch_scores(self) -> dict[str, np.ndarray]:
        """Each output's own attention (``attention:<name>``) for models with a branch per
        class or target; {} otherwise."""
        if self.branch_attention is None:
            return {}
        return {
            f"attention:{name}": self.branch_attention[:, i]
            for i, name in enumerate(self.class_names)
        }

    def positive_index(self, positive_class: str | None = None) -> int:
        """Column of ``tile_probs`` that is the lesion map: ``positive_class`` if named, else the
        one class that is not the run's negative class (for a file that records none, the class
        with a negative name). For subtypes (no negative class) and multilabel targets, the
        predicted class or the most probable target, whose one-vs-rest map it is. This is the
        single rule heatmaps, GeoJSON, segmentation and the FROC share, so they always outline
        the same class."""
        names = list(self.class_names)
        if not self.has_segmentation:
            raise PredictionFileError(
                f"{self.slide_id}: a {self.task} run has no segmentation "
                f"head (its tile scores are {names[0]}s)"
            )
        if positive_class is not None:
            if positive_class not in names:
                raise PredictionFileError(
                    f"{self.slide_id}: positive class {positive_class!r} is not one of {names}"
                )
            return names.index(positive_class)
        if self.task == "multilabel":
            return int(np.argmax(self.probs))
        if "task" in self.attrs and self.negative_class is None:  # subtypes
            return names.index(self.predicted_label)
        negative = self.negative_class or recognise_negative_class(names)
        others = [n for n in names if n != negative]
        if negative not in names or len(others) != 1:
            raise PredictionFileError(
                f"{self.slide_id}: classes {names} with negative class {negative!r}: name the "
                f"class to outline with --positive-class"
            )
        return names.index(others[0])


def normalise_attention(attention: np.ndarray) -> np.ndarray:
    """Raw attention scores min-max scaled to [0, 1] as float32 (``attention_norm``)."""
    return minmax_scale(attention).astype(np.float32)


def write_prediction(path: str | os.PathLike, prediction: SlidePrediction) -> Path:
    """Write one slide's predictions atomically."""
    path = Path(path)
    attrs = {
        **prediction.attrs,
        **provenance(),
        "slide_id": prediction.slide_id,
        "probs": np.asarray(prediction.probs, dtype=np.float32),
        "predicted_label": prediction.predicted_label,
        "class_names": list(prediction.class_names),
    }
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=np.asarray(prediction.coords, dtype=np.int64))
        f.create_dataset("attention", data=np.asarray(prediction.attention, np.float32))
        f.create_dataset("attention_norm", data=np.asarray(prediction.attention_norm, np.float32))
        f.create_dataset("tile_probs", data=np.asarray(prediction.tile_probs, np.float32))
        if prediction.branch_attention is not None:
            f.create_dataset(
                "branch_attention", data=np.asarray(prediction.branch_attention, np.float32)
            )
        write_attrs(f, attrs)
    return path


def read_prediction(path: str | os.PathLike) -> SlidePrediction:
    """Read one slide's predictions, with an error naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"{path}: predictions file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_DATASETS if k not in f]
            if missing:
                raise PredictionFileError(
                    f"{path}: not a wsi-mil predictions file, missing datasets {missing}"
                )
            attrs = read_attrs(f)
            missing = [k for k in REQUIRED_ATTRS if k not in attrs]
            if missing:
                raise PredictionFileError(
                    f"{path}: not a wsi-mil predictions file, missing attributes {missing}"
                )
            data = {k: f[k][:] for k in REQUIRED_DATASETS}
            if "branch_attention" in f:
                data["branch_attention"] = f["branch_attention"][:]
    except OSError as exc:
        raise PredictionFileError(f"{path}: cannot read HDF5 file ({exc})") from exc
    try:
        return SlidePrediction(
            slide_id=str(attrs.pop("slide_id")),
            probs=np.asarray(attrs.pop("probs"), dtype=np.float32),
            class_names=[str(c) for c in attrs.pop("class_names")],
            predicted_label=str(attrs.pop("predicted_label")),
            attrs=attrs,
            **data,
        )
    except PredictionFileError as exc:  # shapes that do not agree
        raise PredictionFileError(f"{path}: {exc}") from exc


def read_prediction_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of one slide's predictions file (slide ``probs``, ``predicted_label``,
    ``class_names``, the run, the bag's), without reading its per-tile arrays."""
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"{path}: predictions file not found")
    try:
        with h5py.File(path, "r") as f:
            return read_attrs(f)
    except OSError as exc:
        raise PredictionFileError(f"{path}: cannot read HDF5 file ({exc})") from exc
