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
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from features.bag import is_complete_bag, write_bag
from features.dataset import TileDataset, tile_loader
from features.device import resolve_device
from features.params import ExtractParams
from features.registry import Encoder
from tiling.slide import open_slide
from tiling.tiles_file import read_tiles_file

__all__ = ["EmptyTilesError", "ExtractParams", "SlideMismatchError", "bag_is_current",
           "encode_tiles", "extract_slide"]


class EmptyTilesError(ValueError):
    """A tiles file without a single tile: there is nothing to encode."""


class SlideMismatchError(ValueError):
    """The slide given for a tiles file is not the slide that was tiled."""


def encode_tiles(
    dataset: TileDataset, encoder: Encoder, params: ExtractParams, desc: str = "extract"
) -> np.ndarray:
    """Features ``[N, D]`` of every tile of ``dataset``, in order, as ``params.dtype``."""
    features = np.empty((len(dataset), encoder.dim), dtype=params.dtype)
    loader = tile_loader(dataset, params.batch_size, params.reader_workers(encoder.device.type),
                         encoder.device, params.prefetch)
    done = 0
    with tqdm(total=len(dataset), desc=desc, unit="tile", leave=False,
              disable=not params.progress) as bar:
        for batch in loader:
            out = encoder.encode(batch)
            features[done:done + len(out)] = out.cpu().numpy()
            done += len(out)
            bar.update(len(out))
    if done != len(dataset):
        raise RuntimeError(f"{dataset.slide_path}: encoded {done} of {len(dataset)} tiles")
    return features


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
) -> Path:
    """Encode every tile of ``tiles_path`` (read from ``slide_path``) into a bag at ``out_path``.

    The encoder is moved to ``params.device`` if it is elsewhere. Always (re)writes the bag;
    skipping complete bags is the batch's job (:func:`bag_is_current`). With ``workers > 0``
    the readers are started by a fork server (see :mod:`features.dataset`), so a script calling
    this needs the usual ``if __name__ == "__main__":`` guard.
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
    dataset = TileDataset(tiles, slide_path, encoder.input_size)
    features = encode_tiles(dataset, encoder, params, desc=tiles.slide_id)
    return write_bag(out_path, features, tiles, encoder.bag_attrs(params.dtype))


def bag_is_current(bag_path: str | os.PathLike, tiles_path: str | os.PathLike,
                   encoder: Encoder, dtype: str) -> bool:
    """True when ``bag_path`` is complete and was made from these tiles with these weights.

    A bag left by other weights under the same encoder name, at another precision, or from a
    tiles file that was re-tiled since (other coordinates), is out of date and redone.
    """
    if not is_complete_bag(bag_path):
        return False
    try:
        tiles = read_tiles_file(tiles_path)
        with h5py.File(bag_path, "r") as f:
            return (f.attrs.get("weights_sha256") == encoder.weights_sha256
                    and f.attrs.get("dtype") == dtype
                    and np.array_equal(f["coords"][:], tiles.coords))
    except (OSError, ValueError, KeyError):
        return False
