"""Reading a slide's tiles for an encoder, in parallel, in the tiles file's order.

Each tile is read through OpenSlide at the level the tiles file records, resized to the tile
size (i.e. to the target µm/px, by :class:`tiling.reader.TileReader`) and then to the encoder's
input size. Tiles leave the workers as uint8 (normalisation happens on the encoder's device,
see :meth:`features.registry.Encoder.preprocess`), a whole batch per worker task, so the
queues carry one array per batch instead of one small tensor per tile.

Stain handling happens here too, in the workers (:mod:`features.stain`): a tile is measured
for QC as read, then normalised to the stain reference, then (for augmented view ``view > 0``)
HED-jittered with a generator seeded by (seed, tile, view), so a view is the same whichever
worker reads it.

OpenSlide handles must not be shared across processes, so each process (the main one when
``workers=0``, or each DataLoader worker) opens its own handle lazily, on its first read.

Workers are started by a fork server (spawn where there is none, as on macOS), never forked
from the main process: a process that has already run OpenCV's or OpenMP's thread pools (the
encoder, an earlier slide read with ``workers=0``) leaves them in a state a forked child
deadlocks on. The fork server preloads this module once, so starting workers stays cheap.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from features.stain import StainNormaliser, hed_jitter, tile_qc
from tiling.reader import TileReader, resize_rgb
from tiling.slide import open_slide
from tiling.tiles_file import TilesFile


class TileDataset(Dataset):
    """The tiles of one slide as uint8 RGB ``[input_size, input_size, 3]``, in ``coords`` order."""

    def __init__(
        self,
        tiles: TilesFile,
        slide_path: str | os.PathLike,
        input_size: int,
        normaliser: StainNormaliser | None = None,
        with_qc: bool = False,
        view: int = 0,
        jitter: float = 0.05,
        seed: int = 0,
    ):
        self.coords = tiles.coords
        self.attrs = dict(tiles.attrs)
        self.slide_path = Path(slide_path)
        self.input_size = int(input_size)
        self.normaliser = normaliser  # stain normalisation, or None
        self.with_qc = with_qc  # batches are (tiles, qc [B, 3]) instead of tiles
        self.view = view  # 0: the tiles; k > 0: the k-th HED-jittered view
        self.jitter = jitter
        self.seed = seed
        self._reader: TileReader | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def _tile_reader(self) -> TileReader:
        """This process's reader; a forked worker must not reuse its parent's OpenSlide handle."""
        if self._reader is None or self._pid != os.getpid():
            self._reader = TileReader(open_slide(self.slide_path), self.attrs)
            self._pid = os.getpid()
        return self._reader

    def read_raw(self, index: int) -> np.ndarray:
        """The tile as the slide holds it, at the encoder's input size (no stain handling)."""
        x, y = self.coords[index]
        return resize_rgb(self._tile_reader().read(int(x), int(y)), self.input_size)

    def stain(self, tile: np.ndarray, index: int) -> np.ndarray:
        """Normalised to the stain reference, then jittered for an augmented view."""
        if self.normaliser is not None:
            tile = self.normaliser(tile)
        if self.view > 0:
            rng = np.random.default_rng([self.seed, int(index), self.view])
            tile = hed_jitter(tile, rng, self.jitter)
        return tile

    def read(self, index: int) -> np.ndarray:
        """The tile the encoder sees."""
        return self.stain(self.read_raw(index), index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.read(index))

    def __getitems__(self, indices: list[int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """A whole batch ``[B, S, S, 3]`` read into one array (the DataLoader calls this), with
        each tile's QC measures ``[B, 3]`` (measured before stain handling) when asked."""
        batch = np.empty((len(indices), self.input_size, self.input_size, 3), np.uint8)
        qc = np.empty((len(indices), 3), np.float32)
        for row, index in enumerate(indices):
            raw = self.read_raw(index)
            if self.with_qc:
                qc[row] = tile_qc(raw)
            batch[row] = self.stain(raw, index)
        images = torch.from_numpy(batch)
        return (images, torch.from_numpy(qc)) if self.with_qc else images

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # OpenSlide handles cannot be pickled (spawned workers)
        state["_pid"] = None
        return state


def _batch_as_is(batch: Any) -> Any:
    """``collate_fn`` for :meth:`TileDataset.__getitems__`, which already returns a batch."""
    return batch


def _init_worker(_: int) -> None:
    """Workers only decode and resize: one OpenCV thread each, so they never oversubscribe."""
    cv2.setNumThreads(1)


def worker_context() -> multiprocessing.context.BaseContext:
    """Where DataLoader workers come from: a fork server with torch and OpenSlide preloaded."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def tile_loader(
    dataset: TileDataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    prefetch: int = 2,
) -> DataLoader:
    """Batches of ``dataset`` in order; memory is pinned only for CUDA, where it speeds copies."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_batch_as_is,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch if workers > 0 else None,
        worker_init_fn=_init_worker if workers > 0 else None,
        multiprocessing_context=worker_context() if workers > 0 else None,
        persistent_workers=False,
    )
