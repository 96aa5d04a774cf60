"""Feature bags for training: find them, match them to labels, load or stream them, batch them.

A bag is ``features/<encoder>/<slide_id>.h5`` (see :mod:`features.bag`); the slide id is the
file name. Matching is strict where a silent mistake would bias a model (a labelled slide with
no bag, bags of different encoders or widths, NaN features, empty bags: errors naming the
file) and lenient where it would not (a bag nobody labelled is skipped with a warning, so one
features folder can serve several label tables).

Bags are held in memory as float16 (half the bytes of float32, and what the encoders write)
when the whole set fits within a memory budget, because an epoch then costs no disk reads;
otherwise each bag is read from HDF5 when it is needed, so a cohort larger than RAM still
trains.

A model that uses the tiles' positions (``model.uses_coords``: ``transformer_mil`` with
``positional="sincos2d"``) gets them as grid positions (:func:`grid_coords`: level-0 px divided
by the tile stride), read only for such a model (``BagDataset(..., with_coords=True)``) and
kept in memory either way (16 bytes a tile, under 1 % of its features).

Patient-level bags (``TrainParams.bag_level = "patient"``, :func:`patient_bags`) pool every
slide of a patient into one bag: its record lists its slides (``parts``), whose tiles are
concatenated in that order, so each tile still belongs to one slide (STAMP's
``encode_patients``). For a model that uses positions, each slide's grid is placed to the right
of the previous one's, two tiles apart, so tiles of different slides never share a position.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from features.bag import (
    BagError,
    open_bag_features,
    read_bag_attrs,
    read_bag_coords,
    read_bag_features,
    read_bag_tile_labels,
    read_bag_view,
)
from wsi_mil.errors import WsiMilError
from wsi_mil.mil.labels import LabelTable

#: rows read at a time when scanning a streamed bag for NaN/inf.
SCAN_CHUNK = 65536


class BagSetError(WsiMilError, ValueError):
    """Bags that cannot be used together, or that do not match the labels."""


@dataclass(frozen=True)
class BagRecord:
    """One bag on disk, matched to its label."""

    slide_id: str  # the bag's id: the slide's, or the patient's for a patient-level bag
    path: Path
    label: int  # the class index (classification), else the stratum of the folds
    num_tiles: int
    has_tile_labels: bool
    #: the task's numbers (multilabel 0/1 targets, survival time and event, regression value)
    target: tuple[float, ...] = ()
    #: a patient-level bag's slides, in tile order: (slide id, bag file, tiles); empty for a
    #: slide's own bag
    parts: tuple[tuple[str, Path, int], ...] = ()

    def files(self) -> tuple[tuple[str, Path, int], ...]:
        """(slide id, bag file, tiles) of every slide whose tiles this bag holds."""
        return self.parts or ((self.slide_id, self.path, self.num_tiles),)


@dataclass(frozen=True)
class BagSet:
    """The bags of a features folder that carry a label, all from one encoder."""

    records: tuple[BagRecord, ...]
    encoder: str
    dim: int
    skipped: tuple[str, ...]  # bags without a label
    missing: tuple[str, ...] = ()  # labelled slides without a bag, left out


@dataclass
class BagItem:
    """One bag as the model sees it."""

    slide_id: str
    features: torch.Tensor  # [N, D], float16 or float32
    label: int
    tile_labels: torch.Tensor | None  # [N] float32 (lesion fraction), or None
    coords: torch.Tensor | None = None  # [N, 2] float32 grid positions (column, row), or None
    target: tuple[float, ...] = ()  # the task's numbers (see BagRecord.target)


@dataclass
class BagBatch:
    """Bags padded to the longest one; ``mask`` is True on real tiles."""

    slide_ids: list[str]
    features: torch.Tensor  # [B, N, D] float32
    mask: torch.Tensor  # [B, N] bool
    labels: torch.Tensor  # [B] int64
    tile_labels: torch.Tensor  # [B, N] float32, NaN where unknown or padded
    coords: torch.Tensor | None = None  # [B, N, 2] float32 grid positions, 0 on padding
    targets: torch.Tensor | None = None  # [B, T] float32, the task's numbers (BagRecord.target)

    def to(self, device: torch.device | str) -> BagBatch:
        return BagBatch(
            self.slide_ids,
            self.features.to(device),
            self.mask.to(device),
            self.labels.to(device),
            self.tile_labels.to(device),
            None if self.coords is None else self.coords.to(device),
            None if self.targets is None else self.targets.to(device),
        )


def find_bags(features_dir: str | os.PathLike) -> dict[str, Path]:
    """``slide_id -> path`` for every ``*.h5`` bag in ``features_dir`` (one encoder's folder)."""
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise BagSetError(f"{features_dir}: features folder not found")
    bags = {p.stem: p for p in sorted(features_dir.glob("*.h5")) if p.is_file()}
    if not bags:
        nested = sorted({p.parent.name for p in features_dir.glob("*/*.h5")})
        hint = (
            (
                f"; it holds encoder folders {nested}: pass one of them, "
                f"e.g. {features_dir / nested[0]}"
            )
            if nested
            else ""
        )
        raise BagSetError(f"{features_dir}: no feature bags (*.h5){hint}")
    return bags


def match_bags(
    features_dir: str | os.PathLike,
    labels: LabelTable,
    slide_ids: Sequence[str] | None = None,
    missing: str = "error",
) -> BagSet:
    """Match the bags of ``features_dir`` to ``labels`` (restricted to ``slide_ids`` if given).

    Labelled slides without a bag are an error naming them (``missing="error"``) or are left
    out with one warning that lists them (``missing="skip"``: a slide whose tiling or
    extraction failed, already in that stage's failures.csv, should not stop a training run).
    Reads attributes and shapes only; the features are checked when loaded
    (:class:`BagDataset`).
    """
    features_dir = Path(features_dir)
    bags = find_bags(features_dir)
    wanted = list(slide_ids) if slide_ids is not None else [row.slide_id for row in labels.rows]
    by_slide = labels.by_slide()
    absent = tuple(s for s in wanted if s not in bags)
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        message = (
            f"{labels.path}: {len(absent)} labelled slide(s) have no bag in {features_dir}: {shown}"
        )
        if missing == "error":
            raise BagSetError(
                f"{message} (see the failures.csv of tile and extract; "
                f"--missing-bags skip trains on the others)"
            )
        warnings.warn(f"{message}; they are left out of training", stacklevel=2)
        wanted = [s for s in wanted if s in bags]
    skipped = tuple(s for s in bags if s not in by_slide)
    if skipped:
        shown = ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"{features_dir}: {len(skipped)} bag(s) have no label in {labels.path} "
            f"and are skipped: {shown}",
            stacklevel=2,
        )
    records: list[BagRecord] = []
    encoder: tuple[str, int, Path] | None = None
    strata = dict(zip((r.slide_id for r in labels.rows), labels.strata().tolist()))
    for slide_id in wanted:
        path = bags[slide_id]
        try:
            attrs = read_bag_attrs(path)
        except BagError as exc:
            raise BagSetError(str(exc)) from exc
        shape = (attrs["num_tiles"], attrs["feature_dim"])
        has_tile_labels = bool(attrs["has_tile_labels"])
        if shape[1] == 0:
            raise BagSetError(f"{path}: features are not a [N, D] matrix")
        if shape[0] == 0:
            raise BagSetError(f"{path}: empty bag (no tiles)")
        name, dim = str(attrs.get("encoder", "?")), int(shape[1])
        if encoder is None:
            encoder = (name, dim, path)
        elif (name, dim) != encoder[:2]:
            raise BagSetError(
                f"{path}: encoder {name!r} with {dim} features, but {encoder[2]} has "
                f"{encoder[0]!r} with {encoder[1]}: bags of one model must come from one encoder"
            )
        records.append(
            BagRecord(
                slide_id,
                path,
                int(strata[slide_id]),
                int(shape[0]),
                has_tile_labels,
                tuple(by_slide[slide_id].values),
            )
        )
    if encoder is None:
        raise BagSetError(f"{labels.path}: no slides to match in {features_dir}")
    return BagSet(
        tuple(records), encoder=encoder[0], dim=encoder[1], skipped=skipped, missing=absent
    )


