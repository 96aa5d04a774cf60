"""Shared fixtures: where the real test data lives (skips with a reason when it does not), and
the torch device of the device-aware tests.

``WSI_MIL_TEST_DEVICE`` (default ``cpu``) is the device the model, feature, training, explain
and segment tests run their models on: ``WSI_MIL_TEST_DEVICE=cuda`` runs them on the GPU
(``scripts/gpu_check.sh`` does; see ``docs/gpu.md``). A device that is asked for but absent
fails those tests with the reason; it never falls back to the CPU silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The environment variable naming the device of the device-aware tests.
DEVICE_ENV = "WSI_MIL_TEST_DEVICE"


def device_name_from_env() -> str:
    """``$WSI_MIL_TEST_DEVICE``, or ``cpu`` when it is unset or empty."""
    return os.environ.get(DEVICE_ENV, "").strip() or "cpu"


def pytest_report_header(config) -> str:
    """The test device in pytest's header, so a log says where the models ran."""
    name = device_name_from_env()
    if name == "cpu":
        return f"{DEVICE_ENV}: cpu"
    import torch

    gpu = torch.cuda.get_device_name() if name.startswith("cuda") and torch.cuda.is_available() \
        else "not available"
    return f"{DEVICE_ENV}: {name} ({gpu})"


@pytest.fixture(scope="session")
def device() -> str:
    """The torch device (``cpu``, ``cuda``, ``cuda:N``) the device-aware tests run on."""
    from features.device import DeviceError, resolve_device

    name = device_name_from_env()
    try:
        return str(resolve_device(name))
    except DeviceError as exc:
        pytest.fail(f"{DEVICE_ENV}={name}: {exc}", pytrace=False)


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
