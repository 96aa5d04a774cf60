"""Write synthetic whole-slide images as tiled pyramidal TIFFs that OpenSlide opens.

Tests, benchmarks and the demo need slides of a known size, resolution and content, from a
few hundred pixels up to Camelyon size (50 000 x 50 000 px and more), without downloading
anything. :func:`write_pyramidal_tiff` streams such a slide to disk tile by tile:

* Level 0 comes from ``render(x, y, w, h)``, one tile at a time.
* Every lower level is a 2x box-filtered copy of the level above, built in a cascade while
  level 0 is written: each finished row of tiles is shrunk by 2 and handed to the next level,
  which emits a row of tiles as soon as it has one. Only one or two strips per level are ever
  in memory, so memory stays bounded by ``~2 * tile * width * 3`` bytes whatever the height.
* TIFF needs each level (IFD) written in one piece, so the lower levels' tiles are encoded as
  they are made, spooled to a temporary file on disk, and copied into the TIFF after level 0.

pyvips (``tiffsave(..., tile=True, pyramid=True)``) builds such pyramids too, but only from an
image it can read itself: pixels made in Python reach it through a raw file that it
memory-maps whole (a 10 240-px square measured 374 MB resident), so it would not stream a
``render`` callback; tifffile writes the tiles this cascade hands it as they come.

The layout is OpenSlide's "generic tiled TIFF": one tiled IFD per level, largest first, in
successive directories (checked with OpenSlide 4.0.1: a pyramid in SubIFDs opens as a single
level). The level-0 resolution is stored in the TIFF resolution tags in pixels per centimetre
as an exact rational built from the decimal value of ``mpp``, so OpenSlide's ``mpp-x`` and
``tiling.slide.slide_mpp`` give the same ``mpp`` back.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, cast

import cv2
import imagecodecs
import numpy as np
import tifffile

from tiling.storage import atomic_output

#: ``render(x, y, w, h) -> uint8 RGB [h, w, 3]``: the level-0 pixels of a region.
Render = Callable[[int, int, int, int], np.ndarray]

COMPRESSIONS = ("jpeg", "deflate", "none")
#: JPEG tiles are stored as YCbCr with 2x2 chroma subsampling, as scanners do.
JPEG_SUBSAMPLING = (2, 2)
MICRONS_PER_CM = 10_000
#: Period in px of the synthetic tissue texture (a fixed random pattern).
TEXTURE_PERIOD = 64


def mpp_to_resolution(mpp: float) -> tuple[int, int]:
    """Pixels per centimetre as a TIFF rational (numerator, denominator) for ``mpp`` µm/px.

    The rational is built from the shortest decimal form of ``mpp`` (0.499 -> 10**7 / 499),
    so ``10_000 * denominator / numerator`` gives back the same float.
    """
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    px_per_cm = MICRONS_PER_CM / Fraction(repr(float(mpp)))
    if px_per_cm.numerator >= 2**32 or px_per_cm.denominator >= 2**32:
        px_per_cm = px_per_cm.limit_denominator(2**32 - 1)
    return px_per_cm.numerator, px_per_cm.denominator


def pyramid_shapes(width: int, height: int, tile: int, levels: int | None) -> list[tuple[int, int]]:
    """(width, height) of each level: halved (rounded up) until a level fits in one tile."""
    shapes = [(width, height)]
    while (levels is None and max(shapes[-1]) > tile) or (
        levels is not None and len(shapes) < levels
    ):
        w, h = shapes[-1]
        if w == 1 and h == 1:
            break
        shapes.append(((w + 1) // 2, (h + 1) // 2))
    return shapes


def _encoder(compression: str, quality: int) -> Callable[[np.ndarray], bytes]:
    """Encode one full tile exactly as tifffile would for the tags it writes."""
    # The casts hold: imagecodecs returns bytes unless given an ``out`` buffer (the bytearray
    # its stubs allow), and it must be bytes: tifffile reads any other tile item as pixels.
    if compression == "jpeg":
        return lambda tile: cast(
            bytes,
            imagecodecs.jpeg8_encode(
                tile,
                level=quality,
                subsampling=JPEG_SUBSAMPLING,
                colorspace="RGB",
                outcolorspace="YCBCR",
            ),
        )
    if compression == "deflate":
        # imagecodecs' stub asks for bytes, but the codec reads any array through the buffer
        # protocol (copying a non-contiguous one); tifffile hands it arrays too
        return lambda tile: cast(bytes, imagecodecs.zlib_encode(tile, level=6))  # type: ignore[arg-type]
    return lambda tile: np.ascontiguousarray(tile).tobytes()


def _halve(strip: np.ndarray, out_width: int) -> np.ndarray:
    """2x box filter of a strip with an even number of rows; an odd last column is repeated."""
    if strip.shape[1] != 2 * out_width:
        strip = np.concatenate([strip, strip[:, -1:]], axis=1)
    return cv2.resize(strip, (out_width, strip.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _tiles_of_strip(strip: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """Cut a strip (at most ``tile`` rows) into full tiles, padding edges by repetition."""
    width = strip.shape[1]
    for x in range(0, width, tile):
        block = strip[:, x : x + tile]
        if block.shape[0] != tile or block.shape[1] != tile:
            block = np.pad(
                block, ((0, tile - block.shape[0]), (0, tile - block.shape[1]), (0, 0)), mode="edge"
            )
        yield block


class _Shrinker:
    """Hands 2x reductions of the strips it is fed to the next level down.

    A strip with an odd number of rows leaves its last row behind, to be paired with the first
    row of the next strip, so the reduction is the same as for the whole image at once.
    """

    def __init__(self, below: _Level):
        self.below = below
        self.carry: np.ndarray | None = None

    def feed(self, strip: np.ndarray) -> None:
        if self.carry is not None:
            strip = np.concatenate([self.carry, strip])
            self.carry = None
        if strip.shape[0] % 2:
            self.carry, strip = strip[-1:].copy(), strip[:-1]
        if strip.shape[0]:
            self.below.add_rows(_halve(strip, self.below.width))

    def finish(self) -> None:
        """Flush the last odd row (repeated, as an odd height rounds up) and the level below."""
        if self.carry is not None:
            self.below.add_rows(_halve(np.concatenate([self.carry, self.carry]), self.below.width))
            self.carry = None
        self.below.finish()


class _Level:
    """A lower pyramid level under construction: receives rows, spools its encoded tiles."""

    def __init__(
        self,
        width: int,
        height: int,
        tile: int,
        encode: Callable[[np.ndarray], bytes],
        spool: BinaryIO,
        below: _Level | None,
    ):
        self.width, self.height, self.tile, self.encode, self.spool = (
            width,
            height,
            tile,
            encode,
            spool,
        )
        self.shrinker = _Shrinker(below) if below is not None else None
        self.pending: list[np.ndarray] = []  # rows received but not yet emitted as tiles
        self.pending_rows = 0
        self.sizes: list[int] = []  # byte count of each spooled tile, in TIFF order

    def add_rows(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.pending_rows += rows.shape[0]
        while self.pending_rows >= self.tile:
            self._emit(self.tile)

    def finish(self) -> None:
        if self.pending_rows:
            self._emit(self.pending_rows)
        if self.shrinker is not None:
            self.shrinker.finish()

    def _emit(self, n: int) -> None:
        rows = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        strip, rest = rows[:n], rows[n:]
        self.pending = [rest] if rest.shape[0] else []
        self.pending_rows = rest.shape[0]
        for block in _tiles_of_strip(strip, self.tile):
            data = self.encode(block)
            self.spool.write(data)
            self.sizes.append(len(data))
        if self.shrinker is not None:
            self.shrinker.feed(strip)


def _spooled_tiles(spool_path: Path, sizes: list[int]) -> Iterator[bytes]:
    with open(spool_path, "rb") as f:
        for size in sizes:
            yield f.read(size)


def write_pyramidal_tiff(
    path: str | os.PathLike,
    width: int,
    height: int,
    mpp: float,
    render: Render,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    levels: int | None = None,
) -> Path:
    """Write a tiled pyramidal TIFF of ``width`` x ``height`` level-0 px at ``mpp`` µm/px.

    ``render(x, y, w, h)`` must return the uint8 RGB level-0 pixels ``[h, w, 3]`` of that
    region; it is called once per level-0 tile, row by row. ``levels`` is the number of
    pyramid levels (default: halve until a level fits in one tile). ``compression`` is
    ``"jpeg"`` (YCbCr 4:2:0 at ``quality``), ``"deflate"`` or ``"none"``. The file appears at
    ``path`` only once complete.
    """
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"{path}: compression must be one of {COMPRESSIONS}, got {compression!r}")
    if width < 1 or height < 1:
        raise ValueError(f"{path}: slide size must be positive, got {width}x{height}")
    if tile % 16:
        raise ValueError(f"{path}: tile size must be a multiple of 16 (TIFF tiles), got {tile}")
    if levels is not None and levels < 1:
        raise ValueError(f"{path}: levels must be at least 1, got {levels}")
    shapes = pyramid_shapes(width, height, tile, levels)
    encode = _encoder(compression, quality)
    resolution = mpp_to_resolution(mpp)
    page_args = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "planarconfig": "contig",
        "compression": None if compression == "none" else compression,
        "subsampling": JPEG_SUBSAMPLING if compression == "jpeg" else None,
        "metadata": None,
    }

    with (
        atomic_output(path) as tmp,
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".pyramid-") as spool_dir,
    ):
        spool_paths = [Path(spool_dir) / f"level{k}.bin" for k in range(1, len(shapes))]
        spools = [open(p, "wb") for p in spool_paths]  # noqa: SIM115 - closed below
        try:
            lower: list[_Level] = []
            below: _Level | None = None
            for k in range(len(shapes) - 1, 0, -1):
                below = _Level(*shapes[k], tile, encode, spools[k - 1], below)
                lower.insert(0, below)
            shrinker = _Shrinker(lower[0]) if lower else None

            def level0_tiles() -> Iterator[bytes]:
                # a whole row of tiles is rendered and handed down before its tiles are yielded:
                # tifffile stops pulling after the last tile, so nothing may follow that yield
                for y in range(0, height, tile):
                    h = min(tile, height - y)
                    strip = np.empty((h, width, 3), np.uint8)
                    for x in range(0, width, tile):
                        w = min(tile, width - x)
                        pixels = np.asarray(render(x, y, w, h), dtype=np.uint8)
                        if pixels.shape != (h, w, 3):
                            raise ValueError(
                                f"{path}: render({x}, {y}, {w}, {h}) returned shape "
                                f"{pixels.shape}, expected {(h, w, 3)}"
                            )
                        strip[:, x : x + w] = pixels
                    if shrinker is not None:
                        shrinker.feed(strip)
                    yield from (encode(block) for block in _tiles_of_strip(strip, tile))

            with tifffile.TiffWriter(tmp, bigtiff=width * height * 3 > 2**31) as tif:
                tif.write(
                    level0_tiles(),
                    **{**page_args, "shape": (height, width, 3)},
                    resolution=(resolution, resolution),
                    resolutionunit="CENTIMETER",
                    description=f"wsi-mil synthetic slide; level-0 mpp={mpp!r}",
                )
                if shrinker is not None:
                    shrinker.finish()
                for spool in spools:
                    spool.close()
                for k, ((w, h), level, spool_path) in enumerate(
                    zip(shapes[1:], lower, spool_paths), start=1
                ):
                    # lower levels carry their own (approximate, 2**k coarser) resolution
                    level_res = (resolution[0], resolution[1] * 2**k)
                    tif.write(
                        _spooled_tiles(spool_path, level.sizes),
                        **{**page_args, "shape": (h, w, 3)},
                        subfiletype=1,
                        resolution=(level_res, level_res),
                        resolutionunit="CENTIMETER",
                    )
        finally:
            for spool in spools:
                spool.close()
    return path


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse of tissue (or, with ``hole``, of background) in level-0 px."""

    cx: float
    cy: float
    rx: float
    ry: float
    hole: bool = False

    @property
    def area(self) -> float:
        return math.pi * self.rx * self.ry

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pixel centres ``(x + 0.5, y + 0.5)`` inside the ellipse."""
        return ((x + 0.5 - self.cx) / self.rx) ** 2 + ((y + 0.5 - self.cy) / self.ry) ** 2 <= 1.0


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle ``[x0, x1) x [y0, y1)`` of tissue (or background) in level-0 px."""

    x0: float
    y0: float
    x1: float
    y1: float
    hole: bool = False

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= self.x0) & (x < self.x1) & (y >= self.y0) & (y < self.y1)