def patient_bags(
    bag_set: BagSet, patients: LabelTable, members: dict[str, tuple[str, ...]]
) -> BagSet:
    """The bags of ``bag_set`` pooled per patient (:func:`wsi_mil.mil.labels.patient_table`
    gives ``patients``, one row per patient, and ``members``, its slides): one record per
    patient whose slides have a bag, its parts in the labels CSV's order."""
    by_slide = {r.slide_id: r for r in bag_set.records}
    strata = dict(zip((r.slide_id for r in patients.rows), patients.strata().tolist()))
    records = []
    for row in patients.rows:
        slides = [by_slide[s] for s in members[row.slide_id] if s in by_slide]
        if not slides:
            continue
        records.append(
            BagRecord(
                row.slide_id,
                slides[0].path,
                int(strata[row.slide_id]),
                sum(r.num_tiles for r in slides),
                all(r.has_tile_labels for r in slides),
                tuple(row.values),
                tuple((r.slide_id, r.path, r.num_tiles) for r in slides),
            )
        )
    return BagSet(tuple(records), bag_set.encoder, bag_set.dim, bag_set.skipped, bag_set.missing)


def _check_finite(path: Path | str, features: np.ndarray, offset: int = 0) -> None:
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        row = offset + int(np.flatnonzero(bad)[0])
        raise BagSetError(
            f"{path}: {int(bad.sum())} tile(s) with NaN/inf features (first at row {row})"
        )


