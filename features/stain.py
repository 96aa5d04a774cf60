"""Stain handling at extraction: normalisation, HED augmentation, and tile quality measures.

Everything here runs in the tile-reader processes (:class:`features.dataset.TileDataset`), on
uint8 RGB tiles, before the encoder sees them, so it costs reader time, not encoder time.

* **Normalisation** (:class:`StainNormaliser`): Macenko et al. (ISBI 2009: the stain matrix
  of each tile, estimated from its optical densities, is replaced by the reference's) or
  Reinhard et al. (2001: each tile's LAB means and standard deviations are moved to the
  reference's, in OpenCV's LAB). Written here (:func:`macenko_matrices`, :func:`lab_stats`),
  about forty lines of NumPy, rather than taken from ``torchstain``: its wheel installs a
  top-level ``tests`` package into site-packages, which shadows the ``tests`` package of any
  project that installs it (ours: worker processes could no longer import the test suite's
  functions). The steps and constants (I0 = 240, optical-density threshold 0.15, the 1st/99th
  angle percentiles, the 99th concentration percentile) are Macenko's as the common reference
  implementations use them. Vahadane is not
  offered: the maintained implementations (``torch-staintools``, TIAToolbox) pull in
  torchvision and kornia or a whole toolbox for a sparse dictionary learning that is slower per
  tile than the encoder, and ``staintools`` (with ``spams``) is unmaintained since 2019. The
  reference is fitted to a target image the user gives, or to a montage of tiles drawn from
  the whole cohort (:func:`cohort_montage`), and recorded in every bag.
* **Augmentation** (:func:`hed_jitter`): the HED stain jitter of Tellez et al. (2018): each
  tile's haematoxylin, eosin and DAB concentrations (scikit-image's colour deconvolution) are
  scaled by U(1 - s, 1 + s) and shifted by U(-s, s), then recomposed. Extraction writes N
  jittered feature views per slide; training samples one per bag and epoch.
* **Tile QC** (:func:`tile_qc`): focus (variance of the Laplacian), background fraction and
  pen-ink fraction of every tile, stored in the bag for ``wsi-mil audit``. No maintained
  library has a pen-ink detector for H&E tiles; the rule below is the colour threshold that
  slide-QC tools (HistoQC, Slideflow) use in the same spirit: ink is blue, green or black, H&E
  is pink and purple.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from features.params import STAIN_METHODS
from wsi_mil.errors import WsiMilError

#: Per-tile QC measures stored in a bag's ``tile_qc`` dataset, in column order.
QC_COLUMNS = ("focus", "background", "pen")
#: Macenko needs tissue: a tile with fewer optically dense pixels than this share is passed
#: through unchanged (a stain matrix fitted to a handful of pixels is noise).
MIN_TISSUE_SHARE = 0.05
#: Macenko's optical-density threshold: pixels with any channel below it are background.
OD_BETA = 0.15
#: Macenko's transmitted light intensity (bright-field background).
LIGHT = 240.0
#: Macenko's robust extremes: the stain vectors at the 1st and 99th percentile angles.
ANGLE_PERCENTILE = 1.0


class StainError(WsiMilError, ValueError):
    """A stain target or method that cannot be used."""


@dataclass(frozen=True)
class StainNormaliser:
    """A fitted normaliser: the method and its reference, small enough to pickle to workers."""

    method: str
    reference: dict[str, list] = field(default_factory=dict)
    target: str = ""  # what the reference was fitted to: an image path, or "cohort (...)"

    @classmethod
    def fit(cls, method: str, image: np.ndarray, target: str) -> StainNormaliser:
        """Fit ``method`` to an RGB uint8 image (the target, or a cohort montage)."""
        if method not in STAIN_METHODS or method == "none":
            raise StainError(f"stain method {method!r}: use one of {STAIN_METHODS[1:]}")
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if method == "macenko":
                if _tissue_share(image) < MIN_TISSUE_SHARE:
                    raise StainError(
                        f"{target}: too little stained tissue to fit Macenko "
                        f"(under {MIN_TISSUE_SHARE:.0%} of pixels)"
                    )
                try:
                    matrix, _, max_concentrations = macenko_matrices(image)
                except np.linalg.LinAlgError as exc:
                    raise StainError(f"{target}: Macenko fit failed ({exc})") from exc
                reference = {
                    "stain_matrix": matrix.tolist(),
                    "max_concentrations": max_concentrations.tolist(),
                }
            else:
                means, stds = lab_stats(lab_image(image))
                reference = {"lab_means": means.tolist(), "lab_stds": stds.tolist()}
        if not np.isfinite(np.concatenate([np.ravel(v) for v in reference.values()])).all():
            raise StainError(f"{target}: {method} fit gave non-finite values")
        return cls(method, reference, target)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """The tile (uint8 RGB) in the reference's stain; unchanged where it cannot be fitted."""
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if self.method == "macenko":
                if _tissue_share(tile) < MIN_TISSUE_SHARE:
                    return tile
                try:
                    _, concentrations, max_concentrations = macenko_matrices(tile)
                except np.linalg.LinAlgError:
                    return tile
                scale = max_concentrations / np.asarray(self.reference["max_concentrations"])
                od = np.asarray(self.reference["stain_matrix"]) @ (concentrations / scale[:, None])
                out = np.minimum(LIGHT * np.exp(-od), 255.0).T.reshape(tile.shape)
            else:
                lab = lab_image(tile)
                means, stds = lab_stats(lab)
                target_means = np.asarray(self.reference["lab_means"], dtype=np.float32)
                target_stds = np.asarray(self.reference["lab_stds"], dtype=np.float32)
                lab = (lab - means) / np.maximum(stds, 1e-6) * target_stds + target_means
                lab[..., 0] = np.clip(lab[..., 0], 0, 100)
                out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB) * 255.0
        if not np.isfinite(out).all():
            return tile
        return np.ascontiguousarray(np.clip(out, 0, 255), dtype=np.uint8)

    def attrs(self) -> dict[str, Any]:
        """What a bag records about the normalisation."""
        return {
            "stain_method": self.method,
            "stain_target": self.target,
            "stain_reference": json.dumps(self.reference),
        }


