"""Shared fixtures: where the real test data lives, and skips with a reason when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$WSI_MIL_SHARED_DATA``."""
    return Path(os.environ.get("WSI_MIL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that use it are skipped (with the reason) when it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set WSI_MIL_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def shared_slide(shared_data: Path):
    """Return a function giving the path of a real slide, skipping when that file is absent."""

    def get(name: str) -> Path:
        path = shared_data / "slides" / name
        if not path.exists():
            pytest.skip(f"real slide {path} not present")
        return path

    return get


@pytest.fixture
def tiles_attrs():
    """Return a function giving a complete set of tiles-file attributes, with overrides."""

    def make(**overrides):
        attrs = {
            "slide_path": "/data/s1.svs", "slide_id": "s1", "slide_width": 1000,
            "slide_height": 800, "slide_mpp": 0.25, "mpp_source": "metadata", "target_mpp": 0.5,
            "tile_size": 256, "tile_size_level0": 512.0, "read_level": 1, "read_downsample": 2.0,
            "stride": 512.0, "min_tissue": 0.5, "tissue_method": "otsu",
            "tissue_params": {"blur": 7},
        }
        return {**attrs, **overrides}

    return make
