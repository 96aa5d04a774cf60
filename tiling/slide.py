"""Opening slides, their physical resolution, and low-resolution reads.

Everything downstream is laid out in micrometres per pixel (µm/px), so the level-0 resolution of
a slide is the one fact tiling cannot guess. It comes, in this order, from an explicit override
(``--mpp`` / ``--mpp-csv``), OpenSlide's ``openslide.mpp-x/y`` properties, or the TIFF resolution
tags. Values no slide scanner produces (72 dpi and the like, written by image libraries as a
placeholder) are ignored rather than trusted, and a slide left without a resolution is an error
that says how to supply one: a wrong mpp would silently tile at the wrong magnification.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import openslide

from tiling.reader import rgba_to_rgb_on_white
from wsi_mil.errors import WsiMilError

#: Level-0 µm/px outside this range is treated as a placeholder, not a measurement: scanners
#: work between ~0.05 (100x) and ~10 (1x overview); 72/96/300 dpi give 353/265/85 µm/px.
PLAUSIBLE_MPP = (0.01, 20.0)
#: Relative difference above which mpp-x and mpp-y are considered anisotropic (unsupported).
MPP_XY_TOLERANCE = 0.01
#: Most level pixels read in one request when shrinking a level to a thumbnail (64 MB RGBA).
STRIP_PIXELS = 16 * 1024 * 1024

MPP_HELP = (
    "supply it with --mpp MPP (one value for every slide) or --mpp-csv FILE "
    "(a CSV with columns slide_id,mpp)"
)


class SlideOpenError(WsiMilError, OSError):
    """A slide that OpenSlide (and its image fallback) cannot open; the message says why."""


class SlideMppError(WsiMilError, ValueError):
    """A slide whose level-0 resolution is unknown or unusable, with how to supply one."""


class Thumbnail(NamedTuple):
    """A low-resolution RGB image of the whole slide and its level-0 downsample.

    Pixel (i, j) of ``image`` covers level-0 pixels from ``(j * downsample, i * downsample)``.
    """

    image: np.ndarray  # uint8 RGB [h, w, 3]
    downsample: float  # level-0 px per thumbnail px, the same along both axes


def _dicom_member(folder: Path) -> Path:
    """The file OpenSlide should open for a folder holding one DICOM WSI (any of its files)."""
    members = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not members:
        raise SlideOpenError(f"{folder}: is a folder but holds no DICOM (.dcm) files")
    return members[0]


def open_slide(path: str | os.PathLike) -> Any:
    """Open a slide with OpenSlide, or a small plain image through OpenSlide's image fallback.

    A folder is taken as one DICOM WSI (OpenSlide finds the other files of the series). Any
    failure becomes :class:`SlideOpenError` naming the file and OpenSlide's own reason.
    """
    path = Path(path)
    if not path.exists():
        raise SlideOpenError(f"{path}: slide not found")
    target = _dicom_member(path) if path.is_dir() else path
    try:
        return openslide.open_slide(str(target))
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise SlideOpenError(f"{path}: cannot open slide ({type(exc).__name__}: {reason})") from exc


def _plausible(mpp: float) -> bool:
    return math.isfinite(mpp) and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def _isotropic(path: Path, x: float, y: float, source: str) -> float:
    if abs(x - y) > MPP_XY_TOLERANCE * max(x, y):
        raise SlideMppError(
            f"{path}: {source} gives non-square pixels (x {x} µm/px, y {y} µm/px); tiles need "
            f"one resolution: {MPP_HELP}"
        )
    return x if x == y else (x + y) / 2


def _tiff_tag_mpp(path: Path) -> tuple[float, float] | str | None:
    """(x, y) µm/px from the first TIFF page's resolution tags; None if absent, or why unusable."""
    import tifffile  # only needed for the rare slide whose mpp OpenSlide does not report

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            if "XResolution" not in tags or "YResolution" not in tags:
                return None
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
            xres, yres = tags["XResolution"].value, tags["YResolution"].value
    except Exception:  # noqa: BLE001 - not a TIFF (or unreadable as one): no tags to use
        return None
    microns_per_unit = {2: 25_400, 3: 10_000}.get(unit)
    if microns_per_unit is None:
        return "TIFF resolution tags without a physical unit"
    if not (xres[0] and yres[0]):
        return "TIFF resolution of zero"
    # integer numerator first, one division: exact for the rationals pyramid_tiff writes
    return microns_per_unit * xres[1] / xres[0], microns_per_unit * yres[1] / yres[0]