def read_features(path: Path, dtype: npt.DTypeLike = np.float16) -> np.ndarray:
    """All features of a bag as ``dtype``, checked for NaN/inf."""
    features = read_bag_features(path)
    _check_finite(path, features)
    return features.astype(dtype, copy=False)


def scan_features(path: Path) -> None:
    """Check a bag for NaN/inf chunk by chunk, without holding it in memory."""
    with open_bag_features(path) as data:
        for start in range(0, data.shape[0], SCAN_CHUNK):
            _check_finite(path, data[start : start + SCAN_CHUNK], offset=start)


def grid_coords(coords: np.ndarray, stride: float) -> np.ndarray:
    """Level-0 (x, y) tile corners -> float32 ``[N, 2]`` grid positions (column, row).

    Tiles lie every ``stride`` level-0 px (the tiles file's ``stride``) at ``floor(i *
    stride)``, so dividing by the stride and rounding gives each tile's exact lattice index.
    Positions are absolute here; a model takes them relative to the bag (see
    :class:`wsi_mil.mil.models.transformers.TransformerMIL`).
    """
    if not stride > 0:
        raise ValueError(f"tile stride must be positive, got {stride}")
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    return np.rint(coords / float(stride)).astype(np.float32)


def bag_grid_coords(path: Path | str, coords: np.ndarray, attrs: dict) -> np.ndarray:
    """:func:`grid_coords` of a bag's ``coords`` ``[N, 2]`` and ``attrs`` (its ``stride``),
    already read from ``path``, with an error naming the file when either is unusable."""
    if attrs.get("stride") is None:
        raise BagSetError(
            f"{path}: no 'stride' attribute (the tiling's level-0 step), needed "
            f"to place the tiles on their grid"
        )
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise BagSetError(f"{path}: coords of shape {coords.shape}, expected [tiles, 2]")
    try:
        return grid_coords(coords, float(attrs["stride"]))
    except (TypeError, ValueError) as exc:
        raise BagSetError(f"{path}: {exc}") from exc


def read_grid_coords(path: Path | str) -> np.ndarray:
    """A bag's tile positions on its lattice (:func:`bag_grid_coords` of the file's ``coords``
    and ``stride``)."""
    try:
        attrs = read_bag_attrs(path)
        coords = read_bag_coords(path)
    except BagError as exc:
        raise BagSetError(f"{exc}, needed by a model that uses the tiles' positions") from exc
    n = attrs["num_tiles"]
    if coords.shape != (n, 2):
        raise BagSetError(f"{path}: coords of shape {coords.shape} for {n} tiles")
    return bag_grid_coords(path, coords, {"stride": attrs.get("stride")})


def read_tile_labels(path: Path) -> np.ndarray | None:
    values = read_bag_tile_labels(path)
    if values is None:
        return None
    n = read_bag_attrs(path)["num_tiles"]
    if values.shape[0] != n:
        raise BagSetError(f"{path}: {values.shape[0]} tile labels for {n} tiles")
    return values