def optical_density(tile: np.ndarray) -> np.ndarray:
    """``-log((I + 1) / I0)`` per pixel and channel, ``[pixels, 3]``."""
    return -np.log((tile.reshape(-1, 3).astype(np.float64) + 1) / LIGHT)


def _tissue_share(tile: np.ndarray) -> float:
    """Share of pixels whose optical density passes Macenko's background threshold."""
    return float(np.mean(~np.any(optical_density(tile) < OD_BETA, axis=1)))


def macenko_matrices(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Macenko's (stain matrix ``[3, 2]``, concentrations ``[2, pixels]``, 99th-percentile
    concentrations ``[2]``) of a uint8 RGB image.

    The optical densities of the tissue pixels are projected on the plane of their two main
    principal directions; the stain vectors are the directions at the 1st and 99th percentile
    angles in that plane, haematoxylin first (the one with the larger red optical density);
    each pixel's concentrations are the least-squares unmixing of its optical density."""
    od = optical_density(tile)
    tissue = od[~np.any(od < OD_BETA, axis=1)]
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, 1:3]  # the two largest eigenvalues' directions
    projected = tissue @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angle, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    matrix = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
    concentrations = np.linalg.lstsq(matrix, od.T, rcond=None)[0]
    return matrix, concentrations, np.percentile(concentrations, 99, axis=1)


def lab_image(tile: np.ndarray) -> np.ndarray:
    """OpenCV's LAB (L in [0, 100]) of a uint8 RGB tile, float32."""
    return cv2.cvtColor(tile.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel means and standard deviations of a LAB image."""
    flat = lab.reshape(-1, 3)
    return flat.mean(axis=0), flat.std(axis=0)


def read_target_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB target image (PNG, JPEG, TIFF), with a clear error naming the file."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StainError(
            f"{path}: stain target image not found or not readable "
            f"(use a PNG/JPEG/TIFF tile of well-stained tissue)"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def cohort_montage(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles side by side in a square-ish grid: one image whose pixels pool the cohort's."""
    if not tiles:
        raise StainError("no tiles to fit a cohort stain reference to")
    side = tiles[0].shape[0]
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    montage = np.full((rows * side, cols * side, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        montage[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
    return montage


def hed_jitter(tile: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Tellez et al.'s HED augmentation of one uint8 RGB tile (see the module docstring)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(tile)
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3)
    rgb = hed2rgb(hed * alpha + beta)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def tile_qc(tile: np.ndarray) -> np.ndarray:
    """``[focus, background, pen]`` of one uint8 RGB tile (float32).

    focus: variance of the Laplacian of the grey image (low: blurred or empty); background:
    share of near-white, unsaturated pixels (HSV saturation < 0.08 and value > 0.85, glass);
    pen: share of pixels in ink colours: strongly saturated (> 0.6) green-to-blue hues (OpenCV
    hue 35-125 of 180; H&E's pinks are elsewhere, and its haematoxylin blues stay below that
    saturation up to about twice a typical nucleus's optical density) or near black (value <
    0.08).
    """
    grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
    focus = cv2.Laplacian(grey, cv2.CV_64F).var()
    hsv = cv2.cvtColor(tile, cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0].astype(np.int16)
    sat = hsv[..., 1] / 255.0
    val = hsv[..., 2] / 255.0
    background = np.mean((sat < 0.08) & (val > 0.85))
    pen = np.mean(((sat > 0.6) & (hue >= 35) & (hue <= 125)) | (val < 0.08))
    return np.array([focus, background, pen], dtype=np.float32)