def slide_mpp(
    slide: Any, path: str | os.PathLike, override: float | None = None
) -> tuple[float, str]:
    """Level-0 µm/px of a slide and where it came from: ``"override"`` or ``"metadata"``.

    The override wins. Otherwise OpenSlide's mpp properties, then the TIFF resolution tags (inch
    or centimetre units); implausible values (placeholders such as 72 dpi) are ignored.
    Never rounded to a magnification bucket.
    """
    path = Path(path)
    if override is not None:
        override = float(override)
        if not (math.isfinite(override) and override > 0):
            raise SlideMppError(f"{path}: mpp override must be a positive number, got {override}")
        return override, "override"
    ignored: list[str] = []
    props = slide.properties
    mpp_x, mpp_y = (
        props.get(openslide.PROPERTY_NAME_MPP_X),
        props.get(openslide.PROPERTY_NAME_MPP_Y),
    )
    if mpp_x is not None and mpp_y is not None:
        x, y = float(mpp_x), float(mpp_y)
        if _plausible(x) and _plausible(y):
            return _isotropic(path, x, y, "OpenSlide's mpp properties"), "metadata"
        ignored.append(f"openslide.mpp-x/y {x:g}/{y:g} µm/px (implausible, a placeholder)")
    tag = _tiff_tag_mpp(path) if path.is_file() else None
    if isinstance(tag, str):
        ignored.append(tag)
    elif tag is not None:
        x, y = tag
        if _plausible(x) and _plausible(y):
            return _isotropic(path, x, y, "the TIFF resolution tags"), "metadata"
        ignored.append(f"TIFF resolution {x:g}/{y:g} µm/px (implausible, a placeholder)")
    found = f" (ignored: {'; '.join(ignored)})" if ignored else ""
    raise SlideMppError(
        f"{path}: the slide does not record its resolution (µm/px){found}; {MPP_HELP}"
    )


def level_for_downsample(slide: Any, downsample: float) -> int:
    """The level whose downsample is the largest not above ``downsample`` (level 0 at worst).

    A relative slack of 1e-6 keeps a level whose downsample equals the wanted one up to
    floating-point noise (2.0000001 for 2).
    """
    best = 0
    for level, level_ds in enumerate(slide.level_downsamples):
        if level_ds <= downsample * (1 + 1e-6) and level_ds >= slide.level_downsamples[best]:
            best = level
    return best


