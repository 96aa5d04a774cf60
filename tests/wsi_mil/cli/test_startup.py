"""The command line answers at once: building the parser loads no heavy library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "timm",
    "scipy.stats",
    "matplotlib",
    "sklearn",
    "numpy",
    "cv2",
    "openslide",
    "h5py",
    "shapely",
)


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys\nfrom wsi_mil.cli import build_parser\nbuild_parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert out == "", f"building the parser imported: {out}"


def test_help_runs_and_lists_every_verb():
    from wsi_mil.cli import VERBS

    out = subprocess.run(
        [sys.executable, "-m", "wsi_mil", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    for verb in VERBS:
        assert verb in out
