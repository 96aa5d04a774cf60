"""``explain/<slide_id>/explanations.h5``: one slide's explanation maps, written and read back.

Datasets: ``coords`` ``[N, 2]`` (the bag's tile order), one ``[N]`` float32 dataset per method
(attrs ``model``, ``method``, ``target_class``, ``seconds``; ``lrp`` also ``logit`` and
``bias_share``, its conservation), ``lesion_fraction`` ``[N]`` when the slide was annotated.
Attributes: ``methods``, ``scores`` (method -> metric -> value), ``patch_flipping``
(``fractions``, the ``random`` curve, and per method its ``morf`` and ``lerf`` curves) and
``mprt`` (the cascade's ``stages`` and per method the Spearman after each), ``params`` (the
explain parameters), all JSON; the model, run and checkpoint, ``fold`` (the fold model that
explained the slide), ``in_sample`` (whether that fold trained on it) and ``fold_choice`` (why
that fold); ``wsi_mil_version`` and ``created``; and ``complete`` = True, written last.

This module is the only code that opens these files: :func:`write_explanations` (the explain
stage) and :func:`read_explanations` (heatmaps, the viewer, the cohort tables). The attributes
keep the layout of earlier releases: a list, dict or None is stored as plain JSON text (not
:mod:`tiling.storage`'s ``json:`` prefix), so files written before this module existed read the
same.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_mil.errors import InputError, MissingInputError

EXPLANATIONS = "explanations.h5"
#: Attributes stored as JSON text, decoded on reading (``patch_flipping``, ``mprt`` and
#: ``params`` are absent from files of earlier releases and read as {}).
JSON_ATTRS = ("methods", "scores", "patch_flipping", "mprt", "params", "probs", "class_names")
#: Attributes every complete file of this release carries.
REQUIRED_ATTRS = ("methods", "scores", "complete")
#: Datasets that are not an explanation method's map.
OTHER_DATASETS = ("coords", "lesion_fraction")


class ExplanationsFileError(InputError):
    """An explanations file that is unreadable, half-written or not in the wsi-mil format."""


@dataclass(frozen=True)
class Explanations:
    """The content of one slide's explanations file."""

    #: int64 [N, 2] in the bag's order (None in a file made by other code, which the readers
    #: accept: only the maps, ``methods`` and ``scores`` are needed to show and rank them)
    coords: np.ndarray | None
    maps: dict[str, np.ndarray]  #: method -> float32 [N], in the order of ``methods``
    #: method -> its dataset's attributes (model, method, target_class, seconds; lrp: logit,
    #: bias_share)
    map_attrs: dict[str, dict[str, Any]]
    #: the file's attributes, JSON ones decoded: model, fold, in_sample, fold_choice, scores,
    #: patch_flipping, mprt, params, ... (``methods``, ``complete`` and the provenance are
    #: recomputed by :func:`write_explanations`)
    attrs: dict[str, Any]
    lesion_fraction: np.ndarray | None = None  #: float32 [N], when the slide was annotated

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Method -> metric -> value on this slide."""
        return dict(self.attrs.get("scores") or {})


def _encode(value: Any) -> Any:
    """The stored form of an attribute: a list, dict or None as JSON text, else as it is."""
    return json.dumps(value) if isinstance(value, (list, dict)) or value is None else value


def _decode(key: str, value: Any) -> Any:
    """Inverse of :func:`_encode`: the JSON attributes decoded, ``null`` (a None written by
    :func:`_encode`, e.g. no ``annotation_path``) back to None, NumPy scalars to Python ones."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and (key in JSON_ATTRS or value == "null"):
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_explanations(path: str | os.PathLike, explanations: Explanations) -> Path:
    """Write one slide's explanations atomically (``complete`` last); ``methods``,
    ``wsi_mil_version`` and ``created`` are set here."""
    import h5py

    from tiling.storage import atomic_output, provenance

    path = Path(path)
    if explanations.coords is None:
        raise ExplanationsFileError(f"{path}: explanations without tile coordinates")
    n = len(explanations.coords)
    bad = {m: v.shape for m, v in explanations.maps.items() if np.shape(v) != (n,)}
    if bad:
        raise ExplanationsFileError(f"{path}: maps {bad} do not have one value per tile ({n})")
    skip = ("methods", "complete", "wsi_mil_version", "created")
    attrs = {k: v for k, v in explanations.attrs.items() if k not in skip}
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=np.asarray(explanations.coords, dtype=np.int64))
        if explanations.lesion_fraction is not None:
            f.create_dataset("lesion_fraction", data=explanations.lesion_fraction)
        for method, values in explanations.maps.items():
            ds = f.create_dataset(method, data=np.asarray(values, dtype=np.float32))
            ds.attrs.update(explanations.map_attrs.get(method, {}))
        for key, value in {**attrs, **provenance()}.items():
            f.attrs[key] = _encode(value)
        f.attrs["methods"] = json.dumps(list(explanations.maps))
        f.attrs["complete"] = True
    return path


def read_explanations(path: str | os.PathLike, *, require_complete: bool = True) -> Explanations:
    """One slide's explanations, with an error naming the file and what is wrong.

    ``require_complete=False`` (the viewer, which shows what it can) also reads a file without
    ``complete`` or ``methods``: its methods are then every dataset of one value per tile but
    ``coords`` and ``lesion_fraction``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: explanations file not found")
    try:
        with h5py.File(path, "r") as f:
            attrs = {str(k): _decode(str(k), v) for k, v in f.attrs.items()}
            if require_complete:
                missing = [k for k in REQUIRED_ATTRS if k not in attrs]
                if missing or not attrs["complete"]:
                    raise ExplanationsFileError(
                        f"{path}: not a complete explanations file (attributes missing "
                        f"{missing or ['complete = True']})"
                    )
            if "methods" in attrs:
                methods = [str(m) for m in attrs["methods"]]
            else:
                methods = [
                    str(k)
                    for k, item in f.items()
                    if isinstance(item, h5py.Dataset) and item.ndim == 1 and k not in OTHER_DATASETS
                ]
            absent = [m for m in methods if m not in f]
            if absent:
                raise ExplanationsFileError(
                    f"{path}: methods {absent} are listed but have no dataset"
                )
            maps = {m: f[m][:] for m in methods}
            map_attrs = {
                m: {str(k): _decode(str(k), v) for k, v in f[m].attrs.items()} for m in methods
            }
            coords = f["coords"][:] if "coords" in f else None
            fractions = f["lesion_fraction"][:] if "lesion_fraction" in f else None
    except OSError as exc:
        raise ExplanationsFileError(f"{path}: cannot read HDF5 file ({exc})") from exc
    for key in ("scores", "patch_flipping", "mprt"):
        attrs.setdefault(key, {})
    return Explanations(
        coords=coords, maps=maps, map_attrs=map_attrs, attrs=attrs, lesion_fraction=fractions
    )
