"""Feature bags with planted positive tiles: a cohort whose answer is known.

Background tiles are Gaussian noise; a positive bag hides a few tiles shifted along one fixed
direction (the "lesion" signature). A MIL model must find them from slide labels alone, so these
bags test (and benchmark) training, attention and the segmentation head without slides or an
encoder. Bags are written in the real ``features/<encoder>/<slide_id>.h5`` format, on a square
tile grid, with the planted tiles as ``tile_labels``.

For the other tasks (:func:`iter_task_bags`, docs/tasks.md): every bag has a lesion *burden*
``z`` drawn uniformly from [0, 1], and ``z * max_fraction`` of its tiles are planted. Its
survival time follows a log-normal accelerated-failure-time model, ``T = 60 exp(-2.5 z + 0.4
e)`` (e standard normal: more lesion, earlier event), censored at a time drawn uniformly from
[0, 120] (about a fifth of the bags are censored); its regression target is ``10 z + e`` (e
standard normal). With these constants the burden itself ranks the times at Harrell's C of
about 0.85 and explains about 89 % of the target's variance (what a perfect model could reach).
Multilabel bags plant two independent lesion types, along two orthogonal directions, each
present in a bag with probability one half; subtype bags (``subtypes``, labels ``luad`` and
``lusc``) plant in every bag the lesion type of its class, so no class is lesion-free. With
``slides_per_patient`` > 1, consecutive bags are one patient's slides: they share the burden
and the numbers (each has its own tiles), as a patient-level bag needs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.bag import add_tile_labels, write_bag
from tiling.storage import write_text_atomic
from tiling.tiles_file import TilesFile
from wsi_mil.project import Project

ENCODER = "planted"


@dataclass(frozen=True)
class PlantedBag:
    slide_id: str
    features: np.ndarray  # float32 [N, D]
    label: int  # 1 when the bag hides planted tiles
    planted: np.ndarray  # bool [N]
    #: the task's numbers: multilabel 0/1 per lesion type, survival (time, event), regression
    #: (value,); empty for classification
    values: tuple[float, ...] = ()
    burden: float = 0.0  # the lesion burden z in [0, 1] the numbers depend on
    #: per tile the planted lesion type (0: none, t + 1: type t), for multilabel bags
    kinds: np.ndarray | None = None


#: the columns each task's labels CSV is written with (:func:`write_planted_bags`)
TASK_COLUMNS = {
    "survival": ("time", "event"),
    "regression": ("target",),
    "multilabel": ("lesion_a", "lesion_b"),
    "subtypes": ("label",),
}
#: the classes of generated subtype bags (their lesion types 1 and 2)
SUBTYPES = ("luad", "lusc")


def iter_planted_bags(
    n_bags: int,
    n_tiles: int | tuple[int, int],
    dim: int,
    *,
    planted_fraction: float = 0.1,
    shift: float = 3.0,
    seed: int = 0,
    prefix: str = "slide",
) -> Iterator[PlantedBag]:
    """Half the bags (alternating) positive; ``n_tiles`` fixed or drawn from ``[lo, hi]``.

    Planted tiles are shifted by ``shift`` standard deviations along one unit direction.
    Bags are made one at a time, so a Camelyon-sized cohort never has to fit in memory.
    """
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    for i in range(n_bags):
        n = n_tiles if isinstance(n_tiles, int) else int(rng.integers(n_tiles[0], n_tiles[1] + 1))
        features = rng.standard_normal((n, dim), dtype=np.float32)
        label = i % 2
        planted = np.zeros(n, dtype=bool)
        if label:
            k = max(1, round(planted_fraction * n))
            planted[rng.choice(n, k, replace=False)] = True
            features[planted] += shift * direction
        yield PlantedBag(f"{prefix}_{i:04d}", features, label, planted)


def iter_task_bags(
    task: str,
    n_bags: int,
    n_tiles: int | tuple[int, int],
    dim: int,
    *,
    max_fraction: float = 0.3,
    shift: float = 3.0,
    seed: int = 0,
    prefix: str = "slide",
    slides_per_patient: int = 1,
) -> Iterator[PlantedBag]:
    """Bags for ``task`` (survival, regression, multilabel or subtypes) as the module docstring
    says; ``label`` is the class index for subtypes, else whether a lesion was planted."""
    if task not in TASK_COLUMNS:
        raise ValueError(f"no generated bags for task {task!r}; one of {list(TASK_COLUMNS)}")
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T.astype(np.float32)
    patient: tuple[float, tuple[float, ...], np.ndarray] | None = None
    for i in range(n_bags):
        n = n_tiles if isinstance(n_tiles, int) else int(rng.integers(n_tiles[0], n_tiles[1] + 1))
        features = rng.standard_normal((n, dim), dtype=np.float32)
        kinds = np.zeros(n, dtype=np.int8)
        if i % slides_per_patient == 0:  # a new patient: its burden, numbers, lesion types
            if task in ("multilabel", "subtypes"):
                present = (
                    rng.random(2) < 0.5
                    if task == "multilabel"
                    else np.arange(2) == (i // slides_per_patient) % 2
                )
                values = (
                    tuple(float(v) for v in present)
                    if task == "multilabel"
                    else (float(np.argmax(present)),)
                )
                patient = (float(present.mean()), values, present)
            else:
                burden = float(rng.uniform(0.0, 1.0))
                if task == "survival":
                    event_time = 60.0 * np.exp(-2.5 * burden + 0.4 * rng.standard_normal())
                    censor = rng.uniform(0.0, 120.0)
                    values = (round(float(min(event_time, censor)), 3), float(event_time <= censor))
                else:
                    values = (round(float(10.0 * burden + rng.standard_normal()), 4),)
                patient = (burden, values, np.array([True, False]))
        assert patient is not None  # the first bag (i == 0) starts a patient
        burden, values, present = patient
        if task in ("multilabel", "subtypes"):
            order = rng.permutation(n)
            k = max(1, round(0.5 * max_fraction * n))
            for t in np.flatnonzero(present):
                tiles = order[t * k : (t + 1) * k]
                kinds[tiles] = t + 1
                features[tiles] += shift * directions[t]
        else:
            k = round(burden * max_fraction * n)
            if k:
                tiles = rng.choice(n, k, replace=False)
                kinds[tiles] = 1
                features[tiles] += shift * directions[0]
        label = int(values[0]) if task == "subtypes" else int(kinds.any())
        yield PlantedBag(f"{prefix}_{i:04d}", features, label, kinds > 0, values, burden, kinds)


def planted_bags(
    n_bags: int, n_tiles: int | tuple[int, int], dim: int, **kwargs: Any
) -> list[PlantedBag]:
    """:func:`iter_planted_bags` as a list."""
    return list(iter_planted_bags(n_bags, n_tiles, dim, **kwargs))


def tiles_for(slide_id: str, n: int, tile_size: int = 224) -> TilesFile:
    """A tiles file for ``n`` tiles laid out on a square grid (for bags made without a slide)."""
    side = math.ceil(math.sqrt(n))
    idx = np.arange(n)
    coords = np.stack([idx % side, idx // side], axis=1).astype(np.int64) * tile_size
    attrs = {
        "slide_path": f"synthetic://{slide_id}",
        "slide_id": slide_id,
        "slide_width": side * tile_size,
        "slide_height": side * tile_size,
        "slide_mpp": 0.5,
        "mpp_source": "override",
        "target_mpp": 0.5,
        "tile_size": tile_size,
        "tile_size_level0": float(tile_size),
        "read_level": 0,
        "read_downsample": 1.0,
        "stride": tile_size,
        "min_tissue": 0.0,
        "tissue_method": "synthetic",
        "tissue_params": {},
    }
    return TilesFile(Path(f"synthetic://{slide_id}"), coords, np.ones(n, dtype=np.float32), attrs)


def write_planted_bags(
    root: str | os.PathLike,
    bags: Iterable[PlantedBag],
    *,
    with_tile_labels: bool = False,
    dtype: type = np.float16,
    task: str = "classification",
    slides_per_patient: int = 2,
) -> tuple[Path, Path]:
    """Write ``root/features/planted/*.h5`` and ``root/labels.csv``: ``neg``/``pos`` labels, or
    the ``task``'s columns (:data:`TASK_COLUMNS`) from each bag's ``values`` (subtypes: the
    class names :data:`SUBTYPES`).

    Returns (features folder, labels CSV). Slides are grouped into patients of
    ``slides_per_patient``.
    """
    root = Path(root)
    features_dir = Project(root).features_dir(ENCODER)
    columns = TASK_COLUMNS.get(task, ("label",))
    rows = [",".join(("slide_id", *columns, "patient_id"))]
    for i, bag in enumerate(bags):
        encoder_attrs = {
            "encoder": ENCODER,
            "encoder_dim": bag.features.shape[1],
            "weights": "none",
            "weights_sha256": "",
            "input_size": 0,
            "mean": [0.0],
            "std": [1.0],
            "dtype": np.dtype(dtype).name,
        }
        path = features_dir / f"{bag.slide_id}.h5"
        write_bag(
            path,
            bag.features.astype(dtype),
            tiles_for(bag.slide_id, len(bag.planted)),
            encoder_attrs,
        )
        if with_tile_labels:
            add_tile_labels(path, bag.planted.astype(np.float32), "planted")
        if task == "classification":
            cells = ["pos" if bag.label else "neg"]
        elif task == "subtypes":
            cells = [SUBTYPES[bag.label]]
        else:
            cells = [
                f"{v:g}" if column != "event" and task != "multilabel" else f"{int(v)}"
                for column, v in zip(columns, bag.values)
            ]
        rows.append(",".join((bag.slide_id, *cells, f"patient_{i // slides_per_patient:04d}")))
    labels_csv = root / "labels.csv"
    write_text_atomic(labels_csv, "\n".join(rows) + "\n")
    return features_dir, labels_csv
