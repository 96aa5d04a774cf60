"""Stain handling at extraction: normalisation, HED augmentation, and tile quality measures.

Everything here runs in the tile-reader processes (:class:`features.dataset.TileDataset`), on
uint8 RGB tiles, before the encoder sees them, so it costs reader time, not encoder time.

* **Normalisation** (:class:`StainNormaliser`): Macenko (the stain matrix of each tile,
  estimated from its optical densities, is replaced by the reference's) or Reinhard (each
  tile's LAB means and standard deviations are moved to the reference's), both from
  ``torchstain`` (its NumPy backend; maintained, no compiled dependency). Vahadane is not
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

STAIN_METHODS = ("none", "macenko", "reinhard")
#: Per-tile QC measures stored in a bag's ``tile_qc`` dataset, in column order.
QC_COLUMNS = ("focus", "background", "pen")
#: Macenko needs tissue: a tile with fewer optically dense pixels than this share is passed
#: through unchanged (a stain matrix fitted to a handful of pixels is noise).
MIN_TISSUE_SHARE = 0.05
#: torchstain's optical-density threshold: pixels below it are background.
OD_BETA = 0.15


class StainError(ValueError):
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
                from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

                if _tissue_share(image) < MIN_TISSUE_SHARE:
                    raise StainError(f"{target}: too little stained tissue to fit Macenko "
                                     f"(under {MIN_TISSUE_SHARE:.0%} of pixels)")
                normaliser = NumpyMacenkoNormalizer()
                normaliser.fit(image, beta=OD_BETA)
                reference = {"stain_matrix": normaliser.HERef.tolist(),
                             "max_concentrations": normaliser.maxCRef.tolist()}
            else:
                from torchstain.numpy.normalizers import NumpyReinhardNormalizer

                normaliser = NumpyReinhardNormalizer()
                normaliser.fit(image)
                reference = {"lab_means": np.asarray(normaliser.target_means).tolist(),
                             "lab_stds": np.asarray(normaliser.target_stds).tolist()}
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
                from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

                normaliser = NumpyMacenkoNormalizer()
                normaliser.HERef = np.asarray(self.reference["stain_matrix"])
                normaliser.maxCRef = np.asarray(self.reference["max_concentrations"])
                try:
                    out, _, _ = normaliser.normalize(tile, beta=OD_BETA, stains=False)
                except np.linalg.LinAlgError:
                    return tile
            else:
                from torchstain.numpy.normalizers import NumpyReinhardNormalizer

                normaliser = NumpyReinhardNormalizer()
                normaliser.target_means = np.asarray(self.reference["lab_means"])
                normaliser.target_stds = np.asarray(self.reference["lab_stds"])
                out = normaliser.normalize(tile)
        if not np.isfinite(out).all():
            return tile
        return np.ascontiguousarray(out, dtype=np.uint8)

    def attrs(self) -> dict[str, Any]:
        """What a bag records about the normalisation."""
        return {"stain_method": self.method, "stain_target": self.target,
                "stain_reference": json.dumps(self.reference)}


def _tissue_share(tile: np.ndarray) -> float:
    """Share of pixels whose optical density passes torchstain's background threshold."""
    od = -np.log((tile.reshape(-1, 3).astype(np.float64) + 1) / 240)
    return float(np.mean(~np.any(od < OD_BETA, axis=1)))


def read_target_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB target image (PNG, JPEG, TIFF), with a clear error naming the file."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StainError(f"{path}: stain target image not found or not readable "
                         f"(use a PNG/JPEG/TIFF tile of well-stained tissue)")
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
        montage[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
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