class BagDataset(torch.utils.data.Dataset):
    """Bags as :class:`BagItem`, in memory (float16) when they fit ``memory_gb``, else streamed.

    ``max_tiles`` draws a random subset of that many tiles per bag each time a bag is read (a
    regulariser, and a cap on the memory of a training step for very large slides); prediction
    never subsamples. ``with_coords`` also gives each item its tiles' grid positions
    (:func:`read_grid_coords`, held in memory), for a model that uses them. ``stain_views``
    (training only) draws, each time a bag is read, one of its features and its
    stain-augmented views (``wsi-mil extract --stain-views N``) at random; bags without views
    are always read as they are.
    """

    def __init__(
        self,
        records: Sequence[BagRecord],
        dim: int,
        *,
        memory_gb: float = 8.0,
        max_tiles: int | None = None,
        seed: int = 0,
        with_coords: bool = False,
        stain_views: bool = False,
    ) -> None:
        self.records = list(records)
        self.dim = dim
        self.max_tiles = max_tiles
        self.rng = np.random.default_rng(seed)
        self._views = [
            int(read_bag_attrs(r.path).get("stain_views", 0)) if stain_views else 0
            for r in self.records
        ]
        need = sum(r.num_tiles * (1 + v) for r, v in zip(self.records, self._views)) * dim * 2
        self.in_memory = need <= memory_gb * 1024**3
        self._features: list[torch.Tensor] | None = None
        self._view_features: list[list[torch.Tensor]] = [[] for _ in self.records]
        if self.in_memory:
            self._features = [
                torch.from_numpy(np.concatenate([read_features(path) for _, path, _ in r.files()]))
                for r in self.records
            ]
            for i, (r, views) in enumerate(zip(self.records, self._views)):
                for view in range(1, views + 1):
                    values = np.concatenate([read_bag_view(path, view) for _, path, _ in r.files()])
                    _check_finite(r.path, values)
                    self._view_features[i].append(
                        torch.from_numpy(values.astype(np.float16, copy=False))
                    )
        else:
            for r in self.records:
                for _, path, _ in r.files():
                    scan_features(path)
        self._tile_labels = [
            np.concatenate([read_tile_labels(path) for _, path, _ in r.files()])
            if r.has_tile_labels
            else None
            for r in self.records
        ]
        self._coords = (
            [
                joined_grid_coords([read_grid_coords(path) for _, path, _ in r.files()])
                for r in self.records
            ]
            if with_coords
            else None
        )

    @classmethod
    def from_arrays(
        cls,
        bags: Sequence[np.ndarray],
        labels: Sequence[int],
        slide_ids: Sequence[str] | None = None,
        tile_labels: Sequence[np.ndarray | None] | None = None,
        max_tiles: int | None = None,
        seed: int = 0,
        coords: Sequence[np.ndarray] | None = None,
        targets: Sequence[Sequence[float]] | None = None,
    ) -> BagDataset:
        """An in-memory dataset from arrays (benchmarks on non-slide MIL data, tests).

        The arrays are kept as float32: such data sets are small, and classic MIL features
        are not encoder outputs that float16 was chosen for. ``coords``: per bag its tiles'
        grid positions ``[N, 2]`` (already in grid units, see :func:`grid_coords`), or None.
        ``targets``: per bag the task's numbers (see :attr:`BagRecord.target`).
        """
        self = cls.__new__(cls)
        self.dim = int(bags[0].shape[1])
        self.max_tiles = max_tiles
        self.rng = np.random.default_rng(seed)
        ids = list(slide_ids) if slide_ids is not None else [f"bag_{i}" for i in range(len(bags))]
        targets = list(targets) if targets is not None else [()] * len(bags)
        self.records = [
            BagRecord(s, Path(s), int(y), int(b.shape[0]), False, tuple(float(v) for v in t))
            for s, b, y, t in zip(ids, bags, labels, targets, strict=True)
        ]
        for s, b in zip(ids, bags):
            if b.ndim != 2 or b.shape[0] == 0:
                raise BagSetError(f"{s}: empty bag or features of shape {b.shape}")
            _check_finite(s, b)
        self.in_memory = True
        self._views = [0] * len(bags)
        self._view_features = [[] for _ in bags]
        self._features = [torch.from_numpy(np.asarray(b, dtype=np.float32)) for b in bags]
        self._tile_labels = list(tile_labels) if tile_labels is not None else [None] * len(bags)
        self._coords = None
        if coords is not None:
            self._coords = [np.asarray(c, dtype=np.float32) for c in coords]
            if len(self._coords) != len(bags):
                raise BagSetError(f"{len(self._coords)} coordinate arrays for {len(bags)} bags")
            for s, b, c in zip(ids, bags, self._coords):
                if c.shape != (b.shape[0], 2):
                    raise BagSetError(f"{s}: coords of shape {c.shape} for {b.shape[0]} tiles")
        return self

    def __len__(self) -> int:
        return len(self.records)

    def _subset(self, n: int) -> np.ndarray | None:
        if self.max_tiles is None or n <= self.max_tiles:
            return None
        return np.sort(self.rng.choice(n, self.max_tiles, replace=False))

    def __getitem__(self, index: int) -> BagItem:
        record = self.records[index]
        keep = self._subset(record.num_tiles)
        view = int(self.rng.integers(0, self._views[index] + 1)) if self._views[index] else 0
        if self._features is not None:
            features = self._view_features[index][view - 1] if view else self._features[index]
            if keep is not None:
                features = features[torch.from_numpy(keep)]
        elif not record.parts:
            features = torch.from_numpy(read_bag_view(record.path, view, keep))
        else:
            features = torch.from_numpy(
                np.concatenate([read_bag_view(path, view) for _, path, _ in record.files()])
            )
            if keep is not None:
                features = features[torch.from_numpy(keep)]
        labels_of_tiles = self._tile_labels[index]
        tile_labels = (
            None
            if labels_of_tiles is None
            else torch.from_numpy(labels_of_tiles if keep is None else labels_of_tiles[keep])
        )
        coords = None
        if self._coords is not None:
            coords = torch.from_numpy(
                self._coords[index] if keep is None else self._coords[index][keep]
            )
        return BagItem(record.slide_id, features, record.label, tile_labels, coords, record.target)


