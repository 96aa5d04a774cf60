"""Parameters of ``wsi-mil view`` (stdlib only, so the command line builds instantly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: addresses that keep the server on this machine
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ViewerParams:
    """What a user chooses about the viewer (``wsi-mil view``)."""

    #: address the server listens on; 127.0.0.1 keeps it on this machine (any other address
    #: lets the network see the slides)
    host: str = "127.0.0.1"
    #: TCP port of the server
    port: int = 8765
    #: rater name; ratings are saved to ratings/<rater>.csv (without it the panel is read-only)
    rater: str | None = None
    #: matplotlib colour map of the heat layers; None = the one the project's PNGs used
    cmap: str | None = None
    #: heat between tile-grid cells: "nearest" (one colour per cell) or "linear" (smoothed)
    interpolation: Literal["nearest", "linear"] = "nearest"
    #: clip the heat to the tissue outline of the tiling step when it is available
    tissue_clip: bool = True
    #: side of the Deep Zoom tiles in px (254 + 1 px overlap on each side = 256)
    tile_size: int = 254
    #: px each Deep Zoom tile overlaps its neighbours (1 hides seams between tiles; 0 with
    #: tile_size 256 reads one slide tile instead of four, about twice as fast when cold)
    overlap: Literal[0, 1, 2] = 1
    #: JPEG quality of the slide tiles (1-100)
    jpeg_quality: int = 85
    #: rendered tiles kept in memory (slide and overlay tiles together)
    cache_tiles: int = 4096

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.interpolation not in ("nearest", "linear"):
            raise ValueError(f"interpolation must be nearest or linear, got {self.interpolation!r}")
        if not 16 <= self.tile_size <= 2048:
            raise ValueError(f"tile_size must be in 16..2048, got {self.tile_size}")
        if self.overlap not in (0, 1, 2):
            raise ValueError(f"overlap must be 0, 1 or 2, got {self.overlap}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.cache_tiles < 0:
            raise ValueError(f"cache_tiles must be >= 0, got {self.cache_tiles}")
