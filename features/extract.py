"""One slide's tiles to one feature bag: read in parallel, encode in batches, write atomically.

:func:`extract_slide` is the per-slide step: it depends on nothing but the tiles file, the
slide and the encoder, and writes ``features/<encoder>/<slide_id>.h5`` in one atomic step
(``NAME.tmp``, then rename), so a killed run leaves at most a ``.tmp`` that the next run
discards and redoes. Resuming is per slide: :func:`bag_is_current` tells a batch which bags
are complete *and* still match their tiles file and the encoder's weights.

A tiles file with no tiles (no tissue passed ``min_tissue``) is an error naming the file,
not an empty bag: an empty bag cannot be trained on or predicted, and the error lands in
``failures.csv`` where it is seen, instead of failing later in training.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch

from features.bag import (
    export_trident,
    is_complete_bag,
    read_bag_attrs,
    read_bag_coords,
    trident_copy_path,
    write_bag,
)
from features.dataset import TileDataset, tile_loader
from features.device import resolve_device
from features.params import ExtractParams
from features.registry import Encoder
from features.stain import (
    QC_COLUMNS,
    StainError,
    StainNormaliser,
    cohort_montage,
    read_target_image,
)
from tiling.slide import open_slide
from tiling.tiles_file import read_tiles_file
from wsi_mil.console import progress_bar
from wsi_mil.errors import WsiMilError

__all__ = [
    "EmptyTilesError",
    "ExtractParams",
    "SlideMismatchError",
    "bag_is_current",
    "encode_tiles",
    "extract_slide",
    "fit_stain_reference",
]


class EmptyTilesError(WsiMilError, ValueError):
    """A tiles file without a single tile: there is nothing to encode."""


class SlideMismatchError(WsiMilError, ValueError):
    """The slide given for a tiles file is not the slide that was tiled."""


def encode_tiles(
    dataset: TileDataset, encoder: Encoder, params: ExtractParams, desc: str = "extract"
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Features ``[N, D]`` of every tile of ``dataset``, in order, as ``params.dtype``; with
    the tiles' QC measures ``[N, 3]`` too when ``dataset.with_qc``."""
    features = np.empty((len(dataset), encoder.dim), dtype=params.dtype)
    qc = np.empty((len(dataset), len(QC_COLUMNS)), np.float32) if dataset.with_qc else None
    loader = tile_loader(
        dataset,
        params.batch_size,
        params.reader_workers(encoder.device.type),
        encoder.device,
        params.prefetch,
    )
    done = 0
    with progress_bar(
        total=len(dataset), desc=desc, unit="tile", leave=False, show=params.progress
    ) as bar:
        for batch in loader:
            if qc is not None:
                batch, batch_qc = batch
                qc[done : done + len(batch_qc)] = batch_qc.numpy()
            out = encoder.encode(batch)
            features[done : done + len(out)] = out.cpu().numpy()
            done += len(out)
            bar.update(len(out))
    if done != len(dataset):
        raise RuntimeError(f"{dataset.slide_path}: encoded {done} of {len(dataset)} tiles")
    return features if qc is None else (features, qc)


def _check_slide(slide_path: Path, attrs: dict, tiles_path: Path) -> None:
    """Refuse a slide whose size differs from the tiled one (a moved or renamed wrong file)."""
    slide = open_slide(slide_path)
    try:
        size = tuple(int(v) for v in slide.dimensions)
    finally:
        slide.close()
    expected = (int(attrs["slide_width"]), int(attrs["slide_height"]))
    if size != expected:
        raise SlideMismatchError(
            f"{slide_path}: slide is {size[0]}x{size[1]} px but {tiles_path} was tiled from a "
            f"{expected[0]}x{expected[1]} px slide ({attrs['slide_path']})"
        )