Shape = Ellipse | Rect


def shapes_render(
    shapes: Sequence[Shape],
    tissue_rgb: tuple[int, int, int] = (196, 96, 168),
    background_rgb: tuple[int, int, int] = (243, 243, 243),
    texture: int = 16,
    seed: int = 0,
) -> Render:
    """A ``render`` for synthetic slides: tissue of exactly known shape on glass-white background.

    Shapes are painted in order (a ``hole`` paints background), so the tissue area is known
    exactly for tests. ``texture`` adds a fixed random pattern of that amplitude to the tissue
    (periodic over ``TEXTURE_PERIOD`` px and a function of level-0 coordinates only, so every
    call agrees), which makes JPEG tiles cost what real tissue costs instead of compressing to
    nothing.
    """
    rng = np.random.default_rng(seed)
    pattern = rng.integers(-texture, texture + 1, (TEXTURE_PERIOD, TEXTURE_PERIOD, 1))
    period_block = np.clip(np.asarray(tissue_rgb, np.int16) + pattern, 0, 255).astype(np.uint8)
    # whole blocks, sliced per call (much faster than filling or gathering pixel by pixel)
    tissue_block = np.empty((0, 0, 3), np.uint8)
    background_block = np.empty((0, 0, 3), np.uint8)

    def blocks(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal tissue_block, background_block
        if tissue_block.shape[0] < h + TEXTURE_PERIOD or tissue_block.shape[1] < w + TEXTURE_PERIOD:
            reps = (h // TEXTURE_PERIOD + 2, w // TEXTURE_PERIOD + 2, 1)
            tissue_block = np.tile(period_block, reps)
            background_block = np.empty_like(tissue_block)
            background_block[:] = np.asarray(background_rgb, np.uint8)
        return tissue_block, background_block

    def render(x: int, y: int, w: int, h: int) -> np.ndarray:
        tissue_all, background_all = blocks(h, w)
        ys, xs = np.ogrid[y : y + h, x : x + w]
        inside: np.ndarray | None = None
        for shape in shapes:
            left, top, right, bottom = shape.bounds
            if left > x + w or right < x or top > y + h or bottom < y:
                continue  # most tiles of a large slide meet few shapes
            hit = shape.contains(xs, ys)
            if inside is None:
                inside = np.zeros((h, w), bool)
            inside = inside & ~hit if shape.hole else inside | hit
        if inside is None or not inside.any():
            return background_all[:h, :w].copy()
        oy, ox = y % TEXTURE_PERIOD, x % TEXTURE_PERIOD
        tissue = tissue_all[oy : oy + h, ox : ox + w]
        if inside.all():
            return tissue.copy()
        image = background_all[:h, :w].copy()
        np.copyto(image, tissue, where=inside[..., None])
        return image

    return render