def collate_bags(items: Sequence[BagItem]) -> BagBatch:
    """Pad bags to the longest; padded rows are zero features, ``mask`` False, NaN tile label,
    and (when the bags carry grid positions) position (0, 0)."""
    n_max = max(item.features.shape[0] for item in items)
    dim = items[0].features.shape[1]
    features = torch.zeros(len(items), n_max, dim, dtype=torch.float32)
    mask = torch.zeros(len(items), n_max, dtype=torch.bool)
    tile_labels = torch.full((len(items), n_max), float("nan"), dtype=torch.float32)
    for i, item in enumerate(items):
        n = item.features.shape[0]
        features[i, :n] = item.features.float()
        mask[i, :n] = True
        if item.tile_labels is not None:
            tile_labels[i, :n] = item.tile_labels.float()
    coords = None
    with_coords = [item.coords is not None for item in items]
    if any(with_coords):
        if not all(with_coords):
            missing = [item.slide_id for item in items if item.coords is None]
            raise BagSetError(f"bags {missing} have no coordinates, others of the batch do")
        coords = torch.zeros(len(items), n_max, 2, dtype=torch.float32)
        for i, item in enumerate(items):
            assert item.coords is not None  # all(with_coords) above
            coords[i, : item.coords.shape[0]] = item.coords.float()
    labels = torch.tensor([item.label for item in items], dtype=torch.long)
    targets = torch.tensor([item.target for item in items], dtype=torch.float32).reshape(
        len(items), -1
    )
    return BagBatch(
        [item.slide_id for item in items], features, mask, labels, tile_labels, coords, targets
    )


def joined_grid_coords(parts: list[np.ndarray]) -> np.ndarray:
    """One patient's slides' grid positions side by side (the module docstring says why):
    each slide's columns shifted to start two tiles right of the previous slide's last."""
    if len(parts) == 1:
        return parts[0]
    out, left = [], 0.0
    for grid in parts:
        grid = grid.copy()
        grid[:, 0] += left - grid[:, 0].min()
        grid[:, 1] -= grid[:, 1].min()
        left = float(grid[:, 0].max()) + 2.0
        out.append(grid)
    return np.concatenate(out)
