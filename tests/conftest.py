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
from types import SimpleNamespace

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

    gpu = (
        torch.cuda.get_device_name()
        if name.startswith("cuda") and torch.cuda.is_available()
        else "not available"
    )
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
            "slide_path": "/data/s1.svs",
            "slide_id": "s1",
            "slide_width": 1000,
            "slide_height": 800,
            "slide_mpp": 0.25,
            "mpp_source": "metadata",
            "target_mpp": 0.5,
            "tile_size": 256,
            "tile_size_level0": 512.0,
            "read_level": 1,
            "read_downsample": 2.0,
            "stride": 512.0,
            "min_tissue": 0.5,
            "tissue_method": "otsu",
            "tissue_params": {"blur": 7},
        }
        return {**attrs, **overrides}

    return make


FORMATS_PAGE = REPO_ROOT / "docs" / "formats.md"


def documented_entries(heading: str) -> dict[tuple[str, str], str]:
    """``(kind, name) -> when`` of the table under the formats page's ``### `` heading that
    contains ``heading``: kind is ``dataset``, ``attribute`` (of the file) or ``attribute of
    <dataset>``; when is ``always`` or what adds the entry."""
    lines = FORMATS_PAGE.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("### ") and heading in line]
    assert len(starts) == 1, f"{FORMATS_PAGE}: {len(starts)} headings with {heading!r}"
    rows: list[tuple[tuple[str, str], str]] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            name, kind, when = (cell.strip() for cell in line.strip("|").split("|")[:3])
            rows.append(((kind.replace("`", ""), name.strip("`")), when))
    keys = [key for key, _ in rows]
    assert rows and len(set(keys)) == len(keys), f"{heading}: no table, or a row twice"
    return dict(rows)


def h5_entries(path: Path) -> set[tuple[str, str]]:
    """``(kind, name)`` of everything in an HDF5 file, as :func:`documented_entries` lists
    them."""
    import h5py

    found = set()
    with h5py.File(path, "r") as f:
        found |= {("attribute", str(k)) for k in f.attrs}
        for name, item in f.items():
            found.add(("dataset", str(name)))
            found |= {(f"attribute of {name}", str(k)) for k in item.attrs}
    return found


def check_contract(
    path: Path,
    heading: str,
    *,
    inherited: set[tuple[str, str]] = frozenset(),
    not_written: set[tuple[str, str]] = frozenset(),
) -> None:
    """A file written by its stage holds exactly what the formats page documents under
    ``heading``: every entry but ``not_written`` (conditional entries the test's file does not
    exercise), and nothing else but ``inherited`` (another contract's entries it carries).
    A documented dataset named ``<...>`` stands for every dataset the table does not name."""
    documented = documented_entries(heading)
    placeholders = [name for kind, name in documented if kind == "dataset" and name.startswith("<")]
    found = h5_entries(path)
    if placeholders:
        named = {name for kind, name in documented if kind == "dataset"} - set(placeholders)
        of = "attribute of "

        def generic(kind: str, name: str) -> tuple[str, str]:
            if kind == "dataset" and name not in named:
                return kind, placeholders[0]
            if kind.startswith(of) and kind[len(of) :] not in named:
                return of + placeholders[0], name
            return kind, name

        found = {generic(kind, name) for kind, name in found}
    always = {key for key, when in documented.items() if when == "always"}
    assert not always & set(not_written), "an entry marked always cannot be left unwritten"
    assert not always - found, f"{path}: documented but not written: {sorted(always - found)}"
    undocumented = found - set(documented) - set(inherited)
    assert not undocumented, f"{path}: written but not in docs/formats.md: {sorted(undocumented)}"
    unexercised = set(documented) - found - set(inherited)
    assert unexercised == set(not_written), (
        f"{path}: documented entries the test did not see: {sorted(unexercised)}"
    )


@pytest.fixture(scope="session")
def file_contract() -> SimpleNamespace:
    """``.check`` (:func:`check_contract`), ``.documented`` (:func:`documented_entries`) and
    ``.entries`` (:func:`h5_entries`), for the tests of each HDF5 contract against
    docs/formats.md."""
    return SimpleNamespace(check=check_contract, documented=documented_entries, entries=h5_entries)
