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
