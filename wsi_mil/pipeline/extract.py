"""The extraction stage: tiles files -> feature bags ``OUT/<encoder>/<slide_id>.h5``.

The encoder is loaded once and the slides are encoded one after another, each with its own
parallel tile readers (the parallelism is inside a slide, where the encoder is the bottleneck).
A slide is found from its tiles file's ``slide_path``, or by slide id under ``slides_dir``
when the slides were moved since tiling. Complete bags made from the same tiles with the same
weights are skipped; failures go to ``OUT/failures.csv``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from features.params import ExtractParams
from wsi_mil.pipeline.batch import BatchResult, SlideJob, run_batch

STAGE = "extract"



def find_tiles_files(tiles: str | os.PathLike) -> list[Path]:
    """The tiles files in a folder (``*.h5``, sorted), or the one file given."""
    tiles = Path(tiles)
    if tiles.is_file():
        return [tiles]
    if not tiles.is_dir():
        raise FileNotFoundError(f"{tiles}: no such tiles file or folder")
    found = sorted(p for p in tiles.glob("*.h5") if p.is_file())
    if not found:
        raise FileNotFoundError(f"{tiles}: no tiles files (*.h5); run `wsi-mil tile` first")
    return found



def index_slides(slides_dir: str | os.PathLike) -> dict[str, Path]:
    """slide id -> slide, for every slide under ``slides_dir`` (recursively)."""
    from tiling.discover import check_unique_ids, find_slides

    return check_unique_ids(find_slides([slides_dir], recursive=True))



def locate_slide(tiles_path: Path, attrs: dict[str, Any], slides: dict[str, Path],
                 slides_dir: str | os.PathLike | None) -> Path:
    """The slide of a tiles file: found by id under ``--slides``, else its recorded path."""
    slide_id = str(attrs["slide_id"])
    if slide_id in slides:
        return slides[slide_id]
    recorded = Path(attrs["slide_path"])
    if recorded.exists():
        return recorded
    where = f" and no slide with id {slide_id!r} under {slides_dir}" if slides_dir else ""
    raise FileNotFoundError(
        f"{tiles_path}: slide {recorded} not found{where}; pass --slides DIR where it now is"
    )



def _extract_one(tiles_path: Path, out_path: Path, encoder: Any, params: ExtractParams,
                 slides: dict[str, Path], slides_dir: Path | None) -> Path:
    from features.extract import extract_slide
    from tiling.tiles_file import read_tiles_file

    attrs = read_tiles_file(tiles_path).attrs
    slide_path = locate_slide(tiles_path, attrs, slides, slides_dir)
    return extract_slide(tiles_path, slide_path, out_path, encoder, params)



def extract_slides(
    tiles: str | os.PathLike,
    out: str | os.PathLike,
    encoder: str = "efficientnet_lite0",
    weights: str | os.PathLike | None = None,
    params: ExtractParams | None = None,
    slides_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> BatchResult:
    """Encode every tiles file under ``tiles`` into ``out/<encoder>/<slide_id>.h5``.

    Raises (before any slide is touched) when the tiles folder, the slides folder or the
    encoder's weights are unusable; per-slide problems are recorded and the batch carries on.
    """
    from features.extract import bag_is_current
    from features.registry import create_encoder

    params = params or ExtractParams()
    tiles_files = find_tiles_files(tiles)
    slides = index_slides(slides_dir) if slides_dir is not None else {}
    model = create_encoder(encoder, weights, device=params.device)
    out = Path(out)
    bag_dir = out / model.slug
    tiles_for = {bag_dir / f"{path.stem}.h5": path for path in tiles_files}
    jobs = [
        SlideJob(slide=path.stem, output=bag,
                 run=functools.partial(_extract_one, path, bag, model, params, slides,
                                       Path(slides_dir) if slides_dir is not None else None))
        for bag, path in tiles_for.items()
    ]
    return run_batch(
        jobs, stage=STAGE, failures_csv=out / "failures.csv",
        is_complete=lambda bag: bag_is_current(bag, tiles_for[bag], model, params.dtype),
        workers=1, overwrite=overwrite,
    )

