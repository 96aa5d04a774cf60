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

No tiles: a slide on which no tile is kept fails here, with a :class:`TilingError` that says
how much tissue was found and what to change, after writing its tissue GeoJSON and preview (to
look at) but no tiles file, so ``wsi-mil tile`` lists it in ``failures.csv`` and exits non-zero
instead of leaving an empty bag for ``extract`` to trip on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tiling.discover import slide_id_for
from tiling.grid import tile_grid
from tiling.params import TilingParams
from tiling.preview import PREVIEW_MIN_SIDE, write_preview
from tiling.slide import level_for_downsample, open_slide, read_thumbnail, slide_mpp
from tiling.tiles_file import read_tiles_file, write_tiles_file
from tiling.tissue import background_masks, detect_tissue, mask_area_um2, tissue_params_of
from tiling.tissue_geojson import mask_to_polygons, write_tissue_geojson
from wsi_mil.errors import WsiMilError

TILES_DIR = "tiles"


class TilingError(WsiMilError, ValueError):
    """A slide that cannot be tiled with the given parameters (the message says why)."""


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
    return TilingOutputs(
        tiles=folder / f"{slide_id}.h5",
        tissue_geojson=folder / f"{slide_id}.tissue.geojson",
        preview=folder / f"{slide_id}.preview.png",
    )


def is_tiled(tiles_path: str | os.PathLike) -> bool:
    """Whether the slide whose tiles file is ``tiles_path`` was tiled completely."""
    tiles_path = Path(tiles_path)
    slide_id = tiles_path.name[: -len(".h5")]
    return tiling_outputs(tiles_path.parent.parent, slide_id).complete()


def tissue_mpp(params: TilingParams, mpp: float, width: int, height: int) -> float:
    """µm/px of the tissue image: ``tissue_mpp``, finer for a slide too small for
    ``tissue_min_side`` px at it, never finer than the slide."""
    long_side_um = max(width, height) * mpp
    return max(mpp, min(params.tissue_mpp, long_side_um / params.tissue_min_side))


def _no_tiles_message(
    slide_path: Path,
    preview: Path,
    params: TilingParams,
    candidates: int,
    tissue_um2: float,
    slide_um2: float,
    threshold: float,
    tile_size_level0: float,
) -> str:
    """Why a slide got no tile, and what to change (one line, for failures.csv)."""
    found = (
        f"{slide_path}: 0 tiles kept of {candidates} laid (tissue found "
        f"{tissue_um2 / 1e6:.3g} mm², {tissue_um2 / slide_um2:.0%} of the slide, saturation "
        f"threshold {threshold:g} by {params.tissue_method}; look at {preview})"
    )
    if candidates == 0:
        remedy = (
            f"the slide is smaller than one tile ({tile_size_level0:.0f} level-0 px): use "
            "a smaller --tile-size or a coarser --target-mpp"
        )
    elif tissue_um2 == 0:
        remedy = (
            "no tissue was found: for faint tissue try --tissue-method fixed "
            "--saturation-threshold 8, for tissue darker than --black-level "
            f"{params.black_level} lower it; leave the slide out if it is empty"
        )
    else:
        remedy = (
            f"no tile holds --min-tissue {params.min_tissue:g} of tissue with at most "
            f"--max-white-fraction {params.max_white_fraction:g} of near-white: lower "
            "--min-tissue (e.g. 0.05), raise --max-white-fraction or use a smaller "
            "--tile-size"
        )
    return f"{found}: {remedy}"


def summary_line(tiles_path: str | os.PathLike) -> str:
    """One line per tiled slide: tissue area and tiles kept, for the log of ``wsi-mil tile``."""
    tiles = read_tiles_file(tiles_path)
    a = tiles.attrs
    slide_um2 = a["slide_width"] * a["slide_height"] * a["slide_mpp"] ** 2
    return (
        f"{a['slide_id']}: tissue {a['tissue_area_um2'] / 1e6:.3g} mm² "
        f"({a['tissue_area_um2'] / slide_um2:.0%} of the slide), {len(tiles)} of "
        f"{a['candidate_tiles']} tiles kept (saturation threshold "
        f"{a['tissue_threshold']:g}, {a['tissue_params']['tissue_method']})"
    )


def tile_slide(
    slide_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: TilingParams | None = None,
    mpp_override: float | None = None,
) -> Path:
    """Tile one slide into ``out_dir/tiles/<slide_id>.h5`` (+ tissue GeoJSON and preview PNG).

    Raises ``SlideOpenError``, ``SlideMppError`` or :class:`TilingError` (also when no tile is
    kept; see the module docstring) with a message naming the slide and the problem. Returns
    the tiles file's path.
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

        thumb = read_thumbnail(
            slide, target_mpp=tissue_mpp(params, mpp, width, height), slide_mpp=mpp
        )
        tissue = detect_tissue(thumb.image, thumb.downsample, mpp, params)
        white, black = background_masks(thumb.image, params)
        grid = tile_grid(
            width,
            height,
            tile_size_level0,
            stride,
            thumb.downsample,
            tissue.mask,
            params.min_tissue,
            white,
            black,
            params.max_white_fraction,
            params.max_black_fraction,
            params.edge_tiles,
        )
        preview = thumb
        if max(thumb.image.shape[:2]) < min(PREVIEW_MIN_SIDE, max(width, height)):
            preview = read_thumbnail(slide, max_side=PREVIEW_MIN_SIDE)
        vendor = slide.properties.get("openslide.vendor", "image")
    finally:
        slide.close()

    write_tissue_geojson(
        outputs.tissue_geojson, mask_to_polygons(tissue.mask, thumb.downsample), slide_id
    )
    write_preview(
        outputs.preview,
        preview.image,
        preview.downsample,
        tissue.mask,
        grid.coords,
        tile_size_level0,
        grid.columns,
        grid.rows,
    )
    tissue_um2 = mask_area_um2(tissue, mpp)
    if len(grid.coords) == 0:
        outputs.tiles.unlink(missing_ok=True)  # an older tiling of the slide is no longer true
        raise TilingError(
            _no_tiles_message(
                slide_path,
                outputs.preview,
                params,
                grid.candidates,
                tissue_um2,
                width * height * mpp * mpp,
                tissue.threshold,
                tile_size_level0,
            )
        )
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
        "tissue_area_um2": tissue_um2,
        "edge_tiles": bool(params.edge_tiles),
        "candidate_tiles": grid.candidates,
    }
    return write_tiles_file(outputs.tiles, grid.coords, grid.tissue_fraction, attrs)
