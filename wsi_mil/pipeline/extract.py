"""The extraction stage: tiles files -> feature bags ``PROJECT/features/<encoder>/<slide_id>.h5``.

Locally the encoder is loaded once and the slides are encoded one after another, each with its
own parallel tile readers (the parallelism is inside a slide, where the encoder is the
bottleneck). On a Dask executor every worker encodes one slide at a time per thread and keeps
its encoder loaded across the slides it gets (:func:`cached_encoder`); an encoder on CUDA makes
each slide ask for a worker's ``GPU`` resource.
A slide is found from its tiles file's ``slide_path``, or by slide id under ``slides_dir``
when the slides were moved since tiling. Complete bags made from the same tiles with the same
weights and stain handling are skipped; failures go to ``PROJECT/failures.csv``. With stain
normalisation, the reference is fitted once for the batch (to the target image, or to tiles of
every slide) before any slide is encoded, and every bag records it.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.params import ExtractParams
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.errors import MissingInputError
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch
from wsi_mil.project import Project

if TYPE_CHECKING:
    from features.registry import Encoder
    from features.stain import StainNormaliser

STAGE = "extract"


def find_tiles_files(tiles: str | os.PathLike) -> list[Path]:
    """The tiles files in a folder (``*.h5``, sorted), or the one file given."""
    tiles = Path(tiles)
    if tiles.is_file():
        return [tiles]
    if not tiles.is_dir():
        raise MissingInputError(f"{tiles}: no such tiles file or folder")
    found = sorted(p for p in tiles.glob("*.h5") if p.is_file())
    if not found:
        raise MissingInputError(f"{tiles}: no tiles files (*.h5); run `wsi-mil tile` first")
    return found


def index_slides(slides_dir: str | os.PathLike) -> dict[str, Path]:
    """slide id -> slide, for every slide under ``slides_dir`` (recursively)."""
    from tiling.discover import check_unique_ids, find_slides

    return check_unique_ids(find_slides([slides_dir], recursive=True))


def locate_slide(
    tiles_path: Path,
    attrs: dict[str, Any],
    slides: dict[str, Path],
    slides_dir: str | os.PathLike | None,
) -> Path:
    """The slide of a tiles file: found by id under ``--slides``, else its recorded path."""
    slide_id = str(attrs["slide_id"])
    if slide_id in slides:
        return slides[slide_id]
    recorded = Path(attrs["slide_path"])
    if recorded.exists():
        return recorded
    where = f" and no slide with id {slide_id!r} under {slides_dir}" if slides_dir else ""
    raise MissingInputError(
        f"{tiles_path}: slide {recorded} not found{where}; pass --slides DIR where it now is"
    )


_encoders: dict[tuple[str, str | None], Encoder] = {}
_encoders_lock = threading.Lock()


def cached_encoder(name: str, weights: str | os.PathLike | None) -> Encoder:
    """This process's encoder ``name`` with ``weights``, loaded on first use and then kept.

    Every process that extracts (the command's own, or each Dask worker) loads an encoder once
    for all the slides it encodes, instead of once per slide (seconds for a ViT-L, more than a
    small slide takes to encode). It is built on the CPU; :func:`features.extract.extract_slide`
    moves it to the device of the params, so the key does not need the device.
    """
    from features.registry import create_encoder

    key = (name, None if weights is None else str(weights))
    with _encoders_lock:  # a worker's threads share one encoder, built once
        if key not in _encoders:
            _encoders[key] = create_encoder(name, weights, device="cpu")
        return _encoders[key]


def _wants_gpu(device: str) -> bool:
    """Whether an encoder asked to run on ``device`` runs on CUDA (``auto``: if here it would)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def _extract_one(
    tiles_path: Path,
    out_path: Path,
    encoder: str,
    weights: str | os.PathLike | None,
    params: ExtractParams,
    slide_path: Path | None,
    slides_dir: Path | None,
    normaliser: StainNormaliser | None = None,
) -> Path:
    from features.extract import extract_slide
    from tiling.tiles_file import read_tiles_file

    attrs = read_tiles_file(tiles_path).attrs
    known = {str(attrs["slide_id"]): slide_path} if slide_path is not None else {}
    slide = locate_slide(tiles_path, attrs, known, slides_dir)
    return extract_slide(
        tiles_path, slide, out_path, cached_encoder(encoder, weights), params, normaliser
    )


def batch_stain_reference(
    tiles_files: list[Path],
    params: ExtractParams,
    slides: dict[str, Path],
    slides_dir: Path | None,
    input_size: int,
) -> StainNormaliser | None:
    """The batch's stain normaliser (:func:`features.extract.fit_stain_reference`), fitted to
    the tiles of every slide that can be found and has tiles (the others fail in their own
    job, where failures.csv records them)."""
    if params.stain == "none":
        return None
    from features.dataset import TileDataset
    from features.extract import fit_stain_reference
    from tiling.tiles_file import read_tiles_file

    datasets = []
    if params.stain_target is None:
        for path in tiles_files:
            try:
                tiles = read_tiles_file(path)
                slide = locate_slide(path, tiles.attrs, slides, slides_dir)
            except (OSError, ValueError, KeyError):
                continue
            if len(tiles):
                datasets.append(TileDataset(tiles, slide, input_size))
    return fit_stain_reference(params, datasets)


def extract_slides(
    tiles_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | Project,
    encoder: str = "efficientnet_lite0",
    weights: str | os.PathLike | None = None,
    params: ExtractParams | None = None,
    slides_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
) -> BatchResult:
    """Encode every tiles file of ``tiles_dir`` (a folder, or one tiles file) into the project
    ``out``'s ``features/<encoder>/<slide_id>.h5``.

    Raises (before any slide is touched) when the tiles folder, the slides folder or the
    encoder's weights are unusable, or when the device is missing here and the slides are
    encoded here; per-slide problems are recorded and the batch carries on.
    """
    from features.device import resolve_device
    from features.extract import bag_is_current

    params = params or ExtractParams()
    tiles_files = find_tiles_files(tiles_dir)
    slides = index_slides(slides_dir) if slides_dir is not None else {}
    model = cached_encoder(encoder, weights)  # its name and weights' hash decide what is done
    if executor is None or not executor.distributed:  # else only the workers need the device
        resolve_device(params.device)
    resources = {"GPU": 1} if _wants_gpu(params.device) else None
    where = Path(slides_dir) if slides_dir is not None else None
    normaliser = batch_stain_reference(tiles_files, params, slides, where, model.input_size)
    project = Project.of(out)
    bag_dir = project.features_dir(model.name)
    tiles_for = {bag_dir / f"{path.stem}.h5": path for path in tiles_files}
    jobs = [
        SlideJob(
            slide=path.stem,
            output=bag,
            resources=resources,
            run=functools.partial(
                _extract_one,
                path,
                bag,
                encoder,
                weights,
                params,
                slides.get(path.stem),
                where,
                normaliser,
            ),
        )
        for bag, path in tiles_for.items()
    ]
    return run_batch(
        jobs,
        stage=STAGE,
        failures_csv=project.failures_csv,
        is_complete=lambda bag: bag_is_current(bag, tiles_for[bag], model, params.dtype, params),
        workers=1,
        overwrite=overwrite,
        executor=executor,
    )
