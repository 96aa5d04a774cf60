"""Tissue detection on a low-resolution image of the slide (never level 0).

The signal is the one CLAM made standard: stained tissue is coloured, glass is grey-white, so
the HSV saturation channel, median-blurred, separates them; morphological closing joins the
fragments, and small specks and small holes are removed. Every size is in micrometres (µm,
µm²), converted with the slide's own resolution, so the same parameters mean the same thing
on a 0.25 µm/px and a 0.5 µm/px scanner.

The threshold (``tissue_method``):

* ``"auto"`` (default): Otsu's threshold, kept within [``min_saturation``,
  ``max_saturation``] (10-20 of 255). Otsu splits the histogram into its two most separated
  classes. On a whole slide with a lot of glass those are glass and tissue, but the split
  lands between glass and *dense* tissue, at 45-65 on CMU-1 and TCGA-CR-7395; on a field that
  is mostly tissue (a TMA core, a small biopsy, a 500 px field) the two classes are faint and
  dense tissue, and Otsu lands at 40-60 on the UCSB breast fields, dropping pale stroma,
  fat septa and thin sections. Glass, median-blurred, sits at saturation 0-10 on all of
  these images and faint stroma at 15-60, so a threshold capped at 15 keeps faint tissue on
  both kinds of image while the floor of 10 keeps glass noise out; where Otsu is already
  within the bounds (a pale slide) it is used as is. The bounds follow the glass: the floor
  is at least ``GLASS_MARGIN`` above the median saturation of the near-white pixels, so a
  slide with tinted glass (saturation ~20) keeps Otsu's split instead of taking its glass
  for tissue. Measured by ``scripts/bench_tissue.py`` against a per-pixel reference mask
  (docs/tutorial.md, step 2). The median blur is 16 µm: enough to remove nuclei-sized gaps and
  noise, while a wider one erases thin strands of stroma (a median filter removes any
  structure narrower than half its width).
* ``"otsu"``: Otsu floored at ``min_saturation`` only, CLAM's rule (``sthresh`` with Otsu).
* ``"fixed"``: ``saturation_threshold`` as is.

Size filters are relative as well as absolute: a piece of tissue is dropped when it is smaller
than ``min_region_um2`` *or* than ``size_filter_fraction`` of the slide's area, whichever is
less (holes likewise), because 20 000 µm² is a speck on a whole slide but a quarter of a
275 µm field.

Pen marks (green, blue, black ink on the glass) are saturated, so they look like tissue:
``pen_filter=True`` removes pixels whose hue lies in ``pen_hue_deg`` (green to blue by default,
a range H&E stains never reach), and ``black_level`` removes near-black pixels (black ink,
dust, the slide edge) whatever the settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from tiling.params import TissueParams


def tissue_params_of(params: TissueParams) -> dict[str, Any]:
    """The tissue fields of ``params`` (or of a subclass such as ``TilingParams``) as a dict."""
    names = [f.name for f in fields(TissueParams)]
    values = asdict(params)
    return {
        name: list(values[name]) if isinstance(values[name], tuple) else values[name]
        for name in names
    }


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask and how it maps to level 0."""

    mask: np.ndarray  # bool [h, w]
    downsample: float  # level-0 px per mask px
    threshold: float  # saturation threshold actually used
    method: str  # e.g. "hsv-saturation-otsu"


def _odd_px(um: float, mpp: float) -> int:
    """A kernel diameter in µm as an odd pixel count (1 means: no filtering)."""
    px = round(um / mpp)
    return max(1, px + 1 - px % 2)


def _pen_mask(hsv: np.ndarray, hue_deg: tuple[float, float]) -> np.ndarray:
    """Saturated pixels whose hue lies in ``hue_deg`` (OpenCV stores hue as degrees / 2)."""
    low, high = (h / 2.0 for h in hue_deg)
    hue = hsv[..., 0]
    in_range = (hue >= low) & (hue <= high) if low <= high else (hue >= low) | (hue <= high)
    return in_range & (hsv[..., 1] > 40)