def read_level_region(slide: Any, level: int, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Rows ``[r0, r1)`` (default all) of a whole level as uint8 RGB, transparent areas white."""
    width, height = slide.level_dimensions[level]
    r0, r1 = rows if rows is not None else (0, height)
    y0 = round(r0 * slide.level_downsamples[level])
    region = slide.read_region((0, y0), level, (width, r1 - r0))
    return rgba_to_rgb_on_white(np.asarray(region))


class ThumbnailStrips:
    """The whole slide at ``target_mpp`` µm/px or with at most ``max_side`` px, band by band.

    Iterating yields ``(y0, rows)``: consecutive bands of uint8 RGB rows, top to bottom, each
    read from the pyramid level whose downsample is the largest not above the wanted one and
    shrunk (area averaging). At most ``strip_pixels`` level pixels are read at once, so a
    picture of any size can be made without ever holding it (or the level) whole (default
    :data:`STRIP_PIXELS`). Never upsamples: a target finer than level 0 gives level 0.
    """

    def __init__(
        self,
        slide: Any,
        *,
        max_side: int | None = None,
        target_mpp: float | None = None,
        slide_mpp: float | None = None,
        strip_pixels: int | None = None,
    ) -> None:
        if (max_side is None) == (target_mpp is None):
            raise ValueError("read_thumbnail needs exactly one of max_side or target_mpp")
        width, height = slide.level_dimensions[0]
        if target_mpp is not None:
            if slide_mpp is None:
                raise ValueError(
                    "read_thumbnail(target_mpp=...) needs the slide's level-0 slide_mpp"
                )
            downsample = max(1.0, float(target_mpp) / float(slide_mpp))
        else:
            assert max_side is not None  # exactly one of the two, checked above
            downsample = max(1.0, max(width, height) / float(max_side))
        self.slide = slide
        self.level = level_for_downsample(slide, downsample)
        level_w, level_h = slide.level_dimensions[self.level]
        self.width = max(1, round(width / downsample))
        self.height = max(1, round(height / downsample))
        self.downsample = downsample
        # the level is the thumbnail up to rounding of its size: use it as it is
        self.level_as_is = (
            abs(level_w - self.width) <= 1
            and abs(level_h - self.height) <= 1
            and (max_side is None or max(level_w, level_h) <= max_side)
        )
        if self.level_as_is:
            self.width, self.height = level_w, level_h
            self.downsample = width / level_w
        # output rows per band, so that one band of level rows stays under strip_pixels
        self._scale = level_h / self.height
        self.band = max(1, int((strip_pixels or STRIP_PIXELS) / (level_w * self._scale)))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        level_h = self.slide.level_dimensions[self.level][1]
        for j0 in range(0, self.height, self.band):
            j1 = min(self.height, j0 + self.band)
            if self.level_as_is:
                yield j0, read_level_region(self.slide, self.level, (j0, j1))
                continue
            r0 = round(j0 * self._scale)
            r1 = max(r0 + 1, round(j1 * self._scale))
            strip = read_level_region(self.slide, self.level, (r0, min(r1, level_h)))
            yield j0, cv2.resize(strip, (self.width, j1 - j0), interpolation=cv2.INTER_AREA)


def read_thumbnail(
    slide: Any,
    *,
    max_side: int | None = None,
    target_mpp: float | None = None,
    slide_mpp: float | None = None,
) -> Thumbnail:
    """The whole slide as one RGB image (:class:`ThumbnailStrips` assembled)."""
    strips = ThumbnailStrips(slide, max_side=max_side, target_mpp=target_mpp, slide_mpp=slide_mpp)
    if strips.level_as_is:
        return Thumbnail(read_level_region(slide, strips.level), strips.downsample)
    image = np.empty((strips.height, strips.width, 3), np.uint8)
    for y0, rows in strips:
        image[y0 : y0 + len(rows)] = rows
    return Thumbnail(image, strips.downsample)


def read_mpp_csv(path: str | os.PathLike) -> dict[str, float]:
    """Per-slide mpp overrides from a CSV with a header ``slide_id,mpp`` (other columns ignored).

    Errors name the file and line: a mistyped mpp would tile a slide at the wrong scale.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"slide_id", "mpp"} <= set(reader.fieldnames):
                raise SlideMppError(
                    f"{path}: an mpp CSV needs the columns slide_id,mpp (found {reader.fieldnames})"
                )
            table: dict[str, float] = {}
            for line, row in enumerate(reader, start=2):
                slide_id = (row["slide_id"] or "").strip()
                try:
                    mpp = float(row["mpp"])
                except (TypeError, ValueError):
                    mpp = float("nan")
                if not slide_id or not (math.isfinite(mpp) and mpp > 0):
                    raise SlideMppError(
                        f"{path}, line {line}: need a slide_id and a positive "
                        f"mpp, got {row['slide_id']!r}, {row['mpp']!r}"
                    )
                if slide_id in table and table[slide_id] != mpp:
                    raise SlideMppError(
                        f"{path}, line {line}: slide {slide_id!r} listed twice "
                        f"with different mpp ({table[slide_id]} and {mpp})"
                    )
                table[slide_id] = mpp
    except FileNotFoundError as exc:
        raise SlideMppError(f"{path}: mpp CSV not found") from exc
    return table


def slide_info(path: str | Path) -> dict[str, Any]:
    """The facts about one slide as a JSON-able dict (raises SlideOpenError if unreadable)."""
    path = Path(path)
    slide = open_slide(path)
    try:
        props = slide.properties
        try:
            mpp, source = slide_mpp(slide, path)
            mpp_info: dict[str, Any] = {"mpp": mpp, "mpp_source": source}
        except SlideMppError as exc:
            mpp_info = {"mpp": None, "mpp_source": None, "mpp_problem": str(exc)}
        return {
            "path": str(path),
            "vendor": props.get("openslide.vendor", "image (OpenSlide image fallback)"),
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "levels": [
                {"level": k, "width": w, "height": h, "downsample": float(ds)}
                for k, ((w, h), ds) in enumerate(
                    zip(slide.level_dimensions, slide.level_downsamples)
                )
            ],
            **mpp_info,
            "objective_power": props.get("openslide.objective-power"),
            "associated_images": {
                name: list(image.size) for name, image in slide.associated_images.items()
            },
        }
    finally:
        slide.close()
