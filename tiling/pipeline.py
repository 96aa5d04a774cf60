"""Tile one slide: resolution, tissue, grid, and the three files that record them.

``tile_slide`` is a pure function of one slide and its parameters to ``tiles/<slide_id>.h5``
(plus the tissue GeoJSON and the preview PNG beside it), so a batch of slides is resumable and
can be scheduled on any executor. The tiles file is written last: its presence means the
slide's tiling is complete.

Geometry: a tile is ``tile_size`` px at ``target_mpp``, i.e. ``tile_size_level0 = tile_size *
target_mpp / slide_mpp`` level-0 px (a float; the mpp is used as measured, never rounded to a
magnification). Tiles are read from the level whose downsample is the largest not above
``target_mpp / slide_mpp`` and resized to ``tile_size``.

Upsampling: when ``target_mpp`` is finer than the slide (a 0.5 µm/px scan tiled at 0.25 µm/px),
tiles would be read from level 0 and enlarged, inventing no detail but pretending to. Small
differences are normal (a 0.2527 µm/px scanner tiled at 0.25) and allowed up to
``max_upsample`` (default 1.1, i.e. up to 10 % enlargement); beyond that tiling fails with a
message giving both resolutions, and the user raises ``max_upsample`` or picks a coarser target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tiling.discover import slide_id_for
from tiling.grid import tile_grid
from tiling.preview import PREVIEW_MIN_SIDE, write_preview
from tiling.slide import level_for_downsample, open_slide, read_thumbnail, slide_mpp
from tiling.tiles_file import write_tiles_file
from tiling.tissue import (
    TissueParams,
    background_masks,
    detect_tissue,
    mask_area_um2,
    tissue_params_of,
)
from tiling.tissue_geojson import mask_to_polygons, write_tissue_geojson

TILES_DIR = "tiles"


class TilingError(ValueError):
    """A slide that cannot be tiled with the given parameters (the message says why)."""


@dataclass(frozen=True)
class TilingParams(TissueParams):
    """Every setting of the tiling stage (the tissue-detection fields come from TissueParams)."""

    #: µm/px the tiles are laid and read at (0.5 ~ "20x", 0.25 ~ "40x"; used exactly).
    target_mpp: float = 0.5
    #: Tile side in px at ``target_mpp``.
    tile_size: int = 256
    #: Least tissue fraction (0-1) of a kept tile; tiles with no tissue are never kept.
    min_tissue: float = 0.25
    #: Fraction (0 <= overlap < 1) of a tile shared with its neighbour; stride = size * (1 - overlap).
    overlap: float = 0.0
    #: Largest allowed enlargement when ``target_mpp`` is finer than the slide (see module doc).
    max_upsample: float = 1.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_mpp > 0:
            raise ValueError(f"target_mpp must be positive, got {self.target_mpp}")
        if self.tile_size < 1:
            raise ValueError(f"tile_size must be at least 1, got {self.tile_size}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must lie in [0, 1], got {self.min_tissue}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")
        if self.max_upsample < 1.0:
            raise ValueError(f"max_upsample must be at least 1, got {self.max_upsample}")


@dataclass(frozen=True)
class TilingOutputs:
    """The three files tiling writes for one slide."""

    tiles: Path
    tissue_geojson: Path
    preview: Path

    def complete(self) -> bool:
        """All three exist (each is written atomically, the tiles file last)."""
        return self.tiles.is_file() and self.tissue_geojson.is_file() and self.preview.is_file()


def tiling_outputs(out_dir: str | os.PathLike, slide_id: str) -> TilingOutputs:
    """Where the outputs of ``slide_id`` go under ``out_dir``: ``out_dir/tiles/<slide_id>.*``."""
    folder = Path(out_dir) / TILES_DIR
    return TilingOutputs(tiles=folder / f"{slide_id}.h5",
                         tissue_geojson=folder / f"{slide_id}.tissue.geojson",
                         preview=folder / f"{slide_id}.preview.png")


def is_tiled(tiles_path: str | os.PathLike) -> bool:
    """Whether the slide whose tiles file is ``tiles_path`` was tiled completely."""
    tiles_path = Path(tiles_path)
    slide_id = tiles_path.name[: -len(".h5")]
    return tiling_outputs(tiles_path.parent.parent, slide_id).complete()


def tile_slide(slide_path: str | os.PathLike, out_dir: str | os.PathLike,
               params: TilingParams | None = None, mpp_override: float | None = None) -> Path:
    """Tile one slide into ``out_dir/tiles/<slide_id>.h5`` (+ tissue GeoJSON and preview PNG).

    Raises ``SlideOpenError``, ``SlideMppError`` or :class:`TilingError` with a message naming
    the slide and the problem. Returns the tiles file's path.
    """
    params = params or TilingParams()
    slide_path = Path(slide_path)
    slide_id = slide_id_for(slide_path)
    outputs = tiling_outputs(out_dir, slide_id)
    slide = open_slide(slide_path)
    try:
        mpp, mpp_source = slide_mpp(slide, slide_path, mpp_override)
        width, height = slide.dimensions
        downsample = params.target_mpp / mpp
        if downsample * params.max_upsample < 1.0 - 1e-9:
            raise TilingError(
                f"{slide_path}: target_mpp {params.target_mpp} is finer than the slide's "
                f"{mpp} µm/px ({1 / downsample:.3g}x enlargement > max_upsample "
                f"{params.max_upsample}); use a target_mpp of at least "
                f"{mpp / params.max_upsample:.4g} or raise max_upsample"
            )
        tile_size_level0 = params.tile_size * params.target_mpp / mpp
        stride = tile_size_level0 * (1.0 - params.overlap)
        read_level = level_for_downsample(slide, downsample)
        read_downsample = float(slide.level_downsamples[read_level])

        thumb = read_thumbnail(slide, target_mpp=max(params.tissue_mpp, mpp), slide_mpp=mpp)
        tissue = detect_tissue(thumb.image, thumb.downsample, mpp, params)
        white, black = background_masks(thumb.image, params)
        grid = tile_grid(width, height, tile_size_level0, stride, thumb.downsample, tissue.mask,
                         params.min_tissue, white, black, params.max_white_fraction,
                         params.max_black_fraction)
        preview = thumb
        if max(thumb.image.shape[:2]) < PREVIEW_MIN_SIDE < max(width, height):
            preview = read_thumbnail(slide, max_side=PREVIEW_MIN_SIDE)
        vendor = slide.properties.get("openslide.vendor", "image")
    finally:
        slide.close()

    write_tissue_geojson(outputs.tissue_geojson, mask_to_polygons(tissue.mask, thumb.downsample),
                         slide_id)
    write_preview(outputs.preview, preview.image, preview.downsample, tissue.mask, grid.coords,
                  tile_size_level0)
    attrs = {
        "slide_path": str(slide_path.resolve()),
        "slide_id": slide_id,
        "slide_vendor": vendor,
        "slide_width": int(width),
        "slide_height": int(height),
        "slide_mpp": float(mpp),
        "mpp_source": mpp_source,
        "target_mpp": float(params.target_mpp),
        "tile_size": int(params.tile_size),
        "tile_size_level0": float(tile_size_level0),
        "read_level": int(read_level),
        "read_downsample": read_downsample,
        "stride": float(stride),
        "overlap": float(params.overlap),
        "min_tissue": float(params.min_tissue),
        "tissue_method": tissue.method,
        "tissue_params": tissue_params_of(params),
        "tissue_threshold": float(tissue.threshold),
        "tissue_downsample": float(thumb.downsample),
        "tissue_area_um2": mask_area_um2(tissue, mpp),
        "candidate_tiles": grid.candidates,
    }
    return write_tiles_file(outputs.tiles, grid.coords, grid.tissue_fraction, attrs)