def extract_slide(
    tiles_path: str | os.PathLike,
    slide_path: str | os.PathLike,
    out_path: str | os.PathLike,
    encoder: Encoder,
    params: ExtractParams | None = None,
    normaliser: StainNormaliser | None = None,
) -> Path:
    """Encode every tile of ``tiles_path`` (read from ``slide_path``) into a bag at ``out_path``.

    The encoder is moved to ``params.device`` if it is elsewhere. Always (re)writes the bag;
    skipping complete bags is the batch's job (:func:`bag_is_current`). With ``workers > 0``
    the readers are started by a fork server (see :mod:`features.dataset`), so a script calling
    this needs the usual ``if __name__ == "__main__":`` guard.

    ``normaliser`` (fitted by the batch, see :func:`fit_stain_reference`) is applied to every
    tile when ``params.stain`` asks for it; ``params.stain_views`` jittered views are encoded
    after the plain one and stored as ``stain_views`` ``[N, views, D]``; ``params.tile_qc``
    stores ``tile_qc`` ``[N, 3]`` (:data:`features.stain.QC_COLUMNS`).
    """
    params = params or ExtractParams()
    tiles_path, slide_path = Path(tiles_path), Path(slide_path)
    tiles = read_tiles_file(tiles_path)
    if len(tiles) == 0:
        raise EmptyTilesError(
            f"{tiles_path}: the tiles file has no tiles (no tissue reached min_tissue="
            f"{tiles.attrs['min_tissue']}); nothing to encode. Re-tile with a lower "
            f"--min-tissue or leave this slide out"
        )
    _check_slide(slide_path, tiles.attrs, tiles_path)
    encoder.to(resolve_device(params.device))
    threads = params.encoder_threads(encoder.device.type)
    if threads is not None:
        torch.set_num_threads(threads)
    if params.stain != "none" and normaliser is None:
        raise StainError(
            f"{tiles_path}: stain {params.stain!r} asked for without a fitted "
            f"reference (fit_stain_reference)"
        )
    normaliser = normaliser if params.stain != "none" else None
    dataset = TileDataset(
        tiles,
        slide_path,
        encoder.input_size,
        normaliser=normaliser,
        with_qc=params.tile_qc,
        jitter=params.stain_jitter,
        seed=zlib.crc32(tiles.slide_id.encode()),
    )
    encoded = encode_tiles(dataset, encoder, params, desc=tiles.slide_id)
    features, qc = encoded if isinstance(encoded, tuple) else (encoded, None)
    attrs = {**encoder.bag_attrs(params.dtype), "stain_method": "none"}
    if normaliser is not None:
        attrs.update(normaliser.attrs())
    datasets: dict[str, np.ndarray] = {}
    if qc is not None:
        datasets["tile_qc"] = qc
        attrs["tile_qc_columns"] = list(QC_COLUMNS)
    if params.stain_views:
        views = np.empty((len(tiles), params.stain_views, encoder.dim), dtype=params.dtype)
        plain = TileDataset(
            tiles,
            slide_path,
            encoder.input_size,
            normaliser=normaliser,
            jitter=params.stain_jitter,
            seed=dataset.seed,
        )
        for view in range(1, params.stain_views + 1):
            plain.view = view
            views[:, view - 1] = encode_tiles(
                plain, encoder, params, desc=f"{tiles.slide_id} view {view}"
            )
        datasets["stain_views"] = views
        attrs.update(stain_views=params.stain_views, stain_jitter=params.stain_jitter)
    path = write_bag(out_path, features, tiles, attrs, datasets)
    if params.format == "trident":
        export_trident(path)
    return path


def fit_stain_reference(
    params: ExtractParams,
    datasets: list[TileDataset],
    tiles_per_slide: int = 8,
    max_tiles: int = 256,
    seed: int = 0,
) -> StainNormaliser | None:
    """The stain normaliser of a batch: fitted to ``params.stain_target`` when given, else to a
    montage of up to ``tiles_per_slide`` tiles of each slide (at most ``max_tiles`` in all,
    drawn at random with ``seed``), so every slide is normalised to
    the same cohort reference and the reference is recorded in every bag."""
    if params.stain == "none":
        return None
    if params.stain_target is not None:
        image = read_target_image(params.stain_target)
        return StainNormaliser.fit(params.stain, image, str(Path(params.stain_target).resolve()))
    rng = np.random.default_rng(seed)
    per_slide = max(1, min(tiles_per_slide, max_tiles // max(1, len(datasets))))
    tiles = []
    for dataset in datasets:
        n = len(dataset)
        chosen = rng.choice(n, size=min(per_slide, n), replace=False)
        tiles += [dataset.read_raw(int(i)) for i in chosen]
    target = f"cohort ({len(tiles)} tiles of {len(datasets)} slides, seed {seed})"
    return StainNormaliser.fit(params.stain, cohort_montage(tiles), target)


def bag_is_current(
    bag_path: str | os.PathLike,
    tiles_path: str | os.PathLike,
    encoder: Encoder,
    dtype: str,
    params: ExtractParams | None = None,
) -> bool:
    """True when ``bag_path`` is complete and was made from these tiles with these weights.

    A bag left by other weights under the same encoder name, at another precision, or from a
    tiles file that was re-tiled since (other coordinates), is out of date and redone; with
    ``params``, so is one with other stain handling, without the QC or augmented views asked
    for, or without its TRIDENT-layout copy when ``format: trident`` asks for one.
    """
    if not is_complete_bag(bag_path):
        return False
    try:
        tiles = read_tiles_file(tiles_path)
        attrs = read_bag_attrs(bag_path)
        current = (
            attrs.get("weights_sha256") == encoder.weights_sha256
            and attrs.get("dtype") == dtype
            and np.array_equal(read_bag_coords(bag_path), tiles.coords)
        )
        if params is not None and current:
            current = (
                attrs.get("stain_method", "none") == params.stain
                and int(attrs.get("stain_views", 0)) == params.stain_views
                and ("tile_qc_columns" in attrs or not params.tile_qc)
                and (
                    params.format != "trident" or trident_copy_path(Path(bag_path), attrs).is_file()
                )
            )
        return current
    except (OSError, ValueError, KeyError):
        return False