def _filter_regions(mask: np.ndarray, min_region_px: float, max_hole_px: float) -> np.ndarray:
    """Drop tissue pieces under ``min_region_px`` pixels, fill holes under ``max_hole_px``.

    Works on contours (one OpenCV pass, ~20x faster than labelling connected components on
    a slide-sized mask). A contour runs through the centres of boundary pixels, so the pixel
    count of a piece is ``area + perimeter / 2 + 1`` and of a hole (traced on the tissue
    around it) ``area - perimeter / 2 + 1``: exact for axis-aligned rectangles, close otherwise.
    Pieces inside holes are pieces in their own right.
    """
    if not mask.any():
        return mask
    image = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(image, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    small_holes, small_pieces = [], []
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        area, perimeter = cv2.contourArea(contour), cv2.arcLength(contour, True)
        if parent >= 0 and area - perimeter / 2 + 1 < max_hole_px:
            small_holes.append(contour)
        elif parent < 0 and area + perimeter / 2 + 1 < min_region_px:
            small_pieces.append(contour)
    if small_holes:
        cv2.drawContours(image, small_holes, -1, 1, thickness=cv2.FILLED)
    if small_pieces:
        cv2.drawContours(image, small_pieces, -1, 0, thickness=cv2.FILLED)
    return image.view(bool)


#: "auto" keeps its threshold this far above the glass's own saturation (median of the
#: near-white pixels), so tinted glass (yellowed mounting medium, a bluish scanner) stays glass.
GLASS_MARGIN = 8
#: The glass level is measured only when at least this share of the image is near-white.
MIN_GLASS_SHARE = 0.01


def saturation_threshold(
    saturation: np.ndarray, params: TissueParams, near_white: np.ndarray | None = None
) -> float:
    """The saturation above which a pixel is tissue, by ``params.tissue_method`` (module doc).

    ``near_white`` (all channels at least ``white_level``) locates glass for ``"auto"``.
    """
    if params.tissue_method == "fixed":
        return float(params.saturation_threshold)
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    low, high = float(params.min_saturation), float(params.max_saturation)
    if params.tissue_method == "otsu":
        return max(float(otsu), low)
    if near_white is not None and near_white.mean() >= MIN_GLASS_SHARE:
        low = max(low, float(np.median(saturation[near_white])) + GLASS_MARGIN)
    return min(max(float(otsu), low), max(high, low))


def detect_tissue(
    rgb: np.ndarray, downsample: float, slide_mpp: float, params: TissueParams
) -> TissueMask:
    """Tissue mask of a low-resolution RGB image whose pixels span ``downsample`` level-0 px."""
    mpp = slide_mpp * downsample
    px_area = mpp * mpp
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = hsv[..., 1]
    k = _odd_px(params.median_blur_um, mpp)
    if k > 1:
        saturation = cv2.medianBlur(saturation, k)
    white = cv2.min(cv2.min(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) >= params.white_level
    threshold = saturation_threshold(saturation, params, white)
    mask = (saturation > threshold) & (hsv[..., 2] >= params.black_level)
    if params.pen_filter:
        mask &= ~_pen_mask(hsv, params.pen_hue_deg)
    k = _odd_px(params.closing_um, mpp)
    if k > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    relative = params.size_filter_fraction * mask.size  # in px, like the absolute sizes below
    mask = _filter_regions(
        mask,
        min(params.min_region_um2 / px_area, relative),
        min(params.max_hole_um2 / px_area, relative),
    )
    return TissueMask(
        mask=mask,
        downsample=downsample,
        threshold=threshold,
        method=f"hsv-saturation-{params.tissue_method}",
    )


def background_masks(rgb: np.ndarray, params: TissueParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel near-white and near-black masks, for dropping background tiles."""
    red, green, blue = cv2.split(rgb)  # per-channel OpenCV ops: ~10x NumPy's axis reductions
    white = cv2.min(cv2.min(red, green), blue) >= params.white_level
    black = cv2.max(cv2.max(red, green), blue) < params.black_level
    return white, black


def mask_area_um2(mask: TissueMask, slide_mpp: float) -> float:
    """Tissue area of a mask in µm² (for reports and tests)."""
    return float(mask.mask.sum()) * (mask.downsample * slide_mpp) ** 2
